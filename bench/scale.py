"""Benchmark: training on one process against two (torchrun + DistributedDataParallel, gloo) on
this machine's CPU, for the UD EWT UPOS tagger and the Shakespeare character language model.

Each workload is trained by the real CLI (``rnnkit train``), once per process count, one run
after the other, the cores split evenly (``OMP_NUM_THREADS``), with the same recipe, seed,
step budget (``train.max_steps``) and global batch. From each run's ``trainer.json``:
throughput (steps x global batch / the Trainer's ``elapsed_s``), time to the dev target
(resolved to an epoch end), and the speed-ups over 1 process. On 2 cores no speed-up is
expected: the point is an honest measured ratio.

    .venv/bin/python bench/scale.py               # the recipes' models, 2 epochs each, ~11 min
    .venv/bin/python bench/scale.py --tag-steps 392 --lm-steps 245 --procs 1,2
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
    "tag": [
        "model.embedding_dim=32",
        "model.char_dim=16",
        "model.char_hidden=16",
        "model.hidden_size=64",
        "model.layers=1",
        "train.lr=0.01",
    ],
    "lm": [
        "model.embedding_dim=32",
        "model.hidden_size=128",
        "model.layers=1",
        "train.lr=0.01",
        "train.warmup_steps=20",
    ],
}
SMOKE = "smaller models and a higher learning rate than the recipes, ~1 minute in all"
TUNED = {  # flag: (value, --quick value, help); the full step budgets are two epochs of each
    # recipe (392 and about 245 steps per epoch at batch 32)
    "tag_steps": (784, 450, "tagger step budget"),
    "lm_steps": (490, 300, "LM step budget"),
    "tag_target": (0.80, 0.80, "dev accuracy target"),
    "lm_target": (2.0, 2.2, "dev loss target"),
    "guard_minutes": (15.0, 2.0, "train.max_minutes, a guard"),
}


# ------------------------------------------------------------------------------ workloads
@dataclass
class Workload:
    """One recipe trained with a step budget, and what its figures are counted in."""

    name: str
    task: str
    recipe: str
    overrides: list[str]
    metric: str  # the dev metric the target is on
    higher_is_better: bool
    target: float
    unit: str  # what the throughput counts
    per_step: int  # units in one global batch
    batch: str  # the global batch, in words

    def meets(self, value: float) -> bool:
        return value >= self.target if self.higher_is_better else value <= self.target


WORKLOADS = {  # task: name, dev metric, whether higher is better, what the throughput counts
    "tag": ("tagger (UD EWT UPOS)", "accuracy", True, "sentences"),
    "lm": ("char LM (Shakespeare)", "loss", False, "tokens"),
}


def workloads(args: argparse.Namespace) -> list[Workload]:
    budget = [
        "train.progress=false",
        "train.checkpoint_every=0",
        f"train.max_minutes={args.guard_minutes}",
        "train.epochs=1000",
        "train.target=null",
        "train.patience=null",
    ]
    found = []
    for task, (name, metric, higher, unit) in WORKLOADS.items():
        if task not in args.task_list:
            continue
        steps, recipe = getattr(args, f"{task}_steps"), getattr(args, f"{task}_config")
        sets = [*(QUICK[task] if args.quick else []), *budget, f"train.max_steps={steps}"]
        config = bench.load_recipe(recipe, task, sets)
        batch, bptt = config.train.batch_size, getattr(config.data, "bptt", 1)
        words = f"{batch} streams x {bptt} tokens" if task == "lm" else f"{batch} sentences"
        target = getattr(args, f"{task}_target")
        found.append(
            Workload(name, task, recipe, sets, metric, higher, target, unit, batch * bptt, words)
        )
    return found


# ----------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One training command and what its trainer.json says."""

    workload: Workload
    processes: int
    threads: int
    command: str = ""  # as a person would type it
    returncode: int | None = None
    wall_s: float = 0.0
    steps: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    others: float | None = None
    error: str = ""

    @property
    def elapsed_s(self) -> float:
        return float(self.records[-1]["elapsed_s"]) if self.records else float("nan")

    @property
    def throughput(self) -> float:
        if not self.records or self.elapsed_s <= 0:
            return float("nan")
        return self.steps * self.workload.per_step / self.elapsed_s

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.elapsed_s if self.records and self.elapsed_s > 0 else float("nan")

    @property
    def reached(self) -> dict[str, Any] | None:
        """The first record meeting the target, or None."""
        for record in self.records:
            value = record.get(self.workload.metric)
            if value is not None and self.workload.meets(float(value)):
                return record
        return None

    @property
    def final(self) -> float:
        if not self.records:
            return float("nan")
        return float(self.records[-1].get(self.workload.metric, float("nan")))


