"""Batched greedy and beam search over any step function.

A step function takes the previous tokens ``(n,)`` and a state (a dict of tensors whose first
dimension is ``n``) and returns ``(log_probs (n, vocab), attention (n, source), new state)``.
Tokens that must never be produced (padding, ``<s>``) should get ``-inf`` from it.

Both searches stop a hypothesis at ``eos`` or after ``max_length`` tokens (``eos`` included),
per sentence, and stop altogether once every hypothesis has stopped. A beam of 1 makes the
same choices as greedy search. Each step first checks the caller's work budget
(:func:`rnnkit.budget.check_deadline`): a search past its deadline stops there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rnnkit.budget import check_deadline
from rnnkit.nn.decoder import State, select_state

StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, torch.Tensor, State]]


@dataclass
class Hypotheses:
    """The result of a search for a batch of ``batch`` sentences.

    tokens ``(batch, steps)`` with ``eos`` closing every finished sentence and ``pad`` after it;
    lengths ``(batch,)`` counting ``eos``; scores ``(batch,)`` the summed log-probabilities;
    attention ``(batch, steps, source)`` when asked for, else None.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    attention: torch.Tensor | None = None


def _limits(max_length: int | torch.Tensor, batch: int, device) -> torch.Tensor:
    if isinstance(max_length, torch.Tensor):
        return max_length.to(device=device, dtype=torch.long).clamp(min=1)
    return torch.full((batch,), max(1, int(max_length)), dtype=torch.long, device=device)


def greedy_search(
    step: StepFn,
    state: State,
    bos: int,
    eos: int,
    max_length: int | torch.Tensor,
    pad: int = 0,
    keep_attention: bool = False,
) -> Hypotheses:
    """The likeliest next token at every step, for a batch of sentences at once.

    state: the decoder's start state for ``batch`` sentences; max_length: an int, or
    ``(batch,)`` per sentence.
    """
    batch = next(iter(state.values())).shape[0]
    device = next(iter(state.values())).device
    limits = _limits(max_length, batch, device)
    prev = torch.full((batch,), bos, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    scores = torch.zeros(batch, device=device)
    tokens, attention = [], []
    for t in range(int(limits.max())):
        check_deadline()
        log_probs, weights, state = step(prev, state)
        best, token = log_probs.float().max(dim=-1)
        token = token.masked_fill(done, pad)
        scores = scores + best.masked_fill(done, 0.0)
        lengths = lengths + (~done).long()
        tokens.append(token)
        if keep_attention:
            attention.append(weights.masked_fill(done.unsqueeze(1), 0.0))
        done = done | (token == eos) | (t + 1 >= limits)
        prev = token
        if bool(done.all()):
            break
    return Hypotheses(
        torch.stack(tokens, 1), lengths, scores,
        torch.stack(attention, 1) if keep_attention else None,
    )  # fmt: skip


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's length normaliser ``((5 + length) / 6) ** alpha`` (1 when ``alpha`` is 0)."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def beam_search(
    step: StepFn,
    state: State,
    bos: int,
    eos: int,
    max_length: int | torch.Tensor,
    beam_size: int = 5,
    alpha: float = 0.0,
    pad: int = 0,
    keep_attention: bool = False,
) -> Hypotheses:
    """Beam search over a batch: ``beam_size`` hypotheses per sentence, all in one tensor.

    Every step extends each live hypothesis by every token and keeps the ``beam_size``
    likeliest (by summed log-probability) of each sentence. A finished hypothesis stays in its
    beam unchanged (extended only by padding, at no cost), competing with the live ones; the
    search of a sentence ends when all its hypotheses have finished. The answer is the
    hypothesis with the best score divided by :func:`length_penalty` (``alpha`` 0: the raw
    score). With ``beam_size`` 1 this is greedy search.
    """
    if beam_size < 1:
        raise ValueError(f"beam size must be at least 1, not {beam_size}")
    first = next(iter(state.values()))
    batch, device, k = first.shape[0], first.device, beam_size
    limits = _limits(max_length, batch, device).repeat_interleave(k)
    state = select_state(state, torch.arange(batch, device=device).repeat_interleave(k))
    # Only the first copy of each sentence is live at the start, so the beam does not fill
    # with k copies of the same hypothesis.
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    scores = scores.view(-1)
    prev = torch.full((batch * k,), bos, dtype=torch.long, device=device)
    done = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
    history = torch.zeros(batch * k, 0, dtype=torch.long, device=device)
    attention: torch.Tensor | None = None
    offsets = (torch.arange(batch, device=device) * k).unsqueeze(1)  # (batch, 1)
    for t in range(int(limits.max())):
        check_deadline()
        log_probs, weights, state = step(prev, state)
        log_probs = log_probs.float()
        vocab = log_probs.shape[-1]
        # A finished hypothesis may only be followed by padding, which costs nothing.
        frozen = torch.full_like(log_probs, float("-inf"))
        frozen[:, pad] = 0.0
        log_probs = torch.where(done.unsqueeze(1), frozen, log_probs)
        total = (scores.unsqueeze(1) + log_probs).view(batch, k * vocab)
        top, flat = total.topk(k, dim=-1)  # (batch, k)
        origin = (flat // vocab + offsets).view(-1)
        token = (flat % vocab).view(-1)
        scores = top.view(-1)
        was_done = done.index_select(0, origin)
        lengths = lengths.index_select(0, origin) + (~was_done).long()
        history = torch.cat([history.index_select(0, origin), token.unsqueeze(1)], dim=1)
        if keep_attention:
            w = weights.index_select(0, origin).masked_fill(was_done.unsqueeze(1), 0.0)
            past = attention.index_select(0, origin) if attention is not None else None
            attention = w.unsqueeze(1) if past is None else torch.cat([past, w.unsqueeze(1)], 1)
        state = select_state(state, origin)
        done = was_done | (token == eos) | (t + 1 >= limits)
        prev = token
        if bool(done.all()):
            break
    final = (scores / length_penalty(lengths, alpha)).view(batch, k)
    # A hypothesis can only be -inf if the beam never had k live candidates (tiny vocab).
    best = final.argmax(dim=-1) + offsets.squeeze(1)
    return Hypotheses(
        history.index_select(0, best),
        lengths.index_select(0, best),
        scores.index_select(0, best),
        attention.index_select(0, best) if attention is not None else None,
    )


def search(
    step: StepFn,
    state: State,
    bos: int,
    eos: int,
    max_length: int | torch.Tensor,
    beam_size: int = 1,
    alpha: float = 0.0,
    pad: int = 0,
    keep_attention: bool = False,
) -> Hypotheses:
    """:func:`greedy_search` for a beam of 1, else :func:`beam_search` (``alpha``: the length
    penalty's). The one entry for any step function: PyTorch's decoder step, or onnxruntime's
    (:mod:`rnnkit.backends`)."""
    if beam_size == 1:
        return greedy_search(step, state, bos, eos, max_length, pad, keep_attention)
    return beam_search(step, state, bos, eos, max_length, beam_size, alpha, pad, keep_attention)


__all__ = ["Hypotheses", "StepFn", "beam_search", "greedy_search", "length_penalty", "search"]
