"""Plain text: reading, tokenising at character or word level, and laying out token streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from rnnkit.errors import DataError

if TYPE_CHECKING:
    from rnnkit.data.corpus import StreamRows

Level = Literal["char", "word"]
EOS = "<eos>"


# Sentences, questions, token lines and sentence pairs are far shorter than this; a longer
# line is a file in the wrong format (or an attack), and would be padded into tensors of its
# length. Streams (language models, embeddings) take any line length.
MAX_LINE_CHARS = 100_000


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn a missing, unreadable or directory ``path`` into a DataError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise DataError("file not found", str(path)) from None
    except IsADirectoryError:
        raise DataError("is a directory, not a text file", str(path)) from None
    except OSError as err:
        raise DataError(f"cannot read ({err.strerror})", str(path)) from None


def read_text(path: str | Path, max_line: int | None = None) -> str:
    """A UTF-8 text file's contents; a missing or undecodable file, or (when ``max_line`` is
    given) a line longer than ``max_line`` characters, is a DataError naming it."""
    path = Path(path)
    try:
        with reading(path):
            text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark is not text
        refuse_binary(text, path)
        if max_line is not None:
            refuse_long_lines(text, path, max_line)
        return text
    except UnicodeDecodeError as err:
        data = path.read_bytes()
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"not UTF-8 text (byte {err.start})", str(path), line) from None


def refuse_binary(text: str, path: str | Path) -> None:
    """A NUL character means UTF-16 or binary data, never text rnnkit should train on."""
    at = text.find("\x00")
    if at >= 0:
        line = text.count("\n", 0, at) + 1
        raise DataError("holds NUL bytes: UTF-16 or binary, not UTF-8 text", str(path), line)


def refuse_long_lines(text: str, path: str | Path, limit: int = MAX_LINE_CHARS) -> None:
    """A DataError at the first line of ``text`` longer than ``limit`` characters."""
    start, number = 0, 1
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        if end - start > limit:
            raise DataError(
                f"a line of {end - start:,} characters (the limit is {limit:,}); is this a "
                "file of one example per line?",
                str(path),
                number,
            )
        start, number = end + 1, number + 1


def resolve_data_path(name: str, data_dir: Path | None) -> Path:
    """A dataset path from a recipe: absolute, or relative to the current directory if it is
    there, else inside the data directory (``--data-dir``, ``$RNNKIT_DATA``, the cache)."""
    path = Path(name).expanduser()
    if path.is_absolute() or data_dir is None or path.exists():
        return path
    return data_dir / path


def tokenize(text: str, level: Level) -> list[str]:
    """Characters, or whitespace-separated words with ``<eos>`` closing every line.

    The word level follows the WikiText convention used by pytorch/examples: each line's words,
    then ``<eos>``; blank lines contribute only their ``<eos>``.
    """
    if level == "char":
        return list(text)
    tokens: list[str] = []
    for line in text.splitlines():
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def split_tail(items: list, split: str, fraction: float) -> list:
    """Held-out data from the end of the training text: ``train`` gets all but the last
    ``fraction`` of ``items`` (at least one is held out), ``dev`` and ``test`` that tail."""
    cut = len(items) - max(1, int(len(items) * fraction))
    return items[:cut] if split == "train" else items[cut:]


def as_streams(ids: torch.Tensor, streams: int) -> torch.Tensor:
    """Lay a 1-D token stream out as ``streams`` parallel rows: ``(streams, length)``.

    Row ``b`` holds the ``b``-th contiguous slice of the corpus, so consecutive windows of one
    row continue each other and a hidden state can be carried from window to window. The tail
    that does not fill every row is dropped (fewer than ``streams`` tokens).
    """
    length = ids.numel() // streams
    if length < 2:
        raise DataError(f"text of {ids.numel()} tokens is too short for {streams} streams")
    return ids[: length * streams].view(streams, length)


def windows(rows: torch.Tensor | StreamRows, bptt: int, offset: int = 0) -> list[tuple[int, int]]:
    """``(start, length)`` of the BPTT windows over ``rows`` ``(streams, length)``.

    Each window predicts ``rows[:, start + 1 : start + 1 + length]`` from
    ``rows[:, start : start + length]``; windows tile the rows from ``offset`` on.
    """
    last = rows.shape[1] - 1
    return [(s, min(bptt, last - s)) for s in range(offset, last, bptt)]