def children_ticks() -> int:
    """CPU ticks of the child processes this process has waited for (torchrun's workers too)."""
    times = os.times()
    return round((times.children_user + times.children_system) * os.sysconf("SC_CLK_TCK"))


def command_for(w: Workload, processes: int, out: Path, data_dir: Path) -> list[str]:
    launch = [sys.executable, "-m", "rnnkit"]
    if processes > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", str(processes), "-m", "rnnkit"]  # fmt: skip
    return [*launch, "train", w.task, "--config", str(resolve(w.recipe)), "--data-dir",
            str(data_dir), "--out", str(out), *w.overrides]  # fmt: skip


def shown_command(w: Workload, processes: int, threads: int, data_dir: str) -> str:
    """The command as a person would type it from the repository root."""
    launch = ["python", "-m", "rnnkit"]
    if processes > 1:
        launch = ["torchrun", "--standalone", "--nproc_per_node", str(processes), "-m", "rnnkit"]
    words = [*launch, "train", w.task, "--config", w.recipe, "--data-dir", data_dir,
             "--out", "OUT", *w.overrides]  # fmt: skip
    return f"OMP_NUM_THREADS={threads} {shlex.join(words)}"


def run_one(w: Workload, processes: int, args: argparse.Namespace, tmp: Path) -> Run:
    threads = max(1, args.threads // processes)
    run = Run(w, processes, threads)
    run.command = shown_command(w, processes, threads, args.shown_data_dir)
    out = tmp / f"{w.task}-{processes}p"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(bench.REPO), env.get("PYTHONPATH")]))
    progress(f"{w.name}: {processes} process(es) x {threads} thread(s), {w.overrides[-1]}")
    before, children = bench.cpu_ticks(), children_ticks()
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command_for(w, processes, out, args.data_dir),
            cwd=bench.REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=args.guard_minutes * 60 + 180,
        )
        run.returncode = done.returncode
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            run.error = " / ".join(lines[-3:]) or f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        run.error = "timed out (the guard did not stop it)"
    run.wall_s = time.perf_counter() - start
    run.others = bench.others_share(before, children_ticks() - children)  # torchrun's too
    state_file = out / "trainer.json"
    if state_file.exists():
        state = json.loads(state_file.read_text(encoding="utf-8"))["state"]
        run.steps, run.records = int(state["step"]), list(state["history"])
    if run.error:
        progress(f"  failed: {run.error}")
    else:
        reached = run.reached
        progress(
            f"  {run.steps} steps in {run.elapsed_s:.1f} s: {run.throughput:,.0f} {w.unit}/s; "
            f"target {'at ' + format(reached['elapsed_s'], '.1f') + ' s' if reached else 'not met'}"
            f"; wall {run.wall_s:.1f} s"
        )
    return run


# ------------------------------------------------------------------------------ reporting
def fmt(value: float, spec: str = ",.0f") -> str:
    return "—" if value != value else format(value, spec)  # NaN shows as a dash


def table(runs: list[Run]) -> list[str]:
    rows = []
    for run in runs:
        w = run.workload
        if run.error and not run.records:
            rows.append(
                f"{w.name} | {run.processes} × {run.threads} | failed: {run.error}" + " |" * 8
            )
            continue
        base = next((r for r in runs if r.workload is w and r.processes == 1), None)
        speed = fmt(run.throughput / base.throughput, ".2f") + "×" if base else ""
        reached = run.reached
        to_target, speed_target = "not met", ""
        if reached:
            to_target = f"{reached['elapsed_s']:.1f} ({reached['step']})"
            base_reached = base.reached if base else None
            if base_reached and reached["elapsed_s"] > 0:
                speed_target = f"{base_reached['elapsed_s'] / reached['elapsed_s']:.2f}×"
        rows.append(
            f"{w.name} | {run.processes} × {run.threads} | {run.steps:,} | "
            f"{fmt(run.elapsed_s, '.1f')} | {fmt(run.steps_per_s, '.2f')} | "
            f"{fmt(run.throughput)} {w.unit}/s | {speed} | {to_target} | {speed_target} | "
            f"{w.metric} {fmt(run.final, '.4f')} | {run.wall_s:.1f}"
        )
    head = "workload | processes × threads | steps | training s | steps/s | throughput | speed-up "
    return bench.table(head + "| time to target, s (step) | speed-up | final dev | wall s", rows, 2)


