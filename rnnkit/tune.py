"""``rnnkit tune``: a hyperparameter search over any recipe, on Optuna.

A search space is a small YAML file of config keys, each a range or a list of choices::

    train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    model.hidden_size: {choices: [64, 128, 256]}
    model.dropout: {low: 0.0, high: 0.5}

Every trial is an ordinary ``rnnkit train`` run in its own process (``DIR/trials/NNNN``); the
tuner reports the dev metric each epoch records (``metrics.jsonl``) to Optuna's pruner and stops
the run when told. The study lives in ``DIR/study.db`` (or ``--storage``), so a killed search
continues and workers can share it; ``DIR/best``, ``DIR/best.yaml`` and ``DIR/trials.png`` show
the best trial so far (docs/tune.md). Nothing here reads a test split.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rnnkit.errors import ConfigError, RnnkitError

POLL_SECONDS = 0.5  # how often a running trial's metrics are read
HEARTBEAT_SECONDS = 5  # a trial whose worker is silent for GRACE_SECONDS was killed with it
GRACE_SECONDS = 20
SETTINGS = "tune.json"  # the search's recipe, space and overrides, to check a --resume against


@dataclass(frozen=True)
class Param:
    """One searched config key: a range (``low``..``high``, on a log scale if ``log``, in
    steps of ``step``; integers if both ends are) or a list of ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """This parameter's value for ``trial`` (an ``optuna.Trial``)."""
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            step = int(self.step or 1)
            return trial.suggest_int(self.key, self.low, self.high, step=step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[Any]:
        """Values to check the config with before any trial: both ends, or every choice."""
        return list(self.choices) if self.choices else [self.low, self.high]


def read_space(path: str | Path) -> list[Param]:
    """The parameters of a space file; any mistake is one ConfigError naming the key."""
    from rnnkit.config import read_yaml

    params = []
    for key, spec in read_yaml(path).items():
        where = f"{path}: {key}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected {{low: .., high: ..}} or {{choices: [..]}}")
        unknown = set(spec) - {"low", "high", "log", "step", "choices"}
        if unknown:
            raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices or set(spec) != {"choices"}:
                raise ConfigError(f"{where}: choices must be a non-empty list, alone")
            params.append(Param(key, choices=tuple(choices)))
            continue
        low, high = spec.get("low"), spec.get("high")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not low < high:
            raise ConfigError(f"{where}: needs numbers low < high (got {low!r}, {high!r})")
        if spec.get("log") and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0")
        params.append(Param(key, low, high, bool(spec.get("log")), spec.get("step")))
    if not params:
        raise ConfigError(f"{path}: the space names no config key")
    return params


def as_override(key: str, value: Any) -> str:
    """``key=value`` that :func:`rnnkit.config.parse_overrides` reads back as ``value``."""
    text = value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text:
        text = text.replace("e", ".0e")  # YAML 1.1 reads 1e-05 as a string, 1.0e-05 as a float
    if isinstance(value, str) and yaml.safe_load(value) != value:
        text = json.dumps(value)  # "1e-3", "true", "null" must stay strings
    return f"{key}={text}"


