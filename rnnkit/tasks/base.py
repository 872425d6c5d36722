"""The task contract: what every task promises the CLI, the server, the Trainer and export.

:class:`Task` is a :class:`typing.Protocol`, checked by ``tests/test_contract.py`` and the type
checker; the optional capabilities beside it are protocols too, tested with ``isinstance``.
What tasks share is written once: :class:`TaskBase`, :func:`predictor` (the checks in front of
every ``predict``), :class:`Evaluation` and plain functions. docs/develop.md walks through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    Protocol,
    TypeVar,
    cast,
    runtime_checkable,
)

import torch

from rnnkit import budget
from rnnkit.config import from_dict
from rnnkit.data.vectors import load_pretrained
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, InputError, LimitError
from rnnkit.tasks import storage

if TYPE_CHECKING:
    from rnnkit.data.corpus import Prepared

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
    """The dataclass of predict options; every field made with :func:`~rnnkit.config.setting`."""

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
class PreparesText(Protocol):
    """A task that trains from its training file prepared into token ids on disk
    (:mod:`rnnkit.data.corpus`): ``rnnkit prepare`` makes that cache ahead of training."""

    @staticmethod
    def prepare_training_file(config: Any, data_dir: Path | None) -> Prepared:
        """The recipe's training file, prepared (or found in the cache)."""
        ...


@runtime_checkable
class HasDemo(Protocol):
    """A task that ``rnnkit demo`` trains and shows off."""

    @staticmethod
    def demo(out: Path) -> None:
        """Train the task's default recipe into ``out`` (cleared and locked by the caller),
        then print what the model does."""
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


# ------------------------------------------------------------- capability: ONNX export
Axes = tuple[str | int, ...]
"""Per dimension of a graph's input or output: a dynamic axis's name, or a fixed size."""

RunGraph = Callable[[str, Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], dict]
"""``run(graph, feeds, expected)``: the graph's onnxruntime outputs by name (CPU tensors) for
``feeds`` (tensors by name; those the graph does not take are left out), each output named in
``expected`` (PyTorch's answer) compared with it."""


@dataclass
class OnnxGraph:
    """One ONNX graph of a model: ``forward``, traced, maps a batch (the inputs by name) to the
    outputs (a tensor or a tuple in ``outputs`` order) with the weights of ``module``; the
    inputs and outputs in graph order with their axes (any axis named in two places must have
    one size), and an example batch to trace it with."""

    name: str  # "model"; a model of several graphs writes each to OUT.NAME.onnx
    module: torch.nn.Module
    forward: Callable[[dict[str, torch.Tensor]], Any]
    inputs: Mapping[str, Axes]
    outputs: Mapping[str, Axes]
    example: Mapping[str, torch.Tensor]
    ids: tuple[str, ...] = ()  # outputs of decoded ids: must equal PyTorch's exactly
    greedy: tuple[str, ...] = ()  # scores whose argmax is reported, not enforced


@dataclass
class OnnxPlan:
    """What a task exports and how export checks it against PyTorch: ``check(run)`` feeds the
    graphs batches other than the traced one (:data:`RunGraph`) and returns those batches'
    shapes for the report; ``data`` says where the check's tokens came from."""

    graphs: list[OnnxGraph]
    check: Callable[[RunGraph], list[str]]
    data: str


class Exportable(Protocol):
    """Optional capability: a task whose model exports to ONNX (``rnnkit export``, see
    :mod:`rnnkit.export`). A task that also has a ``runner`` attribute (None for PyTorch) and
    calls ``runner.run(graph, feeds)`` in place of its network predicts through onnxruntime
    with ``backend="onnx"`` (:mod:`rnnkit.backends`)."""

    def onnx_plan(self, data: bool = True) -> OnnxPlan:
        """The loaded model's graphs and their check; ``data`` False draws the check's tokens
        from the vocabulary, reading no file. Raises :class:`rnnkit.export.ExportError` for a
        model with nothing to export."""
        ...


__all__ = [
    "Task",
    "StreamingTask",
    "TaskBase",
    "Evaluation",
    "predictor",
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
    "resolve_options",
    "check_inputs",
    "shard",
    "for_inference",
    "metric_goal",
    "Axes",
    "Exportable",
    "OnnxGraph",
    "OnnxPlan",
    "RunGraph",
]
