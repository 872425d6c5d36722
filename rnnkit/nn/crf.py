"""A linear-chain conditional random field: batched, masked, vectorised over tags.

Scores of a tag sequence y for emissions e (``(time, tags)`` per sentence)::

    score(y) = start[y_0] + Σ_t e[t, y_t] + Σ_{t≥1} trans[y_{t-1}, y_t] + end[y_last]

log Z comes from the scaled forward algorithm (one ``(batch, tags) @ (tags, tags)`` product and
a renormalisation per step, not a log-sum-exp over ``(batch, tags, tags)``), its gradient from
the matching backward algorithm in one autograd node, with a log-space fallback should a row
underflow; the best sequence from a batched Viterbi (docs/tagging.md, "The CRF"). Both loop over
time only, and padded steps leave the state unchanged, so sentences of any lengths share a
batch. Masks must be True on the first token of every sentence.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import torch
from torch import nn

# Disallowed transitions get this score rather than -inf: a gold path that breaks a constraint
# then gives a huge but finite loss, and no gradient turns into NaN.
FORBIDDEN = -10_000.0


class CRF(nn.Module):
    """Transition, start and end scores over ``num_tags`` tags, with optional constraints.

    ``allowed`` ``(tags, tags)``, ``allowed_start`` and ``allowed_end`` ``(tags,)`` are bool
    masks (see :func:`bio_constraints`); forbidden moves score :data:`FORBIDDEN`, so Viterbi
    never takes them.
    """

    def __init__(
        self,
        num_tags: int,
        allowed: torch.Tensor | None = None,
        allowed_start: torch.Tensor | None = None,
        allowed_end: torch.Tensor | None = None,
    ):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        ones = torch.ones(num_tags, dtype=torch.bool)
        self.register_buffer("allowed", _or(allowed, ones.outer(ones)), persistent=False)
        self.register_buffer("allowed_start", _or(allowed_start, ones), persistent=False)
        self.register_buffer("allowed_end", _or(allowed_end, ones), persistent=False)

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transitions, start, end) with forbidden entries set to FORBIDDEN."""
        return (
            self.transitions.masked_fill(~self.allowed, FORBIDDEN),
            self.start.masked_fill(~self.allowed_start, FORBIDDEN),
            self.end.masked_fill(~self.allowed_end, FORBIDDEN),
        )

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Σ_y exp(score(y)) for each sentence.

        emissions ``(batch, time, tags)``; mask ``(batch, time)`` bool → ``(batch,)``.
        """
        emissions = _checked(emissions, mask)
        with _full_precision(emissions):
            trans, start, end = self._scores()
            return _ScaledForward.apply(emissions, trans, start, end, mask)

    def score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """score(y) of the given tag sequences ``(batch, time)`` → ``(batch,)``."""
        emissions = _checked(emissions, mask)
        with _full_precision(emissions):
            return self._score(emissions, tags, mask)

    def _score(self, emissions, tags, mask) -> torch.Tensor:
        trans, start, end = self._scores()
        maskf = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (batch, time)
        total = start[tags[:, 0]] + (emitted * maskf).sum(1)
        total = total + (trans[tags[:, :-1], tags[:, 1:]] * maskf[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
        return total + end[last]

    def nll(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        reduction: str = "sum",
    ) -> torch.Tensor:
        """Negative log-likelihood of ``tags``: log Z − score(tags); summed, mean or per row."""
        per_sentence = self.log_partition(emissions, mask) - self.score(emissions, tags, mask)
        return _reduce(per_sentence, reduction)

    def decode(
        self, emissions: torch.Tensor, mask: torch.Tensor, pad: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Viterbi: the best tag sequences ``(batch, time)`` (``pad`` where masked) and scores.

        The backtrace is vectorised over the batch: at padded steps the back-pointers are the
        identity, so each sentence's last tag rides unchanged to the final step, and one walk
        back from there serves every sentence. Decoding keeps no autograd graph: for a
        differentiable path score, pass the paths to :meth:`score`.
        """
        emissions = _checked(emissions, mask)
        with _full_precision(emissions), torch.no_grad():
            return self._viterbi(emissions, mask, pad)

    def _viterbi(self, emissions, mask, pad) -> tuple[torch.Tensor, torch.Tensor]:
        trans, start, end = (s.to(emissions.dtype) for s in self._scores())
        batch, time, tags = emissions.shape
        emissions = emissions.masked_fill(~mask.unsqueeze(2), 0.0)
        if batch * time * tags * tags > _STEP_TABLE_LIMIT:
            pointers, best = _viterbi_step_by_step(emissions, mask, trans, start)
            scores, last = (best + end).max(dim=1)
            return _backtrace(pointers, last).masked_fill(~mask, pad), scores
        steps, bests = _viterbi_tag_major(emissions, mask, trans, start)
        scores, last = (bests[-1].t() + end).max(dim=1)
        return _walk_back(steps, bests, last).masked_fill(~mask, pad), scores

    def perceptron_loss(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, reduction="sum"
    ) -> torch.Tensor:
        """The structured perceptron's loss: score(Viterbi path) − score(gold), ≥ 0."""
        with torch.no_grad():
            predicted, _ = self.decode(emissions, mask)
        per_sentence = self.score(emissions, predicted, mask) - self.score(emissions, tags, mask)
        return _reduce(per_sentence, reduction)


