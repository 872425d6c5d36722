"""The harness every benchmark shares: one command line (``--quick`` smoke runs, ``--publish`` /
``--append``, ``--threads``), one report header (the command, the machine and how busy it was),
progress lines, timing loops around rnnkit's own training step, and publishing. A benchmark
keeps only what it measures, so that two benchmarks cannot drift apart on how they measure.

Every benchmark runs from anywhere (relative paths fall back to the repository root), best on
an otherwise idle machine: a busy CPU slows small ops down a hundredfold, and the report says
how much of it other processes used. ``python bench/NAME.py --quick`` is its smoke run,
``--publish`` also appends the report to bench/RESULTS.md; the markdown report goes to stdout,
progress to stderr."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import math
import os
import platform
import random
import shlex
import statistics
import string
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
# Other processes busier than this share of the CPU during a run make its timings suspect.
BUSY_SHARE = 0.05


def progress(message: str) -> None:
    """A progress line on stderr, so that a report stays alone on stdout."""
    print(message, file=sys.stderr, flush=True)


def version(package: str) -> str:
    """An installed package's version, or '?'."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def resolve(path: str | Path) -> Path:
    """``path`` as given, or inside the repository root when it is relative and absent, so
    that a benchmark runs from anywhere."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and (REPO / p).exists():
        return REPO / p
    return p.resolve()


def load_recipe(path: str, task: str, overrides: list[str] = ()) -> Any:
    """The ``task`` recipe at ``path`` (as the task's ``Config``) with CLI-style ``key=value``
    overrides, checked as the CLI checks it (so that a bad key stops the benchmark before it
    measures anything)."""
    from rnnkit.config import from_dict, merge, parse_overrides, read_yaml
    from rnnkit.tasks import task_class

    base = read_yaml(resolve(path))
    if base.get("task", task) != task:
        raise SystemExit(f"{path} is a {base['task']!r} recipe, not {task!r}")
    return from_dict(task_class(task).Config, merge(base, parse_overrides(list(overrides))))


def run(main: Callable[[], int]) -> None:
    """A benchmark's entry point: exit with ``main()``'s status, or with 2 and one line (not a
    traceback) when rnnkit stops it (a bad recipe or override, data missing)."""
    from rnnkit.errors import RnnkitError

    try:
        status = main()
    except RnnkitError as err:
        progress(f"error: {err}")
        status = 2
    sys.exit(status)


def describe(config: Any, task: Any = None, optimizer: Any = None) -> str:
    """A language model's or tagger's recipe in words: sizes, batch, dropout, optimizer; with
    its built ``task``, the vocabularies too, and with the ``optimizer`` made, its own words."""
    m, t = config.model, config.train
    words = f" (vocabulary {len(task.vocab):,})" if task is not None else ""
    if hasattr(config.data, "bptt"):  # a language model
        shape = f"embedding {m.embedding_dim}{words}, {m.layers} x {m.hidden_size} {m.rnn}"
        shape += f", batch {t.batch_size}, bptt {config.data.bptt}"
    else:
        chars = "no chars" if m.chars == "none" else f"chars {m.chars} {m.char_dim}/{m.char_hidden}"
        tags = f", {len(task.tag_vocab)} tags" if task is not None else ""
        shape = f"word {m.embedding_dim}{words}, {chars}, {m.layers} x {m.hidden_size} bi-{m.rnn}"
        shape += f"{tags}, {m.head} head, batch {t.batch_size}"
    how = f"{t.optimizer} lr {t.lr}" if optimizer is None else describe_optimizer(optimizer)
    return f"{shape}, dropout {m.dropout}; {how}, clip_norm {t.clip_norm}"


# --------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


TICK = os.sysconf("SC_CLK_TCK")  # CPU ticks per second in /proc


def process_ticks(pid: int | str = "self") -> int | None:
    """User + system CPU ticks of a process so far (``/proc/PID/stat``), or None."""
    try:
        after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(after_name[11]) + int(after_name[12])
    except (OSError, ValueError, IndexError):
        return None


def memory_kib(pid: int, key: str = "VmRSS") -> int | None:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``) in KiB, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_ticks() -> tuple[int, int, int] | None:
    """(all ticks, busy ticks of the machine, ticks of this process) from /proc, or None."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    except (OSError, ValueError):
        return None
    own = process_ticks()
    busy = user + nice + system + irq + softirq + steal
    return None if own is None else (busy + idle + iowait, busy, own)


def others_share(before: tuple[int, int, int] | None, ours: float = 0.0) -> float | None:
    """Share of the whole CPU that other processes used since ``before``; ``ours`` ticks of
    this process's children (servers, workers) are not counted as others'."""
    after = cpu_ticks()
    if before is None or after is None or after[0] <= before[0]:
        return None
    total, busy, own = (a - b for a, b in zip(after, before, strict=True))
    return max(0.0, busy - own - ours) / total


def contention(others: float | None) -> tuple[str, list[str]]:
    """The report's line on how busy the machine was, and a warning line when too busy."""
    if others is None:
        return "other processes' CPU use during the run: unknown", []
    line = f"other processes used {others:.0%} of the CPU during the run"
    if others <= BUSY_SHARE:
        return line, []
    progress(f"warning: other processes used {others:.0%} of the CPU; timings are unreliable")
    return line, ["- **warning**: the CPU was shared with other work; these timings are unreliable"]


def busy_now() -> None:
    """Warn before measuring when the machine is busy already: with several torch threads,
    small ops then slow down a hundredfold."""
    probe = cpu_ticks()
    time.sleep(1.0)
    share = others_share(probe)
    if share is not None and share > BUSY_SHARE:
        progress(f"warning: other processes use {share:.0%} of the CPU; timings will be unreliable")


def threads(args: argparse.Namespace) -> str:
    """torch's thread count and where it came from."""
    where = "torch default"
    if getattr(args, "threads", None) is not None:
        where = "set by --threads"
    elif os.environ.get("OMP_NUM_THREADS"):
        where = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    return f"torch threads {torch.get_num_threads()} ({where})"


def header(title: str, args: argparse.Namespace, others: float | None, machine: str) -> list[str]:
    """A report's first lines: title and date, the command, the machine (``machine`` says
    what follows the cores and torch: versions, device, threads) and how busy it was,
    warnings; a smoke run says what ``--quick`` shrank (the parser's ``smoke``)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    busy, warning = contention(others)
    if args.quick:
        warning.append(f"- **--quick smoke run**: {args.smoke}; not a measurement")
    return [
        f"### {title} ({now}){' [quick]' if args.quick else ''}",
        "",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- machine: {os.cpu_count()} cores ({cpu_model()}), torch {torch.__version__}, "
        f"{machine}; {busy}",
        *warning,
    ]


def publish(report: str, append: Path | None) -> None:
    """Print a report, and append it to ``append`` (bench/RESULTS.md) when one is given."""
    print(report)
    if append is not None:
        append.parent.mkdir(parents=True, exist_ok=True)
        with append.open("a", encoding="utf-8") as handle:
            handle.write(report + "\n")
        progress(f"appended to {append}")


# ---------------------------------------------------------------------------- command line
def int_list(text: str) -> list[int]:
    """A comma-separated list of whole numbers ≥ 1 (an argparse ``type``)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers, e.g. 1,64") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least one number, each ≥ 1")
    return values


