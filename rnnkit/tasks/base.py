"""The task contract: what every task promises the CLI, the server, the Trainer and export.

:class:`Task` is a :class:`typing.Protocol`, a statement of the interface and not a base class:
tasks do not inherit from it, and the conformance test (``tests/test_contract.py``) checks every
registered task against it. The steps that tasks share are the plain functions below.

The predict path is one function per task, ``predict(inputs, options)``: a list of raw strings
in, one JSON-ready dict out per input, in order. Its options are a small dataclass per task
(``Task.Options``) whose fields are declared with :func:`rnnkit.config.setting`, as config
fields are, so that the CLI flags, the Python keyword defaults, the checks and the HTTP schema
all come from one declaration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch

from rnnkit.config import from_dict
from rnnkit.errors import ConfigError, InputError, LimitError

Goal = Literal["max", "min"]


class Task(Protocol):
    """One sequence task: its config, data, model, metrics and predict path."""

    name: ClassVar[str]
    """The registry name (``cipher``, ``lm``, ...), also stored in ``config.json``."""

    Config: ClassVar[type]
    """The config dataclass (sections ``data``, ``model``, ``train``, ...)."""

    Options: ClassVar[type]
    """The dataclass of predict options; every field made with :func:`~rnnkit.config.setting`."""

    metric_goals: ClassVar[Mapping[str, Goal]]
    """Every metric :meth:`evaluate` may return, and whether higher (``max``) or lower
    (``min``) is better; ``f1_PER`` falls back to the goal of ``f1``."""

    config: Any
    """The task's config, an instance of :attr:`Config`."""

    report: str
    """The text tables of the last evaluation (per-type scores, samples), or ``""``."""

    confusion: tuple[list[str], list[list[int]]] | None
    """The last evaluation's confusion matrix (labels, rows of counts: gold down, predicted
    across) for tasks that choose among labels; None for the others."""

    model: torch.nn.Module
    """The model; ``model.loss(batch)`` is a scalar to minimise."""

    @property
    def default_metric(self) -> str:
        """The dev metric that picks the best checkpoint unless ``train.metric`` says otherwise."""
        ...

    def train_batches(
        self, epoch: int, rank: int = 0, world_size: int = 1
    ) -> Iterable[dict[str, Any]]:
        """The batches of one epoch: a deterministic function of ``train.seed`` and ``epoch``,
        so that a resumed run sees the data an uninterrupted one would have seen. Under
        several processes, process ``rank`` of ``world_size`` gets its share of each global
        batch (see :func:`shard`), so every process takes the same number of steps."""
        ...

    def evaluate(self, split: str = "dev") -> dict[str, float]:
        """Metrics on the recipe's ``dev`` or ``test`` split (names in :attr:`metric_goals`)."""
        ...

    def evaluate_file(self, path: str | Path) -> dict[str, float]:
        """Metrics on a file in the task's data format (``rnnkit eval --data``)."""
        ...

    def predict(self, inputs: Sequence[str], options: Any = None) -> list[dict[str, Any]]:
        """One JSON-ready dict per input string, in order. ``options`` is an :attr:`Options`
        instance, a mapping of its fields, or None for the defaults."""
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


# --------------------------------------------------------------------------- options
@dataclass
class NoOptions:
    """For tasks whose predict takes no options."""


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
    return from_dict(cls, values, prefix="options.", strict=strict)


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


__all__ = [
    "Task",
    "StreamingTask",
    "NoOptions",
    "Limits",
    "DEFAULT_LIMITS",
    "resolve_options",
    "check_inputs",
    "shard",
    "for_inference",
    "metric_goal",
]
