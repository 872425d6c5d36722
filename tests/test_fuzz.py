"""Fuzzing (hypothesis): the data readers on arbitrary files, and loading on damaged model
directories. Only RnnkitError subclasses may escape, and the CLI never shows a traceback."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit.data.labeled import read_trec, read_tsv
from rnnkit.data.parallel import read_pairs
from rnnkit.data.tagged import read_columns, read_conllu
from rnnkit.data.vectors import read_vectors
from rnnkit.errors import RnnkitError
from tests.conftest import run_cli
from tests.tiny import SAMPLE_INPUTS

READERS = {
    "tsv": read_tsv,
    "trec": read_trec,
    "pairs": read_pairs,
    "conllu": read_conllu,
    "columns": lambda p: read_columns(p, 0, -1, scheme="IOB2"),
    "vectors": read_vectors,
}

# Lines that look almost right: the near misses find more than random bytes do.
LINES = st.sampled_from([
    "HUM:ind Who wrote Hamlet ?", "animal\tthe dog", "Go.\tVa !", "1\tAnna\tB-PER", "2\tsays\tO",
    "1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_", "3-4\tdon't\t_\t_\t_\t_\t_\t_\t_\t_", "# sent_id = 1",
    "-DOCSTART- -X- O O", "king 0.1 0.2 0.3", "2 3", "", "\t", "I-PER", "x\ty\tz", "nan nan",
])  # fmt: skip
TEXT = st.one_of(
    st.lists(st.one_of(LINES, st.text(max_size=40)), max_size=12).map("\n".join),
    st.text(max_size=200),
).map(lambda s: s.encode("utf-8", "surrogatepass"))
FILES = st.one_of(TEXT, st.binary(max_size=300))


@pytest.mark.parametrize("reader", sorted(READERS))
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=FILES)
def test_readers_raise_only_rnnkit_errors(reader, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file"
        path.write_bytes(data)
        try:
            READERS[reader](path)
        except RnnkitError:
            pass


DAMAGE = st.sampled_from(["truncate", "flip", "garbage", "delete", "directory", "json"])


def damage(directory: Path, how: str, which: int, where: float, value) -> None:
    """Damage one file of a model directory the way a disk, a tool or a person might."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    path = files[which % len(files)]
    data = path.read_bytes()
    at = int(where * max(0, len(data) - 1))
    if how == "truncate":
        path.write_bytes(data[:at])
    elif how == "flip":
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x41]) + data[at + 1 :] if data else b"x")
    elif how == "garbage":
        path.write_bytes(bytes(range(256))[at % 200 :])
    elif how == "delete":
        path.unlink()
    elif how == "directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_text(json.dumps(value))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.mark.parametrize("task", ["cipher", "tag", "translate", "lm"])
def test_damaged_model_directories_raise_only_rnnkit_errors(task, tiny_models, tmp_path_factory):
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(how=DAMAGE, which=st.integers(0, 50), where=st.floats(0, 1), value=JSON_VALUES)
    def check(how, which, where, value):
        copy = tmp_path_factory.mktemp("damaged") / "model"
        shutil.copytree(tiny_models[task], copy)
        damage(copy, how, which, where, value)
        try:
            rnnkit.load(copy).predict(SAMPLE_INPUTS[task][:1])
        except RnnkitError:
            pass
        finally:
            shutil.rmtree(copy.parent)

    check()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(how=DAMAGE, which=st.integers(0, 50), where=st.floats(0, 1), value=JSON_VALUES)
def test_the_cli_shows_no_traceback_on_damaged_directories(tiny_models, how, which, where, value):
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "model"
        shutil.copytree(tiny_models["cipher"], copy)
        damage(copy, how, which, where, value)
        run = run_cli("decrypt", "--model", str(copy), "URYYB")
        assert "Traceback" not in run.stderr, run.stderr
        assert run.returncode in (0, 2)
        assert run.returncode == 0 or len(run.stderr.strip().splitlines()) == 1