# --------------------------------------------------------------------------- the search
@dataclass
class Search:
    """What every trial of one search shares."""

    task: str
    recipe: Path
    space: list[Param]
    fixed: list[str]  # key=value overrides for every trial
    metric: str
    goal: str  # "max" or "min"
    out: Path
    trials: int
    data_dir: str | None
    baseline: dict[str, Any]  # the recipe's own values of the searched keys that lie in the space

    def command(self, trial_dir: Path, values: dict[str, Any]) -> list[str]:
        """The ``rnnkit train`` command of one trial."""
        searched = [as_override(k, v) for k, v in values.items()]
        data = ["--data-dir", self.data_dir] if self.data_dir else []
        return [
            sys.executable, "-m", "rnnkit", "train", self.task, "--config", str(self.recipe),
            "--out", str(trial_dir), *data, *self.fixed, *searched,
            f"train.metric={self.metric}", "train.progress=false",
        ]  # fmt: skip

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` beats ``b``."""
        return a > b if self.goal == "max" else a < b


def prepare_search(args: argparse.Namespace) -> Search:
    """Read and check the recipe, space and overrides, and settle the metric, before any
    trial runs: a mistake in a searched key or bound fails now, not in every trial."""
    from rnnkit.config import from_dict, merge, parse_overrides, read_yaml
    from rnnkit.tasks import build_task, task_class
    from rnnkit.tasks.base import metric_goal

    base = read_yaml(args.config)
    if "task" not in base:
        raise ConfigError(f"{args.config}: a recipe to tune must name its task (task: NAME)")
    task = str(base["task"])
    cls = task_class(task)
    space = read_space(args.space)
    fixed = parse_overrides(args.overrides)
    for param in space:
        if _lookup(fixed, param.key) is not None:
            raise ConfigError(f"{param.key} is both searched ({args.space}) and fixed (key=value)")
        for value in param.corners():
            trial = parse_overrides([as_override(param.key, value)])
            from_dict(cls.Config, merge(merge(base, fixed), trial))
    config = from_dict(cls.Config, merge(base, fixed))
    metric = config.train.metric
    if not metric:  # some tasks choose theirs from the data: build once to ask
        metric = build_task(task, config, args.data_dir).default_metric
    return Search(
        task, Path(args.config).resolve(), space, list(args.overrides), metric,
        metric_goal(cls, metric), Path(args.out), args.trials, args.data_dir,
        recipe_values(space, config),
    )  # fmt: skip


def recipe_values(space: list[Param], config: Any) -> dict[str, Any]:
    """The searched keys' values in the recipe itself (with the overrides), those the space
    can hold: the first trial of a new search runs them, so that every search measures the
    recipe beside its candidates under the same conditions."""
    values = {}
    for param in space:
        node = config
        for part in param.key.split("."):
            node = getattr(node, part)
        if param.choices:
            if node in param.choices:
                values[param.key] = node
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            assert param.low is not None and param.high is not None
            if param.low <= node <= param.high:
                values[param.key] = node
    return values


def _lookup(nested: dict[str, Any], key: str) -> Any:
    node: Any = nested
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def open_study(search: Search, args: argparse.Namespace) -> Any:
    """The Optuna study: created, or joined (``--resume``, ``--join``, or a shared
    ``--storage`` that already holds it)."""
    import optuna

    url = args.storage or f"sqlite:///{(search.out / 'study.db').resolve()}"
    sampler = optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=args.startup_trials)
    if args.join or args.storage:
        # Workers seeded alike would draw the same settings: --seed makes one worker's
        # search repeatable, and every other worker draws its own.
        sampler.reseed_rng()
    if args.pruner == "median":
        pruner: Any = optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials)
    elif args.pruner == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    else:
        pruner = optuna.pruners.NopPruner()
    direction = "maximize" if search.goal == "max" else "minimize"
    for attempt in range(3):  # workers started together race to create the tables
        try:
            storage = optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(1),
            )
            return optuna.create_study(
                storage=storage, sampler=sampler, pruner=pruner, study_name=args.study,
                direction=direction, load_if_exists=True,
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - sqlalchemy's IntegrityError and kin
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def check_settings(search: Search, args: argparse.Namespace) -> None:
    """Refuse to mix searches: ``--out`` of another search, or a new one without --resume."""
    settings = {
        "recipe": search.recipe.read_text(encoding="utf-8"),
        "space": Path(args.space).read_text(encoding="utf-8"),
        "overrides": search.fixed,
        "metric": search.metric,
    }
    path = search.out / SETTINGS
    if path.exists():
        if not (args.resume or args.join or args.storage):
            raise RnnkitError(f"{search.out} holds a search; add --resume to continue it")
        if json.loads(path.read_text(encoding="utf-8")) != settings:
            raise RnnkitError(
                f"{search.out} holds a search of another recipe, space or overrides; "
                "continue it with the same ones, or pick another --out"
            )
        return
    if args.resume:
        raise RnnkitError(f"{search.out} holds no search to resume")
    if search.out.exists() and any(search.out.iterdir()):
        raise RnnkitError(f"{search.out} exists and is not a search directory; pick --out")
    search.out.mkdir(parents=True, exist_ok=True)
    from rnnkit.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(settings, indent=1))


# --------------------------------------------------------------------------- one trial
def _die_with_parent() -> None:
    """In the child: be killed when the tuner dies (Linux), so a kill -9 of the search
    leaves no orphan training beside the resumed one."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def read_history(trial_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records a run has committed so far (none before its first epoch)."""
    from rnnkit import checkpoint as ckpt

    try:
        with ckpt.reading(trial_dir):
            text = ckpt.resolve(trial_dir / "metrics.jsonl").read_text(encoding="utf-8")
    except (OSError, RnnkitError):
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class TrialFailed(RnnkitError):
    """A trial's training process ended with an error (its log names it)."""


def run_trial(search: Search, trial: Any) -> float:
    """Train one trial, reporting each epoch's dev metric; its best epoch's value."""
    import optuna

    if _taken(trial.study, trial.number) >= search.trials:  # another worker took the last
        trial.set_user_attr("skipped", True)
        trial.study.stop()
        raise optuna.TrialPruned()
    values = {p.key: p.suggest(trial) for p in search.space}
    trial_dir = search.out / "trials" / f"{trial.number:04d}"
    log = search.out / "logs" / f"{trial.number:04d}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    trial.set_user_attr("dir", str(trial_dir.resolve()))
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            search.command(trial_dir, values), stdout=sink, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        try:
            best = _follow(search, trial, proc, trial_dir)
        finally:
            _stop(proc)
    if proc.returncode != 0:
        last = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        raise TrialFailed(f"trial {trial.number} failed ({log}): {' '.join(last)}")
    if best is None:
        raise TrialFailed(f"trial {trial.number} recorded no dev {search.metric} ({log})")
    return best


def _taken(study: Any, before: int = -1) -> int:
    """Trials that count against ``--trials``: those that ran to their end or were pruned
    (not those skipped over the budget), and those running that started before trial
    ``before``."""
    from optuna.trial import TrialState

    ended = (TrialState.COMPLETE, TrialState.PRUNED)
    return sum(
        not t.user_attrs.get("skipped")
        and (t.state in ended or (t.state == TrialState.RUNNING and t.number < before))
        for t in study.get_trials(deepcopy=False)
    )


def _follow(search: Search, trial: Any, proc: subprocess.Popen, trial_dir: Path) -> float | None:
    """Poll a running trial: report new epochs, prune when told; its best value so far."""
    import optuna

    reported, best = 0, None
    while True:
        done = proc.poll() is not None
        history = read_history(trial_dir)
        for record in history[reported:]:
            value = record.get(search.metric)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            best = value if best is None or search.better(value, best) else best
            trial.report(value, record["epoch"])
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", record["epoch"])
                raise optuna.TrialPruned()
        reported = len(history)
        if done:
            return best
        time.sleep(POLL_SECONDS)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # the model directory stays whole: every commit is atomic
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- results
def keep_best(search: Search, study: Any) -> None:
    """Copy the study's best trial to ``DIR/best`` (and its recipe to ``DIR/best.yaml``) if
    it is not there yet and its directory is on this machine."""
    try:
        best = study.best_trial
    except ValueError:  # no trial has completed
        return
    source = Path(best.user_attrs.get("dir", ""))
    if not source.is_dir():
        return
    with open(search.out / ".best.lock", "w") as lock:  # workers on this machine take turns
        fcntl.flock(lock, fcntl.LOCK_EX)
        _copy_best(search, best, source)


def _copy_best(search: Search, best: Any, source: Path) -> None:
    from rnnkit.config import merge, parse_overrides, read_yaml

    target = search.out / "best"
    marker = target / ".trial"
    if marker.exists() and marker.read_text() == str(best.number):
        return
    fresh = search.out / f"best.new-{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(source, fresh, ignore=shutil.ignore_patterns(".writer.lock"))
    (fresh / ".trial").write_text(str(best.number))
    old = search.out / f"best.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    values = [as_override(k, v) for k, v in best.params.items()]
    recipe = merge(read_yaml(search.recipe), parse_overrides([*search.fixed, *values]))
    head = (
        f"# rnnkit tune: trial {best.number}, dev {search.metric} {best.value:.6g}\n"
        f"# from {search.recipe} with {' '.join(values + search.fixed)}\n"
    )
    from rnnkit.checkpoint import atomic_write_text

    atomic_write_text(search.out / "best.yaml", head + yaml.safe_dump(recipe, sort_keys=False))


def plot_trials(search: Search, study: Any, path: Path) -> None:
    """The metric against trial number, then against each searched parameter: finished
    trials as dots, pruned ones as crosses at their last reported value."""
    from optuna.trial import TrialState

    from rnnkit.plots import plt, save_figure

    shown = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            shown.append((t, t.value, "o"))
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            shown.append((t, t.intermediate_values[max(t.intermediate_values)], "x"))
    if not shown:
        return
    columns = 1 + len(search.space)
    fig, axes = plt.subplots(1, columns, figsize=(3.4 * columns, 3), squeeze=False)
    axes = axes[0]
    for trial, value, marker in shown:
        axes[0].plot(trial.number, value, marker, ms=5, color="C1" if marker == "x" else "C0")
        for ax, param in zip(axes[1:], search.space, strict=True):
            x = trial.params.get(param.key)
            ax.plot(str(x) if param.choices else x, value, marker, ms=5)
    finished = [(t.number, v) for t, v, m in shown if m == "o"]
    if finished:  # the best so far, as a line
        best = itertools.accumulate(
            (v for _, v in finished), lambda a, b: b if search.better(b, a) else a
        )
        axes[0].plot([n for n, _ in finished], list(best), "-", lw=1, color="C0")
    axes[0].set_xlabel("trial")
    axes[0].set_ylabel(f"dev {search.metric}")
    for ax, param in zip(axes[1:], search.space, strict=True):
        if param.log:
            ax.set_xscale("log")
        ax.set_xlabel(param.key)
    for ax in axes:
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def summary_line(search: Search, trial: Any) -> str:
    """One line per finished trial for the terminal."""
    params = " ".join(as_override(k, v) for k, v in trial.params.items())
    if trial.state.name == "COMPLETE":
        what = f"dev {search.metric} {trial.value:.4f}"
    elif "pruned_at_epoch" in trial.user_attrs:
        what = f"pruned after epoch {trial.user_attrs['pruned_at_epoch']}"
    else:
        what = trial.state.name.lower()
    mark = " (the recipe's own values)" if trial.user_attrs.get("recipe") else ""
    return f"trial {trial.number}{mark}: {what}  {params}"


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial log lines and its notes on experimental features (heartbeats)
    hidden: the tuner prints its own line per trial."""
    import warnings

    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def cmd_tune(args: argparse.Namespace) -> int:
    """``rnnkit tune``: run (or continue, or join) a search; print the best trial."""

    search = prepare_search(args)
    check_settings(search, args)
    with _quiet_optuna():
        study = open_study(search, args)
        if args.resume:
            _fail_killed_trials(study)
        elif not args.join and search.baseline and not study.get_trials(deepcopy=False):
            study.enqueue_trial(search.baseline, user_attrs={"recipe": True}, skip_if_exists=True)
    helpers = [_spawn_worker(args) for _ in range(args.workers - 1)]

    def finished(study: Any, trial: Any) -> None:
        """After each trial: its line, the best model and the plot kept up to date, and the
        study stopped once ``--trials`` are taken."""
        if trial.user_attrs.get("skipped"):
            return
        print(summary_line(search, trial), flush=True)
        keep_best(search, study)
        plot_trials(search, study, search.out / "trials.png")
        if _taken(study) >= search.trials:
            study.stop()

    with _quiet_optuna():
        study.optimize(
            lambda trial: run_trial(search, trial),
            timeout=None if args.minutes is None else 60 * args.minutes,
            catch=(TrialFailed,),
            callbacks=[finished],
        )
    for helper in helpers:
        helper.wait()
    keep_best(search, study)
    plot_trials(search, study, search.out / "trials.png")
    try:
        best = study.best_trial
    except ValueError:
        raise RnnkitError(f"no trial finished; see the logs in {search.out / 'logs'}") from None
    print(f"best: {summary_line(search, best)}")
    if (search.out / "best").exists():
        print(f"model: {search.out / 'best'}  recipe: {search.out / 'best.yaml'}")
    return 0


def _fail_killed_trials(study: Any) -> None:
    """Trials left running by a killed worker: wait until their heartbeat is certainly
    stale, then fail them, so that their settings are tried again and they stop counting
    against ``--trials``. Trials of a live worker keep beating and are left alone."""
    import optuna
    from optuna.trial import TrialState

    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        print(f"waiting {GRACE_SECONDS + 1} s to tell a killed search's trials from live ones")
        time.sleep(GRACE_SECONDS + 1)
        optuna.storages.fail_stale_trials(study)


def _spawn_worker(args: argparse.Namespace) -> subprocess.Popen:
    """Another worker on this machine: the same search, joining the same study."""
    flags = {
        "--config": args.config, "--space": args.space, "--out": args.out,
        "--trials": args.trials, "--minutes": args.minutes, "--storage": args.storage,
        "--study": args.study, "--pruner": args.pruner, "--seed": args.seed,
        "--startup-trials": args.startup_trials, "--data-dir": args.data_dir,
    }  # fmt: skip
    argv = [str(part) for flag, v in flags.items() if v is not None for part in (flag, v)]
    return subprocess.Popen(
        [sys.executable, "-m", "rnnkit", "tune", *args.overrides, *argv, "--join"],
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def add_tune_parser(sub: Any) -> None:
    """The ``rnnkit tune`` subcommand and its flags."""
    p = sub.add_parser("tune", help="search a recipe's settings with Optuna (TPE, pruning)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="fixed for every trial")
    p.add_argument("--config", required=True, help="the YAML recipe (it names its task)")
    p.add_argument("--space", required=True, help="YAML: config key → {low, high[, log, step]}"
                   " or {choices: [...]}")  # fmt: skip
    p.add_argument("--out", required=True, help="the search directory (trials, best, plot)")
    p.add_argument("--trials", type=int, default=20, help="trials in the study, all workers (20)")
    p.add_argument("--minutes", type=float, help="start no trial after this many minutes")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (1)")
    p.add_argument("--storage", help="a database URL shared by workers (default DIR/study.db)")
    p.add_argument("--study", default="rnnkit", help="the study's name in --storage (rnnkit)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    p.add_argument("--join", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pruner", choices=["median", "halving", "none"], default="median")
    p.add_argument("--startup-trials", type=int, default=5,
                   help="random trials before TPE and pruning start (5)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (0)")
    p.add_argument("--data-dir", help="where datasets live (default $RNNKIT_DATA, the cache)")


__all__ = ["Param", "read_space", "Search", "cmd_tune", "add_tune_parser", "as_override"]
