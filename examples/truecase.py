"""An example task, small enough to read in one sitting: restoring capital letters.

The model reads lowercased text one character at a time and says, for every character, whether
it was a capital: ``"paris is in france."`` → ``"Paris is in France."``. Any plain text is its
training data (one example per line), which is why it makes a good first task to copy.

docs/develop.md walks through it; tests/test_develop.py registers it and runs the same
conformance checks as every built-in task. Its shape is the shape of every task: a config
dataclass per section, a model in a few lines of torch, and a task class that reads data,
batches it, scores it and answers ``predict``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit import budget
from rnnkit.data.batching import Epoch, bucket_batches, epoch_generator, longest_first, pad
from rnnkit.data.text import read_text, resolve_data_path
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError
from rnnkit.nn.encoder import RecurrentEncoder, check_sizes
from rnnkit.tasks.base import Evaluation, NoOptions, TaskBase, for_inference, predictor, shard
from rnnkit.train import TrainConfig


def lower(text: str) -> str:
    """Lowercase, one character for one (``"İ".lower()`` alone would give two)."""
    return "".join(ch.lower()[0] for ch in text)


# ------------------------------------------------------------------------------ config
@dataclass
class TruecaseDataConfig:
    train: str = ""  # a text file, absolute or inside the data directory; a line is an example
    dev: str = ""
    test: str = ""
    max_length: int = 200  # longer lines are cut (the model reads whole lines at once)

    def validate(self) -> None:
        if not self.train or not self.dev:
            raise ConfigError("data.train and data.dev must name text files")


@dataclass
class TruecaseModelConfig:
    embedding_dim: int = 32
    hidden_size: int = 64  # per direction
    layers: int = 1

    def validate(self) -> None:
        check_sizes(embedding_dim=self.embedding_dim, hidden_size=self.hidden_size)
        check_sizes(layers=self.layers)


@dataclass
class TruecaseConfig:
    task: Literal["truecase"] = "truecase"
    data: TruecaseDataConfig = field(default_factory=TruecaseDataConfig)
    model: TruecaseModelConfig = field(default_factory=TruecaseModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=3e-3))


# ------------------------------------------------------------------------------- model
class CaseModel(nn.Module):
    """Character embeddings → BiLSTM → two scores per character (lower, upper)."""

    def __init__(self, chars: int, config: TruecaseModelConfig):
        super().__init__()
        self.embed = nn.Embedding(chars, config.embedding_dim, padding_idx=0)
        self.encoder = RecurrentEncoder(
            config.embedding_dim, config.hidden_size, layers=config.layers, bidirectional=True
        )
        self.out = nn.Linear(self.encoder.output_size, 2)

    def forward(self, chars: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """chars, mask: ``(batch, time)`` → scores ``(batch, time, 2)``."""
        hidden, _ = self.encoder(self.embed(chars), mask)
        return self.out(hidden)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the real (unpadded) characters."""
        mask = batch["mask"]
        return F.cross_entropy(self(batch["chars"], mask)[mask], batch["upper"][mask])


# -------------------------------------------------------------------------------- task
def read_lines(d: TruecaseDataConfig, path: Path) -> list[str]:
    """The non-empty lines of a file, cut to ``data.max_length``."""
    found = [s[: d.max_length] for s in read_text(path).splitlines()]
    if not any(s.strip() for s in found):
        raise DataError("no text in file", str(path))
    return [s for s in found if s.strip()]


