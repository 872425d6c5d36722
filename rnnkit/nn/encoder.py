"""A recurrent encoder over padded batches: RNN, GRU or LSTM, any depth, one or two directions."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.errors import ConfigError
from rnnkit.nn.regularize import drop_connect

RnnType = Literal["lstm", "gru", "rnn"]
_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


MAX_SIZE = 65_536  # widths; a recurrent layer of this width already holds 34 G weights
MAX_LAYERS = 64


def check_sizes(**sizes: int) -> None:
    """Refuse a size below 1 or beyond what any machine can hold, with the ConfigError that
    names it (``model.NAME``), before any data is read or any memory is asked for."""
    for name, value in sizes.items():
        high = MAX_LAYERS if name == "layers" else MAX_SIZE
        if not 1 <= value <= high:
            raise ConfigError(f"bad value {value} for model.{name} (from 1 to {high:,})")


class RecurrentEncoder(nn.Module):
    """Runs a (bi)directional recurrent network over a batch of padded sequences.

    Padding never leaks into real positions: when a batch holds sequences of several lengths
    the input is packed, so the backward direction starts at each sequence's own last token.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        rnn: RnnType = "lstm",
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
    ):
        super().__init__()
        check_sizes(embedding_dim=input_size, hidden_size=hidden_size, layers=layers)
        if not 0 <= dropout < 1:
            raise ConfigError(f"bad value {dropout} for model.dropout (0 ≤ dropout < 1)")
        self.rnn = _CELLS[rnn](
            input_size,
            hidden_size,
            num_layers=layers,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
            batch_first=True,
        )
        self.output_size = hidden_size * (2 if bidirectional else 1)
        self.weight_drop = weight_drop  # DropConnect on hidden-to-hidden weights (training)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, state=None
    ) -> tuple[torch.Tensor, object]:
        """x: ``(batch, time, input_size)``; mask: ``(batch, time)`` bool, True on real tokens.

        Returns ``(outputs, state)``: outputs ``(batch, time, output_size)`` with zeros at
        padded positions, and the final state (``h`` or ``(h, c)``, each
        ``(layers * directions, batch, hidden_size)``).
        """
        if x.is_cuda:
            # cuDNN's fused kernel wants the weights in one contiguous block; after a move,
            # a reload or DDP's broadcast they may not be (a no-op when they are).
            self.rnn.flatten_parameters()
        if mask is None or bool(mask.all()):
            return drop_connect(self.rnn, self.weight_drop, x, state)
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = drop_connect(self.rnn, self.weight_drop, packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, state
