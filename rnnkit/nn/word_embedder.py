"""The word embedder: input vectors → a context encoding per example → scores against output
vectors, for the ``ngram`` (the seed's N-gram LM), ``cbow`` and ``skipgram`` methods, trained
with negative sampling or a full softmax."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.errors import ConfigError
from rnnkit.nn.encoder import check_sizes

Method = Literal["ngram", "cbow", "skipgram"]
PAD_ID = 0  # <pad>: fills empty CBOW context slots; its vector is never read or trained


@dataclass
class EmbedModelConfig:
    method: Method = "skipgram"
    embedding_dim: int = 100  # size of the word vectors
    loss: Literal["negative", "softmax"] = "negative"  # negative sampling, or a full softmax
    negatives: int = 5  # noise words per example (loss: negative)
    noise_power: float = 0.75  # noise distribution: unigram counts raised to this power
    context: int = 2  # ngram: previous words read (the seed's trigram model reads 2)
    hidden_size: int = 128  # ngram: hidden layer (and output vector) size

    def validate(self) -> None:
        check_sizes(embedding_dim=self.embedding_dim, negatives=self.negatives)
        check_sizes(context=self.context, hidden_size=self.hidden_size)
        if self.noise_power < 0:
            raise ConfigError(f"bad value {self.noise_power} for model.noise_power (must be ≥ 0)")


class WordEmbedder(nn.Module):
    """Input vectors → a context encoding per example → scores against output vectors."""

    def __init__(self, vocab_size: int, config: EmbedModelConfig, sparse: bool):
        super().__init__()
        c = config
        self.method, self.objective, self.sparse = c.method, c.loss, sparse
        self.embed = nn.Embedding(vocab_size, c.embedding_dim, sparse=sparse)
        bound = 0.5 / c.embedding_dim  # word2vec's start
        nn.init.uniform_(self.embed.weight, -bound, bound)
        width = c.embedding_dim
        self.hidden = None
        if c.method == "ngram":
            self.hidden = nn.Linear(c.context * c.embedding_dim, c.hidden_size)
            width = c.hidden_size
        self.out = nn.Embedding(vocab_size, width, sparse=sparse)
        nn.init.zeros_(self.out.weight)  # word2vec's start

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """The vector that predicts each example's target ``(batch, width)``.

        inputs: skipgram ``(batch,)`` centre ids; cbow ``(batch, slots)`` context ids, ``0``
        in empty slots; ngram ``(batch, context)`` previous word ids, oldest first.
        """
        if self.method == "skipgram":
            return self.embed(inputs)
        if self.method == "cbow":
            total = F.embedding_bag(
                inputs, self.embed.weight, mode="sum", sparse=self.sparse, padding_idx=PAD_ID
            )
            count = (inputs != PAD_ID).sum(1, keepdim=True).clamp(min=1)
            # The mean goes forward; backward, each context word gets the whole error of the
            # mean, not its 1/n share: word2vec's and gensim's CBOW update (cbow_mean=1).
            return total + (total / count - total).detach()
        return F.relu(self.hidden(self.embed(inputs).flatten(1)))

    def example_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss of each example ``(batch,)``.

        batch: ``input`` (see :meth:`encode`), ``target`` ``(batch,)``, and for negative
        sampling ``negatives`` ``(batch, k)``. Negative sampling: ``-log σ(u_t·h) - Σ_n log
        σ(-u_n·h)`` over the noise words that differ from the target; softmax: cross-entropy.
        """
        h = self.encode(batch["input"])
        target = batch["target"]
        if self.objective == "softmax":
            return F.cross_entropy(h @ self.out.weight.T, target, reduction="none")
        negatives = batch["negatives"]
        words = torch.cat([target.unsqueeze(1), negatives], dim=1)  # (batch, 1 + k)
        scores = (self.out(words) * h.unsqueeze(1)).sum(-1)  # (batch, 1 + k)
        real = (negatives != target.unsqueeze(1)).to(scores.dtype)
        return -F.logsigmoid(scores[:, 0]) - (F.logsigmoid(-scores[:, 1:]) * real).sum(1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean loss per example as its value, with the gradient of the sum: ``train.lr``
        is then a per-example step size, as in word2vec, whatever the batch size."""
        per_example = self.example_losses(batch)
        total = per_example.sum()
        return per_example.mean().detach() + (total - total.detach())


__all__ = ["EmbedModelConfig", "Method", "PAD_ID", "WordEmbedder"]