def parser(
    doc: str,
    smoke: str,
    data_dir: bool = False,
    threads: bool = True,
    tuned: dict[str, tuple[Any, Any, str]] | None = None,
) -> argparse.ArgumentParser:
    """The flags every benchmark takes: ``--quick`` (a smoke run, never published; ``smoke``
    says what it shrinks, in the help and the report), ``--publish``, ``--append FILE``, and
    ``--threads`` and ``--data-dir`` where asked; and one ``--NAME`` per entry of ``tuned``
    (``name: (full value, quick value, help)``): a number whose value a smoke run changes, ≥ 1
    (a count) or > 0 (seconds), or ≥ 0 for a warm-up."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"smoke run: {smoke}")
    p.add_argument("--publish", action="store_true", help="also append the report to RESULTS.md")
    p.add_argument("--append", type=Path, help="also append the report to this file")
    if threads:
        p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    if data_dir:
        p.add_argument("--data-dir", default="../shared/data", help="default ../shared/data")
    p.smoke, p.tuned = smoke, tuned or {}
    for name, (full, quick, text) in p.tuned.items():
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=type(full), help=f"{text} ({full:g}; quick {quick:g})")
    return p


def finish(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the ``tuned`` flags not given (a smoke run's values under ``--quick``), check
    them and the shared ones, set torch's threads, and name where the report goes
    (``args.target``)."""
    for name, (full, quick, _) in p.tuned.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        value, warmup, count = getattr(args, name), "warmup" in name, isinstance(full, int)
        if value < 0 or (not warmup and (value < 1 if count else value == 0)):
            least = "≥ 0" if warmup else "≥ 1" if count else "> 0"
            p.error(f"--{name.replace('_', '-')} must be {least}")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        p.error("--threads must be ≥ 1")
    if args.publish and args.append is not None:
        p.error("give --publish or --append, not both")
    if args.quick and (args.publish or args.append is not None):
        p.error("a --quick smoke run is not published")
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)
    progress(f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}")
    if getattr(args, "data_dir", None) is not None:
        args.data_dir = resolve(args.data_dir)
    args.target, args.smoke = RESULTS if args.publish else args.append, p.smoke
    return args


