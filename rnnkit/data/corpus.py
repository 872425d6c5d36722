"""A text corpus prepared once into token ids on disk, for corpora larger than memory.

Reading a few gigabytes of text into a Python string, then a list of tokens, then a tensor
needs tens of gigabytes. :func:`prepare` instead reads the file in pieces, writes the token ids
to a ``.npy`` array on disk and the vocabulary beside it; training then reads windows of that
array through a memory map. Memory stays bounded by the vocabulary, not the corpus.

The result is cached under a key made of the source file's SHA-256 and the settings that shaped
the ids (:class:`Shape`), so a changed file or setting prepares afresh, and an unchanged one is
read back at once. The cache is written in a private directory and renamed into place only when
complete: a kill, a full disk or a second process preparing the same corpus never leaves a cache
that a later run would trust.

The tokens are exactly those of :func:`rnnkit.data.text.tokenize` on the whole file (``unit:
stream``, the language model), or the whitespace words of each line with the words outside the
vocabulary dropped (``unit: lines``, word embeddings, as :func:`rnnkit.data.contexts.encode_lines`).
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from tqdm import tqdm

from rnnkit.data.text import EOS, Level, reading
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError, ModelDirError

VERSION = 2  # of the cache's layout; a cache of another version is prepared afresh
READ_BYTES = 1 << 22  # bytes read at a time
LONG_LINE = 1 << 22  # an unfinished line this long is split at its last space
BLOCK = 1 << 22  # ids handled at a time when counting and remapping
Unit = Literal["stream", "lines"]


@dataclass(frozen=True)
class Shape:
    """The settings that decide the token ids, and with the file's hash, the cache key.

    ``hold_out``: the share of the tokens (``stream``) or lines (``lines``) at the end that is
    held out as dev text when there is no dev file; the vocabulary is counted without it.
    """

    unit: Unit = "stream"
    level: Level = "word"
    lowercase: bool = False
    reverse: bool = False  # the tokens in reverse order (a backward language model)
    min_freq: int = 1
    max_vocab: int | None = None
    hold_out: float | None = None


@dataclass
class Prepared:
    """A prepared corpus: where it is, its vocabulary and sizes."""

    directory: Path
    vocab: Vocab
    tokens: int
    lines: int
    split: int
    """The first held-out token (``stream``) or line (``lines``); the length if none."""

    def ids(self) -> np.ndarray:
        """The token ids ``(tokens,)``, memory-mapped (copy-on-write: never changes the file)."""
        return np.load(self.directory / "ids.npy", mmap_mode="c")

    def offsets(self) -> np.ndarray:
        """``(lines + 1,)`` int64: line ``i``'s ids are ``ids[offsets[i]:offsets[i + 1]]``."""
        return np.load(self.directory / "offsets.npy", mmap_mode="c")

    def counts(self) -> np.ndarray:
        """``(len(vocab),)`` int64: each token's count in the training part (0 for specials)."""
        return np.load(self.directory / "counts.npy")

    def words(self) -> np.ndarray:
        """``(lines + 1,)`` int64 (``lines`` only): like :meth:`offsets`, but counting every
        whitespace word of the text, the dropped ones too (a vocabulary's coverage)."""
        return np.load(self.directory / "words.npy", mmap_mode="c")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Ids ``[start, stop)`` ``(stop - start,)``, read from disk with a plain read, so
        that no page of the corpus stays mapped into this process's memory."""
        header = np.load(self.directory / "ids.npy", mmap_mode="r")
        with open(self.directory / "ids.npy", "rb") as f:
            f.seek(header.offset + start * header.dtype.itemsize)
            return np.fromfile(f, header.dtype, stop - start)


def cache_root() -> Path:
    """``$RNNKIT_CACHE``, else ``$XDG_CACHE_HOME/rnnkit`` or ``~/.cache/rnnkit``; corpora go
    in its ``corpora`` folder."""
    if os.environ.get("RNNKIT_CACHE"):
        return Path(os.environ["RNNKIT_CACHE"]).expanduser() / "corpora"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnkit" / "corpora"


