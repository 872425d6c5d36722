"""What every benchmark shares, so that two cannot drift apart on how they measure: one command
line (``--quick`` smoke runs, ``--publish``/``--append``, ``--threads``, ``--device``), one report
header (the command, the machine, how busy it was), timing by ``torch.utils.benchmark.Timer``
(which synchronises an accelerator around each timed block) around rnnkit's own training step,
and the tiny models and inputs of the serving benchmarks. Reports go to stdout, progress to
stderr; relative paths fall back to the repository root."""

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
import string
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Measurement, Timer

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
BUSY_SHARE = 0.05  # other processes busier than this share of the CPU make timings suspect
TICK = os.sysconf("SC_CLK_TCK")  # CPU ticks per second in /proc


def progress(message: str) -> None:
    """A progress line on stderr, so that a report stays alone on stdout."""
    print(message, file=sys.stderr, flush=True)


def version(package: str) -> str:
    """An installed package's version, or '?'."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(package)
    return "?"


def resolve(path: str | Path) -> Path:
    """``path`` as given, or inside the repository root when it is relative and absent."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and (REPO / p).exists():
        return REPO / p
    return p.resolve()


def load_recipe(path: str, task: str, overrides: Iterable[str] = ()) -> Any:
    """The ``task`` recipe at ``path`` (the task's ``Config``) with CLI-style ``key=value``
    overrides, checked as the CLI checks it, so that a bad key stops a run before it measures."""
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


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """An optimizer in words: its class, whether fused, its learning rate."""
    fused = optimizer.defaults.get("fused")
    return f"{type(optimizer).__name__}{' (fused)' if fused else ''} lr {optimizer.defaults['lr']}"


def describe(config: Any, task: Any = None, optimizer: Any = None) -> str:
    """A language model's or tagger's recipe in words; with its built ``task`` the vocabulary
    size too, and with the ``optimizer`` made, its own words."""
    m, t = config.model, config.train
    words = f" (vocabulary {len(task.vocab):,})" if task is not None else ""
    if hasattr(config.data, "bptt"):  # a language model
        shape = f"embedding {m.embedding_dim}{words}, {m.layers} x {m.hidden_size} {m.rnn}"
        shape += f", batch {t.batch_size}, bptt {config.data.bptt}"
    else:
        chars = "no chars" if m.chars == "none" else f"chars {m.chars} {m.char_dim}/{m.char_hidden}"
        shape = f"word {m.embedding_dim}{words}, {chars}, {m.layers} x {m.hidden_size} bi-{m.rnn}"
        shape += f", {m.head} head, batch {t.batch_size}"
    how = f"{t.optimizer} lr {t.lr}" if optimizer is None else describe_optimizer(optimizer)
    return f"{shape}, dropout {m.dropout}; {how}, clip_norm {t.clip_norm}"


# --------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User + system CPU seconds of a process so far (``/proc/PID/stat``), or None."""
    try:
        after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(after_name[11]) + int(after_name[12])) / TICK
    except (OSError, ValueError, IndexError):
        return None


