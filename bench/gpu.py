"""Benchmark for a lent GPU (H100/H200): rnnkit's Trainer against bare PyTorch loops at the
recipes' shapes, bf16 autocast against fp32, torch.compile against eager, and the Shakespeare
char recipe trained for a GPU budget. Made to finish inside a 10-minute device call.

Parts, each stopped at its own budget, the whole run at ``--budget-s``; run order a, b, c, e, d:

a. **char LM throughput**, ``configs/shakespeare-char.yaml``'s shapes, bf16: rnnkit's
   ``Trainer.train_step`` against ``PlainLoop`` of bench/lm.py with the Trainer's optimizer.
b. **tagger throughput**, ``configs/ewt-upos.yaml``'s shapes, bf16: rnnkit (batches made as
   training goes, and made beforehand) against ``BareTagger`` (the same network in plain
   modules) over the batches made beforehand. Target for (a) and (b): rnnkit ≥ 80% of bare.
c. **bf16 autocast vs fp32** for both workloads, both sides.
d. **compiled vs eager**: rnnkit with ``train.compile=true`` against (a)/(b)'s rows.
e. **the recipe trained** (``--train-recipe``; ``--lm``, then ``--train`` overrides) by
   ``Trainer.fit`` for ``--train-minutes``; its validation loss, target ≤ 1.40 nats/char.

``$OUT`` (default ``./gpu-report``) receives ``gpu-report.json`` and ``gpu-report.md`` after
every part, so a run killed at its limit still ships what it finished, plus the recipe run's
``lm-metrics.jsonl`` and ``lm-curve.png``. Data missing from ``--data-dir`` is replaced by
synthetic files of the same shapes (the report says so). ``--dry-run`` (``--quick``) runs
every part at tiny sizes and exits non-zero unless every part completed::

    PYTHONPATH=. python3 bench/gpu.py --data-dir data          # on the GPU machine, ~9 min
    .venv/bin/python bench/gpu.py --dry-run                     # CPU, tiny sizes, ~20-40 s
    OUT=/tmp/r python3 bench/gpu.py --budget-s 300 --train-minutes 2 --lm model.hidden_size=512
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import common as bench
import lm as lm_bench
import torch
from common import progress
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.data.text import resolve_data_path
from rnnkit.nn.tagger import TagModelConfig
from rnnkit.runtime import pick_device
from rnnkit.tasks import build_task
from rnnkit.tasks.lm import LMConfig, LMTask
from rnnkit.tasks.tag import TagConfig, TagTask
from rnnkit.train import TrainConfig, Trainer, autocast_dtype, make_optimizer

LM_RECIPE = "configs/shakespeare-char.yaml"
TAG_RECIPE = "configs/ewt-upos.yaml"
RATIO_TARGET = 0.80  # rnnkit's throughput over the bare loop's
LOSS_TARGET = 1.40  # validation nats/char of the recipe trained for its GPU budget
NANOGPT_LOSS = 1.4697  # nanoGPT's Shakespeare-char validation loss on a GPU, for scale
# Sizes and step counts of --dry-run: everything tiny, a few steps per part.
DRY_LM = ["model.embedding_dim=16", "model.hidden_size=32", "train.batch_size=4", "data.bptt=16"]
DRY_TAG = (  # command-line overrides, as a person would type them
    "model.embedding_dim=16 model.char_dim=8 model.char_hidden=8 model.hidden_size=16 "
    "train.batch_size=8"
).split()
TUNED = {  # flag: (value, --dry-run value, help)
    "budget_s": (540.0, 300.0, "whole-run guard, s"),
    "seconds": (8.0, 0.3, "timed seconds per row"),
    "warmup_steps": (5, 1, "untimed steps per row"),
    "warmup_s": (1.5, 0.0, "... and untimed seconds"),
    "compile_warmup_lm": (10, 2, "compiled LM warm-up steps"),
    "compile_warmup_tag": (40, 3, "compiled tagger warm-up steps"),
    "min_steps": (3, 2, "timed steps at least"),
    "train_minutes": (4.0, 0.05, "(e) budget, minutes"),
    "premade_batches": (400, 400, "tagger batches made beforehand"),
}
# Longest each part may run (capped by what is left of --budget-s); dry-run parts get the same.
PART_BUDGET_S = {"a": 60.0, "b": 120.0, "c": 120.0, "d": 240.0}
COMPILE_RESERVE_S = 150.0  # kept back from (e) for (d)
UNIT = {"char LM": "tokens", "tagger": "sentences"}  # what a workload's throughput counts
COUNT = {  # (items, tokens) of a batch, read without waiting for the device
    "char LM": lambda b: (b["target"].shape[0], b["target"].numel()),
    "tagger": lambda b: (b["words"].shape[0], 0),
}
SMOKE = "tiny sizes, a fraction of a second per row (CPU): a check that every part runs"
SYNTHETIC_TAGS = "NOUN PUNCT VERB PRON ADP DET PROPN ADJ AUX ADV CCONJ PART NUM SCONJ X INTJ SYM"


def device_name(device: torch.device) -> str:
    """The device as every figure names it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({bench.cpu_model()}, {torch.get_num_threads()} threads)"


