"""The recurrent language model: embedding → RNN/GRU/LSTM → softmax (full, tied or adaptive).

Trained on truncated-BPTT windows: the state is carried from one window to the next
(:meth:`LanguageModel.loss`) and detached between them. The character LMs it makes also feed
contextual word features (:mod:`rnnkit.nn.contextual`) and the cipher cracker
(:mod:`rnnkit.crack`), which read a text after :func:`start_id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.config import rate, setting
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.nn.adaptive import adaptive_log_probs, adaptive_nll
from rnnkit.nn.encoder import RecurrentEncoder, RnnType, depth, width
from rnnkit.nn.regularize import LockedDropout, activation_penalty, embedding_dropout


@dataclass
class LMModelConfig:
    """The language model's sizes, regularisers and output layer (``model:`` of an lm
    recipe)."""

    embedding_dim: int = width(256)
    hidden_size: int = width(512)
    rnn: RnnType = "lstm"
    layers: int = depth(2)
    dropout: float = rate(0.2, "between recurrent layers and on their output")
    embedding_dropout: float = rate(0.1)
    # AWD-LSTM's regularisers (rnnkit/nn/regularize.py); all off by default.
    locked_dropout: bool = False  # embedding_dropout and dropout: one mask per window
    word_dropout: float = rate(0.0, "whole words dropped from the embedding matrix per batch")
    weight_drop: float = rate(0.0, "DropConnect on the hidden-to-hidden weights")
    activation_reg: float = setting(0.0, "AR: cost of large (dropped) outputs (alpha)", 0, 1000)
    temporal_reg: float = setting(0.0, "TAR: cost of outputs changing between steps", 0, 1000)
    tie_weights: bool = False  # share the input embedding with the output layer
    adaptive_softmax: bool = False  # for large word vocabularies
    cutoffs: list[int] = field(default_factory=lambda: [2000, 10000])
    pretrained: str = ""  # a word2vec/GloVe text file to initialise the input embeddings
    freeze: bool = False  # keep pretrained embeddings fixed

    def validate(self) -> None:
        """Refuse settings that contradict each other."""
        if self.tie_weights and self.adaptive_softmax:
            raise ConfigError("model.tie_weights and model.adaptive_softmax cannot both be on")


class LanguageModel(nn.Module):
    """embedding → dropout → recurrent encoder → dropout → softmax (full, tied or adaptive)."""

    def __init__(self, vocab_size: int, config: LMModelConfig):
        super().__init__()
        c = config
        self.config = c
        self.embed = nn.Embedding(vocab_size, c.embedding_dim)
        dropout = LockedDropout if c.locked_dropout else nn.Dropout
        self.embed_drop = dropout(c.embedding_dropout)
        self.encoder = RecurrentEncoder(
            c.embedding_dim, c.hidden_size, c.rnn, c.layers, dropout=c.dropout,
            weight_drop=c.weight_drop,
        )  # fmt: skip
        self.drop = dropout(c.dropout)
        self.adaptive = None
        self.proj = None
        # The adaptive softmax leaves the clusters of absent words out of a step's graph.
        self.skips_parameters = c.adaptive_softmax
        if c.adaptive_softmax:
            cutoffs = [x for x in c.cutoffs if 0 < x < vocab_size - 1]
            if not cutoffs:
                raise ConfigError(
                    f"model.cutoffs {c.cutoffs} leave no tail for a vocabulary of {vocab_size}:"
                    " use smaller cutoffs or no adaptive softmax"
                )
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
                c.hidden_size, vocab_size, cutoffs=cutoffs, div_value=4.0
            )
        else:
            width = c.hidden_size
            if c.tie_weights and c.hidden_size != c.embedding_dim:
                self.proj = nn.Linear(c.hidden_size, c.embedding_dim)
                width = c.embedding_dim
            self.out = nn.Linear(width, vocab_size)
            if c.tie_weights:
                self.out.weight = self.embed.weight
        self.carry: Any = None  # state handed from one training window to the next

    def forward(self, tokens: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """tokens ``(batch, time)`` → features ``(batch, time, hidden)`` and the new state."""
        hidden, state = self.encode(tokens, state)
        return self.drop(hidden), state

    def encode(self, tokens: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """tokens ``(batch, time)`` → the last layer's outputs ``(batch, time, hidden)``
        before the output dropout, and the new state."""
        embedded = embedding_dropout(self.embed, tokens, self.config.word_dropout)
        return self.encoder(self.embed_drop(embedded), None, state)

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """features ``(..., hidden)`` → log-probabilities ``(..., vocab)``."""
        if self.adaptive is not None:
            flat = adaptive_log_probs(self.adaptive, features.reshape(-1, features.shape[-1]))
            return flat.view(*features.shape[:-1], -1)
        if self.proj is not None:
            features = self.proj(features)
        return F.log_softmax(self.out(features), dim=-1)

    def nll(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Summed negative log-likelihood of ``target`` ``(batch, time)``."""
        flat = features.reshape(-1, features.shape[-1])
        if self.adaptive is not None:
            return adaptive_nll(self.adaptive, flat, target.reshape(-1))
        if self.proj is not None:
            flat = self.proj(flat)
        return F.cross_entropy(self.out(flat), target.reshape(-1), reduction="sum")

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean NLL per token of one BPTT window; carries the state to the next window."""
        if batch["reset"]:
            self.carry = None
        raw, state = self.encode(batch["input"], self.carry)
        self.carry = _detach(state)
        features = self.drop(raw)
        loss = self.nll(features, batch["target"]) / batch["target"].numel()
        c = self.config
        if self.training and (c.activation_reg or c.temporal_reg):
            loss = loss + activation_penalty(features, raw, c.activation_reg, c.temporal_reg)
        return loss

    def training_state(self) -> dict[str, torch.Tensor]:
        """The recurrent state carried from one BPTT window to the next, for the Trainer's
        checkpoints: a run resumed mid-epoch then continues exactly where it stopped."""
        if self.carry is None:
            return {}
        parts = self.carry if isinstance(self.carry, tuple) else (self.carry,)
        return {f"carry.{i}": part for i, part in enumerate(parts)}

    def load_training_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the carried state that :meth:`training_state` gave, on the model's device (an
        empty dict: nothing carried)."""
        device = next(self.parameters()).device
        parts = [tensors[f"carry.{i}"].to(device) for i in range(len(tensors))]
        if not parts:
            self.carry = None
        else:
            self.carry = tuple(parts) if len(parts) > 1 else parts[0]


def start_id(vocab: Vocab) -> int:
    """What a character LM reads before a text it scores or describes: a line break (where
    lines of its corpus begin; it never met an all-zero state mid-text), else a space, else its
    commonest token."""
    return vocab.stoi.get("\n", vocab.stoi.get(" ", len(vocab.specials)))


def _detach(state: Any) -> Any:
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


__all__ = ["LMModelConfig", "LanguageModel", "start_id"]