def memory_kib(pid: int, key: str = "VmRSS") -> int | None:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``) in KiB, or None."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def cpu_ticks() -> tuple[float, float, float] | None:
    """(all ticks, busy ticks of the machine, ticks of this process and the children it has
    waited for) from /proc and ``os.times``, or None."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    except (OSError, ValueError):
        return None
    busy = user + nice + system + irq + softirq + steal
    return busy + idle + iowait, busy, sum(os.times()[:4]) * TICK


def others_share(before: tuple[float, float, float] | None) -> float | None:
    """Share of the whole CPU that other processes used since ``before``; this process and the
    children it has waited for since (servers, workers, torchrun's) are not others."""
    after = cpu_ticks()
    if before is None or after is None or after[0] <= before[0]:
        return None
    total, busy, own = (a - b for a, b in zip(after, before, strict=True))
    return max(0.0, busy - own) / total


def threads(args: argparse.Namespace) -> str:
    """torch's thread count and where it came from."""
    where = "torch default"
    if getattr(args, "threads", None) is not None:
        where = "set by --threads"
    elif os.environ.get("OMP_NUM_THREADS"):
        where = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    return f"torch threads {torch.get_num_threads()} ({where})"


def header(
    title: str, args: argparse.Namespace, others: float | None, machine: str, doc: str = ""
) -> list[str]:
    """A report's first lines: title and date, the command, the machine (``machine`` says what
    follows the cores and torch) and how busy it was, warnings, and with the benchmark's module
    ``doc`` its method (the docstring's second paragraph), so that it is written once."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    busy, warnings = "other processes' CPU use during the run: unknown", []
    if others is not None:
        busy = f"other processes used {others:.0%} of the CPU during the run"
        if others > BUSY_SHARE:
            progress(f"warning: other processes used {others:.0%} of the CPU")
            warnings.append("- **warning**: the CPU was shared with other work; timings unreliable")
    if args.quick:
        warnings.append(f"- **--quick smoke run**: {args.smoke}; not a measurement")
    return [
        f"### {title} ({now}){' [quick]' if args.quick else ''}",
        "",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- machine: {os.cpu_count()} cores ({cpu_model()}), torch {torch.__version__}, "
        f"{machine}; {busy}",
        *warnings,
        *([f"- method: {' '.join(doc.split(chr(10) * 2)[1].split())}"] if doc else []),
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


def choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse ``type``: distinct comma-separated names out of ``allowed``, in its order."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names or set(names) - set(allowed) or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"names out of {', '.join(allowed)}, not {text!r}")
        return [n for n in allowed if n in names]

    return parse


def parser(
    doc: str,
    smoke: str,
    data_dir: bool = False,
    threads: bool = True,
    tuned: dict[str, tuple[Any, Any, str]] | None = None,
    device: str | None = None,
) -> argparse.ArgumentParser:
    """The flags every benchmark takes: ``--quick`` (``smoke`` says what it shrinks),
    ``--publish``, ``--append FILE``; ``--threads``, ``--data-dir`` and ``--device`` (default
    ``device``) where asked; and one ``--NAME`` per entry of ``tuned`` (``name: (full value,
    quick value, help)``): a number a smoke run changes, ≥ 1 (a count), > 0 (seconds), or ≥ 0
    for a warm-up."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"smoke run: {smoke}")
    p.add_argument("--publish", action="store_true", help="also append the report to RESULTS.md")
    p.add_argument("--append", type=Path, help="also append the report to this file")
    if threads:
        p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    if data_dir:
        p.add_argument("--data-dir", default="../shared/data", help="default ../shared/data")
    if device:
        p.add_argument("--device", default=device, help=f"cpu, cuda or auto ({device})")
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
            p.error(f"--{name.replace('_', '-')} must be {'≥ 0' if warmup else '> 0'}")
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            p.error("--threads must be ≥ 1")
        torch.set_num_threads(args.threads)
    if args.publish and args.append is not None:
        p.error("give --publish or --append, not both")
    if args.quick and (args.publish or args.append is not None):
        p.error("a --quick smoke run is not published")
    if getattr(args, "data_dir", None) is not None:
        args.data_dir = resolve(args.data_dir)
    progress(f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}")
    args.target, args.smoke = RESULTS if args.publish else args.append, p.smoke
    return args


def needs(*modules: str, pip: str = "") -> bool:
    """Whether the peer packages a benchmark compares with import; if not, says so."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        progress(
            f"error: {', '.join(missing)} not installed (pip install {pip or ' '.join(missing)})"
        )
    return not missing


def ratio(ours: float, theirs: float, form: str = ".2f", missing: str = "n/a") -> str:
    """``ours / theirs`` as ``2.15×``; ``missing`` where either is unknown or ``theirs`` is 0."""
    known = theirs > 0 and not (math.isnan(ours) or math.isnan(theirs))
    return f"{ours / theirs:{form}}×" if known else missing


def table(head: str | list[str], rows: Iterable[Any], left: int = 1) -> list[str]:
    """A markdown table: the ``head`` cells, then ``rows``, each a list of cells or a string of
    them joined by " | " (so may ``head`` be); the first ``left`` columns aligned left."""
    if isinstance(head, str):
        head = [cell.strip() for cell in head.split("|")]

    def line(cells: str | Iterable[Any]) -> str:
        return "| " + (cells if isinstance(cells, str) else " | ".join(map(str, cells))) + " |"

    return [line(head), "|" + "---|" * left + "---:|" * (len(head) - left), *map(line, rows)]


def section(title: str, *body: str) -> list[str]:
    """A report's ``#### title`` and its ``body`` lines, set off by blank lines."""
    return ["", f"#### {title}", "", *body]


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
        """Items per second."""
        return self.items / self.seconds if self.seconds > 0 else float("nan")

    @property
    def tokens_per_second(self) -> float:
        """Tokens per second."""
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


Step = Callable[[], tuple[int, int]]  # one update or call; returns (items, tokens)


def timer(call: Callable[[], Any], label: str = "") -> Timer:
    """A ``torch.utils.benchmark.Timer`` of ``call()`` at torch's current thread count (the
    Timer's own default is one thread)."""
    return Timer("call()", globals={"call": call}, label=label, num_threads=torch.get_num_threads())


def timed(
    step: Step, seconds: float = 0.0, into: Rate | None = None, warmup: int = 0, steps: int = 0
) -> Rate:
    """Time ``step`` after ``warmup`` untimed calls: ``Timer.blocked_autorange`` for at least
    ``seconds`` or, with ``steps``, ``Timer.timeit`` of that many calls; the work is added to
    ``into`` (a new Rate by default). Items and tokens are the mean per call (every call
    counted, the Timer's own warm-up included) times the calls timed."""
    for _ in range(warmup):
        step()
    work = [0, 0, 0]  # calls, items, tokens

    def call() -> None:
        items, tokens = step()
        work[0], work[1], work[2] = work[0] + 1, work[1] + items, work[2] + tokens

    t = timer(call)
    measured = t.timeit(steps) if steps else t.blocked_autorange(min_run_time=seconds)
    calls = len(measured.raw_times) * measured.number_per_run
    rate = into or Rate()
    rate.items += round(work[1] / work[0] * calls)
    rate.tokens += round(work[2] / work[0] * calls)
    rate.steps += calls
    rate.seconds += sum(measured.raw_times)
    return rate


def median_s(call: Callable[[], Any], seconds: float) -> float:
    """The median seconds of ``call()`` by ``Timer.blocked_autorange`` over ``seconds``."""
    return timer(call).blocked_autorange(min_run_time=seconds).median


def medians(calls: dict[str, Callable[[], Any]], seconds: float, rounds: int = 3) -> dict:
    """Each of ``calls`` timed by ``Timer.blocked_autorange`` for ``seconds`` in all, in
    ``rounds`` interleaved turns so that drifting machine load hits all alike: name →
    merged ``Measurement`` (``.median`` in seconds, ``.times``)."""
    done: dict[str, list[Measurement]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            done[name].append(timer(call, name).blocked_autorange(min_run_time=seconds / rounds))
    return {name: Measurement.merge(parts)[0] for name, parts in done.items()}


def endless(batches_of_epoch: Callable[[int], Iterable[Any]]) -> Iterator[Any]:
    """Epoch 1's batches, then epoch 2's, and so on."""
    for epoch in itertools.count(1):
        yield from batches_of_epoch(epoch)


def training_step(
    trainer: Any, batches: Iterator[dict[str, Any]], count: Callable[[dict[str, Any]], tuple]
) -> Step:
    """A timed step that is ``trainer``'s own training step (``Trainer.train_step``: autocast,
    loss, backward, clipping, optimizer) on the next batch, so that rnnkit's figures are those
    of real training; ``count(batch)`` says the (items, tokens) it held."""
    trainer.model.train()

    def step() -> tuple[int, int]:
        batch = next(batches)
        trainer.train_step(batch)
        return count(batch)

    return step


def matmul_rate(
    m: int, k: int, n: int, seconds: float, device: Any, dtype: torch.dtype = torch.float32
) -> float:
    """GFLOP/s of ``torch.mm`` of an ``m x k`` by a ``k x n`` matrix of ``dtype``."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    median = timer(lambda: torch.mm(a, b, out=out)).blocked_autorange(min_run_time=seconds).median
    return 2 * m * k * n / median / 1e9


# ------------------------------------------------------------------------ inputs and models
PEOPLE = [("Elena", "Annason"), ("Boris", "Carlason"), ("Anna", "Faridson"), ("Dmitri", "")]
PLACES = ["Paris", "Lima", "Oslo", "Quito", "Hanoi"]
FRAMES = ["the man saw {p} in {l}", "we went to {l} and then left", "{p} went to {l} yesterday",
          "a man saw {p} and {l}", "yesterday we saw {p} in {l} and then left to {l2}",
          "then {p} left {l}"]  # fmt: skip
SUBJECTS = {"je suis": "i am", "il est": "he is", "elle est": "she is", "nous sommes": "we are",
            "vous etes": "you are", "ils sont": "they are"}  # fmt: skip
WORDS = {"fatigue": "tired", "content": "happy", "grand": "tall", "petit": "small",
         "malade": "sick", "pret": "ready", "triste": "sad", "riche": "rich",
         "en retard": "late", "occupe": "busy"}  # fmt: skip
FILLER = "the a man saw went to and then left yesterday we".split()
SECRETS = ("THIS IS A SECRET MESSAGE MEET ME AT THE OLD BRIDGE AFTER DARK BRING THE MAP AND TELL "
           "NO ONE THE PLAN CHANGED WAIT FOR MY SIGNAL NORTH GATE AT NOON").split()  # fmt: skip
TINY = {  # task → overrides of a tiny model (the test suite's sizes) that trains in seconds
    "cipher": "model.embedding_dim=8 model.hidden_size=32 data.train_messages=2048 "
    "data.eval_messages=256 train.batch_size=32 train.epochs=3",
    "translate": "model.source_embedding_dim=16 model.target_embedding_dim=16 model.hidden_size=16 "
    "model.decoder_size=16 train.epochs=3 train.batch_size=16",
    "tag": "data.format=columns data.token_column=0 data.tag_column=1 data.separator=tab "
    "data.scheme=IOB2 model.embedding_dim=16 model.char_dim=8 model.char_hidden=8 "
    "model.hidden_size=16 model.layers=1 model.dropout=0.1 model.head=crf train.epochs=4 "
    "train.batch_size=16 train.lr=0.01",
}


def tagger_sentences() -> list[str]:
    """Short English sentences (4-12 words) with people and places."""
    return [
        frame.format(
            p=f"{first} {last}".strip(), l=PLACES[(i + j) % 5], l2=PLACES[(i + 2 * j + 1) % 5]
        )
        for i, frame in enumerate(FRAMES)
        for j, (first, last) in enumerate(PEOPLE)
    ]


def rot13_ciphertexts(count: int = 48) -> list[str]:
    """``count`` ROT13 ciphertexts of plaintexts of 16-32 symbols from A-Z and '-'."""
    rot13 = str.maketrans(
        string.ascii_uppercase, string.ascii_uppercase[13:] + string.ascii_uppercase[:13]
    )
    rng, out = random.Random(13), []
    while len(out) < count:
        target, plain = rng.randint(16, 32), rng.choice(SECRETS)
        while len(plain) < target:
            plain += "-" + rng.choice(SECRETS)
        if len(plain) <= 32:
            out.append(plain.translate(rot13))
    return out


def translator_inputs() -> list[str]:
    """Short normalised French sentences such as ``je suis fatigue .``."""
    words = [w for w in WORDS if w not in ("riche", "en retard")]
    return [
        f"{s} {'tres ' * ((i + j) % 3 == 0)}{w} ."
        for i, s in enumerate(SUBJECTS)
        for j, w in enumerate(words)
    ]


def tiny_data(task: str, root: Path) -> list[str]:
    """Overrides for a tiny ``task`` model (tag, cipher, translate) on data generated under
    ``root`` the test suite's way: NER sentences of filler words, people and places; English-
    French pairs of every subject and word, plain and with "very"."""
    extra = []
    if task == "translate":
        lines = [f"{en}{very} {e}.\t{fr.capitalize()} {tres}{f}."
                 for fr, en in SUBJECTS.items() for f, e in WORDS.items()
                 for tres, very in (("", ""), ("tres ", " very"))]  # fmt: skip
        (root / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        extra = [f"data.file={root / 'pairs.tsv'}"]
    people = [first for first, _ in PEOPLE] + ["Carla", "Farid"]
    splits = (("train", 300), ("dev", 60), ("test", 60)) if task == "tag" else ()
    for seed, (split, count) in enumerate(splits):
        rng, rows = random.Random(seed), []
        for _ in range(count):
            for _ in range(rng.randint(1, 3)):
                rows += [f"{rng.choice(FILLER)}\tO" for _ in range(rng.randint(1, 3))]
                kind = rng.random()
                if kind < 0.4:
                    rows += [f"{rng.choice(people)}\tB-PER", f"{rng.choice(people)}son\tI-PER"]
                elif kind < 0.8:
                    rows.append(f"{rng.choice(PLACES)}\tB-LOC")
            rows.append("")
        (root / f"{split}.tsv").write_text("\n".join(rows), encoding="utf-8")
        extra.append(f"data.{split}={root / f'{split}.tsv'}")
    return [*TINY[task].split(), *extra, "train.progress=false", "train.device=cpu"]


def model_dirs(given: dict[str, str | None], tasks: dict[str, str], root: Path) -> dict[str, Path]:
    """Name → model directory: the one given for it, else one found under ``root``
    (``root/NAME`` or ``root/TASK/model``), else a tiny model trained at ``root/TASK/model``."""
    from rnnkit.config import from_dict, parse_overrides
    from rnnkit.tasks import build_task, task_class
    from rnnkit.train import Trainer

    found: dict[str, Path] = {}
    for name, task in tasks.items():
        if given.get(name) is not None:
            found[name] = Path(given[name]).expanduser().resolve()
            if not (found[name] / "config.json").is_file():
                raise SystemExit(f"--{name} {found[name]}: not a model directory (no config.json)")
        elif found_here := [
            p for p in (root / name, root / task / "model") if (p / "config.json").is_file()
        ]:
            found[name] = found_here[0]
        else:
            (root / task).mkdir(parents=True, exist_ok=True)
            config = from_dict(
                task_class(task).Config, parse_overrides(tiny_data(task, root / task))
            )
            found[name] = root / task / "model"
            Trainer(build_task(task, config), config.train, found[name], log=lambda _: None).fit()
            progress(f"trained a tiny {task} model: {found[name]}")
    return found


def models_line(dirs: dict[str, Path], given: bool) -> str:
    """The report's words for the models of :func:`model_dirs`."""
    if not given:
        return "the tiny models of `bench/common.py`, trained for this run"
    return "; ".join(f"{name} `{path}`" for name, path in dirs.items())
