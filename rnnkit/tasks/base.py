"""The task contract: what every task promises the CLI, the server, the Trainer and export.

:class:`Task` is a :class:`typing.Protocol`, a statement of the interface and not a base class:
the conformance test (``tests/test_contract.py``) and the type checker check every registered
task against it, and the Trainer, storage and checkpoints take a ``Task``. The steps that tasks
share are written once below: :class:`TaskBase` (defaults a task class inherits),
:func:`predictor` (the checks in front of every ``predict``), :class:`Evaluation` (what
``evaluate`` returns) and plain functions.

The predict path is one function per task, ``predict(inputs, options)``: a list of raw strings
in, one JSON-ready dict out per input, in order. Its options are a small dataclass per task
(``Task.Options``) whose fields carry their help text and bounds, so that the CLI flags, the
Python keyword defaults and the HTTP schema are all generated from one place.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Literal,
    Protocol,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

import torch

from rnnkit import budget
from rnnkit.config import from_dict
from rnnkit.data.vectors import load_pretrained
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, InputError, LimitError
from rnnkit.tasks import storage

Goal = Literal["max", "min"]


class Batches(Protocol):
    """One epoch of training batches (dicts of tensors), its length known before the first."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


class Task(Protocol):
    """One sequence task: its config, data, model, metrics and predict path.

    Two ways make one: :meth:`build` reads the training data and builds a new model for
    training; the constructor takes the vocabularies (in :attr:`VOCABS` order) of a saved model
    and reads no data (:meth:`from_dir`, through :mod:`rnnkit.tasks.storage`, calls it).
    """

    name: ClassVar[str]
    """The registry name (``cipher``, ``lm``, ...), also stored in ``config.json``."""

    Config: ClassVar[type[Any]]
    """The config dataclass (sections ``data``, ``model``, ``train``, ...)."""

    Options: ClassVar[type[Any]]
    """The dataclass of predict options; every field made with :func:`option`."""

    # The types below are exact (dict, not Mapping): a class variable's type is invariant.
    VOCABS: ClassVar[dict[str, str]]
    """File name → attribute of every vocabulary a model directory keeps, ``vocab.json``
    first; the constructor takes them back in this order."""

    metric_goals: ClassVar[dict[str, Goal]]
    """Every metric :meth:`evaluate` may return, and whether higher (``max``) or lower
    (``min``) is better; ``f1_PER`` falls back to the goal of ``f1``."""

    config: Any
    """The task's config, an instance of :attr:`Config`."""

    @property
    def model(self) -> torch.nn.Module:
        """The model; ``model.loss(batch)`` is a scalar to minimise. (Read-only here, so that
        a task may declare its own model class.)"""
        ...

    def __init__(
        self, config: Any, vocabs: tuple[Vocab, ...], data_dir: Path | None = None
    ) -> None:
        """A task around a new model on ``vocabs`` (the loading path: reads no data)."""
        ...

    @classmethod
    def build(cls, config: Any, data_dir: Path | None = None) -> Task:
        """A task to train: reads the training data, builds the vocabularies from it, and a
        new model on them (pretrained vectors loaded where the config names them)."""
        ...

    @property
    def default_metric(self) -> str:
        """The dev metric that picks the best checkpoint unless ``train.metric`` says otherwise."""
        ...

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Batches:
        """The batches of one epoch: a deterministic function of ``train.seed`` and ``epoch``,
        so that a resumed run sees the data an uninterrupted one would have seen. Under
        several processes, process ``rank`` of ``world_size`` gets its share of each global
        batch (see :func:`shard`), so every process takes the same number of steps."""
        ...

    def evaluate(self, split: str = "dev") -> Evaluation:
        """Metrics on the recipe's ``dev`` or ``test`` split (names in :attr:`metric_goals`)."""
        ...

    def evaluate_file(self, path: str | Path) -> Evaluation:
        """Metrics on a file in the task's data format (``rnnkit eval --data``)."""
        ...

    def predict(
        self, inputs: Sequence[str], options: Any = None, **overrides: Any
    ) -> list[dict[str, Any]]:
        """One JSON-ready dict per input string, in order. ``options`` is an :attr:`Options`
        instance, a mapping of its fields, or None for the defaults; keyword ``overrides``
        replace single fields."""
        ...

    def format(self, text: str, result: dict[str, Any]) -> str:
        """How ``rnnkit`` prints one result for a person (``--json`` prints ``result``)."""
        ...

    def labels(self) -> list[str]:
        """The closed set of answers the model picks from (class labels, tags), or ``[]``
        where answers are open text."""
        ...

    def model_files(self) -> dict[str, bytes]:
        """The files of a model directory, name → bytes (config, vocabularies, weights)."""
        ...

    @classmethod
    def from_dir(
        cls, directory: str | Path, data_dir: Path | None = None, device: str = "cpu"
    ) -> Task:
        """Load a model directory written from :meth:`model_files`."""
        ...


class StreamingTask(Task, Protocol):
    """A task that can also yield its answer piece by piece (the language model)."""

    def stream(self, text: str, options: Any = None) -> Iterator[str]:
        """The answer to one input as it is made; ``"".join`` of it is ``predict``'s text."""
        ...