def needs(*modules: str, pip: str = "") -> bool:
    """Whether the peer packages a benchmark compares with import; if not, says so."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        progress(
            f"error: {', '.join(missing)} not installed (pip install {pip or ' '.join(modules)})"
        )
    return not missing


def ratio(ours: float, theirs: float, form: str = ".2f", missing: str = "n/a") -> str:
    """``ours / theirs`` as ``2.15×``; ``missing`` where either is unknown or ``theirs`` is 0."""
    known = theirs > 0 and not (math.isnan(ours) or math.isnan(theirs))
    return f"{ours / theirs:{form}}×" if known else missing


def table(head: str | list[str], rows: Iterable[Any], left: int = 1) -> list[str]:
    """A markdown table: the ``head`` cells, then ``rows``, each a list of cells or a string of
    them joined by " | " (so is a string ``head``); the first ``left`` columns are aligned
    left, the rest (figures) right."""
    if isinstance(head, str):
        head = [cell.strip() for cell in head.split("|")]

    def line(cells: str | Iterable[Any]) -> str:
        return "| " + (cells if isinstance(cells, str) else " | ".join(map(str, cells))) + " |"

    return [line(head), "|" + "---|" * left + "---:|" * (len(head) - left), *map(line, rows)]


# --------------------------------------------------------------------------------- timing
@dataclass
class Rate:
    """Work timed so far: items (sentences, messages, rows), tokens, steps, seconds."""

    items: int = 0
    tokens: int = 0
    steps: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


Step = Callable[[], tuple[int, int]]  # one update or call; returns (items, tokens)


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def warm(step: Callable[[], Any], count: int = 3, seconds: float = 0.0) -> int:
    """Untimed calls: at least ``count`` and at least ``seconds``; how many were made."""
    start, done = time.perf_counter(), 0
    while done < count or time.perf_counter() - start < seconds:
        step()
        done += 1
    return done


def run_for(
    step: Step,
    seconds: float,
    into: Rate | None = None,
    min_steps: int = 1,
    device: torch.device | None = None,
    warmup: int = 0,
) -> Rate:
    """Call ``step`` until ``seconds`` have passed and ``min_steps`` were taken (after
    ``warmup`` untimed calls); add the work to ``into`` (a new Rate by default). ``device`` is
    synchronised at both ends."""
    warm(step, warmup)
    rate = into or Rate()
    synchronize(device)
    start, steps = time.perf_counter(), 0
    while steps < min_steps or time.perf_counter() - start < seconds:
        items, tokens = step()
        rate.items, rate.tokens, steps = rate.items + items, rate.tokens + tokens, steps + 1
    synchronize(device)
    rate.steps += steps
    rate.seconds += time.perf_counter() - start
    return rate


def run_steps(step: Step, count: int, warmup: int = 0) -> Rate:
    """Call ``step`` ``count`` times (after ``warmup`` untimed calls)."""
    return run_for(step, 0.0, min_steps=count, warmup=warmup)


@dataclass
class Calls:
    """A call timed again and again (``prepare`` runs untimed before each) and its seconds."""

    run: Callable[[], Any]
    warmup: int
    repeats: int
    prepare: Callable[[], Any] = lambda: None
    samples: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1e3 if self.samples else float("nan")


def interleaved(calls: list[Calls]) -> None:
    """Warm each of ``calls`` up, then time them in interleaved rounds, so that drifting
    machine load hits all alike; fewer repeats are spread evenly over the rounds."""
    for c in calls:
        warm(lambda c=c: (c.prepare(), c.run()), c.warmup)
    rounds = max(c.repeats for c in calls)
    plans = [{(i * rounds) // c.repeats for i in range(c.repeats)} for c in calls]
    for r in range(rounds):
        for c, plan in zip(calls, plans, strict=True):
            if r in plan:
                c.prepare()
                start = time.perf_counter()
                c.run()
                c.samples.append(time.perf_counter() - start)


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """The median of ``repeats`` timed calls."""
    timed = Calls(call, 0, repeats)
    interleaved([timed])
    return timed.median_ms / 1e3


def endless(batches_of_epoch: Callable[[int], Iterable[Any]]) -> Iterator[Any]:
    """Epoch 1's batches, then epoch 2's, and so on."""
    for epoch in itertools.count(1):
        yield from batches_of_epoch(epoch)


def training_step(
    trainer: Any, batches: Iterator[dict[str, Any]], count: Callable[[dict[str, Any]], tuple]
) -> Step:
    """A step for the timing loops that is ``trainer``'s own training step
    (``Trainer.train_step``: autocast, loss, backward, clipping, optimizer) on the next batch,
    so that a benchmark's rnnkit figures are those of real training; ``count(batch)`` says
    the (items, tokens) it held."""
    trainer.model.train()

    def step() -> tuple[int, int]:
        batch = next(batches)
        trainer.train_step(batch)
        return count(batch)

    return step


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    fused = optimizer.defaults.get("fused")
    return f"{type(optimizer).__name__}{' (fused)' if fused else ''} lr {optimizer.defaults['lr']}"


def matmul_rate(
    m: int, k: int, n: int, seconds: float, device: torch.device, dtype: torch.dtype = torch.float32
) -> float:
    """GFLOP/s of ``torch.mm`` of an ``m x k`` by a ``k x n`` matrix of ``dtype``."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    inner = max(1, 10_000_000 // (m * k * n))  # calls between clock reads for small products
    for _ in range(2):
        torch.mm(a, b, out=out)
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(inner):
            torch.mm(a, b, out=out)
        synchronize(device)
        calls += inner
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * m * k * n * calls / elapsed / 1e9