class TruecaseTask(TaskBase):
    """Reads lines of text, trains the case model, restores capitals, scores letters.

    ``TaskBase`` gives it ``labels()`` (none), ``default_metric`` (the first of
    ``metric_goals``), ``VOCABS`` (one ``vocab.json``), ``model_files`` and ``from_dir``."""

    name = "truecase"
    Config = TruecaseConfig
    Options = NoOptions
    metric_goals = {"letter_accuracy": "max"}

    def __init__(
        self, config: TruecaseConfig, vocabs: tuple[Vocab, ...], data_dir: Path | None = None
    ):
        """A new model on saved vocabularies (loading: no data is read)."""
        self.config, self.data_dir = config, data_dir
        self._lines: dict[str, list[str]] = {}
        (self.vocab,) = vocabs
        self.model = CaseModel(len(self.vocab), config.model)

    @classmethod
    def build(cls, config: TruecaseConfig, data_dir: Path | None = None) -> TruecaseTask:
        """A new model for training: every split is read now, so a bad file stops us at once;
        the vocabulary is the training text's characters."""
        d = config.data
        found = {
            split: read_lines(d, resolve_data_path(getattr(d, split), data_dir))
            for split in ("train", "dev", "test")
            if getattr(d, split)
        }
        task = cls(config, (Vocab.build(Counter(lower("".join(found["train"])))),), data_dir)
        task._lines = found
        return task

    # ---------------------------------------------------------------- data
    def lines(self, split: str) -> list[str]:
        """The non-empty lines of a split's file, cut to ``data.max_length``."""
        if split not in self._lines:
            name = getattr(self.config.data, split)
            self._lines[split] = read_lines(
                self.config.data, resolve_data_path(name, self.data_dir)
            )
        return self._lines[split]

    def make_batch(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``chars`` (the lowercased text's ids), ``mask`` and ``upper`` (the gold), each
        ``(batch, time)``."""
        chars, mask = pad([self.vocab.encode(lower(t)) for t in texts])
        upper, _ = pad([[int(ch.isupper()) for ch in t] for t in texts])
        return {"chars": chars, "mask": mask, "upper": upper}

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Epoch:
        train = self.lines("train")
        generator = epoch_generator(self.config.train.seed, epoch)
        order = bucket_batches(
            [len(t) for t in train], self.config.train.batch_size, True, generator
        )
        return Epoch(
            shard(order, rank, world_size), lambda rows: self.make_batch([train[i] for i in rows])
        )

    # ----------------------------------------------------------- prediction
    @torch.no_grad()
    def restore(self, texts: Sequence[str], batch_size: int = 256) -> list[str]:
        """Each text with the capitals the model believes in (its other characters unchanged)."""
        device = for_inference(self.model)
        out = list(texts)
        # At most the budget's padded characters per batch, and a stop at the deadline.
        for rows in longest_first([len(t) for t in texts], batch_size, budget.PREDICT_TOKENS):
            budget.check_deadline()
            batch = self.make_batch([texts[i] for i in rows])
            upper = self.model(batch["chars"].to(device), batch["mask"].to(device)).argmax(-1)
            for row, i in enumerate(rows):
                flags = upper[row, : len(texts[i])].tolist()
                out[i] = "".join(
                    c.upper() if f else c.lower() for c, f in zip(texts[i], flags, strict=True)
                )
        return out

    @predictor  # inputs and options checked, within the default deadline
    def predict(self, texts: list[str], options: NoOptions) -> list[dict[str, Any]]:
        """Each text with its capitals restored: ``{"text": ...}``."""
        return [{"text": text} for text in self.restore(texts)]

    def format(self, text: str, result: dict[str, Any]) -> str:
        """The restored text."""
        return result["text"]

    # ------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "dev") -> Evaluation:
        """Letter accuracy on a split."""
        return Evaluation(self._score(self.lines(split)))

    def evaluate_file(self, path: str | Path) -> Evaluation:
        """Letter accuracy on the non-empty lines of a file."""
        return Evaluation(self._score([s for s in read_text(path).splitlines() if s.strip()]))

    def _score(self, texts: Sequence[str]) -> dict[str, float]:
        """The share of letters whose case comes out right (other characters have none)."""
        restored = self.restore([lower(t) for t in texts])
        pairs = [
            (a, b)
            for t, r in zip(texts, restored, strict=True)
            for a, b in zip(t, r, strict=True)
            if a.isalpha()
        ]
        return {"letter_accuracy": sum(a == b for a, b in pairs) / max(1, len(pairs))}


__all__ = ["TruecaseConfig", "TruecaseTask"]
