"""Prepared corpora (rnnkit/data/corpus.py): the ids on disk are exactly what the in-memory
readers make of the same file, the cache is trusted only when whole, and bad input is one
clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import contexts as ctx
from rnnkit.data import corpus
from rnnkit.data.corpus import Shape, prepare
from rnnkit.data.text import read_text, split_tail, tokenize
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError

# Line breaks of every kind str.splitlines knows, a byte-order mark, multi-byte characters, a
# blank line, literal specials, and a last line without its newline.
TEXT = (
    "\ufeffThe cat sat on the mat .\r\nthe dog\x0cate   the CAT\u2028twice\n\n"
    "Ünïcödé wörds 日本語 and <unk> <pad> tokens\rthe end of the cat\n"
    "the mat the cat the dog   \n  the last line"
)


def _small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of a few bytes, so that characters, \\r\\n and words straddle them."""
    monkeypatch.setattr(corpus, "READ_BYTES", 5)
    monkeypatch.setattr(corpus, "LONG_LINE", 12)
    monkeypatch.setattr(corpus, "BLOCK", 7)


@pytest.fixture(params=["whole", "pieces"])
def pieces(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pieces":
        _small_pieces(monkeypatch)
    return request.param


def _file(tmp_path: Path, text: str = TEXT, name: str = "text.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("hold_out", [None, 0.25])
def test_stream_ids_are_the_language_models_tokens(
    tmp_path: Path, pieces: str, level: str, reverse: bool, hold_out: float | None
) -> None:
    path = _file(tmp_path)
    shape = Shape("stream", level, reverse=reverse, min_freq=2, hold_out=hold_out)
    got = prepare(path, shape, root=tmp_path / "cache")
    # What rnnkit/tasks/lm.py does with the whole file in memory.
    tokens = tokenize(read_text(path), level)
    tokens = tokens[::-1] if reverse else tokens
    train = split_tail(tokens, "train", hold_out) if hold_out else tokens
    vocab = Vocab.build(Counter(train), min_freq=2)
    assert got.vocab == vocab
    assert got.ids().tolist() == vocab.encode(tokens)
    assert got.split == len(train)
    expected = [0, 0] + [Counter(train)[t] for t in vocab.itos[2:]]
    assert got.counts().tolist() == expected


@pytest.mark.parametrize("hold_out", [None, 0.3])
def test_lines_ids_are_the_embedding_tasks_words(
    tmp_path: Path, pieces: str, hold_out: float | None
) -> None:
    path = _file(tmp_path)
    shape = Shape("lines", lowercase=True, min_freq=2, hold_out=hold_out)
    got = prepare(path, shape, root=tmp_path / "cache")
    # What rnnkit/tasks/embed.py does with the whole file in memory.
    lines = read_text(path).lower().splitlines()
    train = split_tail(lines, "train", hold_out) if hold_out else lines
    vocab = Vocab.build(Counter(w for line in train for w in line.split()), min_freq=2)
    ids, sentences = ctx.encode_lines(lines, vocab)
    assert got.vocab == vocab
    assert got.ids().tolist() == ids.tolist()
    offsets = got.offsets()
    assert offsets.size == len(lines) + 1 == got.lines + 1
    rebuilt = np.repeat(np.arange(len(lines)), np.diff(offsets))
    assert rebuilt.tolist() == sentences.tolist()
    assert got.split == len(train)
    assert np.diff(got.words()).tolist() == [len(line.split()) for line in lines]
    assert got.read(2, 9).tolist() == ids[2:9].tolist()


def test_a_long_line_is_read_in_runs_and_a_huge_word_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_pieces(monkeypatch)
    words = " ".join(f"w{i % 7}" for i in range(500))
    path = _file(tmp_path, words + "\nlast line\n")
    got = prepare(path, Shape("stream", "word"), root=tmp_path / "cache")
    assert got.vocab.decode(got.ids().tolist()) == tokenize(read_text(path), "word")
    _file(tmp_path, "x" * 40 + " y\n", "word.txt")
    with pytest.raises(DataError, match=r"word\.txt: a word of over 12 characters"):
        prepare(tmp_path / "word.txt", Shape("stream", "word"), root=tmp_path / "cache")


def test_the_cache_is_reused_and_a_change_of_file_or_setting_prepares_afresh(
    tmp_path: Path,
) -> None:
    path, root = _file(tmp_path), tmp_path / "cache"
    first = prepare(path, Shape("stream", "word"), root=root)
    stamp = (first.directory / "meta.json").stat().st_mtime_ns
    again = prepare(path, Shape("stream", "word"), root=root)
    assert again.directory == first.directory
    assert (again.directory / "meta.json").stat().st_mtime_ns == stamp  # read, not rewritten
    other = prepare(path, Shape("stream", "word", min_freq=2), root=root)
    assert other.directory != first.directory
    path.write_text(TEXT + " more")
    changed = prepare(path, Shape("stream", "word"), root=root)
    assert changed.directory not in (first.directory, other.directory)
    assert changed.vocab.decode(changed.ids().tolist())[-2:] == ["more", "<eos>"]


def test_a_kill_during_preparation_leaves_no_trusted_cache(tmp_path: Path) -> None:
    path, root = _file(tmp_path), tmp_path / "cache"
    # A real process killed by SIGKILL after the ids are written but before the cache is done.
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from rnnkit.data import corpus
        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        corpus._write_synced = killed
        corpus.prepare({str(path)!r}, corpus.Shape("stream", "char"), root=Path({str(root)!r}))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    assert run.returncode == -9
    left = list(root.iterdir())
    assert len(left) == 1 and ".partial-" in left[0].name  # the half-written folder only
    assert (left[0] / "ids.npy").exists() and not (left[0] / "meta.json").exists()
    done = prepare(path, Shape("stream", "char"), root=root)  # trusts nothing half made
    assert [p.name for p in root.iterdir()] == [done.directory.name]  # the dead one cleared
    assert "".join(done.vocab.decode(done.ids().tolist())) == read_text(path)


def test_a_cache_missing_its_mark_or_with_the_wrong_size_is_made_again(tmp_path: Path) -> None:
    path, root = _file(tmp_path), tmp_path / "cache"
    made = prepare(path, Shape("stream", "word"), root=root)
    (made.directory / "meta.json").unlink()
    again = prepare(path, Shape("stream", "word"), root=root)
    assert again.directory == made.directory and again.ids().tolist() == made.ids().tolist()
    np.save(again.directory / "ids.npy", np.zeros(3, np.uint8))  # truncated by hand
    third = prepare(path, Shape("stream", "word"), root=root)
    assert third.ids().tolist() == made.ids().tolist()


def test_a_full_disk_is_one_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(corpus, "_write_synced", full)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="cannot write the prepared corpus .No space left"):
        prepare(_file(tmp_path), Shape("stream", "word"), root=root)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"fine\nfine\nbad \xff byte\n", r"text\.txt:3: not UTF-8 text \(byte 14\)"),
        (b"one\ntwo\nth\x00ree\n", r"text\.txt:3: holds NUL bytes"),
    ],
)
def test_bad_text_names_the_file_and_line(
    tmp_path: Path, pieces: str, data: bytes, message: str
) -> None:
    path = tmp_path / "text.txt"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message):
        prepare(path, Shape("stream", "char"), root=tmp_path / "cache")
    with pytest.raises(DataError, match="file not found"):
        prepare(tmp_path / "missing.txt", Shape("stream", "char"), root=tmp_path / "cache")


def test_rnnkit_prepare_makes_the_cache_that_training_then_reads(tmp_path: Path) -> None:
    from rnnkit.config import from_dict
    from rnnkit.tasks.embed import EmbedConfig, prepare_training_lines
    from tests.conftest import run_cli

    path = _file(tmp_path)
    done = run_cli("prepare", "embed", f"data.train={path}", "data.min_freq=2")
    assert done.returncode == 0, done.stderr
    config = from_dict(EmbedConfig, {"data": {"train": str(path), "min_freq": 2}})
    assert done.stdout.strip().endswith(str(prepare_training_lines(config, None).directory))
    refused = run_cli("prepare", "tag", f"data.train={path}")
    assert refused.returncode != 0 and "nothing to prepare" in refused.stderr
