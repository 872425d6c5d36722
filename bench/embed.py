"""Benchmark: training throughput of rnnkit's CBOW and skip-gram against gensim's Word2Vec.

One epoch each of the recipe's training text (WikiText-2 by default), the same settings on
both sides (vector size, window, negatives, subsampling, lr decayed linearly, CBOW mean):
rnnkit's task built the CLI's way and ``Trainer.train_step`` with fit's learning-rate
schedule (pair making and negative sampling timed, and reported apart); gensim
``Word2Vec.train`` with ``--workers`` threads (default: one per core, as many as torch's
threads by default) on the same token lists, words outside rnnkit's vocabulary removed.
Reported per method: corpus words/s, the ratio rnnkit/gensim, and as a check that both did the
same job, rnnkit's held-out negative-sampling loss with each side's vectors.

    .venv/bin/python bench/embed.py                        # WikiText-2, both methods, ~1 min
    .venv/bin/python bench/embed.py --methods skipgram model.embedding_dim=300

``key=value`` overrides work as on the CLI. Needs gensim (benchmark only).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import common as bench
import torch
from common import progress

from rnnkit.data.text import read_text, resolve_data_path
from rnnkit.schedule import Schedule
from rnnkit.tasks import build_task
from rnnkit.tasks.embed import EmbedConfig, EmbedTask
from rnnkit.train import Trainer

RECIPES = {"cbow": "configs/wikitext2-cbow.yaml", "skipgram": "configs/wikitext2-skipgram.yaml"}
QUICK_LINES = 2000


@dataclass
class Side:
    """One side's epoch: words, seconds, examples and held-out loss."""

    words: int = 0  # corpus words (before subsampling) trained on
    seconds: float = 0.0
    examples: int = 0  # rnnkit: examples (pairs or centre words); gensim: effective words
    stepping: float = 0.0  # rnnkit: seconds inside Trainer.train_step (the rest made batches)
    loss: float = float("nan")  # held-out negative-sampling loss after the epoch

    @property
    def rate(self) -> float:
        """Corpus words per second."""
        return self.words / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Run:
    """One method on both sides."""

    method: str
    config: EmbedConfig
    vocab: int
    sentences: int
    kit: Side
    peer: Side


# ------------------------------------------------------------------------------- sides
def train_rnnkit(task: EmbedTask, config: EmbedConfig) -> Side:
    """One epoch the Trainer's way, timed from the first batch to the last step."""
    side = Side(words=task.training_text().tokens)
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        trainer = Trainer(task, config.train, tmp, log=lambda _: None)
        trainer.model.train()
        start = time.perf_counter()  # one epoch, once: a Timer's repeats would train on
        batches, schedule = task.train_batches(1), Schedule(trainer.optimizer, config.train)
        for step, batch in enumerate(batches):  # the epoch's linear decay, as fit sets it
            schedule.advance(step, len(batches))
            began = time.perf_counter()
            trainer.train_step(batch)
            side.stepping += time.perf_counter() - began
            side.examples += batch["target"].numel()
        side.seconds = time.perf_counter() - start
    side.loss = task.evaluate()["loss"]
    return side


def train_gensim(task: EmbedTask, config: EmbedConfig, workers: int) -> Side:
    """One epoch of gensim's ``Word2Vec`` on the same token lists, scored by rnnkit."""
    from gensim.models import Word2Vec

    d, m, t = config.data, config.model, config.train
    kept = set(task.vocab.itos[len(task.vocab.specials) :])  # rnnkit's words, no specials
    sentences = [s for line in task.lines("train") if (s := [w for w in line.split() if w in kept])]
    model = Word2Vec(
        vector_size=m.embedding_dim, window=d.window, negative=m.negatives,
        ns_exponent=m.noise_power, hs=0, sg=int(m.method == "skipgram"), cbow_mean=1,
        sample=d.subsample, alpha=t.lr, min_alpha=t.lr * 1e-4, shrink_windows=d.dynamic_window,
        min_count=1, workers=workers, seed=t.seed,  # the sentences hold only rnnkit's words
    )  # fmt: skip
    model.build_vocab(sentences)
    start = time.perf_counter()
    effective, raw = model.train(
        sentences, total_examples=len(sentences), total_words=model.corpus_total_words, epochs=1
    )
    side = Side(words=raw, seconds=time.perf_counter() - start, examples=effective)
    side.loss = score_gensim(task, model)
    return side


def score_gensim(task: EmbedTask, model) -> float:
    """rnnkit's held-out loss with gensim's input and output vectors in rnnkit's model."""
    weights = task.model
    with torch.no_grad():
        for word, index in model.wv.key_to_index.items():
            row = task.vocab.stoi[word]
            weights.embed.weight[row] = torch.from_numpy(model.wv.vectors[index])
            weights.out.weight[row] = torch.from_numpy(model.syn1neg[index])
    return task.evaluate()["loss"]