def cudnn_version() -> int | None:
    return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None


# ---------------------------------------------------------------------------- time guard
class PartTimeout(Exception):
    """A part ran past its budget."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`PartTimeout` in this (main) thread once ``seconds`` have passed."""

    def expire(signum: int, frame: Any) -> None:
        raise PartTimeout

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -------------------------------------------------------------------------------- results
@dataclass
class Row:
    """One timed training loop."""

    workload: str  # "char LM" or "tagger"
    side: str  # "rnnkit Trainer", "bare loop", ...
    precision: str  # "bf16 autocast" or "fp32"
    device: str
    compiled: bool = False
    unit: str = ""  # what ``units`` counts: the workload's
    units: int = 0
    steps: int = 0
    seconds: float = 0.0
    warmup_steps: int = 0
    warmup_s: float = 0.0  # compilation included, for compiled rows

    def __post_init__(self) -> None:
        self.unit = self.unit or UNIT[self.workload]

    @property
    def per_s(self) -> float:
        return self.units / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Part:
    key: str
    title: str
    status: str = "pending"  # ok, skipped, stopped (at its budget), error
    note: str = ""
    error: str = ""
    seconds: float = 0.0
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def bench_config(base: TrainConfig, device: torch.device, bf16: bool, compiled: bool) -> Any:
    """The recipe's train section for one timed loop: no TensorBoard, this device and
    precision (the learning rate stays the optimizer's: constant)."""
    precision = "bf16" if bf16 else "fp32"
    return dataclasses.replace(
        base, tensorboard="", device=str(device), precision=precision, compile=compiled
    )