def log_partition_in_log_space(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    trans: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """The forward algorithm in log space, differentiated by autograd: slower, never
    underflows. Shapes as :meth:`CRF.log_partition`; trans ``(tags, tags)``, start/end
    ``(tags,)``."""
    alpha = start + emissions[:, 0]  # (batch, tags)
    for t in range(1, emissions.shape[1]):
        # (batch, from, 1) + (from, to) → log-sum over "from" → (batch, to)
        step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t : t + 1], step, alpha)
    return torch.logsumexp(alpha + end, dim=1)


class _ScaledForward(torch.autograd.Function):
    """log Z by the scaled forward algorithm; its gradient by the scaled backward algorithm.

    Forward keeps, per step, probabilities ``p`` ``(batch, tags)`` summing to 1 and the log of
    what was divided out ``c`` ``(batch, 1)``, so that alpha = log p + c. Every factor is
    exponentiated after subtracting its maximum, so nothing overflows. Backward runs the same
    recursion from the end (beta); at each step alpha·beta, normalised, is the tag marginal
    P(y_t = k) — the gradient of log Z for the emissions — and alpha·trans·emission·beta,
    normalised, the pair marginal whose sum over steps is the gradient for the transitions.

    When a step's probabilities come close to underflow (a sum below ``TINY``, or a marginal
    that cannot be normalised), the value and gradient are recomputed in log space instead.
    """

    TINY = 1e-30

    @staticmethod
    def forward(ctx, emissions, trans, start, end, mask):
        """log Z ``(batch,)`` of emissions ``(batch, time, tags)``, transitions ``(tags,
        tags)``, start and end scores ``(tags,)`` and mask ``(batch, time)``, by the scaled
        forward recursion; what backward needs is saved."""
        batch, time, tags = emissions.shape
        emissions = emissions.masked_fill(~mask.unsqueeze(2), 0.0)  # padding: never inf or NaN
        trans_max = trans.max()
        exp_trans = (trans - trans_max).exp()
        em_max = emissions.max(dim=2, keepdim=True).values  # (batch, time, 1)
        em_exp = (emissions - em_max).exp()
        ps = emissions.new_empty(batch, time, tags)
        totals = emissions.new_ones(batch, time, 1)
        alpha = start + emissions[:, 0]
        c = alpha.max(dim=1, keepdim=True).values
        p = (alpha - c).exp()
        ps[:, 0] = p
        for t in range(1, time):
            q = (p @ exp_trans) * em_exp[:, t]
            total = q.sum(dim=1, keepdim=True)
            real = mask[:, t : t + 1]
            p = torch.where(real, q / total, p)
            ps[:, t] = p
            totals[:, t] = total
        real = mask.unsqueeze(2)
        logs = torch.where(real, em_max + trans_max + totals.log(), 0.0)
        logs[:, 0] = c
        cs = logs.cumsum(dim=1)  # (batch, time, 1)
        end_max = end.max()
        log_z = (p * (end - end_max).exp()).sum(dim=1).log() + cs[:, -1, 0] + end_max
        ctx.exact = bool(((totals < _ScaledForward.TINY) & real).any()) or not bool(
            torch.isfinite(log_z).all()
        )
        ctx.save_for_backward(emissions, trans, start, end, mask, ps, em_max, em_exp, exp_trans)
        if ctx.exact:
            with torch.no_grad():
                return log_partition_in_log_space(emissions, mask, trans, start, end)
        return log_z

    @staticmethod
    def backward(ctx, grad):
        """Gradients of log Z for emissions, transitions, start and end (the marginals,
        scaled by ``grad`` ``(batch,)``); none for the mask."""
        emissions, trans, start, end, mask, ps, em_max, em_exp, exp_trans = ctx.saved_tensors
        if not ctx.exact:
            grads = _scaled_marginals(grad, mask, ps, em_exp, exp_trans, end)
            if grads is not None:
                return (*grads, None)
        # Underflow: differentiate the log-space recursion instead.
        with torch.enable_grad():
            inputs = [x.detach().requires_grad_() for x in (emissions, trans, start, end)]
            log_z = log_partition_in_log_space(inputs[0], mask, *inputs[1:])
            grads = torch.autograd.grad(log_z, inputs, grad)
        return (grads[0].masked_fill(~mask.unsqueeze(2), 0.0), *grads[1:], None)


