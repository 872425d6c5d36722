"""The example task of docs/develop.md (examples/truecase.py): registered the way a new task
is, it passes the same conformance checks as every built-in task, trains from the command
line, and learns to restore capitals on real text."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnkit.config import parse_overrides
from rnnkit.tasks import TASKS
from tests.conftest import SHARED_DATA
from tests.test_contract import check_contract

# The first 1,000 lines of tinyshakespeare/input.txt (public domain), kept here so that the
# suite needs no ../shared/data; test_the_shakespeare_lines_are_the_shared_files_first checks it.
SHAKESPEARE = Path(__file__).parent / "data" / "shakespeare.txt"


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(TASKS, "truecase", ("examples.truecase", "TruecaseTask"))


def _text(tmp_path, lines: int = 400):
    source = SHAKESPEARE.read_text(encoding="utf-8")
    assert len(source.splitlines()) >= lines
    path = tmp_path / "text.txt"
    path.write_text("\n".join(source.splitlines()[:lines]) + "\n", encoding="utf-8")
    return path


def test_the_example_task_honours_the_contract(registered, tmp_path):
    text = _text(tmp_path)
    raw = parse_overrides(
        [f"data.train={text}", f"data.dev={text}", "train.max_steps=1", "train.progress=false"]
    )
    inputs = ["first citizen: before we proceed any further", "", "i̇stanbul, ROME and paris"]
    check_contract("truecase", raw, inputs, tmp_path)


def test_the_example_task_learns_capitals_from_the_command_line(registered, tmp_path, capsys):
    from rnnkit.cli import main
    from rnnkit.tasks import load_task

    text, out = _text(tmp_path, 1000), tmp_path / "model"
    args = [f"data.train={text}", f"data.dev={text}", "train.epochs=6", "train.lr=0.03"]
    assert main(["train", "truecase", "--out", str(out), *args, "train.progress=false"]) == 0
    task = load_task(out)
    letters = [ch for ch in text.read_text(encoding="utf-8") if ch.isalpha()]
    all_lower = sum(ch.islower() for ch in letters) / len(letters)  # what knowing nothing gets
    assert task.evaluate("dev")["letter_accuracy"] > all_lower + 0.02
    # Every line starts with a capital, and every speaker's name is followed by a colon.
    assert task.predict(["first citizen:"])[0]["text"] == "First Citizen:"


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no ../shared/data to compare with")
def test_the_shakespeare_lines_are_the_shared_files_first():
    whole = (SHARED_DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    kept = SHAKESPEARE.read_text(encoding="utf-8").splitlines()
    assert kept == whole.splitlines()[: len(kept)]
