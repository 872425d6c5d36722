"""The ``rnnkit`` command. Bad input prints one line and exits 2; never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rnnkit.errors import RnnkitError

if TYPE_CHECKING:
    from rnnkit.tasks.base import Evaluation, Streams, Task

EXIT_USAGE = 2


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", help="where datasets live (default: $RNNKIT_DATA, else ~/.cache/rnnkit/data)"
    )


def _task_classes() -> list[Any]:
    """Every registered task class, in the registry's order."""
    from rnnkit.tasks import TASKS, task_class

    return [task_class(name) for name in TASKS]


def _option_flags(field: dataclasses.Field) -> list[str]:
    flags = [f"--{field.name.replace('_', '-')}"]
    return [f"-{field.name}", *flags] if len(field.name) == 1 else flags


def _add_predict_parser(sub: Any, cls: Any) -> None:
    """The parser of a task's verb (:class:`~rnnkit.tasks.base.Verb`): model, inputs, output,
    and one flag per field of the task's predict options, whose defaults are the options' own
    (so CLI, Python and HTTP agree)."""
    from rnnkit.budget import DEFAULT_SECONDS
    from rnnkit.tasks.base import DEFAULT_LIMITS, ShowsAttention

    verb, name = cls.verb, cls.name
    p = sub.add_parser(verb.name, help=verb.help)
    p.set_defaults(handler=cmd_predict, task_class=cls)
    if verb.model_free:
        source = p.add_mutually_exclusive_group(required=True)
        free = verb.model_free
        source.add_argument(f"--{free.flag}", dest="model_free", metavar="FILE", help=free.help)
        source.add_argument("--model", help=f"a model directory (task {name})")
    else:
        p.add_argument("--model", required=True, help="model directory")
    if verb.prompt:
        p.add_argument("--prompt", default="", help="text to continue")
    else:
        p.add_argument("text", nargs="*", help=f"{verb.inputs}; '-' reads stdin, one a line")
        p.add_argument("--file", help=f"read {verb.inputs} from this file, one a line")
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--deadline", type=float, default=DEFAULT_SECONDS, metavar="S",
        help=f"stop a block of {DEFAULT_LIMITS.max_inputs:,} inputs that takes longer than S "
        f"seconds (default {DEFAULT_SECONDS:g}; 0: no limit)",
    )  # fmt: skip
    options = cls.Options
    for field in dataclasses.fields(options):
        help_text = f"{field.metadata['help']} (default: {field.default})"
        if field.type in (bool, "bool"):
            p.add_argument(*_option_flags(field), action="store_true", default=None, help=help_text)
        else:
            p.add_argument(*_option_flags(field), default=None, metavar="X", help=help_text)
    if verb.file_flag:
        flag = verb.file_flag
        p.add_argument(f"--{flag}", dest="data_file", metavar=flag.upper(), help=verb.file_help)
    if verb.output_format:
        formats = [verb.output_format, "json"]
        p.add_argument("--format", choices=formats, default=formats[0], help="output format")
    if isinstance(cls, ShowsAttention):
        p.add_argument(
            "--plot-attention",
            metavar="PNG",
            help="draw the attention map here (several sentences: PNG stem-1.png, stem-2.png, ...)",
        )


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other rnnkit error."""

    def error(self, message: str) -> NoReturn:
        """Exit with status 2 and the one-line message (argparse calls this on bad usage)."""
        self.exit(EXIT_USAGE, f"rnnkit: error: {message} (see '{self.prog} --help')\n")


# What --dry-run puts over a recipe's train section: a couple of updates, one evaluation.
DRY_RUN_STEPS = 2
DRY_RUN_TRAIN = {
    "epochs": 1,
    "max_steps": DRY_RUN_STEPS,
    "max_minutes": None,
    "patience": None,
    "target": None,
    "progress": False,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``rnnkit`` command line: every verb, its flags and its help."""
    parser = _Parser(prog="rnnkit", description="Recurrent sequence models: train, evaluate, use.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model for a task")
    p.add_argument("task", help="the task: cipher, lm, tag, classify, ...")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--config", help="a YAML recipe")
    p.add_argument("--out", help="model directory to write")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--force", action="store_true", help="overwrite an existing model in --out")
    p.add_argument("--deterministic", action="store_true", help="bit-for-bit repeatable on CPU")
    p.add_argument("--device", help="auto (default), cpu, cuda, mps")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check a recipe end to end: read its data, build the model, take "
        f"{DRY_RUN_STEPS} steps, evaluate once, save",
    )
    _add_data_dir(p)

    from rnnkit.tasks.base import HasCommands, HasVerb

    tasks = _task_classes()
    for cls in tasks:
        if isinstance(cls, HasVerb):
            _add_predict_parser(sub, cls)

    p = sub.add_parser("eval", help="score a model on held-out data")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--data", help="a data file (default: the recipe's test split)")
    p.add_argument("--json", action="store_true", help="print one JSON object of metrics")
    p.add_argument(
        "--confusion",
        metavar="PNG",
        help="classify: draw the confusion matrix as a PNG here (default: none)",
    )
    p.add_argument(
        "--beam", type=int, help="translate: beam size, 1 = greedy (default: the recipe's)"
    )
    p.add_argument("--device", default="cpu")
    _add_data_dir(p)

    p = sub.add_parser("prepare", help="prepare a training file into token ids ahead of training")
    p.add_argument("task", help="a task that trains from a prepared corpus: lm, embed, ...")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--config", help="a YAML recipe")
    _add_data_dir(p)

    for cls in tasks:
        for command in cls.commands if isinstance(cls, HasCommands) else ():
            command.add(sub).set_defaults(handler=command.run)

    from rnnkit.crack import add_crack_parser
    from rnnkit.datasets.command import add_data_parser
    from rnnkit.export import add_export_parser
    from rnnkit.serve.command import add_serve_parser
    from rnnkit.tune import add_tune_parser

    add_tune_parser(sub)
    add_data_parser(sub)
    add_serve_parser(sub)
    add_export_parser(sub)
    add_crack_parser(sub)

    p = sub.add_parser("demo", help="train the seed's ROT13 cipher model and decrypt with it")
    p.add_argument("--out", default="runs/cipher-demo")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``rnnkit ARGV``; returns the exit status (2 and one line on stderr for bad input,
    130 after Ctrl-C)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting positionals at the first option; key=value overrides that come
    # after the options land here, and belong to the same list.
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and args.command not in ("train", "tune")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        with _log_on_stderr():
            return (getattr(args, "handler", None) or _handler(args.command))(args)
    except RnnkitError as err:
        print(f"rnnkit: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as err:
        # Sizes within every bound can still ask for more memory than the machine has.
        text = str(err)
        if not isinstance(err, MemoryError) and "alloc" not in text and "out of memory" not in text:
            raise
        print(
            "rnnkit: error: out of memory: the model or its batches do not fit; lower the "
            "model sizes, data lengths or train.batch_size",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except OSError as err:
        if isinstance(err, BrokenPipeError):
            return _closed_pipe()
        # Disk full, read-only or vanished paths, permissions: one line, what and where.
        where = f": {err.filename}" if err.filename else ""
        print(f"rnnkit: error: {err.strerror or err}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "rnnkit: interrupted; the last checkpoint is intact (--resume continues)",
            file=sys.stderr,
        )
        return 130


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a message comes (a test may have swapped it)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print one log record on the current ``sys.stderr``."""
        print(self.format(record), file=sys.stderr, flush=True)


@contextlib.contextmanager
def _log_on_stderr() -> Iterator[None]:
    """While a command runs, the library's own messages (epochs, what was read or fetched) go
    to stderr as plain lines; a program that imports rnnkit decides that for itself."""
    logger, handler = logging.getLogger("rnnkit"), _Stderr()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _closed_pipe() -> int:
    """The reader of stdout went away (``| head``): not an error, and nothing more to say."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``rnnkit train``: check the recipe, the metric and ``--out`` before the disk is touched,
    take the writer lock, read the data, then (``--force``) clear the old run and train."""
    from rnnkit.config import from_dict, merge, parse_overrides, read_yaml, upgrade
    from rnnkit.tasks import build_task, task_class
    from rnnkit.train import Trainer

    cls = task_class(args.task)
    extra = parse_overrides(args.overrides)
    for flag, key in (("deterministic", "deterministic"), ("device", "device"), ("seed", "seed")):
        value = getattr(args, flag)
        if value is not None and value is not False:  # `0 in (None, False)` is True
            extra = merge(extra, {"train": {key: value}})
    if args.dry_run:  # after the overrides, so that nothing on the command line undoes it
        extra = merge(extra, {"train": DRY_RUN_TRAIN})
    from rnnkit import checkpoint as ckpt
    from rnnkit.runtime import rank
    from rnnkit.tasks.base import metric_goal

    # Under torchrun only rank 0 owns the directory: it takes the lock, checks and clears it.
    main_process = rank() == 0
    if args.resume:
        if args.config or args.out or args.force:
            raise RnnkitError("--resume continues a run as it was: drop --config, --out, --force")
        out = Path(args.resume)
        ckpt.read_model_config(out)  # a clear error for a directory that is no model
        if main_process:
            ckpt.acquire_writer(out)  # held until the process ends; a second writer is refused
        stored = ckpt.read_model_config(out)
        if stored["task"] != args.task:
            raise RnnkitError(f"{out} holds a '{stored['task']}' run, not '{args.task}'")
        config = from_dict(cls.Config, merge(upgrade(stored["config"]), extra))
        task = build_task(args.task, config, args.data_dir)  # $RNNKIT_DATA and the cache too
        _check_same_vocabularies(task, out)
    else:
        if not args.out:
            raise RnnkitError("--out DIR is required (or --resume DIR)")
        out = Path(args.out)
        base = read_yaml(args.config) if args.config else {}
        base.setdefault("task", args.task)
        if base["task"] != args.task:
            raise RnnkitError(f"{args.config} is a '{base['task']}' recipe, not '{args.task}'")
        # Everything that can be checked without the data is checked before the disk is
        # touched: the config, the metric's name, and what --out holds.
        config = from_dict(cls.Config, merge(base, extra))
        if config.train.metric:
            metric_goal(cls, config.train.metric)
        if main_process:
            _check_out(out, args.force)
        with _undo_new_directory(out, main_process):
            # The lock first, then the check again: two runs started together cannot both
            # pass it.
            if main_process:
                ckpt.acquire_writer(out)
                _check_out(out, args.force)
            task = build_task(args.task, config, args.data_dir)
            # Per-type metrics (f1_PER) are known once the data has been read.
            metric_goal(task, config.train.metric or task.default_metric)
    if main_process and not args.resume and args.force:
        _clear_run(out)  # only now: nothing above can fail any more
    trainer = Trainer(task, config.train, out)
    summary = trainer.fit(resume=bool(args.resume))
    if not main_process:
        return 0
    if summary["best"] is None:
        raise RnnkitError(
            f"no epoch gave a finite dev {summary['metric']} ({summary['steps']} steps); "
            f"{out} holds no usable model"
        )
    print(
        f"best dev {summary['metric']} {summary['best']:.4f} at epoch {summary['best_epoch']}"
        f" ({summary['steps']} steps, {summary['minutes']:.1f} min); model in {out}"
    )
    return 0


def _check_same_vocabularies(task: Task, out: Path) -> None:
    """Every vocabulary a model was built on (words, characters, tags, labels, targets,
    counts) must come out of the data the same again on ``--resume``, or the weights would
    mean other things."""
    from rnnkit import checkpoint as ckpt

    for name, data in task.model_files().items():
        if name != "config.json" and name.endswith(".json"):
            if ckpt.read_json(out / name) != json.loads(data):
                raise RnnkitError(
                    f"the training data changed since {out} was started ({name} differs)"
                )


def _run_entries(out: Path) -> tuple[list[str], list[str]]:
    """What ``out`` holds besides the locks: (names an rnnkit run writes, other names)."""
    from rnnkit import checkpoint as ckpt
    from rnnkit.tasks.storage import run_files

    ours: list[str] = []
    foreign: list[str] = []
    known = run_files()
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name in (ckpt.WRITER_LOCK, ckpt.COMMIT_LOCK):
            continue
        # confusion-SPLIT.png: what `rnnkit eval` drew into model directories before 0.2
        rnnkit_file = name in known or (name.endswith(".next") and name[:-5] in known)
        rnnkit_file = rnnkit_file or (name.startswith("confusion-") and name.endswith(".png"))
        if not (entry.exists() or entry.is_symlink()):
            continue  # a running writer renamed NAME.next over NAME since iterdir() listed it
        (ours if rnnkit_file and entry.is_file() else foreign).append(name)
    return ours, foreign


def _written_by_rnnkit(out: Path) -> bool:
    """Whether ``out``'s config.json (or the one its unfinished commit brings) is rnnkit's."""
    from rnnkit import checkpoint as ckpt

    # The twin first: a writer renames it over config.json, never the other way round, so
    # whichever moment this looks at, one of the two reads.
    for name in ("config.json.next", "config.json"):
        try:
            config = ckpt.read_json(out / name)
        except RnnkitError:
            continue
        if isinstance(config, dict) and "rnnkit_version" in config:
            return True
    return False


def _check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that training would harm: a file, a directory holding anything
    rnnkit did not write (with or without ``--force``), or a model without ``--force``."""
    from rnnkit import checkpoint as ckpt

    if not out.exists():
        return
    if not out.is_dir():
        raise RnnkitError(f"--out {out} is a file, not a directory")
    ours, foreign = _run_entries(out)
    if foreign:
        raise RnnkitError(
            f"{out} holds files rnnkit did not write ({', '.join(foreign[:3])}); "
            "pick an empty or new --out"
        )
    if not ours:
        return
    if not _written_by_rnnkit(out):
        raise RnnkitError(f"{out / ours[0]} was not written by rnnkit; pick another --out")
    # A model: config.json, or a commit that died after its commit point (journal written).
    if not force and ((out / "config.json").exists() or (out / ckpt.JOURNAL).exists()):
        raise RnnkitError(f"{out} already holds a model (use --resume or --force)")


@contextlib.contextmanager
def _undo_new_directory(out: Path, main_process: bool) -> Iterator[None]:
    """If the block fails, leave no trace of a directory (or lock files) it created: a refused
    run must not leave an empty ``--out`` behind."""
    from rnnkit import checkpoint as ckpt

    existed = out.exists()
    locks = [out / ckpt.WRITER_LOCK, out / ckpt.COMMIT_LOCK]
    had = [lock.exists() for lock in locks]
    try:
        yield
    except BaseException:
        if main_process and out.is_dir() and not _run_entries(out)[0]:
            ckpt.release_writer(out)
            for lock, there in zip(locks, had, strict=True):
                if not there:
                    lock.unlink(missing_ok=True)
            if not existed:
                with contextlib.suppress(OSError):
                    out.rmdir()  # only if empty: a file that appeared meanwhile stays
        raise


def _clear_run(out: Path) -> None:
    """Remove what an earlier rnnkit run left in ``out`` (checked by :func:`_check_out`)."""
    if not out.exists():
        return
    for name in _run_entries(out)[0]:
        (out / name).unlink(missing_ok=True)


def _lines(text: str) -> list[str]:
    """Lines split at newlines only (not at form feeds or U+2028, as ``splitlines`` does), so
    that outputs line up with the input's lines."""
    lines = text.replace("\r\n", "\n").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _read_inputs(args: argparse.Namespace) -> list[str]:
    texts: list[str] = []
    if args.file:
        from rnnkit.data.text import read_text

        texts.extend(_lines(read_text(args.file)))
    for text in args.text:
        if text == "-":
            texts.extend(_lines(sys.stdin.read()))
        else:
            texts.append(text)
    if not args.file and not args.text:
        raise RnnkitError("give the input text, '-' for stdin, or --file F")
    return texts


def cmd_predict(args: argparse.Namespace) -> int:
    """Every task's verb: read inputs, load the model, predict in bounded chunks, print."""
    from rnnkit import budget
    from rnnkit import checkpoint as ckpt
    from rnnkit.tasks import load_task
    from rnnkit.tasks.base import DEFAULT_LIMITS, Streams, TokenFiles, resolve_options

    cls = args.task_class
    if not 0 <= args.deadline < float("inf"):
        raise RnnkitError(
            f"--deadline must be 0 (no limit) or a number of seconds, not {args.deadline}"
        )
    # Options are checked before anything is read or loaded.
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls.Options)}
    if getattr(args, "plot_attention", None):
        given[cls.attention_option] = True
    # Flags arrive as strings from argv: the one place where option values are converted.
    options = resolve_options(cls, {k: v for k, v in given.items() if v is not None}, strict=False)
    data_file = getattr(args, "data_file", None)
    inputs = [args.prompt] if cls.verb.prompt else [] if data_file else _read_inputs(args)
    if getattr(args, "model_free", None):
        results = cls.verb.model_free.answer(args.model_free, inputs, options)
        return _print_results(cls.format, args, inputs, results)
    stored = ckpt.read_model_config(args.model)["task"]
    if stored != cls.name:
        raise RnnkitError(
            f"{args.model} holds a '{stored}' model; "
            f"'rnnkit {args.command}' needs a '{cls.name}' model"
        )
    task = load_task(args.model, device=args.device)
    if getattr(args, "format", None) == "json":
        args.json = True
    if isinstance(task, Streams) and not args.json:
        for text in inputs:
            with budget.deadline(args.deadline or None):
                _stream(task, text, options)
        return 0
    token_lists = None
    if data_file:
        if not isinstance(task, TokenFiles):
            raise RnnkitError(f"--{cls.verb.file_flag}: the {cls.name} task reads no such file")
        token_lists = [s.tokens for s in task.read_tokens(data_file)]
        inputs = [" ".join(tokens) for tokens in token_lists]
    step, seconds = DEFAULT_LIMITS.max_inputs, args.deadline or None
    results = []
    for i in range(0, len(inputs), step):
        with budget.deadline(seconds):  # each block of inputs gets the whole budget
            if token_lists is not None:
                results.extend(task.predict_tokens(token_lists[i : i + step]))
            else:
                results.extend(task.predict(inputs[i : i + step], options))
    return _print_results(task.format, args, inputs, results)


def _print_results(
    show: Callable[[str, dict[str, Any]], str],
    args: argparse.Namespace,
    inputs: list[str],
    results: list[dict[str, Any]],
) -> int:
    """Print each result (as ``show(input, result)`` says, or as JSON), and its attention map
    if asked for."""
    for i, (text, result) in enumerate(zip(inputs, results, strict=True), 1):
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            print(show(text, result))
        if getattr(args, "plot_attention", None):
            title = f"{result.get('source', text)} → {show(text, result)}"
            _plot_attention(args.plot_attention, result, title, i if len(results) > 1 else None)
    return 0


def _stream(task: Streams, prompt: str, options: Any) -> None:
    """Print a prompt's continuation as it is generated."""
    sys.stdout.write(prompt + task.joiner(prompt))
    for piece in task.stream(prompt, options):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def _plot_attention(png: str, result: dict[str, Any], title: str, number: int | None) -> None:
    """Draw a result's attention weights into ``png`` (``stem-NUMBER.png`` for one of many)."""
    from rnnkit.plots import plot_attention

    where = Path(png)
    if number is not None:
        where = where.with_name(f"{where.stem}-{number}{where.suffix or '.png'}")
    try:
        plot_attention(
            result["source_tokens"], result["target_tokens"], result["attention"], where, title
        )
    except OSError as err:
        raise RnnkitError(f"cannot write {where} ({err.strerror})") from None
    print(f"attention map: {where}", file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    """``rnnkit eval``: score a model on its recipe's test split or on ``--data``."""
    from rnnkit.tasks import load_task
    from rnnkit.tasks.base import BeamSearch

    task = load_task(args.model, device=args.device, data_dir=args.data_dir)
    if args.beam is not None:
        if not isinstance(task, BeamSearch):
            raise RnnkitError(f"--beam: the {task.name} task has no beam search")
        if args.beam < 1:
            raise RnnkitError(f"--beam must be ≥ 1, not {args.beam}")
        task.use_beam(args.beam)
    found = task.evaluate_file(args.data) if args.data else task.evaluate("test")
    _plot_confusion(task, args, found)
    if args.json:
        print(json.dumps(found.metrics))
    else:
        width = max(len(k) for k in found)
        for name, value in found.items():
            print(f"{name:<{width}}  {value:.4f}")
        if found.report:
            print("\n" + found.report)
    return 0


def _plot_confusion(task: Task, args: argparse.Namespace, found: Evaluation) -> None:
    """Draw the confusion matrix of the evaluation just run where ``--confusion`` says (never
    into the model directory: readers do not write there)."""
    if not args.confusion:
        return
    if found.confusion is None:
        raise RnnkitError(f"--confusion: the {task.name} task draws no confusion matrix")
    split = Path(args.data).stem if args.data else "test"
    where = Path(args.confusion)
    title = f"{Path(args.model).name} on {split}: accuracy {found.get('accuracy', 0):.4f}"
    try:
        found.plot_confusion(where, title)
    except OSError as err:
        raise RnnkitError(f"cannot write {where} ({err.strerror})") from None
    print(f"confusion matrix: {where}", file=sys.stderr)


def cmd_prepare(args: argparse.Namespace) -> int:
    """``rnnkit prepare``: the recipe's training file into token ids on disk, as ``rnnkit
    train`` would prepare it first (it then finds it in the cache); prints where."""
    from rnnkit.config import from_dict, merge, parse_overrides, read_yaml
    from rnnkit.tasks import _data_dir, task_class
    from rnnkit.tasks.base import PreparesText

    cls = task_class(args.task)
    if not isinstance(cls, PreparesText):
        raise RnnkitError(f"the {args.task} task reads its data into memory: nothing to prepare")
    base = read_yaml(args.config) if args.config else {}
    config = from_dict(cls.Config, merge(base, parse_overrides(args.overrides)))
    prepared = cls.prepare_training_file(config, _data_dir(args.data_dir))
    print(f"{prepared.tokens:,} tokens, {len(prepared.vocab):,} symbols: {prepared.directory}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's first command: train the first registered task that has a demo into
    ``--out`` (a new directory or an earlier demo's), and show what it does."""
    from rnnkit import checkpoint as ckpt
    from rnnkit.tasks.base import HasDemo

    demos = [cls for cls in _task_classes() if isinstance(cls, HasDemo)]
    if not demos:
        raise RnnkitError("no registered task has a demo")
    out = Path(args.out)
    if out.exists():
        shown = [p for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else [1]
        if shown and not (out / "config.json").exists():
            raise RnnkitError(f"{out} exists and is not an rnnkit model directory; pick --out")
    ckpt.acquire_writer(out)  # before clearing: never under a run that is writing it
    _clear_run(out)
    demos[0].demo(out)
    return 0


# Commands that live in modules of their own, imported only when run (torch, starlette).
LAZY = {
    "data": "rnnkit.datasets.command",
    "serve": "rnnkit.serve.command",
    "export": "rnnkit.export",
    "crack": "rnnkit.crack",
    "tune": "rnnkit.tune",
}
COMMANDS = {"train": cmd_train, "eval": cmd_eval, "prepare": cmd_prepare, "demo": cmd_demo}


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs ``command``: ``cmd_COMMAND`` here or in its module of :data:`LAZY`."""
    if command in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[command]), f"cmd_{command}")
    return COMMANDS[command]