def _scaled_marginals(grad, mask, ps, em_exp, exp_trans, end):
    """Gradients of Σ grad·log Z for (emissions, transitions, start, end), from the scaled
    backward recursion; None when a marginal underflowed and cannot be normalised."""
    batch, time, tags = ps.shape
    pbs = torch.empty_like(ps)
    p = (end - end.max()).exp().expand(batch, tags)
    pbs[:, time - 1] = p
    back = exp_trans.t()
    for t in range(time - 2, -1, -1):
        q = (em_exp[:, t + 1] * p) @ back
        p = torch.where(mask[:, t + 1 : t + 2], q / q.sum(dim=1, keepdim=True), p)
        pbs[:, t] = p
    weight = (grad.view(batch, 1) * mask).unsqueeze(2)  # (batch, time, 1)
    # P(y_t = k) ∝ alpha_t(k) beta_t(k): the same normaliser (Z) at every step.
    unary = ps * pbs
    unary_total = unary.sum(dim=2, keepdim=True)
    # P(y_t-1 = i, y_t = j) ∝ alpha_t-1(i) trans(i, j) emission_t(j) beta_t(j)
    left, right = ps[:, :-1], em_exp[:, 1:] * pbs[:, 1:]
    pair_total = ((left @ exp_trans) * right).sum(dim=2, keepdim=True)
    real_pairs = mask[:, 1:].unsqueeze(2)
    if not (
        bool((unary_total > 0).all())
        and bool(((pair_total > 0) | ~real_pairs).all())
        and bool(torch.isfinite(unary_total).all())
    ):
        return None
    unary = unary / unary_total * weight
    left = left * (weight[:, 1:] / pair_total.masked_fill(~real_pairs, 1.0))
    pair = torch.einsum("bti,btj->ij", left, right) * exp_trans
    last = (mask.sum(dim=1) - 1).view(batch, 1, 1).expand(batch, 1, tags)
    d_end = unary.gather(1, last).sum(dim=(0, 1))
    return unary, pair, unary[:, 0].sum(dim=0), d_end


_STEP_TABLE_LIMIT = 1 << 22  # Viterbi: per-step transition tables up to 16 MB in float32


def _stay(tags: int, like: torch.Tensor) -> torch.Tensor:
    """The transitions of a padded step ``(tags, tags)``: 0 on the diagonal, -inf elsewhere, so
    that a sentence stays on its tag at no cost."""
    stay = torch.full((tags, tags), float("-inf"), device=like.device, dtype=like.dtype)
    return stay.fill_diagonal_(0.0)


