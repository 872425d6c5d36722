"""Choosing the next token from a distribution: greedy, temperature, top-k and nucleus (top-p)."""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest top-p nucleus.

    logits: ``(batch, vocab)``. ``top_k=0`` and ``top_p=1.0`` keep everything. The token with
    the highest probability always survives, so the support is never empty.
    """
    out = logits.clone()
    if top_k and top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out[out < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(out, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # Mass of the tokens strictly before each one: a token is kept while that is < top_p.
        before = probs.cumsum(-1) - probs
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out[drop] = float("-inf")
    return out


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token id per row of ``logits`` ``(batch, vocab)``; returns ``(batch,)``.

    ``temperature=0`` is greedy (argmax) and uses no randomness.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    # Shift the best logit to 0 and divide in float64 (where any positive temperature is
    # non-zero): a tiny temperature then sends the others to -inf, greedy in the limit, instead
    # of overflowing every logit to inf and the softmax to NaN.
    logits = logits.double()
    scaled = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    filtered = filter_logits(scaled, top_k, top_p)
    probs = filtered.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
