"""Word embeddings from a plain-text corpus: an N-gram language model, CBOW or skip-gram.

* ``ngram``: the seed tutorial's N-gram language model: the embeddings of the ``context``
  previous words, concatenated, go through a ReLU hidden layer that predicts the next word.
* ``cbow``: the mean of the context words' embeddings predicts the centre word.
* ``skipgram``: the centre word's embedding predicts each context word.

The model (:mod:`rnnkit.nn.word_embedder`) has, for each method, separate input vectors
(``model.embed``, the ones exported) and output vectors (``model.out``). The prediction is
trained with negative sampling (``model.loss: negative``: the true word against
``model.negatives`` noise words drawn from the unigram distribution raised to
``model.noise_power``) or, for small vocabularies, a full softmax (``model.loss: softmax``).

Each line of the text is a sentence; contexts never cross a line. The training file is
prepared once into each line's word ids on disk (:mod:`rnnkit.data.corpus`), words rarer than
``data.min_freq`` dropped before windows are laid (as word2vec does), and an epoch reads it a
segment of whole lines at a time (:class:`TrainingText`), so a corpus larger than memory trains
in bounded memory. Frequent words are subsampled (``data.subsample``): each segment is
subsampled and every window drawn with tensor operations (:mod:`rnnkit.data.contexts`); cbow
and skip-gram examples then come in text order, centre by centre, as word2vec reads them, made
a block of batches at a time with their noise words; ngram examples are shuffled within
chunks. Under several processes each trains on its share of every global batch, and the
Trainer adds their gradients (the model's ``sums_gradients``).

With ``train.optimizer: sgd`` (the default) the update touches only the rows of the batch, as
in word2vec; for cbow and skip-gram with negative sampling the model computes word2vec's
gradient by hand and SGD adds its rows in place (see :mod:`rnnkit.nn.word_embedder`). The
loss's gradient is that of the *sum* over the batch, so ``train.lr`` is word2vec's
per-example step size (0.025), decayed linearly to zero (``train.schedule: linear``). With
``adam`` the gradients are dense; ``ngram``, whose dense hidden layer would get the summed
step of thousands of examples, must use it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

import numpy as np
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.config import section, setting
from rnnkit.data import contexts as ctx
from rnnkit.data.batching import epoch_seed
from rnnkit.data.corpus import Prepared, Shape, prepare
from rnnkit.data.text import read_text, resolve_data_path, split_tail
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError, ModelDirError
from rnnkit.nn.similarity import WordVectors
from rnnkit.nn.word_embedder import PAD_ID, EmbedModelConfig, WordEmbedder
from rnnkit.tasks import storage, vector_commands
from rnnkit.tasks.base import (
    Batches,
    Evaluation,
    TaskBase,
    Verb,
    for_inference,
    predictor,
)
from rnnkit.train import TrainConfig


@dataclass
class EmbedOptions:
    """How many neighbours a word query lists."""

    k: int = setting(10, "nearest neighbours to list per word", 1, 1000)


CHUNK = 1 << 17  # centre positions per chunk of examples (shuffled within the chunk)
BLOCK = 64  # cbow, skipgram: batches made at a time
EVAL_SEED = 20_231  # the held-out examples and their noise words are the same at every epoch
EVAL_BATCH = 8192
SEGMENT = 1 << 22  # training ids planned at a time (WikiText-2's 2M words are one segment)
HELD_OUT_TOKENS = 1 << 21  # ids of the held-out tail read for dev examples


@dataclass
class EmbedDataConfig:
    """The corpus and how examples are cut from it."""

    train: str = ""  # a text file, absolute or inside the data directory; one sentence a line
    dev: str = ""  # "" = the last dev_fraction of the training lines
    test: str = ""  # "" = score the validation text
    dev_fraction: float = setting(0.05, "", 0, 1, low_open=True, high_open=True)
    lowercase: bool = False  # fold the text to lower case before counting
    min_freq: int = setting(5, "rarer words are dropped from the text", 1)
    max_vocab: int | None = setting(None, "keep at most this many words (specials included)", 3)
    window: int = setting(5, "cbow, skipgram: context words on each side of the centre", 1)
    dynamic_window: bool = True  # each centre draws its window from 1..window (word2vec)
    subsample: float = setting(
        1e-3, "Mikolov's threshold t for dropping frequent words; 0 = off", 0
    )
    eval_examples: int = setting(50_000, "held-out examples scored after each epoch", 1)

    def validate(self) -> None:
        """Refuse a recipe without a corpus."""
        if not self.train:
            raise ConfigError("data.train must name a text file")


@dataclass
class EmbedConfig:
    """An embed recipe: its corpus, model and training."""

    task: Literal["embed"] = "embed"
    data: EmbedDataConfig = field(default_factory=EmbedDataConfig)
    model: EmbedModelConfig = field(default_factory=EmbedModelConfig)
    train: TrainConfig = section(
        TrainConfig,
        epochs=5,
        batch_size=4096,
        optimizer="sgd",
        lr=0.025,
        clip_norm=None,
        schedule="linear",
        metric="loss",
    )

    def validate(self) -> None:
        """Refuse an optimizer that cannot train the chosen method's gradients."""
        t = self.train
        if t.optimizer == "sgd" and self.model.method == "ngram":
            # The loss's gradient is the batch sum (a per-example step for the embedding rows);
            # a dense hidden layer then gets thousands of examples' gradients in one step.
            raise ConfigError(
                "model.method ngram has a dense hidden layer: train it with "
                "train.optimizer=adam (e.g. train.lr=0.002), not sgd"
            )
        if t.optimizer == "sgd":
            # Sparse gradients: torch can neither clip them nor apply momentum or decay to them.
            if t.clip_norm is not None:
                raise ConfigError(
                    "train.clip_norm must be null with train.optimizer sgd (the embeddings get "
                    "sparse gradients, which cannot be clipped; use adam to clip)"
                )
            if t.momentum or t.weight_decay:
                raise ConfigError(
                    "train.momentum and train.weight_decay must be 0 with train.optimizer sgd "
                    "(sparse gradients)"
                )