def _viterbi_tag_major(emissions, mask, trans, start) -> tuple[torch.Tensor, torch.Tensor]:
    """The Viterbi recursion's step tables ``(time - 1, from, to, batch)`` and running best
    scores ``(time, tags, batch)`` for emissions ``(batch, time, tags)`` zeroed at padding.

    Laid out (from, to, batch), the max over "from" is a reduction over the outermost axis,
    which torch vectorises along the contiguous rest; without indices (``amax``) it costs a
    fraction of a ``max`` that also returns them. So the loop keeps only the running scores,
    and the walk back finds the pointers it needs (:func:`_walk_back`).
    """
    batch, time, tags = emissions.shape
    em = emissions.permute(1, 2, 0).contiguous()  # (time, tags, batch)
    # each step's table (from, to, batch) holds transitions and the "to" emission together
    # (contiguous: an add would otherwise lay its result out like the permuted emissions)
    steps = torch.add(trans.unsqueeze(2), em[1:].unsqueeze(1)).contiguous()
    # Writing the padded steps' identity in place touches only them (a masked_fill would
    # rewrite the whole table).
    steps.permute(0, 3, 1, 2)[~mask.t()[1:]] = _stay(tags, trans)
    bests = emissions.new_empty(time, tags, batch)
    torch.add(start.unsqueeze(1), em[0], out=bests[0])
    rows = bests.unbind(0)
    sums = emissions.new_empty(tags, tags, batch)
    for previous, step, best in zip(rows[:-1], steps.unbind(0), rows[1:], strict=True):
        torch.add(previous.unsqueeze(1), step, out=sums)
        torch.amax(sums, dim=0, out=best)
    return steps, bests


