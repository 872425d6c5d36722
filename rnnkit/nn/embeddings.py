"""Word representations: character-level word features, and word dropout.

:class:`CharFeatures` reads each word's characters with a small BiLSTM (final states of both
directions, concatenated) or a CNN (max over time of convolutions), the seed tagger's exercise.
It runs once per distinct word form of a batch, not once per token.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.nn.encoder import check_sizes, final_outputs, unpacked

CharKind = Literal["none", "lstm", "cnn"]


class CharFeatures(nn.Module):
    """Characters of word forms → one feature vector per form.

    ``kind="lstm"``: a BiLSTM of ``hidden_size`` per direction; output ``2 * hidden_size``.
    ``kind="cnn"``: ``hidden_size`` filters of width ``width``, max-pooled; output ``hidden_size``.
    """

    def __init__(
        self,
        num_chars: int,
        char_dim: int,
        hidden_size: int,
        kind: Literal["lstm", "cnn"] = "lstm",
        width: int = 3,
        pad_id: int = 0,
    ):
        super().__init__()
        check_sizes(char_dim=char_dim, char_hidden=hidden_size)
        self.kind = kind
        self.embed = nn.Embedding(num_chars, char_dim, padding_idx=pad_id)
        if kind == "lstm":
            self.rnn = nn.LSTM(char_dim, hidden_size, batch_first=True, bidirectional=True)
            self.output_size = 2 * hidden_size
        else:
            self.conv = nn.Conv1d(char_dim, hidden_size, width, padding=width // 2)
            self.output_size = hidden_size

    def forward(self, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """chars ``(forms, letters)`` padded ids, lengths ``(forms,)`` ≥ 1 → ``(forms, out)``."""
        x = self.embed(chars)
        if self.kind == "lstm" and torch.onnx.is_in_onnx_export():  # packing does not export
            real = lengths.clamp(min=1)
            return final_outputs(unpacked(self.rnn, x, real), real, 2)
        if self.kind == "lstm":
            packed = pack_padded_sequence(
                x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False
            )
            _, (h, _) = self.rnn(packed)  # h: (2, forms, hidden)
            return torch.cat([h[0], h[1]], dim=-1)
        y = self.conv(x.transpose(1, 2))  # (forms, hidden, letters)
        real = torch.arange(chars.shape[1], device=chars.device) < lengths.unsqueeze(1)
        y = y.masked_fill(~real.unsqueeze(1), float("-inf"))
        return y.max(dim=2).values


def drop_words(
    words: torch.Tensor, mask: torch.Tensor, rate: float, unk_id: int = 1
) -> torch.Tensor:
    """Word dropout for training: each real token of ``words`` ``(batch, time)`` becomes
    ``<unk>`` with probability ``rate``, so that the model learns what to do with words it
    never saw. ``<unk>`` is id 1 in every word vocabulary (specials ``<pad>``, ``<unk>``)."""
    if rate <= 0:
        return words
    drop = torch.rand(words.shape, device=words.device) < rate
    return words.masked_fill(drop & mask, unk_id)