@dataclass
class _Plan:
    """One pass of examples over a corpus: the corpus after subsampling, the window sizes (or
    the targets kept, for ngram), and how many examples that makes."""

    ids: torch.Tensor
    sentences: torch.Tensor
    sizes: torch.Tensor | None
    targets: torch.Tensor | None
    count: int
    left: torch.Tensor | None = None  # cbow, skipgram: context words left of each centre
    right: torch.Tensor | None = None  # and right of it (see contexts.spans)


class _WindowEpoch:
    """One segment's cbow or skip-gram batches in text order, as word2vec reads the corpus:
    skip-gram pairs centre by centre, CBOW examples centre by centre (those with a context).
    Examples are made a block of ``BLOCK`` batches at a time, with their noise words."""

    def __init__(self, task: EmbedTask, plan: _Plan, generator: torch.Generator):
        self.task, self.plan = task, plan
        self.state = generator.get_state()  # iterating twice gives the same batches
        self.batch_size = task.config.train.batch_size
        assert plan.left is not None and plan.right is not None
        counts = plan.left + plan.right
        if task.config.model.method == "skipgram":  # examples are pairs
            self.ends = counts.cumsum(0)  # one past each centre's last pair
        else:  # examples are the centres with a context
            self.centres = (counts > 0).nonzero().squeeze(1)

    def __len__(self) -> int:
        return math.ceil(self.plan.count / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        g = torch.Generator()
        g.set_state(self.state)
        size, count = self.batch_size, self.plan.count
        for start in range(0, count, BLOCK * size):
            stop = min(start + BLOCK * size, count)
            block = self.block(start, stop)
            shape = (stop - start, self.task.config.model.negatives)
            block["negatives"] = self.task.sampler.draw(shape, g)
            for first in range(0, stop - start, size):
                yield cut(block, first, min(first + size, stop - start))

    def block(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        """Examples ``[start, stop)`` of the segment (without noise words)."""
        p = self.plan
        assert p.left is not None and p.right is not None  # a cbow or skipgram plan
        if self.task.config.model.method == "skipgram":
            c0 = int(torch.searchsorted(self.ends, start, right=True))
            c1 = int(torch.searchsorted(self.ends, stop - 1, right=True)) + 1
            centres, contexts = ctx.window_pairs(p.left, p.right, c0, c1)
            skip = start - (int(self.ends[c0 - 1]) if c0 else 0)
            pairs = slice(skip, skip + stop - start)
            return {
                "input": p.ids.index_select(0, centres[pairs]),
                "target": p.ids.index_select(0, contexts[pairs]),
            }
        rows = self.centres[start:stop]
        _, contexts = ctx.window_pairs(p.left, p.right, int(rows[0]), int(rows[-1]) + 1)
        sizes = p.left.index_select(0, rows) + p.right.index_select(0, rows)
        return {
            "input": p.ids.index_select(0, contexts),
            "offsets": sizes.cumsum(0) - sizes,
            "target": p.ids.index_select(0, rows),
        }


def cut(batch: dict[str, torch.Tensor], first: int, last: int) -> dict[str, torch.Tensor]:
    """Examples ``[first, last)`` of a batch (or a block of them): ``input`` laid out one
    after another with ``offsets`` (cbow) is cut at the examples' bounds, the rest by row."""
    part = {k: v[first:last] for k, v in batch.items() if k not in ("input", "offsets")}
    if "offsets" not in batch:
        part["input"] = batch["input"][first:last]
        return part
    offsets = batch["offsets"]
    begin = int(offsets[first])
    end = int(offsets[last]) if last < offsets.numel() else batch["input"].numel()
    part["input"] = batch["input"][begin:end]
    part["offsets"] = offsets[first:last] - begin
    return part


class _ChunkedEpoch:
    """One segment's shuffled example batches, made chunk by chunk."""

    def __init__(self, task: EmbedTask, plan: _Plan, generator: torch.Generator):
        self.task, self.plan = task, plan
        self.state = generator.get_state()  # iterating twice gives the same batches
        self.batch_size = task.config.train.batch_size

    def __len__(self) -> int:
        return math.ceil(self.plan.count / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        g = torch.Generator()
        g.set_state(self.state)
        size, left = self.batch_size, None
        for chunk in self.task.chunks(self.plan):
            if left is not None:
                chunk = {k: torch.cat([left[k], v]) for k, v in chunk.items()}
            order = torch.randperm(chunk["target"].numel(), generator=g)
            chunk = {k: v[order] for k, v in chunk.items()}
            full = chunk["target"].numel() // size * size
            for start in range(0, full, size):
                yield self.task.with_negatives(
                    {k: v[start : start + size] for k, v in chunk.items()}, g
                )
            left = {k: v[full:] for k, v in chunk.items()}
        if left is not None and left["target"].numel():
            yield self.task.with_negatives(left, g)


class TrainingText:
    """The training lines of a prepared corpus (:mod:`rnnkit.data.corpus`), read a segment of
    whole lines at a time: never more than :data:`SEGMENT` ids in memory (a longer line is a
    segment alone)."""

    def __init__(self, prepared: Prepared, first: int, stop: int, size: int | None = None):
        """Lines ``[first, stop)`` in segments of at most ``size`` ids (:data:`SEGMENT`)."""
        self.prepared = prepared
        size = size or SEGMENT
        offsets = prepared.offsets()
        self.tokens = int(offsets[stop] - offsets[first])
        self.segments: list[tuple[int, int]] = []
        while first < stop:  # the last line whose ids still fit, at least one line
            end = int(np.searchsorted(offsets, offsets[first] + size, side="right")) - 1
            end = min(max(end, first + 1), stop)
            self.segments.append((first, end))
            first = end

    def read(self, segment: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Lines ``[a, b)``: their ids and each id's line number, both ``(tokens,)`` long."""
        a, b = segment
        offsets = self.prepared.offsets()[a : b + 1]
        ids = self.prepared.read(int(offsets[0]), int(offsets[-1])).astype(np.int64)
        lengths = torch.from_numpy(np.diff(offsets))
        return torch.from_numpy(ids), torch.repeat_interleave(torch.arange(b - a), lengths)


class _Epoch:
    """One epoch of batches over the training text, planned a segment at a time (the first
    segment with the epoch's generator, so a text of one segment draws what the whole-corpus
    plan drew; each later one with a generator of its own). Under several processes every
    process makes each global batch and trains on its own contiguous share; a global batch
    with fewer examples than processes is left out."""

    def __init__(self, task: EmbedTask, epoch: int, rank: int, world: int):
        self.task, self.rank, self.world = task, rank, world
        text = task.training_text()
        seed = epoch_seed(task.config.train.seed, epoch)
        self.parts: list[tuple[tuple[int, int], torch.Tensor, int]] = []
        self.kept: Any = None  # a text of one segment keeps its plan: no second planning
        self.examples = 0  # in the epoch, of every process
        for k, segment in enumerate(text.segments):
            g = torch.Generator().manual_seed(seed if k == 0 else hash((seed, k)) % (1 << 63))
            before = g.get_state()
            batches = task.segment_batches(text.read(segment), g)
            last = batches.plan.count % task.config.train.batch_size
            dropped = world > 1 and 0 < last < world
            self.parts.append((segment, before, len(batches) - dropped))
            self.examples += batches.plan.count
            if len(text.segments) == 1:
                self.kept = batches
            del batches  # before the next segment's plan: one plan in memory at a time

    def __len__(self) -> int:
        return sum(n for _, _, n in self.parts)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.starting_at(0)

    def starting_at(self, first: int) -> Iterator[dict[str, torch.Tensor]]:
        """The epoch's batches from batch ``first`` on (a resumed run's): the segments
        wholly before it are neither read nor planned."""
        text = self.task.training_text()
        for segment, before, count in self.parts:
            if first >= count:
                first -= count
                continue
            batches = self.kept
            if batches is None:
                g = torch.Generator()
                g.set_state(before)
                batches = self.task.segment_batches(text.read(segment), g)
            for batch in itertools.islice(batches, first, None):
                n = batch["target"].numel()
                if self.world == 1:
                    yield batch
                elif n >= self.world:
                    r, w = self.rank, self.world
                    yield cut(batch, n * r // w, n * (r + 1) // w)
            first, batches = 0, None  # let this segment's plan go before the next is made


def split_lines(
    d: EmbedDataConfig, data_dir: Path | None, split: str, files: dict[str, list[str]]
) -> list[str]:
    """The lines (sentences) of ``train``, ``dev`` or ``test`` of the recipe ``d``; each file
    read once into ``files``."""

    def read(name: str) -> list[str]:
        if name not in files:
            text = read_text(resolve_data_path(name, data_dir))
            files[name] = (text.lower() if d.lowercase else text).splitlines()
        return files[name]

    if split == "test" and d.test:
        return read(d.test)
    if split in ("dev", "test") and d.dev:
        return read(d.dev)
    lines = read(d.train)
    return lines if d.dev else split_tail(lines, split, d.dev_fraction)


def prepare_training_lines(config: EmbedConfig, data_dir: Path | None) -> Prepared:
    """The recipe's training file prepared into the word ids of each line, the words under
    ``data.min_freq`` dropped (cached; see :mod:`rnnkit.data.corpus`)."""
    d = config.data
    hold_out = None if d.dev else d.dev_fraction
    shape = Shape("lines", "word", d.lowercase, False, d.min_freq, d.max_vocab, hold_out)
    path = resolve_data_path(d.train, data_dir)
    return prepare(path, shape, progress=config.train.progress)


class EmbedTask(TaskBase):
    """Reads the corpus, builds the embedder, trains via the Trainer, scores, answers queries."""

    name = "embed"
    Config = EmbedConfig
    EXTRA_FILES = ("counts.json",)  # word counts, for the noise distribution and subsampling
    Options = EmbedOptions
    cpu_bf16_pays = False  # no matmul worth it: 1.0x in bf16 (bench/precision.py)
    metric_goals = {"loss": "min", "perplexity": "min", "coverage": "max"}
    prepare_training_file = staticmethod(prepare_training_lines)  # rnnkit prepare
    verb = Verb(
        "neighbors", "cosine nearest neighbours of words", "words", label="Word",
        hint="Enter lists its neighbours.", button="Find neighbours",
        model_free=vector_commands.VECTORS_FILE,  # neighbors --vectors FILE
    )  # fmt: skip
    commands = vector_commands.COMMANDS  # rnnkit embed export, rnnkit analogy

    def __init__(
        self,
        config: EmbedConfig,
        vocabs: tuple[Vocab, ...],
        data_dir: Path | None = None,
        counts: Sequence[int] = (),
    ):
        self.config = config
        self.data_dir = data_dir
        self._files: dict[str, list[str]] = {}  # lines of each file read
        self._eval: dict[str, dict[str, Any]] = {}  # held-out examples of each split, made once
        self._table: torch.Tensor | None = None
        self._sampler: ctx.NoiseSampler | None = None
        self._corpus: Prepared | None = None
        (self.vocab,) = vocabs
        self.counts = torch.tensor(list(counts), dtype=torch.long)
        if self.counts.numel() != len(self.vocab):
            raise ModelDirError(f"{self.counts.numel()} word counts for {len(self.vocab)} words")
        sparse = config.train.optimizer == "sgd"
        self.model = WordEmbedder(len(self.vocab), config.model, sparse)

    @classmethod
    def build(cls, config: EmbedConfig, data_dir: Path | None = None) -> EmbedTask:
        """A new embedder on the training text's words: the text prepared (or read from the
        cache), with the dev examples made (a missing or useless dev text stops us before
        training)."""
        corpus = prepare_training_lines(config, data_dir)
        if len(corpus.vocab) <= len(corpus.vocab.specials):
            d = config.data
            raise DataError(f"no word occurs {d.min_freq}+ times (data.min_freq)", d.train)
        task = cls(config, (corpus.vocab,), data_dir, corpus.counts().tolist())
        task._corpus = corpus
        task._eval_set("dev")
        task._files.clear()
        return task

    # ------------------------------------------------------------------ data
    def corpus(self) -> Prepared:
        """The training file, prepared (read from the cache when it is there)."""
        if self._corpus is None:
            self._corpus = prepare_training_lines(self.config, self.data_dir)
        return self._corpus

    def training_text(self) -> TrainingText:
        """The training lines of the prepared corpus (those before the held-out tail)."""
        return TrainingText(self.corpus(), 0, self.corpus().split)

    def lines(self, split: str) -> list[str]:
        """The lines (sentences) of ``train``, ``dev`` or ``test``, read into memory."""
        return split_lines(self.config.data, self.data_dir, split, self._files)

    @property
    def sampler(self) -> ctx.NoiseSampler:
        """The noise-word sampler of training batches (built on first use)."""
        if self._sampler is None:
            self._sampler = ctx.NoiseSampler(self.counts, self.config.model.noise_power)
        return self._sampler

    @property
    def table(self) -> torch.Tensor:
        """The noise table for negative sampling (built on first use)."""
        if self._table is None:
            size = min(10_000_000, max(1_000_000, 1000 * len(self.vocab)))
            self._table = ctx.noise_table(self.counts, self.config.model.noise_power, size)
        return self._table

    def plan(self, ids: torch.Tensor, sentences: torch.Tensor, g: torch.Generator) -> _Plan:
        """Subsample and draw windows for one pass over a corpus; count its examples."""
        d, m = self.config.data, self.config.model
        keep = ctx.keep_probabilities(self.counts, d.subsample)
        if m.method == "ngram":  # the context is the real text; only targets are thinned
            targets = torch.rand(ids.numel(), generator=g) < keep[ids]
            n = m.context
            count = int(((sentences[n:] == sentences[:-n]) & targets[n:]).sum())
            return _Plan(ids, sentences, None, targets, count)
        if d.subsample > 0:
            ids, sentences = ctx.subsample(ids, sentences, keep, g)
        sizes = ctx.window_sizes(ids.numel(), d.window, d.dynamic_window, g)
        left, right = ctx.spans(sentences, sizes)
        contexts = left + right
        count = int(contexts.sum() if m.method == "skipgram" else (contexts > 0).sum())
        return _Plan(ids, sentences, sizes, None, count, left, right)

    def chunks(self, plan: _Plan) -> Iterator[dict[str, torch.Tensor]]:
        """The plan's examples, ``input`` and ``target``, one chunk of centres at a time."""
        method, ids = self.config.model.method, plan.ids
        sizes = cast(torch.Tensor, plan.sizes)  # None only for ngram, which reads no windows
        for start in range(0, ids.numel(), CHUNK):
            stop = min(start + CHUNK, ids.numel())
            if method == "skipgram":
                centres, contexts = ctx.skipgram_pairs(plan.sentences, sizes, start, stop)
                yield {"input": ids[centres], "target": ids[contexts]}
            elif method == "cbow":
                window = self.config.data.window
                centres, slots = ctx.cbow_rows(plan.sentences, sizes, window, start, stop)
                words = torch.where(slots >= 0, ids[slots.clamp(min=0)], PAD_ID)
                yield {"input": words, "target": ids[centres]}
            else:
                n = self.config.model.context
                where, before = ctx.ngram_rows(plan.sentences, n, plan.targets, start, stop)
                yield {"input": ids[before], "target": ids[where]}

    def with_negatives(self, batch: dict[str, torch.Tensor], g: torch.Generator) -> dict:
        """``batch`` with ``negatives`` ``(examples, model.negatives)``, noise word ids drawn with
        ``g``, added in place under negative sampling; as it is under a full softmax."""
        if self.config.model.loss == "negative":
            shape = (batch["target"].numel(), self.config.model.negatives)
            batch["negatives"] = ctx.draw_negatives(self.table, shape, g)
        return batch

    def segment_batches(
        self, text: tuple[torch.Tensor, torch.Tensor], g: torch.Generator
    ) -> _WindowEpoch | _ChunkedEpoch:
        """The batches of one segment of text ``(ids, sentences)``, planned with ``g``:
        shuffled chunks for ``ngram``, text order (as word2vec reads it) for cbow and
        skip-gram."""
        plan = self.plan(*text, g)
        if self.config.model.method == "ngram":
            return _ChunkedEpoch(self, plan, g)
        return _WindowEpoch(self, plan, g)

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Batches:
        """One epoch's examples over the training text, a segment of lines at a time; under
        several processes, each one's share of every global batch (the gradients of the
        shares add up to the global batch's: see :class:`rnnkit.train.Trainer`)."""
        return _Epoch(self, epoch, rank, world_size)

    # ------------------------------------------------------------ evaluation
    def _examples(
        self, text: tuple[torch.Tensor, torch.Tensor], words: int, where: str
    ) -> dict[str, Any]:
        """Held-out examples of a text ``(ids, sentences)`` of ``words`` words in all: the same
        recipe as training, a fixed generator, at most ``data.eval_examples`` of them; and the
        share of its words the vocabulary has."""
        ids, sentences = text
        g = torch.Generator().manual_seed(EVAL_SEED)
        plan = self.plan(ids, sentences, g)
        parts = list(self.chunks(plan))
        if not parts or sum(p["target"].numel() for p in parts) == 0:
            raise DataError("no examples in the text (too short, or no known words)", where)
        examples = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        total = examples["target"].numel()
        if total > self.config.data.eval_examples:
            pick = torch.randperm(total, generator=g)[: self.config.data.eval_examples]
            examples = {k: v[pick] for k, v in examples.items()}
        return {
            "examples": self.with_negatives(examples, g),
            "coverage": ids.numel() / max(1, words),
        }

    def _examples_of_lines(self, lines: list[str], where: str) -> dict[str, Any]:
        words = sum(len(line.split()) for line in lines)
        return self._examples(ctx.encode_lines(lines, self.vocab), words, where)

    def _held_out_tail(self) -> dict[str, Any]:
        """Examples of the training file's held-out lines, their first
        :data:`HELD_OUT_TOKENS` ids at most (whole lines), read from the prepared corpus."""
        corpus, train = self.corpus(), self.config.data.train
        if corpus.vocab.itos != self.vocab.itos:
            raise DataError("the file has changed since the model was trained on it", train)
        tail = TrainingText(corpus, corpus.split, corpus.lines, HELD_OUT_TOKENS)
        first, stop = tail.segments[0] if tail.segments else (corpus.split, corpus.split)
        words = corpus.words()
        return self._examples(tail.read((first, stop)), int(words[stop] - words[first]), train)

    def _eval_set(self, split: str) -> dict[str, Any]:
        if split not in self._eval:
            d = self.config.data
            name = d.test if split == "test" and d.test else d.dev
            if name:
                self._eval[split] = self._examples_of_lines(self.lines(split), name)
            else:
                self._eval[split] = self._held_out_tail()
        return self._eval[split]

    def evaluate(self, split: str = "dev") -> Evaluation:
        """Held-out loss and coverage on a split (see :meth:`_score`)."""
        return Evaluation(self._score(self._eval_set(split)))

    def evaluate_file(self, path: str | Path) -> Evaluation:
        """Held-out loss and coverage on a text file (see :meth:`_score`)."""
        text = read_text(path)
        lines = (text.lower() if self.config.data.lowercase else text).splitlines()
        return Evaluation(self._score(self._examples_of_lines(lines, str(path))))

    @torch.no_grad()
    def _score(self, held_out: dict[str, Any]) -> dict[str, float]:
        """``loss``: the training objective per example (negative sampling with fixed noise
        words, or cross-entropy); ``coverage``: the share of the text's words in the
        vocabulary; and for the softmax, ``perplexity``."""
        device = for_inference(self.model)
        examples = held_out["examples"]
        count = examples["target"].numel()
        total = 0.0
        for start in range(0, count, EVAL_BATCH):
            part = {k: v[start : start + EVAL_BATCH].to(device) for k, v in examples.items()}
            total += float(self.model.example_losses(part).sum())
        loss = total / count
        metrics = {"loss": loss}
        if self.config.model.loss == "softmax":
            metrics["perplexity"] = math.exp(min(loss, 50.0))
        metrics["coverage"] = held_out["coverage"]
        return metrics

    # --------------------------------------------------------------- queries
    def word_vectors(self) -> WordVectors:
        """The trained input vectors of the vocabulary's words (specials left out)."""
        first = len(self.vocab.specials)
        return WordVectors(self.vocab.itos[first:], self.model.embed.weight[first:])

    @predictor
    def predict(self, texts: list[str], options: EmbedOptions) -> list[dict[str, Any]]:
        """The ``k`` nearest neighbours by cosine of each word (surrounding spaces ignored).

        Returns one dict per input: ``word``, ``known`` (whether the vocabulary has it; looked
        up as written, then case-insensitively) and ``neighbors``, a list of ``{"word",
        "similarity"}``, most similar first (empty for an unknown word).
        """
        words, k = [w.strip() for w in texts], options.k
        vectors = self.word_vectors()
        known = [w for w in words if w and vectors.find(w) is not None]
        found = dict(zip(known, vectors.neighbors(known, k), strict=True))
        return [
            {
                "word": w,
                "known": w in found,
                "neighbors": [{"word": n, "similarity": s} for n, s in found.get(w, [])],
            }
            for w in words
        ]

    @staticmethod
    def format(text: str, result: dict[str, Any]) -> str:
        """The query word, then one line per neighbour and its cosine similarity."""
        if not result["known"]:
            return f"{result['word']}\n  (not in the vocabulary)"
        ranked = result["neighbors"]
        width = max((len(n["word"]) for n in ranked), default=0)
        rows = [f"  {n['word']:<{width}}  {n['similarity']:.4f}" for n in ranked]
        return "\n".join([result["word"], *rows])

    # --------------------------------------------------------------- storage
    def model_files(self) -> dict[str, bytes]:
        """The files of every task's model directory, and the word counts."""
        return storage.model_files(self) | {"counts.json": ckpt.json_bytes(self.counts.tolist())}

    @classmethod
    def from_dir(
        cls, directory: str | Path, data_dir: Path | None = None, device: str = "cpu"
    ) -> EmbedTask:
        """A saved embedder, its word counts read from ``counts.json``."""
        counts = ckpt.read_json(Path(directory) / "counts.json")
        if not isinstance(counts, list) or not all(isinstance(n, int) for n in counts):
            raise ModelDirError(f"{directory}/counts.json is not a list of word counts")
        return storage.from_dir(cls, directory, data_dir, device, counts=counts)

    # ------------------------------------------------------------------------------ export
    def onnx_plan(self, data: bool = True) -> NoReturn:
        """None: the product of this task is its vectors, a text file already (``rnnkit embed
        export``); raises :class:`~rnnkit.export.ExportError` saying so."""
        from rnnkit.export import ExportError

        raise ExportError(
            f"the {self.name} task has no ONNX export: its vectors are a text file "
            "(rnnkit embed export)"
        )