def _walk_back(steps: torch.Tensor, bests: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Best paths ``(batch, time)`` from step tables ``(time - 1, from, to, batch)``, running
    scores ``(time, tags, batch)`` and the best final tags ``(batch,)``.

    Each back-pointer is the argmax over "from" of the sums the loop took the maximum of;
    adding the same two floats again gives the same sums, and argmax takes the first of equal
    maxima as ``torch.max`` does, so these are the pointers a ``max`` in the loop would have
    written. On the CPU only the pointers on the path are found, in numpy (a step is three
    small numpy calls); elsewhere all of them at once, then :func:`_backtrace`.
    """
    if steps.device.type != "cpu":
        pointers = steps.add(bests[:-1].unsqueeze(2)).max(dim=1).indices
        return _backtrace(pointers, last)
    import numpy as np

    table, scores, tag = steps.numpy(), bests.numpy(), last.numpy()
    time, batch = scores.shape[0], tag.shape[0]
    rows = np.arange(batch)
    path = np.empty((time, batch), dtype=np.int64)
    path[-1] = tag
    for t in range(time - 2, -1, -1):
        tag = (table[t][:, tag, rows] + scores[t]).argmax(axis=0)
        path[t] = tag
    return torch.from_numpy(path.T.copy())


def _viterbi_step_by_step(emissions, mask, trans, start) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`_viterbi_tag_major`, for batches too large for a table per step: each step's
    table is made in the loop, and its ``max`` writes straight into its back-pointers."""
    batch, time, tags = emissions.shape
    stay = _stay(tags, trans)
    real = mask.t().reshape(time, batch, 1, 1)
    em = emissions.transpose(0, 1)  # (time, batch, tags)
    best = start + em[0]
    pointers = torch.empty(max(0, time - 1), batch, tags, dtype=torch.long, device=mask.device)
    values = best.new_empty(2, batch, tags).unbind(0)
    for t, back in enumerate(pointers.unbind(0), start=1):
        step = torch.where(real[t], trans, stay) + em[t].unsqueeze(1)
        torch.max(best.unsqueeze(2) + step, dim=1, out=(values[t % 2], back))
        best = values[t % 2]
    return pointers.transpose(1, 2), best


def _backtrace(pointers: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Best paths ``(batch, time)`` from back-pointers ``(time - 1, to, batch)`` and the best
    final tags ``(batch,)``. On the CPU the walk runs in numpy, whose indexing of small arrays
    costs a fraction of a torch call."""
    time, batch = pointers.shape[0] + 1, last.shape[0]
    if pointers.device.type == "cpu":
        import numpy as np

        table, tag, rows = pointers.numpy(), last.numpy(), np.arange(batch)
        path = np.empty((time, batch), dtype=np.int64)
        path[-1] = tag
        for t in range(time - 2, -1, -1):
            tag = table[t, tag, rows]
            path[t] = tag
        return torch.from_numpy(path.T.copy())
    pointers = pointers.long()
    path = [last]
    for t in range(time - 2, -1, -1):
        last = pointers[t].gather(0, last.unsqueeze(0)).squeeze(0)
        path.append(last)
    return torch.stack(path[::-1], dim=1)


def _checked(emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Emissions in float32 (or float64); every sentence must have a first token."""
    if mask.shape != emissions.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} does not fit emissions {emissions.shape}")
    if not bool(mask[:, 0].all()):
        raise ValueError("every sentence needs at least one token (mask[:, 0] must be True)")
    return emissions if emissions.dtype == torch.float64 else emissions.float()


def _full_precision(emissions: torch.Tensor):
    """No autocast inside the CRF: bfloat16 cannot hold log-partition values to a useful
    precision (steps of 0.5–2 at the magnitudes they reach)."""
    return torch.autocast(emissions.device.type, enabled=False)


def _or(given: torch.Tensor | None, default: torch.Tensor) -> torch.Tensor:
    return default if given is None else given.to(torch.bool)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be sum, mean or none, not {reduction!r}")


def bio_constraints(
    tags: Sequence[str], scheme: str = "IOB2"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Allowed transitions, starts and ends for IOB2 (BIO) or BIOES tag sets.

    Tags look like ``B-PER``, ``I-PER``, ``O`` (and ``E-``, ``S-`` for BIOES); any other tag
    (padding, say) is left unconstrained. IOB2: ``I-X`` only after ``B-X`` or ``I-X``, never
    first. BIOES adds: ``B-X``/``I-X`` must be followed by ``I-X`` or ``E-X`` and cannot end a
    sentence; ``E-X`` only after ``B-X``/``I-X``.
    """
    n = len(tags)
    parts = [(t.split("-", 1) + [""])[:2] if "-" in t else [t, ""] for t in tags]
    allowed = torch.ones(n, n, dtype=torch.bool)
    start = torch.ones(n, dtype=torch.bool)
    end = torch.ones(n, dtype=torch.bool)
    for j, (prefix, kind) in enumerate(parts):
        inside = ("I", "E") if scheme == "BIOES" else ("I",)
        if prefix in inside:
            start[j] = False
            for i, (p, k) in enumerate(parts):
                allowed[i, j] = p in ("B", "I") and k == kind
        if scheme == "BIOES" and prefix in ("B", "I"):
            end[j] = False
            for k2, (p, k) in enumerate(parts):
                allowed[j, k2] = p in ("I", "E") and k == kind
    return allowed, start, end


# ---------------------------------------------------------------------- export: Viterbi
def viterbi(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """The best tag ids ``(batch, time)`` for emissions ``(batch, time, tags)`` and mask
    ``(batch, time)``; transitions ``(tags, tags)``, start and end ``(tags,)`` with forbidden
    moves already scored (:meth:`CRF._scores`). Written for ``torch.jit.script``
    (:func:`scripted_viterbi`), which the ONNX exporter turns into ``Loop`` nodes: a graph of
    fixed size that decodes sentences of any length, where unrolling would fix a maximum.

    The arithmetic is :meth:`CRF._viterbi`'s, in the same order, so that the two agree on ties:
    a step adds the transitions and the next emission first, then the running best; at a
    padded step a sentence keeps its scores and points back to its own tag.
    """
    batch, time, tags = emissions.shape[0], emissions.shape[1], emissions.shape[2]
    steps = emissions.masked_fill(~mask.unsqueeze(2), 0.0).transpose(0, 1)  # (time, batch, tags)
    best = start + steps[0]
    stay = torch.arange(tags, device=emissions.device).unsqueeze(0).expand(batch, tags)
    pointers: list[torch.Tensor] = []
    for t in range(1, time):
        table = transitions + steps[t].unsqueeze(1)  # (batch, from, to)
        values, back = torch.max(best.unsqueeze(2) + table, dim=1)
        real = mask[:, t].unsqueeze(1)
        best = torch.where(real, values, best)
        pointers.append(torch.where(real, back, stay))
    tag = (best + end).argmax(dim=1)
    path = [tag]
    for i in range(time - 1):
        tag = pointers[time - 2 - i].gather(1, tag.unsqueeze(1)).squeeze(1)
        path.append(tag)
    # list.reverse() does not survive the export; the walk back is flipped as a tensor
    return torch.stack(path, dim=1).flip(1)


@functools.cache
def scripted_viterbi() -> torch.jit.ScriptFunction:
    """:func:`viterbi` compiled by ``torch.jit.script`` once, on first use (not at import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        return torch.jit.script(viterbi)
