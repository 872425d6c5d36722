"""Tagged sentences: CoNLL-U and column-file readers, and entity tag schemes (IOB1, IOB2, BIOES).

A reader returns :class:`Sentence` objects: the tokens, one tag per token, and the line where the
sentence starts (for error messages further down). A malformed line is a :class:`DataError`
naming the file and line; nothing is skipped silently except what the format defines as not a
token (comments, blank lines, ``-DOCSTART-``, and in CoNLL-U multiword-token ranges and empty
nodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rnnkit.data.text import MAX_LINE_CHARS, read_text
from rnnkit.errors import DataError

Scheme = Literal["IOB1", "IOB2", "BIOES"]
SCHEMES = ("IOB1", "IOB2", "BIOES")
_PREFIXES = {"IOB1": ("B", "I"), "IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S")}


@dataclass
class Sentence:
    """A sentence's tokens, one tag per token, and the line where it starts."""

    tokens: list[str]
    tags: list[str]
    line: int = 0  # where the sentence starts in its file (1-based; 0 = not from a file)


# --------------------------------------------------------------------------- CoNLL-U
CONLLU_COLUMNS = {"upos": 3, "xpos": 4}


def read_conllu(
    path: str | Path, column: Literal["upos", "xpos"] = "upos", require_tags: bool = True
) -> list[Sentence]:
    """Syntactic words of a CoNLL-U file with their UPOS or XPOS tags.

    Multiword-token ranges (``3-4``) and empty nodes (``8.1``) are not words of the sentence and
    are skipped. Every word line must have ten tab-separated fields, an integer id following the
    previous one, and a tag that is not ``_``.
    """
    import conllu

    text = read_text(path, MAX_LINE_CHARS)
    col = CONLLU_COLUMNS[column]
    sentences: list[Sentence] = []
    block: list[str] = []
    start = 0
    for number, line in enumerate([*text.split("\n"), ""], 1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
            continue
        if not block:
            continue
        tokens, tags = [], []
        for offset, row in enumerate(block):
            if row.startswith("#"):
                continue
            where = start + offset
            fields = row.split("\t")
            if len(fields) != 10:
                raise DataError(
                    f"expected 10 tab-separated fields, found {len(fields)}", path, where
                )
            ident = fields[0]
            if "-" in ident or "." in ident:
                continue  # a multiword-token range or an empty node
            if not ident.isdigit() or int(ident) != len(tokens) + 1:
                raise DataError(f"bad word id {ident!r} (expected {len(tokens) + 1})", path, where)
            if fields[col] == "_" and require_tags:
                raise DataError(f"word {fields[1]!r} has no {column.upper()} tag", path, where)
            tokens.append(fields[1])
            tags.append(fields[col])
        # conllu checks what the field count cannot: that the block parses as a sentence.
        try:
            conllu.parse_token_and_metadata("\n".join(block))
        except conllu.exceptions.ParseException as err:
            raise DataError(f"not valid CoNLL-U ({err})", path, start) from None
        if tokens:
            sentences.append(Sentence(tokens, tags, start))
        block = []
    return sentences


# ------------------------------------------------------------------- column files
def read_columns(
    path: str | Path,
    token_column: int = 0,
    tag_column: int = -1,
    separator: str | None = None,
    comment: str | None = "#",
    scheme: Scheme | None = None,
) -> list[Sentence]:
    """Sentences of a column file (CoNLL-2003 style, the UNER ``.iob2`` files).

    One token per line, blank lines between sentences. Columns are numbered from 0; negative
    numbers count from the end (-1 is the last column, CoNLL-2003's NER tags). ``separator``
    None splits on any whitespace. Every token line must have as many columns as the first one.
    Lines starting with ``comment`` before a sentence's first token are comments, and
    ``-DOCSTART-`` lines are skipped. With ``scheme`` set, every tag must be ``O`` or
    ``PREFIX-TYPE`` of that scheme. ``token_column == tag_column`` reads tokens only (the tags
    are then the tokens), for files that have no tags.
    """
    text = read_text(path, MAX_LINE_CHARS)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    width = None  # the number of columns of every token line, from the first one
    for number, line in enumerate([*text.split("\n"), ""], 1):
        stripped = line.strip()
        if not stripped:
            if tokens:
                sentences.append(Sentence(tokens, tags, start))
            tokens, tags = [], []
            continue
        if stripped.startswith("-DOCSTART-") or (
            comment and not tokens and line.startswith(comment)
        ):
            continue
        fields = line.rstrip("\r").split(separator)
        if width is None:
            width = len(fields)
            columns = {c if c >= 0 else width + c for c in (token_column, tag_column)}
            if not all(0 <= c < width for c in columns):
                raise DataError(
                    f"token column {token_column} and tag column {tag_column} do not exist in a"
                    f" line of {width} columns: {stripped!r}",
                    path,
                    number,
                )
            if len(columns) == 1 and token_column != tag_column:
                raise DataError(
                    f"token column {token_column} and tag column {tag_column} are the same"
                    f" column of {width}",
                    path,
                    number,
                )
        if len(fields) != width:
            raise DataError(
                f"expected {width} columns like the first token line, found {len(fields)}:"
                f" {stripped!r}",
                path,
                number,
            )
        token, tag = fields[token_column], fields[tag_column].strip()
        if not token or not tag:
            raise DataError("empty token or tag", path, number)
        if scheme is not None:
            check_tag(tag, scheme, path, number)
        if not tokens:
            start = number
        tokens.append(token)
        tags.append(tag)
    return sentences


def check_tag(tag: str, scheme: Scheme, path: str | Path | None = None, line: int | None = None):
    """Refuse a tag that is neither ``O`` nor ``PREFIX-TYPE`` with a prefix of ``scheme``."""
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in _PREFIXES[scheme] or not kind:
        raise DataError(
            f"tag {tag!r} is not valid {scheme} (expected O or {'/'.join(_PREFIXES[scheme])}-TYPE)",
            None if path is None else str(path),
            line,
        )


# --------------------------------------------------------------------- tag schemes
def spans(tags: Sequence[str], scheme: Scheme) -> list[tuple[int, int, str]]:
    """Entity spans ``(start, end_exclusive, type)`` of a tag sequence in ``scheme``.

    Read the way conlleval reads tags: an ``I-X`` (or ``E-X``) that does not continue an ``X``
    entity starts a new one rather than being dropped.
    """
    found: list[tuple[int, int, str]] = []
    begin, kind = -1, ""  # the open entity, if begin ≥ 0

    def close(end: int) -> None:
        """End the open entity (if any) before token ``end``."""
        nonlocal begin
        if begin >= 0:
            found.append((begin, end, kind))
        begin = -1

    for i, tag in enumerate(tags):
        if tag == "O":
            close(i)
            continue
        prefix, _, this = tag.partition("-")
        continues = begin >= 0 and this == kind
        if not continues or prefix == "B" or (scheme == "BIOES" and prefix == "S"):
            close(i)
            begin, kind = i, this
        if scheme == "BIOES" and prefix in ("E", "S"):
            close(i + 1)
    close(len(tags))
    return found


def from_spans(entities: Sequence[tuple[int, int, str]], length: int, scheme: Scheme) -> list[str]:
    """The tags of ``length`` tokens holding the (non-overlapping) ``entities`` in ``scheme``."""
    tags = ["O"] * length
    previous_end, previous_kind = -1, ""
    for start, end, kind in sorted(entities):
        for i in range(start, end):
            tags[i] = f"I-{kind}"
        if scheme == "IOB2":
            tags[start] = f"B-{kind}"
        elif scheme == "IOB1":
            # B- only where it is needed: right after an entity of the same type.
            if previous_end == start and previous_kind == kind:
                tags[start] = f"B-{kind}"
        else:
            if end - start == 1:
                tags[start] = f"S-{kind}"
            else:
                tags[start], tags[end - 1] = f"B-{kind}", f"E-{kind}"
        previous_end, previous_kind = end, kind
    return tags


def convert(tags: Sequence[str], source: Scheme, target: Scheme) -> list[str]:
    """Re-tag a sequence from one entity scheme to another (same entities)."""
    if source == target:
        return list(tags)
    return from_spans(spans(tags, source), len(tags), target)


__all__ = [
    "Sentence",
    "read_conllu",
    "read_columns",
    "check_tag",
    "spans",
    "from_spans",
    "convert",
    "SCHEMES",
]
