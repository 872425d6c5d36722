"""Benchmark: every recipe's training steps in fp32 and in bf16 autocast, side by side.

For each recipe in ``configs/`` (or those named), two copies of the task are built from the
same seed, so they start from the same weights, and trained on the same batches: rounds of
``--chunk`` timed steps (``Timer.timeit``, after its own two untimed ones), alternately in fp32
and in bf16 (``train.precision``), until ``--seconds`` of fp32 training have passed, so that
drifting machine load hits both alike. Reported per recipe: steps per second in each precision,
the speed-up, and the dev metric of each after the same number of steps. bf16 "pays" where it is
at least ``--min-speedup`` faster and its dev metric is no worse than fp32's by more than
``--tolerance`` (relative). ``--device cuda`` measures the same on a GPU.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import common as bench
from common import progress

CONFIGS = bench.REPO / "configs"
# Recipes whose data cannot ship (CoNLL-2003) or that read LMs trained by other runs get the
# same stand-ins as their dry runs: no contextual LMs.
OVERRIDES = {"conll03-ner": ["model.contextual=[]"]}
PRECISIONS = ("fp32", "bf16")
TUNED = {
    "seconds": (30.0, 4.0, "seconds of fp32 training per recipe"),
    "chunk": (5, 2, "timed steps per round before switching precision"),
}


@dataclass
class Row:
    """One recipe's figures."""

    recipe: str
    task: str
    steps: int = 0  # every step taken, untimed ones included
    rates: dict[str, bench.Rate] = field(default_factory=dict)  # precision → timed steps
    metric: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # precision → dev metric
    goal: str = "max"
    skipped: str = ""

    def pays(self, speedup: float, tolerance: float) -> bool:
        """bf16 at least ``speedup`` faster, its dev metric within ``tolerance`` (relative) of
        fp32's, or better."""
        a, b = self.metrics["fp32"], self.metrics["bf16"]
        if math.isnan(a) or math.isnan(b) or self.speedup < speedup:
            return False
        return b >= a - tolerance * abs(a) if self.goal == "max" else b <= a + tolerance * abs(a)

    @property
    def speedup(self) -> float:
        """fp32 seconds over bf16 seconds for the same timed steps."""
        return self.rates["fp32"].seconds / self.rates["bf16"].seconds


def measure(recipe: Path, args) -> Row:
    """Train both precisions of ``recipe`` in alternating rounds, then score both on dev."""
    from rnnkit.config import read_yaml
    from rnnkit.errors import RnnkitError
    from rnnkit.tasks import build_task
    from rnnkit.tasks.base import metric_goal
    from rnnkit.train import Trainer

    row = Row(recipe.stem, read_yaml(recipe)["task"])
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for p in PRECISIONS:
            sets = [*OVERRIDES.get(recipe.stem, []), f"train.precision={p}",
                    "train.progress=false", f"train.device={args.device}"]  # fmt: skip
            try:
                config = bench.load_recipe(str(recipe), row.task, sets)
                config.train.tensorboard = ""
                task = build_task(row.task, config, args.data_dir)
            except RnnkitError as err:  # data not here (CoNLL-2003 cannot ship)
                row.skipped = str(err)[:80]
                return row
            trainers[p] = Trainer(task, config.train, Path(tmp) / p, log=lambda message: None)
        steps = {
            p: bench.training_step(t, bench.endless(t.task.train_batches), lambda b: (1, 0))
            for p, t in trainers.items()
        }
        for p, step in steps.items():  # untimed: first-call costs, lazily built caches
            step(), step()
            row.rates[p] = bench.Rate()
        row.steps = 2
        while row.rates["fp32"].seconds < args.seconds:
            for p, step in steps.items():
                bench.timed(step, into=row.rates[p], steps=args.chunk)
            row.steps += args.chunk + 2  # Timer.timeit's two untimed calls
        first = trainers["fp32"]
        row.metric, row.goal = first.metric, metric_goal(first.task, first.metric)
        row.metrics = {p: t.task.evaluate("dev")[t.metric] for p, t in trainers.items()}
    return row


def cells(r: Row, args) -> list:
    """One recipe's row of the table."""
    if r.skipped:
        return [r.recipe, r.task, *[""] * 7, f"skipped: {r.skipped}"]
    return [r.recipe, r.task, r.steps,
            *(f"{r.rates[p].steps / r.rates[p].seconds:.2f}" for p in PRECISIONS),
            f"{r.speedup:.2f}×", f"{r.metric} ({r.goal})",
            *(f"{r.metrics[p]:.4f}" for p in PRECISIONS),
            "yes" if r.pays(args.min_speedup, args.tolerance) else "no"]  # fmt: skip


def main() -> int:
    """Run the benchmark; the exit status."""
    from rnnkit.train import native_bf16

    smoke = "4 s per recipe, 2-step rounds"
    p = bench.parser(__doc__, smoke, data_dir=True, tuned=TUNED, device="cpu")
    p.add_argument("--recipes", nargs="*", help="recipe names (default: every one in configs/)")
    p.add_argument("--min-speedup", type=float, default=1.10, help="bf16 pays from here (1.10)")
    p.add_argument("--tolerance", type=float, default=0.01, help="relative dev-metric slack")
    args = bench.finish(p, p.parse_args())
    names = args.recipes or sorted(path.stem for path in CONFIGS.glob("*.yaml"))
    before, rows = bench.cpu_ticks(), []
    for name in names:
        progress(f"{name} ...")
        rows.append(row := measure(CONFIGS / f"{name}.yaml", args))
        if not row.skipped:
            progress(f"{name}: {row.speedup:.2f}× ({row.metric} {row.metrics})")
    machine = f"device {args.device}, native bf16: {'yes' if native_bf16() else 'no'}"
    others = bench.others_share(before)
    lines = bench.header("fp32 vs bf16 autocast, every recipe", args, others, machine, __doc__)
    head = "recipe | task | steps | fp32 steps/s | bf16 steps/s | bf16 speed-up | dev metric | fp32"
    lines += bench.table(head + " | bf16 | bf16 pays", [cells(r, args) for r in rows])
    pays = f"≥ {args.min_speedup:g}×, dev within {args.tolerance:.0%}"
    lines.append(f"- rounds of {args.chunk} steps, {args.seconds:g} s of fp32; bf16 pays: {pays}")
    bench.publish("\n".join(lines), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