def record_lines(runs: list[Run]) -> list[str]:
    lines = []
    for run in runs:
        w = run.workload
        shown = "; ".join(
            f"step {r['step']} at {r['elapsed_s']:.1f} s, {w.metric} {r[w.metric]:.4f}"
            for r in run.records
            if w.metric in r
        )
        others = "unknown" if run.others is None else f"{run.others:.0%}"
        error = f"; **error**: {run.error}" if run.error else ""
        lines.append(
            f"- {w.name}, {run.processes} process(es): dev at {shown or 'no record'}; other "
            f"processes used {others} of the CPU{error}"
        )
    return lines


def report(runs: list[Run], args: argparse.Namespace, total_s: float) -> str:
    shares = [r.others for r in runs if r.others is not None]
    splits = ", ".join(
        f"{p} process{'es' if p > 1 else ''} × {max(1, args.threads // p)} thread"
        f"{'s' if max(1, args.threads // p) > 1 else ''}"
        for p in args.proc_list
    )
    machine = (
        f"device cpu, float32; {splits} (set by OMP_NUM_THREADS for "
        "each run); runs one after the other (the busiest run)"
    )
    title = f"Scale benchmark: 1 process vs {max(args.proc_list)} (torchrun + DDP, gloo) on "
    title += f"{os.cpu_count()} CPU cores"
    lines = bench.header(title, args, max(shares) if shares else None, machine)
    lines[2] = lines[2][:-1] + f"` ({total_s / 60:.1f} min in all)"
    for w in {id(r.workload): r.workload for r in runs}.values():
        goal = "≥" if w.higher_is_better else "≤"
        shown = [o for o in w.overrides if not o.startswith(("train.progress", "train.check"))]
        lines.append(
            f"- {w.name}: `{w.recipe}` with {' '.join(f'`{o}`' for o in shown)}; global batch "
            f"{w.batch} on any number of processes; target dev {w.metric} {goal} {w.target}"
        )
    lines += [
        "- throughput = steps × global batch / the Trainer's `elapsed_s` at its last record "
        "(dev evaluations and checkpoints at epoch ends included; start-up and data reading "
        "not: `wall s` is the whole command); time to target = `elapsed_s` of the first "
        "epoch-end record meeting it (dev is evaluated at epoch ends only); speed-up is "
        "against 1 process",
        "- commands, from the repository root (OUT a fresh directory):",
    ]
    lines += [f"  - `{run.command}`" for run in runs]
    lines += ["", *table(runs), "", *record_lines(runs), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench.parser(__doc__, SMOKE, data_dir=True, threads=False, tuned=TUNED)
    parser.add_argument("--procs", default="1,2", help="process counts to compare (1,2)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="threads shared out (cores)"
    )
    parser.add_argument("--tasks", default="tag,lm", help="workloads: tag, lm (both)")
    parser.add_argument("--tag-config", default="configs/ewt-upos.yaml")
    parser.add_argument("--lm-config", default="configs/shakespeare-char.yaml")
    args = parser.parse_args(argv)
    args.shown_data_dir = args.data_dir  # as typed, for the commands the report shows
    args = bench.finish(parser, args)
    try:
        args.proc_list = sorted({int(p) for p in args.procs.split(",") if p.strip()})
    except ValueError:
        parser.error(f"bad --procs {args.procs!r} (expected numbers, e.g. 1,2)")
    if not args.proc_list or args.proc_list[0] != 1:
        parser.error("--procs must include 1 (the baseline)")
    args.task_list = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not args.task_list or set(args.task_list) - {"tag", "lm"}:
        parser.error("--tasks takes tag, lm or both")
    if args.threads < 1:
        parser.error("--threads must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    found = workloads(args)
    started = time.perf_counter()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for w in found:
            for processes in args.proc_list:
                runs.append(run_one(w, processes, args, Path(tmp)))
    text = report(runs, args, time.perf_counter() - started)
    bench.publish(text, args.target)
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    bench.run(main)
