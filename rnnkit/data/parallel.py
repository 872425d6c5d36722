"""Parallel text: tab-separated sentence pairs, the seed's normalisation and filter, and a
split that cannot leak a source sentence from training into dev or test.

A line is ``FIRST<TAB>SECOND[<TAB>more columns ignored]`` (the manythings/Tatoeba export is
``English<TAB>French``; newer exports add an attribution column, which is ignored). The
translation direction says which column is the source.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.text import MAX_LINE_CHARS, read_text
from rnnkit.errors import DataError

# The seed's filter: the English side must start with one of these (after normalisation,
# where an apostrophe has become a space: "i'm" → "i m").
SEED_PREFIXES = (
    "i am ", "i m ",
    "he is", "he s ",
    "she is", "she s",
    "you are", "you re ",
    "we are", "we re ",
    "they are", "they re ",
)  # fmt: skip

# French typography puts narrow or non-breaking spaces before ! ? : ; — all become spaces.
_SPACES = re.compile(r"[\u00a0\u2009\u202f\u2007\u200a\u3000]")
_PUNCT = re.compile(r"([.!?])")
_NOT_WORD = re.compile(r"[^a-z.!?]+")


@dataclass(frozen=True)
class Pair:
    """One sentence pair after reading: source and target as normalised, space-joined tokens."""

    source: str
    target: str
    line: int  # 1-based line of the file it came from


def to_ascii(text: str) -> str:
    """Drop accents: decompose (NFD) and remove the combining marks (``é`` → ``e``)."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def normalise(text: str) -> str:
    """The seed's normalisation: Unicode → ASCII, lowercase, ``. ! ?`` split off as tokens,
    every other run of non-letters (digits, apostrophes, commas, quotes) → one space.

    ``"J'ai 2 chats, n'est-ce pas ?"`` → ``"j ai chats n est ce pas ?"``.
    """
    text = to_ascii(_SPACES.sub(" ", text).lower().strip())
    text = _PUNCT.sub(r" \1 ", text)
    return " ".join(_NOT_WORD.sub(" ", text).split())


def light_normalise(text: str) -> str:
    """What is left with ``normalise: false``: odd spaces mapped to spaces, whitespace runs
    collapsed; case, accents and punctuation kept."""
    return " ".join(_SPACES.sub(" ", text).split())


def split_of(source: str) -> str:
    """The split a pair belongs to, by its normalised source sentence alone:
    ``int(sha256(source_utf8).hexdigest(), 16) % 20`` is 0 → ``test``, 1 → ``dev``, else
    ``train``. So every copy of a source sentence lands in the same split."""
    bucket = int(hashlib.sha256(source.encode("utf-8")).hexdigest(), 16) % 20
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def keep_pair(
    first: str, second: str, max_words: int = 0, prefixes: Sequence[str] | None = None
) -> bool:
    """The seed's filter on a normalised line: both sides under ``max_words`` words (0 = no
    limit) and the first column (English in eng-fra) starting with one of ``prefixes``."""
    if max_words and (len(first.split(" ")) >= max_words or len(second.split(" ")) >= max_words):
        return False
    return not prefixes or first.startswith(tuple(prefixes))


def read_pairs(
    path: str | Path,
    reverse: bool = True,
    normalise_text: bool = True,
    max_words: int = 0,
    prefixes: Sequence[str] | None = None,
) -> list[Pair]:
    """Sentence pairs of a tab-separated file, normalised and filtered.

    ``reverse`` makes the second column the source (French → English for eng-fra, as the
    seed does). A line without a tab, or with an empty side, is a DataError naming the file
    and line; blank lines are skipped. The filter (:func:`keep_pair`) looks at the
    normalised columns as the file orders them.
    """
    clean = normalise if normalise_text else light_normalise
    pairs = []
    for number, line in enumerate(read_text(path, MAX_LINE_CHARS).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            raise DataError("expected two tab-separated sentences", str(path), number)
        first, second = clean(columns[0]), clean(columns[1])
        if not first or not second:
            side = "first" if not first else "second"
            raise DataError(f"the {side} sentence is empty after normalisation", str(path), number)
        if not keep_pair(first, second, max_words, prefixes):
            continue
        pairs.append(Pair(second, first, number) if reverse else Pair(first, second, number))
    return pairs


def group_references(pairs: Sequence[Pair]) -> tuple[list[str], list[list[str]]]:
    """Distinct sources in first-seen order, and every target each one has in ``pairs``."""
    refs: dict[str, list[str]] = {}
    for pair in pairs:
        refs.setdefault(pair.source, []).append(pair.target)
    return list(refs), list(refs.values())


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """Lay per-source reference lists out as sacrebleu's reference streams: stream ``k`` holds
    every source's ``k``-th reference; a source with fewer repeats its first (which changes
    nothing in BLEU, as a repeated reference adds no new n-grams or lengths)."""
    width = max((len(r) for r in references), default=0)
    return [[r[k] if k < len(r) else r[0] for r in references] for k in range(width)]


__all__ = [
    "SEED_PREFIXES",
    "Pair",
    "group_references",
    "keep_pair",
    "light_normalise",
    "normalise",
    "read_pairs",
    "reference_streams",
    "split_of",
    "to_ascii",
]
