"""Benchmark: training on one process against two (torchrun + DistributedDataParallel, gloo) on
this machine's CPU, for the UD EWT UPOS tagger and the Shakespeare character language model.

Each workload is trained by the real CLI (``rnnkit train``), once per process count, one run
after the other, the cores split evenly (``OMP_NUM_THREADS``), with the same recipe, seed, step
budget (``train.max_steps``) and global batch. From each run's ``trainer.json``: throughput
(steps x global batch / the Trainer's ``elapsed_s``), time to the dev target (resolved to an
epoch end), and the speed-ups over 1 process. On 2 cores no speed-up is expected: the point is
an honest measured ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common as bench
from common import progress, resolve

# Smaller models and a higher learning rate for --quick, so that a dev target is met in seconds.
QUICK = {
    "tag": "model.embedding_dim=32 model.char_dim=16 model.char_hidden=16 model.hidden_size=64 "
    "model.layers=1 train.lr=0.01".split(),
    "lm": "model.embedding_dim=32 model.hidden_size=128 model.layers=1 train.lr=0.01 "
    "train.warmup_steps=20".split(),
}
TUNED = {  # flag: (value, --quick value, help); full budgets: two epochs of each recipe
    "tag_steps": (784, 450, "tagger step budget"),
    "lm_steps": (490, 300, "LM step budget"),
    "tag_target": (0.80, 0.80, "dev accuracy target"),
    "lm_target": (2.0, 2.2, "dev loss target"),
    "guard_minutes": (15.0, 2.0, "train.max_minutes, a guard"),
}
HEAD = (
    "workload | processes × threads | steps | training s | steps/s | throughput | speed-up | "
    "time to target, s (step) | speed-up | final dev | wall s"
)
# task: name, dev metric, whether higher is better, what the throughput counts
WORKLOADS = {
    "tag": ("tagger (UD EWT UPOS)", "accuracy", True, "sentences"),
    "lm": ("char LM (Shakespeare)", "loss", False, "tokens"),
}


@dataclass
class Workload:
    """One recipe trained with a step budget, and what its figures are counted in."""

    task: str
    recipe: str
    overrides: list[str]
    target: float
    per_step: int  # units in one global batch
    batch: str  # the global batch, in words

    def __post_init__(self) -> None:
        self.name, self.metric, self.higher, self.unit = WORKLOADS[self.task]

    def meets(self, value: float) -> bool:
        """Whether a dev value meets the target."""
        return value >= self.target if self.higher else value <= self.target


def workloads(args: argparse.Namespace) -> list[Workload]:
    """The workloads of ``--tasks``, their recipes checked."""
    found = []
    for task in args.tasks:
        steps, recipe = getattr(args, f"{task}_steps"), getattr(args, f"{task}_config")
        sets = [*(QUICK[task] if args.quick else []), "train.progress=false",
                "train.checkpoint_every=0", f"train.max_minutes={args.guard_minutes}",
                "train.epochs=1000", "train.target=null", "train.patience=null",
                f"train.max_steps={steps}"]  # fmt: skip
        config = bench.load_recipe(recipe, task, sets)
        batch, bptt = config.train.batch_size, getattr(config.data, "bptt", 1)
        words = f"{batch} streams x {bptt} tokens" if task == "lm" else f"{batch} sentences"
        target = getattr(args, f"{task}_target")
        found.append(Workload(task, recipe, sets, target, batch * bptt, words))
    return found


@dataclass
class Run:
    """One training command and what its trainer.json says."""

    workload: Workload
    processes: int
    threads: int
    command: str = ""  # as a person would type it
    wall_s: float = 0.0
    steps: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    others: float | None = None
    error: str = ""

    @property
    def last(self) -> dict[str, Any]:
        """The last record of trainer.json (none: empty)."""
        return self.records[-1] if self.records else {}

    @property
    def elapsed_s(self) -> float:
        """The Trainer's clock at its last record."""
        return float(self.last.get("elapsed_s", "nan"))

    @property
    def steps_per_s(self) -> float:
        """Steps per second of the Trainer's clock."""
        return self.steps / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    @property
    def throughput(self) -> float:
        """Units (sentences, tokens) per second."""
        return self.steps_per_s * self.workload.per_step

    @property
    def reached(self) -> dict[str, Any] | None:
        """The first record meeting the target, or None."""
        w = self.workload
        return next((r for r in self.records if w.metric in r and w.meets(r[w.metric])), None)

    @property
    def final(self) -> float:
        """The last dev value of the metric."""
        return float(self.last.get(self.workload.metric, "nan"))


