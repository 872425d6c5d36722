"""Text classifiers: the seed's bag-of-n-grams logistic regression, and a neural one.

``BowClassifier`` is ``log_softmax(A x + b)`` where ``x`` holds the counts (or TF-IDF weights) of
a text's n-grams and ``A x`` an ``EmbeddingBag`` sum over them; ``NeuralClassifier`` is word
embeddings (+ contextual features from character LMs) → a BiLSTM or BiGRU → max, mean or
attention pooling → a linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.config import rate, setting
from rnnkit.errors import ConfigError
from rnnkit.nn.contextual import ContextualChars, dim_setting, reprojection
from rnnkit.nn.embeddings import drop_words
from rnnkit.nn.encoder import RecurrentEncoder, RnnType, depth, width
from rnnkit.nn.pooling import Pooling, PoolingKind


@dataclass
class ClassifyModelConfig:
    """The classifier, bag of n-grams or neural, and its features or sizes (``model:`` of a
    classify recipe)."""

    kind: Literal["bow", "neural"] = "neural"
    # kind=bow: the seed's logistic regression on a bag of n-grams
    features: Literal["counts", "tfidf"] = "counts"  # tfidf: count × smoothed idf (sklearn's)
    norm: Literal["none", "l2"] = "none"  # l2: scale each text's feature vector to length 1
    ngram_min: int = 1  # n-grams of tokens (words, or characters) from ngram_min ...
    ngram_max: int = 1  # ... to ngram_max, both included
    max_features: int | None = setting(None, "keep the most frequent n-grams only (null = all)", 1)
    # kind=neural: embedding → BiLSTM/GRU → pooling → linear
    embedding_dim: int = width(100)
    pretrained: str = ""  # a word2vec/GloVe text file to initialise the word embeddings
    freeze: bool = False  # keep pretrained embeddings fixed
    rnn: RnnType = "lstm"
    hidden_size: int = width(128, "per direction")
    layers: int = depth(1)
    bidirectional: bool = True
    pooling: PoolingKind = "max"
    attention_dim: int = width(128, "pooling=attention: width of its scoring layer")
    dropout: float = rate(0.3)
    word_dropout: float = rate(0.0, "training words replaced by <unk> at this rate")
    # Character LM model directories (rnnkit lm, char level) whose states at each word join
    # its embedding (docs/tagging.md); their weights join this model.
    contextual: list[str] = field(default_factory=list)
    contextual_tune: bool = False  # fine-tune those LMs too (default: frozen, cached)
    contextual_dim: int = dim_setting()

    def validate(self) -> None:
        """Refuse settings that contradict each other."""
        if self.kind == "bow":
            if not 1 <= self.ngram_min <= self.ngram_max:
                raise ConfigError(
                    f"bad n-gram range {self.ngram_min}..{self.ngram_max} "
                    "(need 1 ≤ model.ngram_min ≤ model.ngram_max)"
                )
            for name in ("pretrained", "contextual"):
                if getattr(self, name):
                    raise ConfigError(
                        f"model.{name} needs model.kind=neural (bow has no embeddings)"
                    )


class BowClassifier(nn.Module):
    """``log_softmax(A x + b)`` over a sparse bag of n-grams ``x`` (the seed's model).

    ``A x`` is an ``EmbeddingBag`` (one row of label scores per n-gram) summed over each text's
    n-grams with their counts as weights; for TF-IDF the counts are multiplied by the ``idf``
    buffer (saved with the weights), and with ``norm="l2"`` each text's weights are scaled to
    unit length. Weights start at zero: the loss is convex, no random start is needed.
    """

    idf: torch.Tensor  # (features,), with features: tfidf

    def __init__(self, features: int, labels: int, config: ClassifyModelConfig):
        super().__init__()
        self.config = config
        self.linear = nn.EmbeddingBag(features, labels, mode="sum")
        nn.init.zeros_(self.linear.weight)
        self.bias = nn.Parameter(torch.zeros(labels))
        if config.features == "tfidf":
            self.register_buffer("idf", torch.ones(features))

    def feature_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each listed n-gram's value ``x`` in its text's vector: ``(n,)``.

        batch: ``features`` ``(n,)`` n-gram ids of all texts, one entry per distinct n-gram
        of a text; ``counts`` ``(n,)`` how often it occurs there; ``offsets`` ``(batch,)``
        where each text's entries start.
        """
        ids, weights = batch["features"], batch["counts"].float()
        if self.config.features == "tfidf":
            weights = weights * self.idf[ids]
        if self.config.norm == "l2":
            offsets = batch["offsets"]
            ends = torch.cat([offsets[1:], offsets.new_tensor([ids.numel()])])
            rows = torch.arange(len(offsets), device=ids.device)
            bags = torch.repeat_interleave(rows, ends - offsets)  # each entry's text
            norms = torch.zeros(len(offsets), device=ids.device).index_add_(0, bags, weights**2)
            weights = weights / norms.sqrt().clamp(min=1e-12)[bags]
        return weights

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Label scores ``(batch, labels)``; see :meth:`feature_weights` for the batch."""
        weights = self.feature_weights(batch)
        scores = self.linear(batch["features"], batch["offsets"], per_sample_weights=weights)
        return scores + self.bias

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean negative log-likelihood of ``labels`` ``(batch,)``."""
        return F.cross_entropy(self.logits(batch).float(), batch["labels"])

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> int:
        """The loss is a mean over texts, not over their words (for several processes)."""
        return int(batch["labels"].shape[0])

    def dense_probabilities(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``softmax(logits(batch))`` ``(batch, labels)`` in a form that exports to ONNX.

        ``EmbeddingBag`` with offsets exports as a loop over bags; here each text's sum is one
        matrix product with a ``(batch, entries)`` membership matrix built from the offsets,
        the same sum in one operation (memory: batch × entries floats, small for batches of
        texts).
        """
        features, offsets = batch["features"], batch["offsets"]
        entries = torch.arange(features.shape[0], device=features.device).unsqueeze(0)
        # the entry count as a tensor: a Python int would be traced as a constant
        ends = torch.cat([offsets[1:], torch.ones_like(features).sum(dim=0, keepdim=True)])
        member = (entries >= offsets.unsqueeze(1)) & (entries < ends.unsqueeze(1))
        member = member.to(torch.float32)  # (batch, entries)
        weights = batch["counts"]
        if self.config.features == "tfidf":
            weights = weights * self.idf[features]
        if self.config.norm == "l2":
            norms = (member @ (weights * weights).unsqueeze(1)).squeeze(1)  # (batch,)
            weights = weights / (member.t() @ norms.sqrt().clamp(min=1e-12).unsqueeze(1)).squeeze(1)
        scores = member @ (self.linear.weight[features] * weights.unsqueeze(1)) + self.bias
        return torch.softmax(scores.float(), dim=-1)


class NeuralClassifier(nn.Module):
    """words → embedding → (Bi)LSTM/GRU → max/mean/attention pooling → linear → label scores."""

    def __init__(
        self, words: int, labels: int, config: ClassifyModelConfig,
        contextual: ContextualChars | None = None,
    ):  # fmt: skip
        super().__init__()
        c = config
        self.config = c
        self.embed = nn.Embedding(words, c.embedding_dim, padding_idx=0)
        self.contextual = contextual
        self.reproject, contextual_width = reprojection(contextual, c.contextual_dim)
        width = c.embedding_dim + contextual_width
        self.drop = nn.Dropout(c.dropout)
        self.encoder = RecurrentEncoder(
            width, c.hidden_size, c.rnn, c.layers, bidirectional=c.bidirectional,
            dropout=c.dropout,
        )  # fmt: skip
        self.pool = Pooling(self.encoder.output_size, c.pooling, c.attention_dim)
        self.out = nn.Linear(self.encoder.output_size, labels)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Label scores ``(batch, labels)``.

        batch: ``words`` ``(batch, time)`` ids (0 = padding), ``mask`` ``(batch, time)`` bool;
        every row has at least one real token; with contextual features, those of
        :meth:`ContextualChars.features`.
        """
        words, mask = batch["words"], batch["mask"]
        if self.training:
            words = drop_words(words, mask, self.config.word_dropout)
        x = self.embed(words)
        if self.contextual is not None:
            x = torch.cat([x, self.reproject(self.contextual.features(batch))], dim=-1)
        hidden, _ = self.encoder(self.drop(x), mask)
        return self.out(self.drop(self.pool(hidden, mask)))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean negative log-likelihood of ``labels`` ``(batch,)``."""
        return F.cross_entropy(self.logits(batch).float(), batch["labels"])

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> int:
        """The loss is a mean over texts, not over their words (for several processes)."""
        return int(batch["labels"].shape[0])


__all__ = [
    "BowClassifier",
    "ClassifyModelConfig",
    "NeuralClassifier",
]