@dataclass(frozen=True, eq=False)
class Evaluation(Mapping[str, float]):
    """What one evaluation found. It reads as the mapping of its :attr:`metrics` (name →
    value), so ``task.evaluate()["f1"]`` works; beside them, the text a person reads and, for
    tasks that choose among labels, the confusion matrix."""

    metrics: dict[str, float]
    report: str = ""
    """Text tables (per-type scores, samples), or ``""``."""
    confusion: tuple[list[str], list[list[int]]] | None = None
    """Labels and rows of counts (gold down, predicted across), or None."""

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def plot_confusion(self, path: str | Path, title: str = "") -> None:
        """Draw the confusion matrix as a PNG at ``path``."""
        from rnnkit.plots import plot_confusion_matrix

        if self.confusion is None:
            raise ConfigError(
                "this evaluation has no confusion matrix (its answers are not labels)"
            )
        plot_confusion_matrix(*self.confusion, path, title=title)


BaseT = TypeVar("BaseT", bound="TaskBase")


class TaskBase:
    """The steps most tasks share, written once. The built-in tasks inherit it; a task may
    as well write its own: what the rest of rnnkit relies on is :class:`Task`."""

    # Declared here so that a task's plain assignments (``Config = CipherConfig``) take these
    # types, which are the protocol's.
    name: ClassVar[str]
    Config: ClassVar[type[Any]]
    Options: ClassVar[type[Any]]
    VOCABS: ClassVar[dict[str, str]] = {"vocab.json": "vocab"}
    metric_goals: ClassVar[dict[str, Goal]]
    config: Any
    data_dir: Path | None

    @property
    def default_metric(self) -> str:
        """The first of :attr:`metric_goals`, unless a task says otherwise."""
        return next(iter(self.metric_goals))

    def labels(self) -> list[str]:
        """None: answers are open text, unless a task says otherwise."""
        return []

    def model_files(self) -> dict[str, bytes]:
        """See :func:`rnnkit.tasks.storage.model_files`."""
        return storage.model_files(cast(Task, self))

    @classmethod
    def from_dir(
        cls: type[BaseT], directory: str | Path, data_dir: Path | None = None, device: str = "cpu"
    ) -> BaseT:
        """See :func:`rnnkit.tasks.storage.from_dir`."""
        return cast(BaseT, storage.from_dir(cast("type[Task]", cls), directory, data_dir, device))

    def load_vectors(
        self, embed: torch.nn.Embedding, vocab: Vocab, name: str, unit: str = "words"
    ) -> tuple[int, list[str]]:
        """Start ``embed`` ``(vocab, dim)`` from the vector file ``name`` (absolute, or in the
        data directory), frozen if ``model.freeze``; returns (found, missing) entries."""
        first, freeze = len(vocab.specials), self.config.model.freeze
        return load_pretrained(embed.weight, vocab.itos, name, self.data_dir, first, freeze, unit)


TaskT = TypeVar("TaskT")
Body = Callable[[TaskT, list[str], Any], list[dict[str, Any]]]


def predictor(body: Body[TaskT]) -> Callable[..., list[dict[str, Any]]]:
    """A task's ``predict(inputs, options=None, **overrides)`` made from ``body(self, texts,
    options)``: the inputs are checked (:func:`check_inputs`) and the options resolved
    (:func:`resolve_options`) first, and it all runs under the work budget
    (:func:`rnnkit.budget.budgeted`), so that every task's Python API is as safe as its
    server."""

    def predict(
        self: TaskT, inputs: Sequence[str], options: Any = None, **overrides: Any
    ) -> list[dict[str, Any]]:
        return body(self, check_inputs(inputs), resolve_options(self, options, **overrides))

    predict.__doc__, predict.__qualname__ = body.__doc__, body.__qualname__
    return budget.budgeted(predict)