# ------------------------------------------------------------------------ bare tagger
class BareTagger(nn.Module):
    """The recipe's tagger in plain modules: word embedding + character BiLSTM features →
    dropout → multi-layer BiLSTM → dropout → linear; cross-entropy over real tokens."""

    def __init__(self, words: int, chars: int, tags: int, m: TagModelConfig):
        super().__init__()
        if m.chars not in ("lstm", "none") or m.rnn != "lstm":
            raise ValueError("the bare tagger covers chars lstm/none with an lstm encoder only")
        self.word_dropout = m.word_dropout
        self.embed = nn.Embedding(words, m.embedding_dim, padding_idx=0)
        width = m.embedding_dim
        self.char_embed: nn.Embedding | None = None
        if m.chars == "lstm":
            self.char_embed = nn.Embedding(chars, m.char_dim, padding_idx=0)
            self.char_rnn = nn.LSTM(m.char_dim, m.char_hidden, batch_first=True, bidirectional=True)
            width += 2 * m.char_hidden
        self.drop = nn.Dropout(m.dropout)
        self.rnn = nn.LSTM(
            width,
            m.hidden_size,
            num_layers=m.layers,
            dropout=m.dropout if m.layers > 1 else 0.0,
            batch_first=True,
            bidirectional=True,
        )
        self.out = nn.Linear(2 * m.hidden_size, tags)

    def forward(
        self, b: dict[str, torch.Tensor], lengths: torch.Tensor, char_lengths: torch.Tensor | None
    ) -> torch.Tensor:
        words, mask = b["words"], b["mask"]
        if self.training and self.word_dropout > 0:
            drop = torch.rand(words.shape, device=words.device) < self.word_dropout
            words = words.masked_fill(drop & mask, 1)
        x = self.embed(words)
        if self.char_embed is not None:
            packed = pack_padded_sequence(
                self.char_embed(b["chars"]), char_lengths, batch_first=True, enforce_sorted=False
            )
            _, (h, _) = self.char_rnn(packed)
            x = torch.cat([x, torch.cat([h[0], h[1]], dim=-1)[b["forms"]]], dim=-1)
        packed = pack_padded_sequence(self.drop(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=words.shape[1])
        scores = self.out(self.drop(out))
        return F.cross_entropy(scores[mask], b["tags"][mask])


class BareTagLoop(lm_bench.PlainUpdate):
    """A hand-written loop over padded batches made beforehand and already on the device."""

    def __init__(self, task: TagTask, batches: list[dict[str, torch.Tensor]], config: Any):
        device = batches[0]["words"].device
        torch.manual_seed(config.train.seed)
        tags, m = len(task.tag_vocab), config.model
        model = BareTagger(len(task.vocab), len(task.char_vocab), tags, m).to(device)
        optimizer = make_optimizer(model, config.train, device)
        super().__init__(model, optimizer, config.train.clip_norm, device)
        self.half = autocast_dtype(config.train, device)  # the Trainer's own rule
        self.batches = itertools.cycle(
            [
                (b, b["mask"].sum(1).cpu(), b["char_lengths"].cpu().clamp(min=1))
                if "char_lengths" in b
                else (b, b["mask"].sum(1).cpu(), None)
                for b in batches
            ]
        )

    def step(self) -> tuple[int, int]:
        batch, lengths, char_lengths = next(self.batches)
        self.update(lambda: self.model(batch, lengths, char_lengths))
        return int(batch["words"].shape[0]), 0


# ----------------------------------------------------------------------------------- data
def conllu_to_columns(source: Path, target: Path) -> None:
    """A CoNLL-U file's words and UPOS tags as ``token<TAB>tag`` lines (no ``conllu``
    package needed): multiword ranges and empty nodes left out, as rnnkit's reader does."""
    lines = []
    for line in source.read_text(encoding="utf-8").split("\n"):
        fields = line.split("\t")
        if len(fields) == 10 and fields[0].isdigit():  # comments have no ten fields
            lines.append(f"{fields[1]}\t{fields[3]}")
        elif not line.strip() and lines and lines[-1]:
            lines.append("")
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def synthetic_text(path: Path, chars: int, seed: int) -> None:
    """Random 'words' over 65 characters (tinyshakespeare's count), lines of them."""
    rng = random.Random(seed)
    alphabet = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    alphabet += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    alphabet += list(".,;:!?'-&$3")
    pieces, size = ["".join(alphabet) + "\n"], 0
    while size < chars:
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
        pieces.append(word + ("\n" if rng.random() < 0.1 else " "))
        size += len(pieces[-1])
    path.write_text("".join(pieces), encoding="utf-8")


def synthetic_tagged(path: Path, sentences: int, seed: int) -> None:
    """Random sentences in ``token<TAB>tag`` columns: words from a 20k-word vocabulary with
    Zipf-like frequencies, 17 tags, lengths about EWT's (mean ~16, long tail)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 12))) for _ in range(20000)]
    tags = SYNTHETIC_TAGS.split()
    lines = []
    for _ in range(sentences):
        for _ in range(1 + min(int(rng.expovariate(1 / 15)), 120)):
            word = vocab[int(len(vocab) ** rng.random()) - 1]  # log-uniform ranks: Zipf-like
            lines.append(f"{word}\t{rng.choice(tags)}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def as_columns(config: TagConfig, train: Path, dev: Path) -> None:
    d = config.data
    d.format, d.train, d.dev, d.test = "columns", str(train), str(dev), ""
    d.separator, d.token_column, d.tag_column, d.comment, d.scheme = "tab", 0, 1, "", "none"


# ---------------------------------------------------------------------------------- bench
class Bench:
    def __init__(self, args: argparse.Namespace, out_dir: Path):
        self.args = args
        self.out_dir = out_dir
        self.start = time.perf_counter()  # of the whole run's budget, --budget-s
        self.device = pick_device(args.device)
        self.name = device_name(self.device)
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
        self.data: dict[str, str] = {}
        self.parts: dict[str, Part] = {
            "a": Part("a", "char LM training throughput, rnnkit vs bare, bf16 autocast"),
            "b": Part("b", "tagger training throughput, rnnkit vs bare, bf16 autocast"),
            "c": Part("c", "bf16 autocast vs fp32, both workloads, both sides"),
            "d": Part("d", "torch.compile (train.compile=true) vs eager, rnnkit, bf16"),
            "e": Part("e", "Shakespeare char recipe trained for its GPU budget"),
        }
        self.started = datetime.now(timezone.utc)
        self.ticks, self.others = bench.cpu_ticks(), None

    # ----------------------------------------------------------------- set-up
    def lm_config(self, recipe: str = LM_RECIPE, extra: list[str] | None = None) -> LMConfig:
        sets = [*(DRY_LM if self.args.quick else []), *self.args.lm, *(extra or [])]
        config = bench.load_recipe(recipe, "lm", sets)
        config.train.device = str(self.device)
        data_dir = self.args.data_dir
        if resolve_data_path(config.data.train, data_dir).exists():
            self.data["lm"] = f"{config.data.train} under {self.args.data_dir}"
        else:
            path = self.tmp / "synthetic.txt"
            if not path.exists():
                synthetic_text(path, 200_000 if self.args.quick else 1_115_394, 0)
            self.data["lm"] = f"synthetic text ({config.data.train} not found): same shapes"
            config.data.train = str(path)
        return config

    def tag_config(self) -> TagConfig:
        sets = [*(DRY_TAG if self.args.quick else []), *self.args.tag]
        config = bench.load_recipe(TAG_RECIPE, "tag", sets)
        config.train.device = str(self.device)
        data_dir = self.args.data_dir
        train = resolve_data_path(config.data.train, data_dir)
        dev = resolve_data_path(config.data.dev, data_dir)
        if train.exists() and dev.exists():
            if importlib.util.find_spec("conllu") is not None:
                config.data.test = ""  # not needed here
                self.data["tag"] = f"{config.data.train} under {self.args.data_dir}"
            else:
                conllu_to_columns(train, self.tmp / "train.tsv")
                conllu_to_columns(dev, self.tmp / "dev.tsv")
                as_columns(config, self.tmp / "train.tsv", self.tmp / "dev.tsv")
                self.data["tag"] = (
                    f"{train.name} under {self.args.data_dir}, read as token/UPOS columns "
                    "(no conllu package here)"
                )
        else:
            n = 600 if self.args.quick else 12_544
            synthetic_tagged(self.tmp / "train.tsv", n, 0)
            synthetic_tagged(self.tmp / "dev.tsv", max(50, n // 6), 1)
            as_columns(config, self.tmp / "train.tsv", self.tmp / "dev.tsv")
            self.data["tag"] = f"synthetic sentences ({train} not found): EWT-like lengths"
        return config

    # ----------------------------------------------------------- measurements
    def kit_row(
        self,
        workload: str,
        task: Any,
        config: Any,
        bf16: bool,
        compiled: bool = False,
        premade: list[dict[str, Any]] | None = None,
    ) -> Row:
        """rnnkit's own training step (``Trainer.train_step``) from the initial weights."""
        side = "rnnkit Trainer" + (", batches made beforehand" if premade is not None else "")
        task.model.load_state_dict(self.initial[workload])
        if hasattr(task.model, "carry"):
            task.model.carry = None
        train = bench_config(config.train, self.device, bf16, compiled)
        torch.manual_seed(train.seed)
        trainer = Trainer(task, train, self.tmp, log=lambda _: None)
        batches = bench.endless(task.train_batches) if premade is None else itertools.cycle(premade)
        step = bench.training_step(trainer, batches, COUNT[workload])
        kind = "tag" if workload == "tagger" else "lm"
        warmup = (
            getattr(self.args, f"compile_warmup_{kind}") if compiled else self.args.warmup_steps
        )
        return self.timed_row(
            Row(workload, side, precision(bf16), self.name, compiled), step, warmup
        )

    def timed_row(self, row: Row, step: bench.Step, warmup: int) -> Row:
        """``row`` filled in by the shared harness: warm-up, then the timed window."""
        progress(f"  {row.workload}, {row.side}, {row.precision}"
                 f"{', compiled' if row.compiled else ''} on {self.name}")  # fmt: skip
        start = time.perf_counter()
        row.warmup_steps = bench.warm(step, warmup, self.args.warmup_s)
        bench.synchronize(self.device)
        row.warmup_s = time.perf_counter() - start
        rate = bench.run_for(step, self.args.seconds, None, self.args.min_steps, self.device)
        row.units = rate.tokens if row.unit == "tokens" else rate.items
        row.steps, row.seconds = rate.steps, rate.seconds
        progress(f"    {row.per_s:,.0f} {row.unit}/s ({row.steps} steps, {row.seconds:.1f} s)")
        return row

    def lm_pair(self, part: Part, bf16: bool) -> None:
        kit = self.kit_row("char LM", self.lm_task, self.lm, bf16)
        config = dataclasses.replace(
            self.lm, train=bench_config(self.lm.train, self.device, bf16, False)
        )
        loop = lm_bench.PlainLoop(self.lm_task, config, self.device)
        loop.optimizer = make_optimizer(loop.model, config.train, self.device)  # the Trainer's
        loop.half = autocast_dtype(config.train, self.device)
        bare = self.timed_row(Row("char LM", "bare loop", precision(bf16), self.name), loop.step, 0)
        part.rows += [kit, bare]
        part.figures[f"char LM {precision(bf16)}: rnnkit / bare"] = kit.per_s / bare.per_s

    def tag_pair(self, part: Part, bf16: bool, premade: bool) -> None:
        kit = self.kit_row("tagger", self.tag_task, self.tag, bf16)
        part.rows.append(kit)
        if premade:
            ready = self.kit_row("tagger", self.tag_task, self.tag, bf16, premade=self.tag_batches)
            part.rows.append(ready)
        config = dataclasses.replace(
            self.tag, train=bench_config(self.tag.train, self.device, bf16, False)
        )
        loop = BareTagLoop(self.tag_task, self.tag_batches, config)
        bare = self.timed_row(Row("tagger", "bare loop", precision(bf16), self.name), loop.step, 0)
        part.rows.append(bare)
        part.figures[f"tagger {precision(bf16)}: rnnkit / bare"] = kit.per_s / bare.per_s
        if premade:
            key = f"tagger {precision(bf16)}: rnnkit, batches made beforehand / bare"
            part.figures[key] = ready.per_s / bare.per_s

    # ------------------------------------------------------------------ parts
    def part_a(self, part: Part) -> None:
        self.lm_pair(part, bf16=True)
        ratio = part.figures["char LM bf16 autocast: rnnkit / bare"]
        part.figures["target"] = f"rnnkit ≥ {RATIO_TARGET:.0%} of bare"
        part.figures["met"] = ratio >= RATIO_TARGET
        flops, _ = lm_bench.flops_per_token(self.lm.model, len(self.lm_task.vocab))
        part.figures["model TFLOP/s, rnnkit (training = 3 x forward)"] = (
            part.rows[0].per_s * flops / 1e12
        )

    def part_b(self, part: Part) -> None:
        self.tag_pair(part, bf16=True, premade=True)
        ratio = part.figures["tagger bf16 autocast: rnnkit / bare"]
        part.figures["target"] = f"rnnkit ≥ {RATIO_TARGET:.0%} of bare"
        part.figures["met"] = ratio >= RATIO_TARGET

    def part_c(self, part: Part) -> None:
        self.lm_pair(part, bf16=False)
        self.tag_pair(part, bf16=False, premade=False)
        eager = self.parts["a"].rows + self.parts["b"].rows
        for row in part.rows:
            twin = next(
                (r for r in eager if (r.workload, r.side) == (row.workload, row.side)), None
            )
            if twin is not None:
                part.figures[f"{row.workload}, {row.side}: bf16 / fp32"] = twin.per_s / row.per_s

    def part_d(self, part: Part) -> None:
        eager = {r.workload: r for r in self.parts["a"].rows + self.parts["b"].rows
                 if r.side == "rnnkit Trainer"}  # fmt: skip
        for workload, task, config in (
            ("char LM", self.lm_task, self.lm),
            ("tagger", self.tag_task, self.tag),
        ):
            row = self.kit_row(workload, task, config, True, compiled=True)
            part.rows.append(row)
            if workload in eager:
                part.figures[f"{workload}: compiled / eager"] = row.per_s / eager[workload].per_s
            part.figures[f"{workload}: warm-up incl. compilation, s"] = row.warmup_s

    def part_e(self, part: Part, seconds: float) -> None:
        a = self.args
        extra = ["train.progress=false", "train.epochs=100000000", "train.target=null",
                 "train.patience=null"]  # fmt: skip
        if a.quick:
            extra += ["train.max_steps=8"]
        config = self.lm_config(a.train_recipe, [*a.train, *extra])
        config.train.max_minutes = seconds / 60
        part.figures["recipe"] = " ".join([a.train_recipe, *a.lm, *a.train])
        part.figures["data"] = self.data["lm"]  # a synthetic stand-in's loss means nothing
        part.figures["budget, minutes"] = round(seconds / 60, 3)
        progress(f"  training {a.train_recipe} for {seconds / 60:.2f} min on {self.name}")
        task = build_task("lm", config, a.data_dir)
        run = self.tmp / "lm-run"
        trainer = Trainer(task, config.train, run, log=lambda m: progress("    " + m))
        summary = trainer.fit()
        history = trainer.state.history
        if not history:
            raise RuntimeError("the recipe run left no dev record")
        last = history[-1]
        tokens = summary["steps"] * config.train.batch_size * config.data.bptt
        part.figures.update(
            {
                "device": self.name,
                "epochs": last["epoch"],
                "steps": summary["steps"],
                "training s (Trainer clock, dev evaluations and checkpoints included)": last[
                    "elapsed_s"
                ],
                "tokens/s": tokens / last["elapsed_s"] if last["elapsed_s"] else float("nan"),
                "best validation loss": summary["best"],
                "best epoch": summary["best_epoch"],
                "final validation loss": last["loss"],
                "target": f"≤ {LOSS_TARGET} nats/char (nanoGPT on a GPU: {NANOGPT_LOSS})",
                "met": summary["best"] is not None and summary["best"] <= LOSS_TARGET,
            }
        )
        for name, shipped in (("metrics.jsonl", "lm-metrics.jsonl"), ("curve.png", "lm-curve.png")):
            if (run / name).exists():
                shutil.copyfile(run / name, self.out_dir / shipped)
        progress(
            f"    best validation loss {show(summary['best'])} (epoch {summary['best_epoch']}), "
            f"{summary['steps']} steps on {self.name}"
        )

    # ------------------------------------------------------------- scheduling
    def run_part(self, key: str, budget_s: float, body: Callable[[Part], None]) -> None:
        part = self.parts[key]
        allowed = min(budget_s, self.left())
        progress(f"({key}) {part.title} — up to {max(0.0, allowed):.0f} s")
        if allowed < (2 if self.args.quick else 20):
            part.status = "skipped"
            part.note = f"only {max(0.0, self.left()):.0f} s left of the budget"
            self.write()
            return
        start = time.perf_counter()
        try:
            with deadline(allowed):
                body(part)
            part.status = "ok"
        except PartTimeout:
            part.status = "stopped"
            part.note = f"at its budget of {allowed:.0f} s; rows finished are kept"
        except Exception as err:  # one part's failure must not cost the others
            part.status = "error"
            part.error = traceback.format_exc(limit=8)
            part.note = f"{type(err).__name__}: {err}"
            progress(part.error)
        part.seconds = time.perf_counter() - start
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.write()

    def run(self) -> None:
        a = self.args
        progress(f"device {self.name}; budget {a.budget_s:.0f} s; report in {self.out_dir}")
        self.lm = self.lm_config()
        self.tag = self.tag_config()
        progress("building the tasks")
        self.lm_task: LMTask = build_task("lm", self.lm, a.data_dir)
        self.tag_task: TagTask = build_task("tag", self.tag, a.data_dir)
        self.initial = {
            "char LM": {k: v.clone() for k, v in self.lm_task.model.state_dict().items()},
            "tagger": {k: v.clone() for k, v in self.tag_task.model.state_dict().items()},
        }
        epoch = list(self.tag_task.train_batches(1))
        self.tag_batches = [
            {k: v.to(self.device) for k, v in b.items()} for b in epoch[: a.premade_batches]
        ]
        self.write()
        self.run_part("a", PART_BUDGET_S["a"], self.part_a)
        self.run_part("b", PART_BUDGET_S["b"], self.part_b)
        self.run_part("c", PART_BUDGET_S["c"], self.part_c)
        reserve = 0.0 if a.quick else COMPILE_RESERVE_S
        train_s = min(a.train_minutes * 60, self.left() - reserve - 30)
        if a.quick:
            train_s = a.train_minutes * 60
        e = self.parts["e"]
        if train_s < (1 if a.quick else 60):
            e.status = "skipped"
            e.note = f"only {max(0.0, self.left()):.0f} s left of the budget"
            self.write()
        else:
            slack = 30 if a.quick else 120  # the last dev evaluation and checkpoint
            self.run_part("e", train_s + slack, lambda part: self.part_e(part, train_s))
        self.run_part("d", PART_BUDGET_S["d"], self.part_d)

    # --------------------------------------------------------------- reports
    def shapes(self) -> dict[str, str]:
        lengths = [int(b["mask"].sum(1).float().mean()) for b in self.tag_batches[:50]]
        mean = sum(lengths) / max(1, len(lengths))
        return {
            "char LM": bench.describe(self.lm, self.lm_task),
            "tagger": f"{bench.describe(self.tag, self.tag_task)}; mean length ~{mean:.0f}",
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "device": self.name,
            "device_type": self.device.type,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": cudnn_version(),
            "tf32": {
                "matmul": torch.backends.cuda.matmul.allow_tf32,
                "cudnn": torch.backends.cudnn.allow_tf32,
            },
            "cpu": f"{os.cpu_count()} cores ({bench.cpu_model()})",
            "dry_run": self.args.quick,
            "command": " ".join(["python", *sys.argv]),
            "started": self.started.isoformat(timespec="seconds"),
            "elapsed_s": round(self.used(), 1),
            "budget_s": self.args.budget_s,
            "data": self.data,
            "shapes": self.shapes() if hasattr(self, "tag_batches") else {},
            "parts": [
                {
                    **dataclasses.asdict(p),
                    "rows": [{**dataclasses.asdict(r), "per_s": r.per_s} for r in p.rows],
                }  # fmt: skip
                for p in self.parts.values()
            ],
        }

    def markdown(self) -> str:
        machine = (
            f"device **{self.name}**; CUDA {torch.version.cuda}, "
            f"cuDNN {cudnn_version()}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
            f"TF32 cuDNN {torch.backends.cudnn.allow_tf32}, {bench.threads(self.args)}"
        )
        lines = [
            *bench.header(f"GPU benchmark: rnnkit on {self.name}", self.args, self.others, machine),
            f"- time: {self.used():.0f} s of a {self.args.budget_s:.0f} s budget",
        ]
        if self.device.type != "cuda":
            lines.append("- **no CUDA device**: CPU figures (bf16 rows: `train.precision: bf16`)")
        lines += [f"- data, {k}: {v}" for k, v in self.data.items()]
        if hasattr(self, "tag_batches"):
            lines += [f"- shapes, {k}: {v}" for k, v in self.shapes().items()]
        lines += [
            f"- timing: untimed warm-up of ≥ {self.args.warmup_steps} steps and ≥ "
            f"{self.args.warmup_s:g} s (compiled: ≥ {self.args.compile_warmup_lm} LM, "
            f"{self.args.compile_warmup_tag} tagger steps), then ≥ {self.args.seconds:g} s per "
            "row, the device synchronised at both ends; rnnkit rows time `Trainer.train_step` "
            "(the optimizer's constant learning rate, no dev evaluation); rows run in the order "
            "listed, each from the same initial weights",
            "",
        ]
        head = ["part", "workload", "side", "precision", "compiled", "device", "throughput"]
        lines += bench.table(
            [*head, "steps", "timed s", "warm-up s"],
            (
                [
                    p.key,
                    r.workload,
                    r.side,
                    r.precision,
                    "yes" if r.compiled else "no",
                    r.device,
                    f"{r.per_s:,.0f} {r.unit}/s",
                    f"{r.steps:,}",
                    f"{r.seconds:.1f}",
                    f"{r.warmup_s:.1f}",
                ]  # fmt: skip
                for p in self.parts.values()
                for r in p.rows
            ),
            left=6,
        )
        lines.append("")
        for p in self.parts.values():
            shown = "; ".join(f"{k}: {show(v)}" for k, v in p.figures.items())
            status = p.status + (f" ({p.note})" if p.note else "")
            lines.append(
                f"- **({p.key}) {p.title}** on {self.name}: {status}, {p.seconds:.0f} s"
                + (f"; {shown}" if shown else "")
            )
        lines.append("")
        return "\n".join(lines)

    def write(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.as_json(), indent=2, default=str)
        (self.out_dir / "gpu-report.json").write_text(data + "\n", encoding="utf-8")
        (self.out_dir / "gpu-report.md").write_text(self.markdown(), encoding="utf-8")

    def check(self) -> list[str]:
        """What did not complete (for --dry-run): every part must be ok."""
        return [f"({p.key}) {p.status}: {p.note}" for p in self.parts.values() if p.status != "ok"]

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.args.budget_s - self.used()


def precision(bf16: bool) -> str:
    return "bf16 autocast" if bf16 else "fp32"


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "**met**" if value else "**not met**"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:,.3f}"
    return str(value)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench.parser(__doc__, SMOKE, data_dir=True, tuned=TUNED)
    p.add_argument("--dry-run", dest="quick", action="store_true", help="the same as --quick")
    p.add_argument("--device", default="auto", help="auto (CUDA if any), cuda, cpu")
    p.add_argument("--lm", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the LM recipe (every LM part)")  # fmt: skip
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the tagger recipe")  # fmt: skip
    p.add_argument("--train-recipe", default=LM_RECIPE, help=f"(e)'s recipe ({LM_RECIPE})")
    p.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                   help="override for (e) only, after --lm")  # fmt: skip
    return bench.finish(p, p.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        progress("error: run bench/gpu.py as one process, not under torchrun")
        return 2
    out_dir = Path(os.environ.get("OUT") or "gpu-report")
    b = Bench(args, out_dir)
    try:
        b.run()
    finally:
        b.others = bench.others_share(b.ticks)
        b.write()
        shutil.rmtree(b.tmp, ignore_errors=True)
    bench.publish(b.markdown(), args.target)
    progress(f"report: {out_dir / 'gpu-report.md'}, {out_dir / 'gpu-report.json'}")
    if b.device.type != "cuda" and not args.quick:
        progress("warning: no CUDA device; these are CPU figures")
    problems = b.check()
    if args.quick and problems:
        progress("dry run failed: " + "; ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    bench.run(main)
