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
from rnnkit.nn.encoder import RecurrentEncoder, depth, width
from rnnkit.tasks import storage
from rnnkit.tasks.base import NoOptions, check_inputs, for_inference, resolve_options, shard
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
    embedding_dim: int = width(32)
    hidden_size: int = width(64, "per direction")
    layers: int = depth(1)


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
class TruecaseTask:
    """Reads lines of text, trains the case model, restores capitals, scores letters."""

    name = "truecase"
    Config = TruecaseConfig
    Options = NoOptions
    VOCABS = {"vocab.json": "vocab"}
    default_metric = "letter_accuracy"
    metric_goals = {"letter_accuracy": "max"}

    def __init__(self, config: TruecaseConfig, data_dir: Path | None = None, vocabs=None):
        self.config, self.data_dir = config, data_dir
        self.report, self.confusion = "", None  # no tables beyond the metric
        self._lines: dict[str, list[str]] = {}
        if vocabs is None:  # training: read the splits now, so a bad file stops us at once
            for split in ("train", "dev", "test"):
                if getattr(config.data, split):
                    self.lines(split)
            counts = Counter(lower("".join(self.lines("train"))))
            self.vocab = Vocab.build(counts)
        else:
            (self.vocab,) = vocabs
        self.model = CaseModel(len(self.vocab), config.model)

    # ---------------------------------------------------------------- data
    def lines(self, split: str) -> list[str]:
        """The non-empty lines of a split's file, cut to ``data.max_length``."""
        if split not in self._lines:
            name = getattr(self.config.data, split)
            path = resolve_data_path(name, self.data_dir)
            found = [s[: self.config.data.max_length] for s in read_text(path).splitlines()]
            self._lines[split] = [s for s in found if s.strip()]
            if not self._lines[split]:
                raise DataError("no text in file", str(path))
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

    @budget.budgeted  # the default deadline unless the caller set one
    def predict(self, inputs: Sequence[str], options: Any = None, **overrides: Any) -> list[dict]:
        texts = check_inputs(inputs)
        resolve_options(self, options, **overrides)
        return [{"text": text} for text in self.restore(texts)]

    def format(self, text: str, result: dict[str, Any]) -> str:
        return result["text"]

    def labels(self) -> list[str]:
        return []  # answers are open text

    # ------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "dev") -> dict[str, float]:
        return self.score(self.lines(split))

    def evaluate_file(self, path: str | Path) -> dict[str, float]:
        return self.score([s for s in read_text(path).splitlines() if s.strip()])

    def score(self, texts: Sequence[str]) -> dict[str, float]:
        """The share of letters whose case comes out right (other characters have none)."""
        restored = self.restore([lower(t) for t in texts])
        pairs = [
            (a, b)
            for t, r in zip(texts, restored, strict=True)
            for a, b in zip(t, r, strict=True)
            if a.isalpha()
        ]
        return {"letter_accuracy": sum(a == b for a, b in pairs) / max(1, len(pairs))}

    # --------------------------------------------------------------- storage
    model_files = storage.model_files
    from_dir = classmethod(storage.from_dir)


__all__ = ["TruecaseConfig", "TruecaseTask"]