def prepare(
    path: str | Path, shape: Shape, root: Path | None = None, progress: bool = False
) -> Prepared:
    """The prepared form of the text file ``path``: from the cache, else made now.

    A missing, binary or undecodable file is a DataError naming it (and the line).
    """
    path = Path(path)
    root = cache_root() if root is None else root
    key = cache_key(file_digest(path), shape)
    final = root / key
    found = _trusted(final, shape)
    if found is not None:
        return found
    _remove_abandoned(root, key)
    if final.exists():  # unfinished or from another layout: never read, so replace it
        shutil.rmtree(final, ignore_errors=True)
    partial = root / f"{key}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        partial.mkdir(parents=True)
        _write(path, shape, partial, progress)
        try:
            partial.rename(final)
        except OSError:  # another process finished the same corpus first: keep theirs
            shutil.rmtree(partial, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(f"cannot write the prepared corpus ({err.strerror})", str(root)) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    found = _trusted(final, shape)
    if found is None:
        raise DataError("the prepared corpus did not read back", str(final))
    return found


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (one pass, in pieces); a missing file is a DataError."""
    with reading(path), open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_key(digest: str, shape: Shape) -> str:
    """The folder name of a file's prepared form under ``shape``."""
    settings = json.dumps([VERSION, digest, dataclasses.asdict(shape)], sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:32]


# ------------------------------------------------------------------- reading text
def text_pieces(path: Path, progress: bool = False) -> Iterator[str]:
    """The file's text in pieces, decoded as :func:`rnnkit.data.text.read_text` decodes it:
    UTF-8, a leading byte-order mark dropped, ``\\r\\n`` and ``\\r`` read as ``\\n``."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    seen_bytes, seen_lines, held = 0, 0, ""
    bar = tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=f"preparing {path.name}",
        disable=not progress, leave=False,
    )  # fmt: skip
    with open(path, "rb") as f, bar:
        while True:
            chunk = f.read(READ_BYTES)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                before = len(err.object) - len(chunk)  # undecoded bytes carried from before
                at = seen_bytes - before + err.start
                line = seen_lines + err.object[: err.start].count(b"\n") + 1
                raise DataError(f"not UTF-8 text (byte {at})", str(path), line) from None
            seen_bytes += len(chunk)
            bar.update(len(chunk))
            text = held + text
            held = ""
            if text.endswith("\r") and chunk:  # it may be the first half of \r\n
                text, held = text[:-1], "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            nul = text.find("\x00")
            if nul >= 0:
                line = seen_lines + text.count("\n", 0, nul) + 1
                raise DataError(
                    "holds NUL bytes: UTF-16 or binary, not UTF-8 text", str(path), line
                )
            seen_lines += chunk.count(b"\n")
            if text:
                yield text
            if not chunk:
                return


def words_by_line(pieces: Iterator[str], where: str) -> Iterator[tuple[list[str], bool]]:
    """``(words, ends_line)`` runs of the text's whitespace words, with a line ending after
    every line :meth:`str.splitlines` finds (the last one included, ended or not). A line
    longer than :data:`LONG_LINE` comes in several runs, so no line is held whole; a word
    that long is a DataError naming ``where``."""
    carry = ""
    for piece in pieces:
        parts = (carry + piece).splitlines(keepends=True)
        carry = ""
        if parts and parts[-1].splitlines()[0] == parts[-1]:  # no line break at its end
            carry = parts.pop()
        for part in parts:
            yield part.split(), True
        if len(carry) > LONG_LINE:
            cut = max(carry.rfind(" "), carry.rfind("\t"))
            if cut <= 0:
                raise DataError(f"a word of over {LONG_LINE:,} characters; is this text?", where)
            head, carry = carry[:cut], carry[cut:]
            yield head.split(), False
    if carry:
        yield carry.split(), True


# ------------------------------------------------------------------- preparing
class _Provisional:
    """Ids in order of first appearance, appended to a file as the text is read."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.stoi: dict[str, int] = {}
        self.size = 0

    def add_words(self, words: list[str]) -> None:
        """Append the ids of ``words``, giving each new word the next id."""
        stoi = self.stoi
        for word in words:
            if word not in stoi:
                stoi[word] = len(stoi)
        self.write(np.fromiter(map(stoi.__getitem__, words), np.uint32, len(words)))

    def write(self, ids: np.ndarray) -> None:
        """Append ids ``(n,)`` to the file as uint32."""
        self.file.write(ids.astype(np.uint32, copy=False).tobytes())
        self.size += ids.size


def _write(path: Path, shape: Shape, out: Path, progress: bool) -> None:
    """Tokenise ``path`` into provisional ids (first-appearance order; a character's code
    point), then count the training part, build the vocabulary, and write the final ids in
    the smallest dtype that holds them, then ``meta.json``, the mark of a finished cache."""
    raw = _Provisional(out / "provisional.bin")
    line_ends = array("q")  # provisional positions where lines end (unit: lines)
    chars = shape.unit == "stream" and shape.level == "char"
    with raw.file:
        pieces = text_pieces(path, progress)
        if shape.lowercase:
            pieces = (p.lower() for p in pieces)
        if chars:
            for piece in pieces:
                raw.write(np.frombuffer(piece.encode("utf-32-le"), np.uint32))
        else:
            eos = [EOS] if shape.unit == "stream" else []
            for words, ends in words_by_line(pieces, str(path)):
                raw.add_words(words + eos if ends else words)
                if ends and shape.unit == "lines":
                    line_ends.append(raw.size)
        raw.file.flush()
        os.fsync(raw.file.fileno())
    prov = _Ids(out / "provisional.bin", raw.size)
    ends = np.frombuffer(line_ends, np.int64)
    split = _split_point(shape, raw.size, ends.size)
    first, last = _train_range(shape, raw.size, split, ends)
    counts = _bincount(prov, first, last, 0x110000 if chars else len(raw.stoi))
    itos = [chr(i) for i in np.flatnonzero(counts)] if chars else list(raw.stoi)
    seen = {t: int(counts[ord(t) if chars else i]) for i, t in enumerate(itos)}
    vocab = Vocab.build(
        Counter({t: n for t, n in seen.items() if n}), shape.min_freq, shape.max_vocab
    )
    missing = -1 if shape.unit == "lines" else vocab.unk_id
    remap = np.full(counts.size, missing, np.int64)
    for i, token in enumerate(itos):
        remap[ord(token) if chars else i] = vocab.stoi.get(token, missing)
    specials = len(vocab.specials)
    np.save(out / "counts.npy", np.array([0] * specials + [seen[t] for t in vocab.itos[specials:]]))
    if shape.unit == "lines":
        remap[remap < specials] = -1  # encode_lines drops unknown words and specials alike
        kept = _write_lines(prov, remap, ends, out)
    else:
        kept = _write_stream(prov, remap, shape.reverse, _dtype(len(vocab)), out)
    os.remove(out / "provisional.bin")
    (out / "vocab.json").write_text(json.dumps(vocab.to_dict(), ensure_ascii=False))
    meta = {
        "version": VERSION,
        "source": str(path),
        "shape": dataclasses.asdict(shape),
        "tokens": kept,
        "lines": int(ends.size),
        "split": split,
    }
    for done in out.iterdir():  # on disk before the mark that says they are whole
        _fsync(done)
    _write_synced(out / "meta.json", json.dumps(meta, indent=1).encode())


def _split_point(shape: Shape, tokens: int, lines: int) -> int:
    """Where the held-out tail starts, in tokens (``stream``) or lines (``lines``), as
    :func:`rnnkit.data.text.split_tail` cuts it."""
    size = tokens if shape.unit == "stream" else lines
    if shape.hold_out is None:
        return size
    return max(0, size - max(1, int(size * shape.hold_out)))


def _train_range(shape: Shape, tokens: int, split: int, ends: np.ndarray) -> tuple[int, int]:
    """The provisional positions ``[first, last)`` of the training part."""
    if shape.unit == "lines":
        return 0, int(ends[split - 1]) if split else 0
    if shape.reverse:  # the reversed text's head is the file's tail
        return tokens - split, tokens
    return 0, split


class _Ids:
    """A file of uint32 ids read a block at a time with plain reads: unlike a memory map,
    the pages read never count towards the process's resident memory."""

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size

    def blocks(self, first: int = 0, last: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, ids[start:start + BLOCK])`` from ``first`` to ``last``, in order."""
        last = self.size if last is None else last
        with open(self.path, "rb") as f:
            for start in range(first, last, BLOCK):
                f.seek(start * 4)
                yield start, np.fromfile(f, np.uint32, min(BLOCK, last - start))

    def reversed_blocks(self) -> Iterator[np.ndarray]:
        """The ids in reverse order, a block at a time."""
        with open(self.path, "rb") as f:
            for stop in range(self.size, 0, -BLOCK):
                start = max(0, stop - BLOCK)
                f.seek(start * 4)
                yield np.fromfile(f, np.uint32, stop - start)[::-1]


def _bincount(ids: _Ids, first: int, last: int, size: int) -> np.ndarray:
    """Counts of each id in ``ids[first:last]`` ``(size,)``."""
    counts = np.zeros(size, np.int64)
    for _, block in ids.blocks(first, last):
        counts += np.bincount(block, minlength=size)[:size]
    return counts


def _dtype(size: int) -> type:
    return np.uint8 if size <= 1 << 8 else np.uint16 if size <= 1 << 16 else np.int32


def _write_stream(prov: _Ids, remap: np.ndarray, reverse: bool, dtype: type, out: Path) -> int:
    """``ids.npy``: every provisional id through ``remap``, reversed if asked."""
    blocks = prov.reversed_blocks() if reverse else (b for _, b in prov.blocks())
    with _npy(out / "ids.npy", dtype, prov.size) as f:
        for block in blocks:
            f.write(remap[block].astype(dtype).tobytes())
    return prov.size


def _write_lines(prov: _Ids, remap: np.ndarray, ends: np.ndarray, out: Path) -> int:
    """``ids.npy`` with the words ``remap`` drops (-1) left out, and ``offsets.npy``."""
    kept_total = 0
    offsets = np.zeros(ends.size + 1, np.int64)
    for start, block in prov.blocks():  # first pass: how many survive, and where lines end
        kept = np.cumsum(remap[block] >= 0)
        lo, hi = np.searchsorted(ends, [start + 1, start + block.size + 1])
        offsets[1 + lo : 1 + hi] = kept_total + kept[ends[lo:hi] - start - 1]
        kept_total += int(kept[-1]) if kept.size else 0
    dtype = _dtype(int(remap.max(initial=0)) + 1)
    with _npy(out / "ids.npy", dtype, kept_total) as f:
        for _, block in prov.blocks():
            ids = remap[block]
            f.write(ids[ids >= 0].astype(dtype).tobytes())
    np.save(out / "offsets.npy", offsets)
    np.save(out / "words.npy", np.concatenate([[0], ends]).astype(np.int64))
    return kept_total


def _npy(path: Path, dtype: type, size: int) -> BinaryIO:
    """An open ``.npy`` file of ``size`` elements of ``dtype``, its header written: the
    caller writes the data in order (no memory map, so no resident pages)."""
    f = open(path, "wb")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
    np.lib.format.write_array_header_2_0(f, {**header, "shape": (size,)})
    return f


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------- the cache
def _read_meta(directory: Path) -> dict:
    return json.loads((directory / "meta.json").read_text())


def _trusted(directory: Path, shape: Shape) -> Prepared | None:
    """The cache in ``directory`` if it is finished and agrees with itself, else None."""
    try:
        meta = _read_meta(directory)
        if meta["version"] != VERSION or meta["shape"] != dataclasses.asdict(shape):
            return None
        ids = np.load(directory / "ids.npy", mmap_mode="r")
        if ids.shape != (meta["tokens"],):
            return None
        vocab = Vocab.from_dict(json.loads((directory / "vocab.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError, ModelDirError):
        return None
    return Prepared(directory, vocab, int(meta["tokens"]), int(meta["lines"]), int(meta["split"]))


def _remove_abandoned(root: Path, key: str) -> None:
    """Delete partial caches of ``key`` whose writer is gone (killed mid-way)."""
    for partial in root.glob(f"{key}.partial-*"):
        pid = partial.name.split("-")[1]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------- reading streams
class StreamRows:
    """Tokens ``[first, stop)`` of a prepared stream laid out as ``streams`` contiguous rows
    (as :func:`rnnkit.data.text.as_streams` lays out a tensor), read from disk a window at a
    time with plain reads, so neither the corpus nor the pages read stay in memory.
    """

    def __init__(self, prepared: Prepared, first: int, stop: int, streams: int):
        self.path = prepared.directory / "ids.npy"
        header = np.load(self.path, mmap_mode="r")
        self.offset, self.dtype = header.offset, header.dtype
        length = (stop - first) // streams
        if length < 2:
            raise DataError(f"text of {stop - first} tokens is too short for {streams} streams")
        self.first, self.length = first, length
        self.rows = list(range(streams))

    @property
    def shape(self) -> tuple[int, int]:
        """``(streams, length)``, as the in-memory layout's."""
        return len(self.rows), self.length

    def select(self, rank: int, world_size: int) -> StreamRows:
        """Process ``rank``'s rows of ``world_size``: every ``world_size``-th, from ``rank``."""
        mine = StreamRows.__new__(StreamRows)
        mine.__dict__.update(self.__dict__)
        mine.rows = self.rows[rank::world_size]
        return mine

    def window(self, start: int, stop: int) -> torch.Tensor:
        """Columns ``[start, stop)`` of every row, ``(streams, stop - start)`` int64."""
        size = self.dtype.itemsize
        out = np.empty((len(self.rows), stop - start), self.dtype)
        with open(self.path, "rb") as f:
            for i, row in enumerate(self.rows):
                f.seek(self.offset + (self.first + row * self.length + start) * size)
                out[i] = np.fromfile(f, self.dtype, stop - start)
        return torch.from_numpy(out.astype(np.int64))
