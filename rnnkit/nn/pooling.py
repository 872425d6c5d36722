"""Pooling a padded sequence of vectors into one vector per sequence: max, mean or attention.

Padding never counts: every kind reads only the positions the mask marks as real, so a sequence
pools to the same vector alone or padded inside a batch of longer ones.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

PoolingKind = Literal["max", "mean", "attention"]


class Pooling(nn.Module):
    """``(batch, time, dim)`` + mask ``(batch, time)`` → ``(batch, dim)``.

    ``max``: the largest value of each feature over real positions. ``mean``: their average.
    ``attention``: a weighted average whose weights are a softmax over real positions of
    ``v · tanh(W h_t)`` (additive self-attention, as in Yang et al. 2016's word attention);
    the weights of the last call are kept in :attr:`weights` ``(batch, time)``.
    Every sequence must have at least one real position.
    """

    def __init__(self, dim: int, kind: PoolingKind = "max", attention_dim: int = 128):
        super().__init__()
        self.kind = kind
        self.weights: torch.Tensor | None = None
        if kind == "attention":
            self.project = nn.Linear(dim, attention_dim)
            self.score = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: ``(batch, time, dim)``; mask: ``(batch, time)`` bool, True on real positions."""
        real = mask.unsqueeze(-1)
        if self.kind == "max":
            return x.masked_fill(~real, float("-inf")).amax(dim=1)
        if self.kind == "mean":
            total = x.masked_fill(~real, 0.0).sum(dim=1)
            return total / mask.sum(dim=1, keepdim=True).clamp(min=1).to(x.dtype)
        scores = self.score(torch.tanh(self.project(x))).squeeze(-1)  # (batch, time)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        self.weights = weights.detach()
        return torch.bmm(weights.unsqueeze(1), x.masked_fill(~real, 0.0)).squeeze(1)


__all__ = ["Pooling", "PoolingKind"]
