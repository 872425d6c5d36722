"""The work budget of a predict call: how much memory one of its batches may take, and when
its work must stop.

Memory: predict loops cut their inputs into batches whose padded size (items × longest item ×
what each position is multiplied by, such as the beam) stays under :data:`PREDICT_TOKENS`, so
that one call's peak memory no longer grows with inputs × length × beam
(:func:`rnnkit.data.batching.longest_first` does the cutting).

Time: a deadline held in a context variable, so that the decode and generation loops deep
inside a model check it without a new parameter on every function between::

    with deadline(5):          # this block's work must end within 5 s (None: no limit)
        task.predict(inputs)   # raises DeadlineError at the first check past it

Every task's ``predict`` (and ``stream``) runs under :data:`DEFAULT_SECONDS` when its caller
set no deadline; the server sets one per request from its ``--timeout``. The loops call
:func:`check_deadline` once per decode step, generated token or batch, so a call stops within
one of those once its time is up, and frees the model for the next.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from rnnkit.errors import ConfigError, DeadlineError

PREDICT_TOKENS = 1 << 16
"""Padded positions in one predict batch (a translation counts each source position once per
beam hypothesis). With the fra→eng recipe's translator at beam 64 a batch of that size peaks
at a few hundred MB; read at call time, so a test may lower it."""

DEFAULT_SECONDS = 600.0
"""The deadline of a predict or stream call whose caller set none (the CLI verbs, Python)."""

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class _Deadline:
    seconds: float  # the budget, for the message
    end: float  # time.monotonic() past which work stops; inf: never


_current: ContextVar[_Deadline | None] = ContextVar("rnnkit_deadline", default=None)


def _make(seconds: float | None) -> _Deadline:
    if seconds is None:
        return _Deadline(math.inf, math.inf)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ConfigError(f"a deadline is a number of seconds or None, not {seconds!r}")
    if math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"bad deadline {seconds} (seconds, 0 or more, or None for no limit)")
    return _Deadline(float(seconds), time.monotonic() + seconds)


@contextmanager
def _held(value: _Deadline) -> Iterator[None]:
    token = _current.set(value)
    try:
        yield
    finally:
        _current.reset(token)  # a worker thread's context must not keep an old deadline


def deadline(seconds: float | None) -> AbstractContextManager[None]:
    """A context manager: the work of its block must end within ``seconds`` from now (None:
    no limit, which also turns the default off). Loops inside raise
    :class:`~rnnkit.errors.DeadlineError` at their first check past it."""
    return _held(_make(seconds))


def until(end: float | None) -> AbstractContextManager[None]:
    """Like :func:`deadline`, with the end given as a ``time.monotonic()`` value (None: no
    limit). The server uses it: a request's clock starts when it arrives, not when the model
    gets to it."""
    if end is None:
        return _held(_make(None))
    return _held(_Deadline(max(0.0, end - time.monotonic()), end))


def check_deadline() -> None:
    """Raise :class:`~rnnkit.errors.DeadlineError` if the deadline in force has passed; cheap
    enough (a context lookup and a clock read) to call once per decode step."""
    held = _current.get()
    if held is not None and time.monotonic() > held.end:
        raise DeadlineError(
            f"stopped after {held.seconds:.3g} s: the work budget of this call ran out"
        )


def paced(items: Iterable[T]) -> Iterator[T]:
    """``items``, with the deadline checked before each: for a loop whose every step is
    cheap but whose many steps are not (normalising a thousand inputs of 10,000 characters
    takes seconds)."""
    for item in items:
        check_deadline()
        yield item


def budgeted(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a predict method: it runs under :data:`DEFAULT_SECONDS` unless its caller set
    a deadline of its own (:func:`deadline`, :func:`until`)."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        """``fn``, under the caller's deadline or the default one."""
        if _current.get() is not None:
            return fn(*args, **kwargs)
        with deadline(DEFAULT_SECONDS):
            return fn(*args, **kwargs)

    return run


def bound(pieces: Iterable[T]) -> Iterator[T]:
    """``pieces`` (a generator, say), each step run under the deadline in force now, or the
    default one from now if none is. A generator's body runs in the context of whoever calls
    ``next``, which for a server stream is a worker thread that knows no deadline."""
    held = _current.get() or _make(DEFAULT_SECONDS)
    source = iter(pieces)

    def steps() -> Iterator[T]:
        """The pieces, each made under ``held``."""
        end = object()
        while True:
            with _held(held):
                piece = next(source, end)
            if piece is end:
                return
            yield piece  # type: ignore[misc]

    return steps()


__all__ = [
    "DEFAULT_SECONDS",
    "PREDICT_TOKENS",
    "bound",
    "budgeted",
    "check_deadline",
    "deadline",
    "paced",
    "until",
]
