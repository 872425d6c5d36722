"""Regularisers that make recurrent language models good on small data (Merity et al. 2018,
"Regularizing and Optimizing LSTM Language Models", AWD-LSTM).

- :class:`LockedDropout`: one dropout mask per sequence, the same at every time step
  (variational dropout, Gal & Ghahramani 2016), so a unit is either off for the whole window or
  on for the whole window; per-step masks let the recurrent state route around them.
- :func:`embedding_dropout`: whole words dropped from the embedding matrix for one batch, so
  the model cannot lean on any one word's vector.
- :func:`drop_connect`: DropConnect on the hidden-to-hidden matrices of ``nn.LSTM``/``nn.GRU``
  (Wan et al. 2013), one mask per batch, through :func:`torch.func.functional_call` so the
  fused kernel still runs and the parameters keep their names.
- :func:`activation_penalty`: activation regularisation (large outputs cost) and temporal
  activation regularisation (outputs that jump between steps cost).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence and feature, shared by every time step."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(batch, time, features)`` → the same shape, each ``(batch, feature)`` kept or
        zeroed at every step alike (kept ones scaled by ``1 / (1 - p)``)."""
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def embedding_dropout(embed: nn.Embedding, tokens: torch.Tensor, p: float) -> torch.Tensor:
    """tokens ``(batch, time)`` → vectors ``(batch, time, dim)``, with each word of the
    vocabulary dropped (its vector zero everywhere in the batch) with probability ``p``
    during training, the others scaled by ``1 / (1 - p)``."""
    if not embed.training or p == 0:
        return embed(tokens)
    weight = embed.weight
    keep = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
    return F.embedding(tokens, weight * keep, embed.padding_idx)


def drop_connect(rnn: nn.RNNBase, p: float, *inputs: Any) -> Any:
    """``rnn(*inputs)`` with each hidden-to-hidden weight (``weight_hh_l*``) dropped
    elementwise with probability ``p`` (a fresh mask per call) while training; the plain call
    otherwise. Gradients reach the kept entries of the original weights."""
    if not rnn.training or p == 0:
        return rnn(*inputs)
    dropped = {
        name: F.dropout(weight, p, training=True)
        for name, weight in rnn.named_parameters()
        if name.startswith("weight_hh")
    }
    return functional_call(rnn, dropped, inputs)


def activation_penalty(
    dropped: torch.Tensor, raw: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """``alpha`` × the mean square of the last layer's outputs after dropout, plus ``beta`` ×
    the mean square of the change of its raw outputs from one step to the next.

    dropped, raw: ``(batch, time, hidden)``. A scalar; zero when both weights are zero.
    """
    penalty = dropped.new_zeros(())
    if alpha:
        penalty = penalty + alpha * dropped.pow(2).mean()
    if beta and raw.shape[1] > 1:
        penalty = penalty + beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    return penalty


__all__ = ["LockedDropout", "embedding_dropout", "drop_connect", "activation_penalty"]
