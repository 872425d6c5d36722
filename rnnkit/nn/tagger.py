"""The sequence tagger: word embeddings (+ character-level word features, + contextual
features from character LMs) → BiLSTM → per-token tag scores, read by a softmax or a CRF."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.config import rate
from rnnkit.nn.contextual import ContextualChars, dim_setting, reprojection
from rnnkit.nn.crf import CRF, bio_constraints
from rnnkit.nn.embeddings import CharFeatures, CharKind, drop_words
from rnnkit.nn.encoder import RecurrentEncoder, RnnType, depth, width


@dataclass
class TagModelConfig:
    """The tagger's sizes, features and head (``model:`` of a tag recipe)."""

    embedding_dim: int = width(100)
    pretrained: str = ""  # a word2vec/GloVe text file to initialise the word embeddings
    freeze: bool = False  # keep pretrained embeddings fixed
    chars: CharKind = "lstm"  # character-level word features: none, lstm or cnn
    char_dim: int = 32
    char_hidden: int = 64  # per direction for lstm; filters for cnn
    rnn: RnnType = "lstm"
    hidden_size: int = width(256, "per direction")
    layers: int = depth(2)
    dropout: float = rate(0.33)
    word_dropout: float = rate(0.05, "training words replaced by <unk> at this rate")
    head: Literal["softmax", "crf"] = "softmax"
    crf_loss: Literal["nll", "perceptron"] = "nll"
    tag_scheme: Literal["same", "IOB2", "BIOES"] = "same"  # entity scheme the model learns
    constrain: bool = True  # CRF: forbid invalid IOB2/BIOES transitions
    # Character LM model directories (rnnkit lm, char level; forward and backward) whose
    # states at each word become its contextual features; their weights join this model.
    contextual: list[str] = field(default_factory=list)
    contextual_tune: bool = False  # fine-tune those LMs too (default: frozen, cached)
    contextual_dim: int = dim_setting()


class Tagger(nn.Module):
    """words (+ character features) → BiLSTM → tag scores, read by a softmax or a CRF.

    ``words``, ``chars``: vocabulary sizes; ``tags``: the tag names by id; ``scheme``: the
    entity scheme of those tags (``IOB2`` or ``BIOES`` constrain a CRF's transitions), or None;
    ``contextual``: character LMs whose states join each word's features.
    """

    def __init__(
        self, words: int, chars: int, tags: list[str], config: TagModelConfig, scheme,
        contextual: ContextualChars | None = None,
    ):  # fmt: skip
        super().__init__()
        c = config
        self.config = c
        self.embed = nn.Embedding(words, c.embedding_dim, padding_idx=0)
        width = c.embedding_dim
        self.chars = None
        if c.chars != "none":
            self.chars = CharFeatures(chars, c.char_dim, c.char_hidden, kind=c.chars)
            width += self.chars.output_size
        self.contextual = contextual
        self.reproject, contextual_width = reprojection(contextual, c.contextual_dim)
        width += contextual_width
        self.drop = nn.Dropout(c.dropout)
        self.encoder = RecurrentEncoder(
            width, c.hidden_size, c.rnn, c.layers, bidirectional=True, dropout=c.dropout
        )
        self.out = nn.Linear(self.encoder.output_size, len(tags))
        self.crf = None
        if c.head == "crf":
            constraints = (None, None, None)
            if c.constrain and scheme in ("IOB2", "BIOES"):
                constraints = bio_constraints(tags, scheme)
            self.crf = CRF(len(tags), *constraints)

    def emissions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token tag scores ``(batch, time, tags)``.

        batch: ``words``, ``mask`` ``(batch, time)``; ``chars`` ``(forms, letters)`` and
        ``char_lengths`` ``(forms,)`` for the distinct word forms of the batch, and ``forms``
        ``(batch, time)`` pointing each token at its form. With contextual features:
        ``contextual`` ``(batch, time, width)`` computed beforehand, or the LM inputs of
        :meth:`ContextualChars.inputs` to compute them here (fine-tuning).
        """
        words, mask = batch["words"], batch["mask"]
        if self.training:
            words = drop_words(words, mask, self.config.word_dropout)
        x = self.embed(words)
        if self.chars is not None:
            per_form = self.chars(batch["chars"], batch["char_lengths"])
            x = torch.cat([x, per_form[batch["forms"]]], dim=-1)
        if self.contextual is not None:
            x = torch.cat([x, self.reproject(self.contextual.features(batch))], dim=-1)
        hidden, _ = self.encoder(self.drop(x), mask)
        return self.out(self.drop(hidden))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss per token: cross-entropy, CRF negative log-likelihood or perceptron."""
        scores, tags, mask = self.emissions(batch), batch["tags"], batch["mask"]
        tokens = mask.sum()
        if self.crf is None:
            return F.cross_entropy(scores[mask], tags[mask])
        if self.config.crf_loss == "perceptron":
            return self.crf.perceptron_loss(scores, tags, mask) / tokens
        return self.crf.nll(scores, tags, mask) / tokens

    def decode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Best tag ids ``(batch, time)``; 0 on padding."""
        scores, mask = self.emissions(batch), batch["mask"]
        if self.crf is None:
            return scores.argmax(-1).masked_fill(~mask, 0)
        return self.crf.decode(scores, mask)[0]


__all__ = ["TagModelConfig", "Tagger"]
