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


def test_the_example_task_exports_to_onnx_with_no_change_outside_its_file(registered, tmp_path):
    """``rnnkit export`` knows no task: the example's own ``onnx_plan`` is enough for a graph
    that onnxruntime runs and that answers what PyTorch answers on a batch of its own."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import torch

    from rnnkit.cli import main
    from rnnkit.tasks import load_task

    text = tmp_path / "text.txt"
    lines = ["Paris is in France.", "Anna met Bo in Oslo.", "We saw the Nile.", "I am here."]
    text.write_text("\n".join(lines * 5) + "\n", encoding="utf-8")
    model, out = tmp_path / "model", tmp_path / "case.onnx"
    args = [f"data.train={text}", f"data.dev={text}", "train.max_steps=2", "train.progress=false"]
    assert main(["train", "truecase", "--out", str(model), *args]) == 0
    assert main(["export", "--model", str(model), "--out", str(out)]) == 0

    task = load_task(model)
    batch = task.make_batch(["rome and paris, not berlin.", "x", "the nile flows north"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["chars", "mask"]
    scores, capital = session.run(
        ["scores", "capital"], {"chars": batch["chars"].numpy(), "mask": batch["mask"].numpy()}
    )
    with torch.no_grad():
        want = task.model(batch["chars"], batch["mask"])
    assert abs(scores - want.numpy()).max() <= 1e-4
    assert (capital == want.argmax(-1).masked_fill(~batch["mask"], 0).numpy()).all()


def test_the_example_task_gets_a_verb_of_its_own(registered, tmp_path, capsys):
    import json

    from rnnkit.cli import main
    from rnnkit.tasks import load_task

    text, out = tmp_path / "text.txt", tmp_path / "model"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20)
    args = [f"data.train={text}", f"data.dev={text}", "train.max_steps=1", "train.progress=false"]
    assert main(["train", "truecase", "--out", str(out), *args]) == 0
    capsys.readouterr()
    inputs = ["first citizen:", "hear me speak."]
    expected = load_task(out).predict(inputs)
    assert main(["truecase", "--model", str(out), "--json", *inputs]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == expected
    assert main(["truecase", "--model", str(out), inputs[0]]) == 0
    assert capsys.readouterr().out == expected[0]["text"] + "\n"


def test_the_consumers_name_no_task():
    """The CLI, the server, its page, crack, export and tune learn what a task can do from the
    protocols of rnnkit/tasks/base.py, never from its name (help text aside)."""
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent / "rnnkit"
    consumers = ("cli.py", "crack.py", "export.py", "backends.py", "tune.py")
    files = [root / name for name in consumers] + sorted((root / "serve").rglob("*.*"))
    names = re.compile(r"""["'](cipher|lm|tag|classify|embed|translate)["']""")
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in files
        if path.suffix in (".py", ".js", ".html")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if names.search(line) and "help=" not in line
    ]
    assert not found, found


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no ../shared/data to compare with")
def test_the_shakespeare_lines_are_the_shared_files_first():
    whole = (SHARED_DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    kept = SHAKESPEARE.read_text(encoding="utf-8").splitlines()
    assert kept == whole.splitlines()[: len(kept)]