# --------------------------------------------------------------------------- options
def option(
    default: Any,
    help: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> Any:
    """A predict-options field: its default, its help text, and its bounds (inclusive, but
    for ``low`` itself when ``low_open``)."""
    meta = {"help": help, "low": low, "high": high, "low_open": low_open}
    return field(default=default, metadata=meta)


@dataclass
class NoOptions:
    """For tasks whose predict takes no options."""


def check_option_bounds(options: Any) -> None:
    """Reject numbers that are not finite or lie outside a field's ``low``/``high``."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"bad value {value} for options.{f.name} (must be finite)")
        low, high = f.metadata.get("low"), f.metadata.get("high")
        open_low = f.metadata.get("low_open", False)
        below = low is not None and (value <= low if open_low else value < low)
        if below or (high is not None and value > high):
            what = f"above {_num(low)}" if open_low else f"from {_num(low)}"
            raise ConfigError(f"bad value {value} for options.{f.name} ({what} to {_num(high)})")


def _num(bound: float | None) -> str:
    return "any" if bound is None else f"{bound:g}"


def resolve_options(
    task: Any, options: Any = None, *, strict: bool = True, **overrides: Any
) -> Any:
    """``options`` (None, a mapping, or the task's Options) as a checked Options instance.

    Keyword overrides replace single fields. Unknown names and bad values raise
    :class:`~rnnkit.errors.ConfigError` naming ``options.FIELD``. Values must have their
    field's type (``{"length": "5"}`` is refused, as the HTTP schema says); only the CLI,
    whose flags are strings, passes ``strict=False`` to have them converted.
    """
    cls = task.Options
    if options is None:
        values: dict[str, Any] = {}
    elif isinstance(options, cls):
        values = dataclasses.asdict(options)
    elif isinstance(options, Mapping):
        values = dict(options)
    else:
        raise ConfigError(
            f"options must be a mapping of option names, not {type(options).__name__}"
        )
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"option names must be strings, not {bad[0]!r}")
    values.update(overrides)
    resolved = from_dict(cls, values, prefix="options.", strict=strict)
    check_option_bounds(resolved)
    return resolved


# --------------------------------------------------------------------------- training
def shard(order: Sequence[Sequence[int]], rank: int, world_size: int) -> list[list[int]]:
    """Process ``rank``'s share of each global batch of example indices: every
    ``world_size``-th example, starting at ``rank``. A batch smaller than ``world_size`` (an
    epoch's last, at most) is left out on every process alike, so that no process waits for a
    step another will never take."""
    return [list(rows[rank::world_size]) for rows in order if len(rows) >= world_size]


def for_inference(model: torch.nn.Module) -> torch.device:
    """Put ``model`` in eval mode (dropout off) and return the device its weights are on."""
    model.eval()
    return next(model.parameters()).device


# ---------------------------------------------------------------------------- inputs
@dataclass
class Limits:
    """Bounds on one predict call, shared by the CLI, the Python API and the server."""

    max_inputs: int = 1024  # inputs in one call
    max_chars: int = 10_000  # characters in one input


DEFAULT_LIMITS = Limits()


def check_inputs(inputs: Any, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """``inputs`` as a list of strings within ``limits``; anything else is one clear error.

    A bare string is refused rather than read as a list of characters.
    """
    if isinstance(inputs, (str, bytes)):
        raise InputError("inputs must be a list of strings, not one string (wrap it: [text])")
    if not isinstance(inputs, Sequence):
        raise InputError(f"inputs must be a list of strings, not {type(inputs).__name__}")
    if len(inputs) > limits.max_inputs:
        raise LimitError(f"{len(inputs)} inputs in one call (the limit is {limits.max_inputs})")
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InputError(f"input {i} is {type(text).__name__}, not a string")
        if len(text) > limits.max_chars:
            raise LimitError(
                f"input {i} has {len(text):,} characters (the limit is {limits.max_chars:,})"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no file, terminal or JSON reply takes it
            raise InputError(f"input {i} is not valid Unicode (a lone surrogate)") from None
    return list(inputs)


# ------------------------------------------------------------------------- metrics
def metric_goal(task: Any, metric: str) -> Goal:
    """Whether ``metric`` of ``task`` is better higher or lower; unknown names are an error."""
    goals = task.metric_goals
    if metric in goals:
        return goals[metric]
    head, _, kind = metric.partition("_")  # per-type metrics: f1_PER is an f1
    if head in goals and kind:
        # A built task whose metrics come per type (entity types of its tags) lists them.
        kinds = getattr(task, "metric_kinds", None)
        if not isinstance(kinds, (list, tuple, set, frozenset)) or kind in kinds:
            return goals[head]
        choices = ", ".join(f"{head}_{k}" for k in sorted(kinds)) or "none in this data"
        raise ConfigError(f"bad value {metric!r} for train.metric (per-type: {choices})")
    raise ConfigError(f"bad value {metric!r} for train.metric (choices: {', '.join(goals)})")


# ------------------------------------------------------------------------- schemas
def options_schema(cls: type) -> dict[str, Any]:
    """A JSON Schema of an Options dataclass: types, defaults, bounds and help."""
    hints = get_type_hints(cls)
    properties = {}
    for f in dataclasses.fields(cls):
        prop = _json_type(hints[f.name])
        prop["default"] = f.default
        prop["description"] = f.metadata.get("help", "")
        low_key = "exclusiveMinimum" if f.metadata.get("low_open") else "minimum"
        for bound, key in (("low", low_key), ("high", "maximum")):
            if f.metadata.get(bound) is not None:
                prop[key] = f.metadata[bound]
        properties[f.name] = prop
    return {
        "title": cls.__name__,
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }


def _json_type(tp: Any) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_json_type(arg) for arg in get_args(tp)]}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    if tp in names:
        return {"type": names[tp]}
    raise TypeError(f"no JSON type for option annotation {tp!r}")


__all__ = [
    "Task",
    "StreamingTask",
    "TaskBase",
    "Evaluation",
    "predictor",
    "NoOptions",
    "Limits",
    "DEFAULT_LIMITS",
    "option",
    "resolve_options",
    "check_inputs",
    "check_option_bounds",
    "shard",
    "for_inference",
    "metric_goal",
    "options_schema",
]
