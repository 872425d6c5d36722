"""The cipher model: embedding → recurrent encoder → linear, one distribution per position."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.errors import ConfigError
from rnnkit.nn.encoder import RecurrentEncoder, RnnType, UnpackedRNN, check_sizes, mask_lengths


@dataclass
class CipherModelConfig:
    embedding_dim: int = 32
    hidden_size: int = 64
    rnn: RnnType = "lstm"
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0

    def validate(self) -> None:
        check_sizes(
            embedding_dim=self.embedding_dim, hidden_size=self.hidden_size, layers=self.layers
        )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"bad value {self.dropout} for model.dropout (0 ≤ dropout < 1)")


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
        logits = self(batch["source"], batch["mask"])
        return F.cross_entropy(logits[batch["mask"]], batch["target"][batch["mask"]])

    def decode(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Most likely symbol ids ``(batch, time)``; padding is never predicted."""
        logits = self(source, mask)
        logits[..., self.pad_id] = float("-inf")
        return logits.argmax(-1).masked_fill(~mask, self.pad_id)


class CipherGraph(nn.Module):
    """:meth:`CipherNet.decode` for ONNX export, without packing: ids, mask ``(batch, time)``
    → logits ``(batch, time, vocab)``, decoded ``(batch, time)``."""

    def __init__(self, net: CipherNet):
        super().__init__()
        self.net = net
        self.rnn = UnpackedRNN(net.encoder.rnn)
        banned = torch.zeros(net.out.out_features, dtype=torch.bool)
        banned[net.pad_id] = True  # padding is never predicted
        self.register_buffer("banned", banned, persistent=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, mask ``(batch, time)`` → logits ``(batch, time, vocab)``, decoded ids
        ``(batch, time)`` (padding on padded positions)."""
        hidden, _ = self.rnn(self.net.embed(ids), mask_lengths(mask))
        logits = self.net.out(hidden)
        best = logits.masked_fill(self.banned, float("-inf")).argmax(-1)
        return logits, best.masked_fill(~mask, self.net.pad_id)


__all__ = ["CipherGraph", "CipherModelConfig", "CipherNet"]
