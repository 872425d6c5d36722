"""Labeled texts: ``label<TAB>text`` files, the TREC question files, and a held-out dev split.

A reader returns :class:`Example` objects: the text, its label and the line it came from. A
malformed line is a :class:`~rnnkit.errors.DataError` naming the file and line; only blank lines
are skipped.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rnnkit.data.text import MAX_LINE_CHARS, read_text, refuse_binary, refuse_long_lines
from rnnkit.errors import DataError

TrecLabels = Literal["coarse", "fine"]


@dataclass
class Example:
    """One labeled text and the line it came from."""

    text: str
    label: str
    line: int = 0  # where the example is in its file (1-based; 0 = not from a file)


def _lines(text: str) -> list[str]:
    """Lines of a file's text, without a leading byte-order mark or trailing ``\\r``."""
    return [line.rstrip("\r") for line in text.removeprefix("\ufeff").split("\n")]


def read_tsv(path: str | Path) -> list[Example]:
    """Examples of a UTF-8 ``label<TAB>text`` file, one per line (split on the first tab).

    A line without a tab, with an empty label or with no text after the tab is a DataError.
    """
    examples = []
    for number, line in enumerate(_lines(read_text(path, MAX_LINE_CHARS)), 1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"expected 'label<TAB>text', found no tab: {line[:60]!r}", path, number)
        if not label.strip():
            raise DataError("empty label before the tab", path, number)
        if not text.strip():
            raise DataError(f"no text after the label {label!r}", path, number)
        examples.append(Example(text.strip(), label.strip(), number))
    return examples


def read_trec_text(path: str | Path) -> str:
    """The text of a TREC question file.

    The CogComp files are 8-bit text, not UTF-8: ``TREC_10.label`` is ASCII, but
    ``train_5500.label`` holds one byte 0xF0 (line 66, ``sister\\xf0city``). So a file that is
    not valid UTF-8 is read as latin-1, which decodes every byte (that one becomes ``ð``)
    rather than failing or silently dropping it.
    """
    try:
        return read_text(path, MAX_LINE_CHARS)
    except DataError as err:
        if err.line is None:  # missing or unreadable; only a decoding error names a line
            raise
    text = Path(path).read_bytes().decode("latin-1")
    refuse_long_lines(text, path)
    refuse_binary(text, path)  # latin-1 decodes anything, UTF-16 included: refuse that here
    return text


def read_trec(path: str | Path, labels: TrecLabels = "coarse") -> list[Example]:
    """Questions of a TREC file: ``COARSE:fine question words ...`` per line.

    ``labels="coarse"`` gives the 6 coarse classes (``LOC``); ``"fine"`` the 50 fine ones as
    the full ``COARSE:fine`` string (``LOC:city``), since fine names alone are ambiguous
    (``DESC:other`` vs ``ENTY:other``).
    """
    examples = []
    for number, line in enumerate(_lines(read_trec_text(path)), 1):
        if not line.strip():
            continue
        label, _, text = line.strip().partition(" ")
        coarse, colon, fine = label.partition(":")
        if not colon or not coarse or not fine:
            raise DataError(
                f"expected 'COARSE:fine question ...', found label {label!r}", path, number
            )
        if not text.strip():
            raise DataError(f"no question after the label {label!r}", path, number)
        examples.append(Example(text.strip(), coarse if labels == "coarse" else label, number))
    return examples


def hold_out(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into (train, dev) with about ``fraction`` of each label in dev.

    The split depends only on the examples, ``fraction`` and ``seed``: a fixed seed gives the
    same dev set on every run. Identical texts stay on the same side (TREC's training file
    repeats 71 questions), so dev never scores a question the model trained on verbatim.
    Every label keeps at least one training example. Both lists keep the file order.
    """
    groups: dict[str, list[int]] = defaultdict(list)  # text → indices of its examples
    for i, ex in enumerate(examples):
        groups[ex.text].append(i)
    by_label: dict[str, list[str]] = defaultdict(list)  # label of first copy → texts
    for text, rows in groups.items():
        by_label[examples[rows[0]].label].append(text)
    rng = random.Random(seed)
    dev_rows: set[int] = set()
    for label in sorted(by_label):
        texts = by_label[label]
        rng.shuffle(texts)
        take = min(round(len(texts) * fraction), len(texts) - 1)
        for text in texts[:take]:
            dev_rows.update(groups[text])
    train = [ex for i, ex in enumerate(examples) if i not in dev_rows]
    dev = [ex for i, ex in enumerate(examples) if i in dev_rows]
    return train, dev


__all__ = ["Example", "read_tsv", "read_trec", "read_trec_text", "hold_out"]
