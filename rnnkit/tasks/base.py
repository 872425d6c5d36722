"""The task contract: what every task promises the CLI, the server, the Trainer and export.

:class:`Task` is a :class:`typing.Protocol`, a statement of the interface and not a base class:
tasks do not inherit from it, and the conformance test (``tests/test_contract.py``) checks every
registered task against it. The steps that tasks share are the plain functions below.

The predict path is one function per task, ``predict(inputs, options)``: a list of raw strings
in, one JSON-ready dict out per input, in order. Its options are a small dataclass per task
(``Task.Options``) whose fields carry their help text and bounds, so that the CLI flags, the
Python keyword defaults and the HTTP schema are all generated from one place.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Literal,
    Protocol,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    runtime_checkable,
)

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
    """The dataclass of predict options; every field made with :func:`option`."""

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


# ----------------------------------------------------------------- capabilities
# What a task may also do. The CLI, the server, its page and ``rnnkit crack`` test for these
# (``isinstance``) and never for a task's name, so that a new task gets what it declares.


@runtime_checkable
class Streams(Protocol):
    """A task that can also yield its answer piece by piece (the language model)."""

    def stream(self, text: str, options: Any = None) -> Iterator[str]:
        """The answer to one input as it is made; ``"".join`` of it is ``predict``'s text."""
        ...

    def joiner(self, prompt: str) -> str:
        """What goes between an input and its streamed answer when both are shown."""
        ...


class StreamingTask(Task, Streams, Protocol):
    """A task that streams (see :class:`Streams`)."""


@dataclass(frozen=True)
class ModelFree:
    """A flag that stands in for ``--model`` on a verb: ``answer(path, inputs, options)``
    gives the results of the task's predict from that file (``neighbors --vectors F``); the
    task's ``format`` must then be a static method."""

    flag: str
    help: str
    answer: Callable[[str, list[str], Any], list[dict[str, Any]]]


@dataclass(frozen=True)
class Verb:
    """The ``rnnkit VERB --model DIR INPUT...`` command that answers with a task's predict,
    and the input box of the web page (``label``, ``hint``, ``button``; no button: the page
    answers as one types)."""

    name: str
    help: str
    inputs: str = "texts"  # what the positional arguments are, for the help
    label: str = "Input"
    hint: str = ""
    button: str | None = "Run"
    prompt: bool = False  # inputs are prompts: one ``--prompt`` (default ""); blank is an input
    multiline: bool = False  # the page's box takes line breaks (Ctrl+Enter submits)
    output_format: str | None = None  # the plain output's name: ``--format NAME|json``
    file_flag: str | None = None  # ``--FLAG FILE``: a data-format file (see TokenFiles)
    file_help: str = ""
    model_free: ModelFree | None = None  # a file that may stand in for ``--model``


@runtime_checkable
class HasVerb(Protocol):
    """A task with a ``rnnkit`` verb of its own (a class attribute)."""

    verb: ClassVar[Verb]


@dataclass(frozen=True)
class Command:
    """A command of a task's own on ``rnnkit`` (``rnnkit analogy``): ``add(subparsers)``
    adds its parser and returns it, ``run(args)`` carries it out and returns the exit status."""

    name: str
    add: Callable[[Any], Any]
    run: Callable[[Any], int]


@runtime_checkable
class HasCommands(Protocol):
    """A task that adds commands of its own to ``rnnkit``."""

    commands: ClassVar[tuple[Command, ...]]


@runtime_checkable
class TokenFiles(Protocol):
    """A task that also answers a file in its data format, tokens already split (the
    verb's ``file_flag``: ``rnnkit tag --conll F``)."""

    def read_tokens(self, path: str | Path) -> Sequence[Any]:
        """The file's sentences, each with ``tokens`` (a list of strings)."""
        ...

    def predict_tokens(self, token_lists: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """``predict``'s answers for inputs already split into tokens."""
        ...


@runtime_checkable
class ShowsAttention(Protocol):
    """A task whose boolean option ``attention_option`` adds ``source_tokens``,
    ``target_tokens`` and ``attention`` (one row of weights over the source per target token)
    to each result: ``--plot-attention`` and the page's heatmap draw them."""

    attention_option: ClassVar[str]


@runtime_checkable
class Costly(Protocol):
    """A task whose predict work per input depends on its options (tokens to generate): the
    server bounds ``inputs × cost`` by ``--max-generated``."""

    def cost(self, options: Any) -> int:
        """Tokens one input asks for under ``options`` (a resolved :attr:`Task.Options`)."""
        ...


@runtime_checkable
class BeamSearch(Protocol):
    """A task that decodes with a beam (``rnnkit eval --beam``)."""

    def use_beam(self, beam: int) -> None:
        """Decode with ``beam`` (at least 1; 1 is greedy) from now on."""
        ...


@runtime_checkable
class CharacterLM(Protocol):
    """A character language model that scores texts (``rnnkit crack``)."""

    def char_ids(self, text: str) -> torch.Tensor:
        """The ids of ``text``'s characters ``(len(text),)``; unknown ones get ``<unk>``'s.
        Raises :class:`~rnnkit.errors.ConfigError` for a model that is not character level."""
        ...

    def next_log_probs(self, ids: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of every token at every place of texts ``(n, length)`` →
        ``(n, length, vocab)``, given the text before that place (after it, for a backward
        model); places in reading order, on the model's device."""
        ...


@runtime_checkable
class HasDemo(Protocol):
    """A task that ``rnnkit demo`` trains and shows off."""

    @staticmethod
    def demo(out: Path) -> None:
        """Train the task's default recipe into ``out`` (cleared and locked by the caller),
        then print what the model does."""
        ...


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
    "Streams",
    "Verb",
    "HasVerb",
    "ModelFree",
    "Command",
    "HasCommands",
    "TokenFiles",
    "ShowsAttention",
    "Costly",
    "BeamSearch",
    "CharacterLM",
    "HasDemo",
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
