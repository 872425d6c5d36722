"""A recurrent encoder over padded batches: RNN, GRU or LSTM, any depth, one or two directions."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.config import setting
from rnnkit.errors import ConfigError
from rnnkit.nn.regularize import drop_connect

RnnType = Literal["lstm", "gru", "rnn"]
_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


MAX_SIZE = 65_536  # widths; a recurrent layer of this width already holds 34 G weights
MAX_LAYERS = 64


def width(default: int, help: str = "") -> Any:
    """A config setting of a layer's size: from 1 to :data:`MAX_SIZE`."""
    return setting(default, help, 1, MAX_SIZE)


def depth(default: int, help: str = "") -> Any:
    """A config setting of a number of stacked layers: from 1 to :data:`MAX_LAYERS`."""
    return setting(default, help, 1, MAX_LAYERS)


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
        ``(layers * directions, batch, hidden_size)``); None while it is being exported to
        ONNX with a mask (:func:`final_outputs` reads the top layer's from the outputs).
        """
        if x.is_cuda:
            # cuDNN's fused kernel wants the weights in one contiguous block; after a move,
            # a reload or DDP's broadcast they may not be (a no-op when they are).
            self.rnn.flatten_parameters()
        if mask is not None and torch.onnx.is_in_onnx_export():
            return unpacked(self.rnn, x, mask_lengths(mask)), None  # packing does not export
        if mask is None or bool(mask.all()):
            return drop_connect(self.rnn, self.weight_drop, x, state)
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = drop_connect(self.rnn, self.weight_drop, packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, state


# ------------------------------------------------------------------ export: no packing
def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of ``x`` ``(batch, time, features)`` within its own length ``(batch,)``;
    positions past a row's length stay where they are. Its own inverse."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, time)
    ends = lengths.unsqueeze(1)  # (batch, 1)
    index = torch.where(steps < ends, ends - 1 - steps, steps)  # (batch, time)
    return x.gather(1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))


def mask_lengths(mask: torch.Tensor) -> torch.Tensor:
    """Sequence lengths ``(batch,)`` of a mask ``(batch, time)``, at least 1, as packing takes
    them."""
    return mask.sum(dim=1).clamp(min=1)


def _direction(rnn: nn.RNNBase, layer: int, reverse: bool, x: torch.Tensor) -> torch.Tensor:
    """Outputs ``(batch, time, hidden)`` of one direction of one layer of ``rnn`` over ``x``
    ``(batch, time, input)`` from a zero state, by that layer's own weights."""
    suffix = f"l{layer}" + ("_reverse" if reverse else "")
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if rnn.bias else [])
    weights = [getattr(rnn, f"{name}_{suffix}") for name in names]
    h0 = x.new_zeros(1, x.shape[0], rnn.hidden_size)
    # torch._VF is what nn.LSTM/GRU/RNN call themselves: a direction runs by the module's own
    # weights, with no copy of them made at each export
    if isinstance(rnn, nn.LSTM):
        return torch._VF.lstm(x, (h0, h0), weights, rnn.bias, 1, 0.0, False, False, True)[0]
    cell = (
        torch._VF.gru if isinstance(rnn, nn.GRU) else getattr(torch._VF, f"rnn_{rnn.nonlinearity}")
    )
    return cell(x, h0, weights, rnn.bias, 1, 0.0, False, False, True)[0]


def unpacked(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A batch-first ``nn.LSTM``/``GRU``/``RNN`` (in eval mode) run over a padded batch
    without packing, which does not export to ONNX, with the outputs packing gives: x ``(batch,
    time, input)``, lengths ``(batch,)`` ≥ 1 → ``(batch, time, directions * hidden)``, zero
    past each length.

    A forward direction reads real tokens before any padding, so its outputs at real positions
    are the packed ones; a backward direction would read the padding first, so each sequence is
    reversed within its own length (a gather computed from the lengths), read, and reversed
    back, layer by layer.
    """
    if not rnn.bidirectional:
        outputs, _ = rnn(x)  # a one-way network reads real tokens first: run it whole
    else:
        for layer in range(rnn.num_layers):
            ahead = _direction(rnn, layer, False, x)
            behind = _direction(rnn, layer, True, reverse_within(x, lengths))
            x = torch.cat([ahead, reverse_within(behind, lengths)], dim=2)
        outputs = x
    real = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
    return outputs.masked_fill(~real.unsqueeze(2), 0.0)


def final_outputs(outputs: torch.Tensor, lengths: torch.Tensor, directions: int) -> torch.Tensor:
    """The top layer's final hidden state of each direction, concatenated ``(batch,
    directions * hidden)``, read from its outputs ``(batch, time, directions * hidden)``: the
    forward direction's at each sequence's last real position, the backward one's at the first
    (the same values as the packed network's final state; lengths ``(batch,)`` ≥ 1)."""
    width = outputs.shape[2] // directions
    last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, width)
    ahead = outputs[:, :, :width].gather(1, last).squeeze(1)
    return ahead if directions == 1 else torch.cat([ahead, outputs[:, 0, width:]], dim=1)
