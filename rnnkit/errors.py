"""Errors that rnnkit raises on bad input.

Every one of them is a :class:`RnnkitError`; the CLI prints its message on one line and exits
with status 2, and the Python API lets it propagate so callers can catch the family.
"""

from __future__ import annotations


class RnnkitError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(RnnkitError):
    """An unknown config key, a value of the wrong type, or a value outside its choices."""


class DataError(RnnkitError):
    """Malformed or missing data; the message names the file (and line where it applies)."""

    MAX_MESSAGE = 300  # a message may quote a line of data, which may be megabytes long

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        if len(message) > self.MAX_MESSAGE:
            message = f"{message[: self.MAX_MESSAGE]}… ({len(message):,} characters in all)"
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ModelDirError(RnnkitError):
    """A model directory that is missing, truncated, inconsistent or made by another task."""


class DivergedError(RnnkitError):
    """Training produced a loss that is not a finite number; nothing after it is saved."""


class InputError(RnnkitError):
    """Inputs to ``predict`` that are not a list of strings (HTTP 422)."""


class LimitError(InputError):
    """Inputs or options over a bound: too many, too long, too large (HTTP 413)."""


class DeadlineError(RnnkitError):
    """A predict call ran past its work budget and was stopped mid-work (HTTP 504); see
    :mod:`rnnkit.budget`."""