def bench_method(method: str, args: argparse.Namespace) -> Run:
    """One method on both sides, the same recipe and token lists; fresh weights for each."""
    sets = [*args.overrides, f"model.method={method}", "train.epochs=1", "train.progress=false"]
    config = bench.load_recipe(args.config or RECIPES[method], "embed", sets)
    with tempfile.TemporaryDirectory(prefix="bench-embed-data-") as tmp:
        if args.lines:  # the first lines of the training text only, same for both sides
            source = read_text(resolve_data_path(config.data.train, args.data_dir))
            config.data.train = str(Path(tmp) / "train-head.txt")
            Path(config.data.train).write_text("\n".join(source.splitlines()[: args.lines]) + "\n")
        progress(f"{method}: gensim ({args.workers} workers), then rnnkit ({config.data.train})")
        task = build_task("embed", config, args.data_dir)
        peer = train_gensim(task, config, args.workers)
        task = build_task("embed", config, args.data_dir)  # fresh weights, same seed
        kit = train_rnnkit(task, config)
        lines = sum(1 for line in task.lines("train") if line.split())
        return Run(method, config, len(task.vocab) - len(task.vocab.specials), lines, kit, peer)


# ------------------------------------------------------------------------------- report
def report(runs: list[Run], args: argparse.Namespace, others: float | None) -> str:
    """The markdown report."""
    c = runs[0].config
    d, m = c.data, c.model
    machine = (
        f"gensim {bench.version('gensim')}, device cpu; rnnkit: "
        f"{bench.threads(args)}; gensim: {args.workers} worker threads"
    )
    lines = [
        *bench.header("Word2vec benchmark: rnnkit vs gensim", args, others, machine, __doc__),
        f"- corpus: {d.train}{', lowercased' if d.lowercase else ''}, {runs[0].sentences:,} "
        f"sentences, {runs[0].kit.words:,} words of a {runs[0].vocab:,}-word vocabulary "
        f"(min count {d.min_freq}); both sides get the same token lists",
        f"- settings, both sides: dim {m.embedding_dim}, window {d.window}"
        f"{' (reduced at random)' if d.dynamic_window else ''}, {m.negatives} negatives "
        f"(counts^{m.noise_power:g}), subsampling {d.subsample:g}, one epoch, lr decayed "
        f"linearly; rnnkit SGD with word2vec's hand-written gradient, batch "
        f"{c.train.batch_size}, examples in text order",
        "",
        *bench.table(
            "method | lr | rnnkit words/s | gensim words/s | ratio rnnkit/gensim | rnnkit "
            "held-out loss | gensim held-out loss",
            (
                f"{r.method} | {r.config.train.lr:g} | {r.kit.rate:,.0f} | {r.peer.rate:,.0f} | "
                f"**{r.kit.rate / r.peer.rate:.2f}×** | {r.kit.loss:.4f} | {r.peer.loss:.4f}"
                for r in runs
            ),
        ),
        "",
    ]
    for run in runs:
        lines.append(
            f"- {run.method}: rnnkit {run.kit.seconds:.1f} s for {run.kit.examples:,} examples "
            f"({'pairs' if run.method == 'skipgram' else 'centre words'}; "
            f"{run.kit.seconds - run.kit.stepping:.1f} s of it making batches); gensim "
            f"{run.peer.seconds:.1f} s ({run.peer.examples:,} words left after subsampling)"
        )
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = bench.parser(__doc__, f"the first {QUICK_LINES:,} lines only", data_dir=True)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument(
        "--config", help="one embed recipe for both methods (default: configs/wikitext2-*.yaml)"
    )
    parser.add_argument("--methods", default="cbow,skipgram", help="cbow,skipgram (default)")
    parser.add_argument("--lines", type=int, help="train on the first N lines only")
    parser.add_argument("--workers", type=int, help="gensim worker threads (default: cores)")
    args = bench.finish(parser, parser.parse_intermixed_args(argv))
    args.method_list = [x.strip() for x in args.methods.split(",") if x.strip()]
    if not args.method_list or any(x not in RECIPES for x in args.method_list):
        parser.error("--methods takes cbow and/or skipgram, comma-separated")
    if args.quick and args.lines is None:
        args.lines = QUICK_LINES
    if args.lines is not None and args.lines < 10:
        parser.error("--lines must be ≥ 10")
    args.workers = args.workers or os.cpu_count() or 1
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status."""
    args = parse_args(argv)
    if not bench.needs("gensim"):  # a benchmark-only dependency
        return 2
    before = bench.cpu_ticks()
    runs = [bench_method(method, args) for method in args.method_list]
    bench.publish(report(runs, args, bench.others_share(before)), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