# ---------------------------------------------------------------------------------- inputs
def train_tiny_model(task: str, root: Path) -> Path:
    """A tiny ``task`` model trained by ``tests/tiny.py`` under ``root``; its directory."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # so that ``tests`` imports when run as bench/NAME.py
    from tests.tiny import train_tiny

    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # keep the report alone on stdout
        model = train_tiny(task, root)
    progress(f"trained a tiny {task} model in {time.perf_counter() - started:.1f} s: {model}")
    return model


def model_dirs(given: dict[str, str | None], tasks: dict[str, str], root: Path) -> dict[str, Path]:
    """Name → model directory: the one given for it, else one found under ``root``
    (``root/NAME`` or ``root/TASK/model``), else a tiny model trained there."""
    found: dict[str, Path] = {}
    for name, task in tasks.items():
        if given.get(name) is not None:
            path = Path(given[name]).expanduser().resolve()
            if not (path / "config.json").is_file():
                raise SystemExit(f"--{name} {path}: not a model directory (no config.json)")
            found[name] = path
            continue
        for candidate in (root / name, root / task / "model"):
            if (candidate / "config.json").is_file():
                found[name] = candidate
                break
        else:
            found[name] = train_tiny_model(task, root / task)
    return found


def models_line(dirs: dict[str, Path], given: bool) -> str:
    """The report's words for the models of :func:`model_dirs`."""
    if not given:
        return "the tiny models of `tests/tiny.py`, trained for this run"
    return "; ".join(f"{name} `{path}`" for name, path in dirs.items())


def tagger_sentences() -> list[str]:
    """Short English sentences (4-12 words) with people and places, in the words of the
    tiny NER tagger of tests/tiny.py."""
    people = [("Elena", "Annason"), ("Boris", "Carlason"), ("Anna", "Faridson"), ("Dmitri", "")]
    places = ["Paris", "Lima", "Oslo", "Quito", "Hanoi"]
    frames = [
        "the man saw {p} in {l}",
        "we went to {l} and then left",
        "{p} went to {l} yesterday",
        "a man saw {p} and {l}",
        "yesterday we saw {p} in {l} and then left to {l2}",
        "then {p} left {l}",
    ]
    out = []
    for i, frame in enumerate(frames):
        for j, (first, last) in enumerate(people):
            person = f"{first} {last}".strip()
            place, place2 = places[(i + j) % len(places)], places[(i + 2 * j + 1) % len(places)]
            out.append(frame.format(p=person, l=place, l2=place2))
    return out


def rot13_ciphertexts(count: int = 48) -> list[str]:
    """``count`` ROT13 ciphertexts of plaintexts of 16-32 symbols from A-Z and '-'."""
    words = (
        "THIS IS A SECRET MESSAGE MEET ME AT THE OLD BRIDGE AFTER DARK BRING THE MAP AND "
        "TELL NO ONE THE PLAN CHANGED WAIT FOR MY SIGNAL NORTH GATE AT NOON"
    ).split()
    upper = string.ascii_uppercase
    rot13 = str.maketrans(upper, upper[13:] + upper[:13])  # '-' stays '-'
    rng = random.Random(13)
    out: list[str] = []
    while len(out) < count:
        target = rng.randint(16, 32)
        plain = rng.choice(words)
        while len(plain) < target:
            plain += "-" + rng.choice(words)
        if len(plain) <= 32:
            out.append(plain.translate(rot13))
    return out
