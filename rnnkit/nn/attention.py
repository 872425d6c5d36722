"""Attention over a padded memory (the encoder's outputs), for any source length.

Three scores of a query ``q`` against each memory vector ``m_j``:

- ``bahdanau`` (additive, Bahdanau et al. 2015): ``v · tanh(W_q q + W_k m_j)``
- ``dot`` (Luong et al. 2015): ``q · m_j`` (query and memory of one width)
- ``general`` (Luong et al. 2015): ``q · W m_j``

Unlike the seed's layer, which learns one weight per position up to a fixed ``MAX_LENGTH``, these
score each position from its content, so a source of any length works. Padded positions get a
score of ``-inf`` before the softmax, so their weight is exactly zero.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

AttentionKind = Literal["bahdanau", "dot", "general"]


class Attention(nn.Module):
    """Scores queries against a memory and returns the weighted sum of the memory.

    The key projection of the memory is computed once per source (:meth:`keys`) and reused at
    every decoding step.
    """

    def __init__(
        self, kind: AttentionKind, query_size: int, memory_size: int, hidden_size: int = 0
    ):
        super().__init__()
        if kind not in ("bahdanau", "dot", "general"):
            raise ValueError(f"unknown attention {kind!r} (choices: bahdanau, dot, general)")
        if kind == "dot" and query_size != memory_size:
            raise ValueError(
                f"dot attention needs the decoder size ({query_size}) to equal the encoder "
                f"output size ({memory_size}); use general or bahdanau"
            )
        self.kind = kind
        self.key_layer: nn.Linear | None = None
        if kind == "bahdanau":
            hidden_size = hidden_size or query_size
            self.key_layer = nn.Linear(memory_size, hidden_size, bias=False)
            self.query_layer = nn.Linear(query_size, hidden_size, bias=False)
            self.energy = nn.Linear(hidden_size, 1, bias=False)
        elif kind == "general":
            self.key_layer = nn.Linear(memory_size, query_size, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """memory ``(batch, source, memory_size)`` → keys ``(batch, source, key_size)``."""
        return memory if self.key_layer is None else self.key_layer(memory)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from every query position.

        query ``(batch, steps, query_size)``; keys ``(batch, source, key_size)`` from
        :meth:`keys`; memory ``(batch, source, memory_size)``; mask ``(batch, source)`` bool,
        True on real tokens (each row needs at least one). Returns ``(context, weights)``:
        context ``(batch, steps, memory_size)``, weights ``(batch, steps, source)``, rows
        summing to 1 with exact zeros on padding.
        """
        return self.attend(self.project(query), keys, memory, ~mask.unsqueeze(1))

    def project(self, query: torch.Tensor) -> torch.Tensor:
        """query ``(batch, steps, query_size)`` → what :meth:`attend` scores against the keys:
        ``W_q q`` ``(batch, steps, hidden)`` for bahdanau, the query itself otherwise."""
        return self.query_layer(query) if self.kind == "bahdanau" else query

    def attend(
        self,
        projected: torch.Tensor,
        keys: torch.Tensor,
        memory: torch.Tensor,
        padding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from a projected query (:meth:`project`) and the padding ``(batch, 1,
        source)`` (True on padded positions), so that a decoder that projects its query
        together with other layers, and reuses the padding at every step, does each once."""
        if self.kind == "bahdanau":
            q = projected.unsqueeze(2)  # (batch, steps, 1, hidden)
            scores = self.energy(torch.tanh(q + keys.unsqueeze(1))).squeeze(-1)
        else:
            scores = torch.bmm(projected, keys.transpose(1, 2))  # (batch, steps, source)
        weights = torch.softmax(scores.masked_fill(padding, float("-inf")), dim=-1)
        return torch.bmm(weights, memory), weights


__all__ = ["Attention", "AttentionKind"]
