"""Word vectors in text form: word2vec's (a ``COUNT DIM`` header line) and GloVe's (no header).

Each line is a word and its numbers, separated by spaces. Reading keeps only the words asked for,
so a multi-gigabyte file costs one pass and little memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch

from rnnkit.data.text import resolve_data_path
from rnnkit.errors import DataError

logger = logging.getLogger(__name__)


def read_vectors(
    path: str | Path, wanted: Iterable[str] | None = None, fold_case: bool = False
) -> tuple[list[str], torch.Tensor]:
    """Words and their vectors ``(words, dim)`` from a word2vec or GloVe text file.

    With ``wanted``, only those words are kept (compared lowercased with ``fold_case``). A
    line whose width differs from the others is a DataError naming the file and line.
    """
    keep = None if wanted is None else set(wanted)
    words: list[str] = []
    rows: list[list[float]] = []
    dim = None
    try:
        handle = open(path, encoding="utf-8-sig")
    except OSError as err:
        raise DataError(f"cannot read word vectors ({err.strerror})", str(path)) from None
    with handle:
        number = 0
        try:
            for number, line in enumerate(handle, 1):
                parts = line.rstrip("\r\n").rstrip(" ")
                # Once the width is known, split from the right: some files (GloVe 840B) have
                # words that contain spaces.
                parts = parts.split(" ") if dim is None else parts.rsplit(" ", dim)
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    dim = int(parts[1])  # the word2vec header
                    continue
                if len(parts) < 2:
                    if not line.strip():
                        continue
                    raise DataError("expected a word followed by numbers", str(path), number)
                if dim is None:
                    dim = len(parts) - 1
                if len(parts) - 1 != dim:
                    raise DataError(
                        f"vector has {len(parts) - 1} numbers, expected {dim}", str(path), number
                    )
                if keep is not None and (parts[0].lower() if fold_case else parts[0]) not in keep:
                    continue
                try:
                    rows.append([float(x) for x in parts[1:]])
                except ValueError:
                    raise DataError("a vector entry is not a number", str(path), number) from None
                words.append(parts[0])
        except UnicodeDecodeError:  # lines decode one by one as they are read
            raise DataError("not UTF-8 text", str(path), number + 1) from None
    if dim is None:
        raise DataError("no vectors in file", str(path))
    return words, torch.tensor(rows, dtype=torch.float32).reshape(len(rows), dim)


VectorFormat = Literal["word2vec", "glove"]


def write_vectors(
    path: str | Path, words: list[str], vectors: torch.Tensor, format: VectorFormat = "word2vec"
) -> None:
    """Write ``vectors`` ``(words, dim)`` as text, atomically: word2vec's format (a header line
    ``COUNT DIM``) or GloVe's (no header). Numbers keep 6 significant digits."""
    from rnnkit.checkpoint import atomic_write_text

    if format not in ("word2vec", "glove"):
        raise ValueError(f"unknown vector format {format!r} (choices: word2vec, glove)")
    if vectors.dim() != 2 or vectors.shape[0] != len(words):
        raise ValueError(f"{len(words)} words but vectors of shape {tuple(vectors.shape)}")
    bad = next((w for w in words if not w or len(w.split()) != 1 or w != w.strip()), None)
    if bad is not None:
        raise DataError(f"word {bad!r} is empty or holds whitespace; the text format cannot")
    lines = [f"{len(words)} {vectors.shape[1]}"] if format == "word2vec" else []
    for word, row in zip(words, vectors.tolist(), strict=True):
        lines.append(word + " " + " ".join(f"{x:.6g}" for x in row))
    atomic_write_text(path, "\n".join(lines) + "\n")


def initialise_embedding(
    weight: torch.Tensor, itos: list[str], path: str | Path, first: int = 0
) -> tuple[int, list[str]]:
    """Copy vectors from ``path`` into rows of ``weight`` ``(vocab, dim)`` for the words of
    ``itos`` from index ``first`` on (specials come before it). A word missing as written is
    matched case-insensitively. Returns (found, missing words)."""
    words, vectors = read_vectors(path, {w.lower() for w in itos[first:]}, fold_case=True)
    if vectors.shape[1] != weight.shape[1]:
        raise DataError(
            f"vectors have {vectors.shape[1]} dimensions; the model's embeddings have "
            f"{weight.shape[1]} (set model.embedding_dim to match)",
            str(path),
        )
    index = {w: i for i, w in enumerate(words)}
    folded: dict[str, int] = {}  # lowercased → the first (most frequent) spelling in the file
    for i, w in enumerate(words):
        folded.setdefault(w.lower(), i)
    missing = []
    with torch.no_grad():
        for row, word in enumerate(itos[first:], first):
            hit = index.get(word, folded.get(word.lower()))
            if hit is None:
                missing.append(word)
            else:
                weight[row] = vectors[hit]
    return len(itos) - first - len(missing), missing


def load_pretrained(
    weight: torch.Tensor,
    itos: list[str],
    name: str,
    data_dir: Path | None,
    first: int,
    freeze: bool = False,
    unit: str = "words",
) -> tuple[int, list[str]]:
    """Initialise an embedding's ``weight`` ``(vocab, dim)`` from the vector file a recipe names
    (absolute, or inside ``data_dir``), as :func:`initialise_embedding` does for the entries of
    ``itos`` from ``first`` on; with ``freeze`` the weight gets no gradient. Logs how many
    ``unit`` (words, tokens) were found and a few of those missing. Returns (found, missing)."""
    path = resolve_data_path(name, data_dir)
    found, missing = initialise_embedding(weight.data, itos, path, first)
    if freeze:
        weight.requires_grad_(False)
    shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
    logger.info(
        f"pretrained vectors {path}: {found} of {found + len(missing)} {unit} found; "
        f"missing: {shown or 'none'}"
    )
    return found, missing