def launch(w: Workload, processes: int, recipe: str, data_dir: str, out: str) -> list[str]:
    """The training command: ``python -m rnnkit train`` or torchrun's."""
    rnnkit = ["-m", "rnnkit", "train", w.task, "--config", recipe, "--data-dir", data_dir]
    torchrun = ["torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return (["-m", *torchrun] if processes > 1 else []) + [*rnnkit, "--out", out, *w.overrides]


def run_one(w: Workload, processes: int, args: argparse.Namespace, tmp: Path) -> Run:
    """Train ``w`` on ``processes`` processes by the CLI; its figures."""
    threads = max(1, args.threads // processes)
    run, out = Run(w, processes, threads), tmp / f"{w.task}-{processes}p"
    shown = launch(w, processes, w.recipe, args.shown_data_dir, "OUT")
    shown = ["torchrun", *shown[2:]] if processes > 1 else ["python", *shown]
    run.command = f"OMP_NUM_THREADS={threads} {shlex.join(shown)}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(bench.REPO), env.get("PYTHONPATH")]))
    progress(f"{w.name}: {processes} process(es) x {threads} thread(s), {w.overrides[-1]}")
    before, start = bench.cpu_ticks(), time.perf_counter()
    argv = [
        sys.executable,
        *launch(w, processes, str(resolve(w.recipe)), str(args.data_dir), str(out)),
    ]
    try:
        done = subprocess.run(argv, cwd=bench.REPO, env=env, capture_output=True, text=True,
                              timeout=args.guard_minutes * 60 + 180)  # fmt: skip
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            run.error = " / ".join(lines[-3:]) or f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        run.error = "timed out (the guard did not stop it)"
    run.wall_s = time.perf_counter() - start
    run.others = bench.others_share(before)
    if (out / "trainer.json").exists():
        state = json.loads((out / "trainer.json").read_text(encoding="utf-8"))["state"]
        run.steps, run.records = int(state["step"]), list(state["history"])
    rate = f"{run.steps} steps in {run.elapsed_s:.1f} s: {run.throughput:,.0f} {w.unit}/s"
    progress(f"  failed: {run.error}" if run.error else f"  {rate}")
    return run


# ------------------------------------------------------------------------------ reporting
def fmt(value: float, spec: str = ",.0f") -> str:
    """A number, or a dash for NaN."""
    return "—" if value != value else format(value, spec)  # NaN shows as a dash


def row(run: Run, runs: list[Run]) -> str:
    """One run's table row, speed-ups against the 1-process run."""
    w = run.workload
    if run.error and not run.records:
        return f"{w.name} | {run.processes} × {run.threads} | failed: {run.error}" + " |" * 8
    base = next((r for r in runs if r.workload is w and r.processes == 1), None)
    speed = fmt(run.throughput / base.throughput, ".2f") + "×" if base else ""
    reached, to_target, speed_target = run.reached, "not met", ""
    if reached:
        to_target = f"{reached['elapsed_s']:.1f} ({reached['step']})"
        if base and base.reached and reached["elapsed_s"] > 0:
            speed_target = f"{base.reached['elapsed_s'] / reached['elapsed_s']:.2f}×"
    return (
        f"{w.name} | {run.processes} × {run.threads} | {run.steps:,} | {fmt(run.elapsed_s, '.1f')}"
        f" | {fmt(run.steps_per_s, '.2f')} | {fmt(run.throughput)} {w.unit}/s | {speed} | "
        f"{to_target} | {speed_target} | {w.metric} {fmt(run.final, '.4f')} | {run.wall_s:.1f}"
    )


def report(runs: list[Run], args: argparse.Namespace, total_s: float) -> str:
    """The markdown report."""
    shares = [r.others for r in runs if r.others is not None]
    splits = ", ".join(
        f"{p} process{'es' * (p > 1)} × {max(1, args.threads // p)} thread"
        f"{'s' * (max(1, args.threads // p) > 1)}"
        for p in args.proc_list
    )
    machine = (
        f"device cpu, float32; {splits} (set by OMP_NUM_THREADS for each run); runs one after "
        "the other (the busiest run)"
    )
    title = f"Scale benchmark: 1 process vs {max(args.proc_list)} (torchrun + DDP, gloo) on "
    lines = bench.header(
        title + f"{os.cpu_count()} CPU cores", args, max(shares, default=None), machine, __doc__
    )
    lines[2] = lines[2][:-1] + f"` ({total_s / 60:.1f} min in all)"
    for w in {id(r.workload): r.workload for r in runs}.values():
        shown = " ".join(
            f"`{o}`" for o in w.overrides if not o.startswith(("train.progress", "train.check"))
        )
        lines.append(
            f"- {w.name}: `{w.recipe}` with {shown}; global batch {w.batch} on any number of "
            f"processes; target dev {w.metric} {'≥' if w.higher else '≤'} {w.target}"
        )
    lines += [
        "- `elapsed_s` counts dev evaluations and checkpoints at epoch ends, not start-up and "
        "data reading (`wall s` is the whole command); dev is evaluated at epoch ends only",
        "- commands, from the repository root (OUT a fresh directory):",
        *(f"  - `{run.command}`" for run in runs),
        "",
        *bench.table(HEAD, (row(run, runs) for run in runs), left=2),
        "",
    ]
    for run in runs:
        w = run.workload
        shown = "; ".join(
            f"step {r['step']} at {r['elapsed_s']:.1f} s, {w.metric} {r[w.metric]:.4f}"
            for r in run.records
            if w.metric in r
        )
        others = "unknown" if run.others is None else f"{run.others:.0%}"
        lines.append(
            f"- {w.name}, {run.processes} process(es): dev at {shown or 'no record'}; other "
            f"processes used {others} of the CPU"
            + (f"; **error**: {run.error}" if run.error else "")
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status."""
    smoke = "smaller models and a higher learning rate than the recipes, ~1 minute in all"
    parser = bench.parser(__doc__, smoke, data_dir=True, threads=False, tuned=TUNED)
    parser.add_argument("--procs", default=[1, 2], type=bench.int_list, help="process counts (1,2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="shared out")
    parser.add_argument("--tasks", default=list(WORKLOADS), type=bench.choices(tuple(WORKLOADS)),
                        help="workloads: tag, lm (both)")  # fmt: skip
    parser.add_argument("--tag-config", default="configs/ewt-upos.yaml")
    parser.add_argument("--lm-config", default="configs/shakespeare-char.yaml")
    args = parser.parse_args(argv)
    args.shown_data_dir = args.data_dir  # as typed, for the commands the report shows
    args = bench.finish(parser, args)
    args.proc_list = sorted(set(args.procs))
    if args.proc_list[0] != 1:
        parser.error("--procs must include 1 (the baseline)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        runs = [run_one(w, p, args, Path(tmp)) for w in workloads(args) for p in args.proc_list]
    bench.publish(report(runs, args, time.perf_counter() - started), args.target)
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    bench.run(main)
