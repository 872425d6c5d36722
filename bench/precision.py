"""Benchmark: every recipe's training steps in fp32 and in bf16 autocast, side by side.

For each recipe in ``configs/`` (or those named), two copies of the task are built from the
same seed, so they start from the same weights, and trained on the same batches: rounds of
``--chunk`` steps, alternately in fp32 and in bf16 (``train.precision``), until ``--seconds``
of fp32 training have passed, so that drifting machine load hits both alike. Reported per
recipe: steps per second in each precision, the speed-up, and the dev metric of each after
the same number of steps. bf16 "pays" where it is at least ``--min-speedup`` faster and its
dev metric is no worse than fp32's by more than ``--tolerance`` (relative).

    .venv/bin/python bench/precision.py                            # every recipe, ~30 min
    .venv/bin/python bench/precision.py --recipes trec ewt-upos --seconds 10
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import common as bench
from common import progress

CONFIGS = bench.REPO / "configs"
# Recipes whose data cannot ship (CoNLL-2003) or that read LMs trained by other runs get
# the same stand-ins as their dry runs: no contextual LMs.
OVERRIDES = {"conll03-ner": ["model.contextual=[]"]}

TUNED = {
    "seconds": (30.0, 4.0, "seconds of fp32 training per recipe"),
    "chunk": (5, 2, "steps per round before switching precision"),
}


@dataclass
class Row:
    recipe: str
    task: str
    steps: int = 0
    fp32_seconds: float = 0.0
    bf16_seconds: float = 0.0
    metric: str = ""
    fp32_metric: float = math.nan
    bf16_metric: float = math.nan
    goal: str = "max"
    skipped: str = ""

    @property
    def speedup(self) -> float:
        return self.fp32_seconds / self.bf16_seconds if self.bf16_seconds else math.nan

    def holds(self, tolerance: float) -> bool:
        """bf16's dev metric is within ``tolerance`` (relative) of fp32's, or better."""
        a, b = self.fp32_metric, self.bf16_metric
        if math.isnan(a) or math.isnan(b):
            return False
        slack = tolerance * abs(a)
        return b >= a - slack if self.goal == "max" else b <= a + slack


def _trainer(recipe: Path, precision: str, data_dir: Path, out: Path) -> object:
    """A Trainer over a freshly built task of ``recipe`` in ``precision``."""
    from rnnkit.config import read_yaml
    from rnnkit.tasks import build_task
    from rnnkit.train import Trainer

    task_name = read_yaml(recipe)["task"]
    overrides = [*OVERRIDES.get(recipe.stem, []), f"train.precision={precision}"]
    config = bench.load_recipe(str(recipe), task_name, overrides)
    train = dataclasses.replace(config.train, tensorboard="", progress=False, device="cpu")
    config = dataclasses.replace(config, train=train)
    task = build_task(task_name, config, data_dir)
    return Trainer(task, config.train, out, log=lambda message: None)


def measure(recipe: Path, args) -> Row:
    """Train both precisions of ``recipe`` in alternating rounds, then score both on dev."""
    from rnnkit.config import read_yaml
    from rnnkit.errors import RnnkitError
    from rnnkit.tasks.base import metric_goal

    row = Row(recipe.stem, read_yaml(recipe)["task"])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            trainers = {p: _trainer(recipe, p, args.data_dir, Path(tmp) / p) for p in PRECISIONS}
        except RnnkitError as err:  # data not here (CoNLL-2003 cannot ship)
            row.skipped = str(err)[:80]
            return row
        batches = {
            p: bench.endless(lambda e, t=t: t.task.train_batches(e)) for p, t in trainers.items()
        }
        for p, t in trainers.items():  # untimed: first-call costs, lazily built caches
            t.model.train()
            bench.warm(lambda t=t, p=p: t.train_step(next(batches[p])), 2)
        row.steps = 2
        while row.fp32_seconds < args.seconds:
            for p, t in trainers.items():
                start = time.perf_counter()
                for _ in range(args.chunk):
                    t.train_step(next(batches[p]))
                spent = time.perf_counter() - start
                if p == "fp32":
                    row.fp32_seconds += spent
                else:
                    row.bf16_seconds += spent
            row.steps += args.chunk
        first = trainers["fp32"]
        row.metric = first.metric
        row.goal = metric_goal(first.task, first.metric)
        row.fp32_metric = first.task.evaluate("dev")[first.metric]
        second = trainers["bf16"]
        row.bf16_metric = second.task.evaluate("dev")[second.metric]
    return row


PRECISIONS = ("fp32", "bf16")


def report(rows: list[Row], args) -> list[str]:
    timed = args.steps_counted
    lines = bench.table(
        "recipe | task | steps | fp32 steps/s | bf16 steps/s | bf16 speed-up | dev metric | "
        "fp32 | bf16 | bf16 pays",
        [
            [r.recipe, r.task, "", "", "", "", "", "", "", f"skipped: {r.skipped}"]
            if r.skipped
            else [
                r.recipe,
                r.task,
                r.steps,
                f"{timed(r) / r.fp32_seconds:.2f}",
                f"{timed(r) / r.bf16_seconds:.2f}",
                bench.ratio(r.fp32_seconds, r.bf16_seconds),
                f"{r.metric} ({r.goal})",
                f"{r.fp32_metric:.4f}",
                f"{r.bf16_metric:.4f}",
                "yes" if r.speedup >= args.min_speedup and r.holds(args.tolerance) else "no",
            ]
            for r in rows
        ],
    )
    return lines


def main() -> int:
    from rnnkit.train import native_bf16

    p = bench.parser(__doc__, "4 s per recipe, 2-step rounds", data_dir=True, tuned=TUNED)
    p.add_argument("--recipes", nargs="*", help="recipe names (default: every one in configs/)")
    p.add_argument("--min-speedup", type=float, default=1.10, help="bf16 pays from here (1.10)")
    p.add_argument("--tolerance", type=float, default=0.01, help="relative dev-metric slack")
    args = bench.finish(p, p.parse_args())
    names = args.recipes or sorted(path.stem for path in CONFIGS.glob("*.yaml"))
    args.steps_counted = lambda row: row.steps - 2  # the timed steps (warm-up excluded)
    others_before = bench.cpu_ticks()
    rows = []
    for name in names:
        progress(f"{name} ...")
        row = measure(CONFIGS / f"{name}.yaml", args)
        rows.append(row)
        if not row.skipped:
            progress(
                f"{name}: {bench.ratio(row.fp32_seconds, row.bf16_seconds)} "
                f"({row.metric} {row.fp32_metric:.4f} fp32, {row.bf16_metric:.4f} bf16)"
            )
    others = bench.others_share(others_before)
    machine = f"native bf16: {'yes' if native_bf16() else 'no'}"
    lines = bench.header("fp32 vs bf16 autocast, every recipe", args, others, machine)
    lines += report(rows, args)
    lines += [
        "",
        f"Each recipe: its own model, data and batch size; {args.chunk}-step rounds alternating "
        f"fp32 and bf16 until {args.seconds:g} s of fp32 training, after 2 untimed steps each; "
        f"then the dev metric of both after the same steps. bf16 pays: ≥ {args.min_speedup:g}× "
        f"and a dev metric within {args.tolerance:.0%} of fp32's.",
    ]
    bench.publish("\n".join(lines), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
