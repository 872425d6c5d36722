"""The cipher model: embedding → recurrent encoder → linear, one distribution per position."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.config import rate
from rnnkit.nn.encoder import RecurrentEncoder, RnnType, depth, width


@dataclass
class CipherModelConfig:
    """The cipher model's sizes and recurrent layers (``model:`` of a cipher recipe)."""

    embedding_dim: int = width(32)
    hidden_size: int = width(64)
    rnn: RnnType = "lstm"
    layers: int = depth(1)
    bidirectional: bool = False
    dropout: float = rate(0.0)


_IGNORED = -100  # cross_entropy's default ignore_index, named


class CipherNet(nn.Module):
    """embedding → recurrent encoder → dropout → linear, one distribution per position."""

    def __init__(self, vocab_size: int, config: CipherModelConfig, pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=pad_id)
        self.encoder = RecurrentEncoder(
            config.embedding_dim,
            config.hidden_size,
            rnn=config.rnn,
            layers=config.layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(self.encoder.output_size, vocab_size)

    def forward(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """source, mask: ``(batch, time)`` → logits ``(batch, time, vocab)``."""
        hidden, _ = self.encoder(self.embed(source), mask)
        return self.out(self.dropout(hidden))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over real (unpadded) positions."""
        mask = batch["mask"]
        logits = self(batch["source"], mask)
        # Padded positions are ignored rather than cut out: selecting the real ones by the
        # mask (a nonzero, a gather and its scatter backward) cost a tenth of a step here.
        target = batch["target"].masked_fill(~mask, _IGNORED)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=_IGNORED)

    def decode(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Most likely symbol ids ``(batch, time)``; padding is never predicted."""
        return self.best(self(source, mask), mask)

    def best(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The likeliest ids ``(batch, time)`` of logits ``(batch, time, vocab)``: never padding,
        which fills the padded positions (a masked fill, no in-place write: it exports)."""
        banned = torch.arange(logits.shape[-1], device=logits.device) == self.pad_id
        return logits.masked_fill(banned, float("-inf")).argmax(-1).masked_fill(~mask, self.pad_id)


__all__ = ["CipherModelConfig", "CipherNet"]
