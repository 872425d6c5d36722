"""A linear-chain conditional random field: batched, masked, vectorised over tags.

Scores of a tag sequence y for emissions e (``(time, tags)`` per sentence)::

    score(y) = start[y_0] + Σ_t e[t, y_t] + Σ_{t≥1} trans[y_{t-1}, y_t] + end[y_last]

The log-partition log Σ_y exp(score(y)) comes from the forward algorithm in log space; the best
sequence from Viterbi. Both loop over time steps only: every sentence of the batch and every
tag pair is handled by one tensor operation per step, and padded steps leave the running state
unchanged, so sentences of any lengths share a batch. Masks must be True on the first token of
every sentence (empty sentences have no tag sequence to score).
"""

from __future__ import annotations

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
        trans, start, end = self._scores()
        alpha = start + emissions[:, 0]  # (batch, tags)
        for t in range(1, emissions.shape[1]):
            # (batch, from, 1) + (from, to) → log-sum over "from" → (batch, to)
            step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], step, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """score(y) of the given tag sequences ``(batch, time)`` → ``(batch,)``."""
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
        back from there serves every sentence.
        """
        trans, start, end = self._scores()
        batch, time, tags = emissions.shape
        best = start + emissions[:, 0]
        identity = torch.arange(tags, device=emissions.device).expand(batch, tags)
        pointers = []
        for t in range(1, time):
            candidates = best.unsqueeze(2) + trans  # (batch, from, to)
            top, arg = candidates.max(dim=1)
            step_mask = mask[:, t : t + 1]
            best = torch.where(step_mask, top + emissions[:, t], best)
            pointers.append(torch.where(step_mask, arg, identity))
        final = best + end
        scores, last = final.max(dim=1)
        path = [last]
        for arg in reversed(pointers):
            last = arg.gather(1, last.unsqueeze(1)).squeeze(1)
            path.append(last)
        path.reverse()
        return torch.stack(path, dim=1).masked_fill(~mask, pad), scores

    def perceptron_loss(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, reduction="sum"
    ) -> torch.Tensor:
        """The structured perceptron's loss: score(Viterbi path) − score(gold), ≥ 0."""
        with torch.no_grad():
            predicted, _ = self.decode(emissions, mask)
        per_sentence = self.score(emissions, predicted, mask) - self.score(emissions, tags, mask)
        return _reduce(per_sentence, reduction)


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
