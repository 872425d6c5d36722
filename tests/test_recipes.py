"""Every recipe in configs/ is a valid config of its task, and runs end to end on its data."""

import json
from pathlib import Path

import pytest

from rnnkit.cli import DRY_RUN_STEPS
from rnnkit.config import from_dict, read_yaml
from rnnkit.tasks import task_class
from tests.conftest import SHARED_DATA

CONFIGS = Path(__file__).parent.parent / "configs"
# Search spaces for `rnnkit tune` sit beside their recipes (tests/test_tune.py checks them).
RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.endswith(".space.yaml"))


def test_there_are_recipes():
    assert len(RECIPES) >= 15


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_a_valid_config(recipe):
    data = read_yaml(recipe)
    config = from_dict(task_class(data["task"]).Config, data)
    assert config.task == data["task"]
    assert config.train.max_minutes is None or config.train.max_minutes <= 60


# ------------------------------------------------------------------- dry runs
# Each recipe runs for real (`rnnkit train --dry-run`: its own model, optimizer and metrics,
# two updates, one evaluation, a saved directory that loads) on an excerpt of its own data:
# every file it names is cut to whole lines or whole blank-line blocks taken evenly through
# the file, so that filters (translate's prefixes) and splits still find examples.
EXCERPT_CHARS = 60_000


def _excerpt(text: bytes, blocked: bool, budget: int = EXCERPT_CHARS) -> bytes:
    """Bytes, not text: some files are not UTF-8 (TREC is Latin-1), and stay as they are.
    ``blocked`` files hold one example per blank-line block (tagged sentences), the others
    one per line."""
    pieces = text.split(b"\n\n") if blocked else text.split(b"\n")
    step = max(1, round(len(text) / budget))
    return (b"\n\n" if blocked else b"\n").join(pieces[::step]).rstrip(b"\n") + b"\n"


def _excerpt_data(data: dict, target: Path, blocked: bool) -> None:
    for value in data.values():
        if isinstance(value, str) and value and (SHARED_DATA / value).is_file():
            path = target / value
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_excerpt((SHARED_DATA / value).read_bytes(), blocked))


def _synthetic_conll03(target: Path) -> None:
    """Reuters text cannot be shipped; its column format can (the contextual test's file)."""
    from tests.test_contextual import CONLL03

    for name in ("eng.train", "eng.testa", "eng.testb"):
        (target / "conll2003").mkdir(parents=True, exist_ok=True)
        (target / "conll2003" / name).write_text(CONLL03 * 3, encoding="utf-8")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_dry_run(recipe, tmp_path):
    from rnnkit.cli import main
    from rnnkit.tasks import load_task

    data = read_yaml(recipe)
    overrides = []
    if data["task"] == "tag" and data["model"].get("contextual"):
        # The character LMs are other runs' directories; tests/test_contextual.py trains a
        # pair and runs this recipe with them.
        overrides.append("model.contextual=[]")
    if data["task"] == "cipher":  # messages are made, not read: fewer of them
        overrides += ["data.train_messages=512", "data.eval_messages=128"]
    if recipe.stem == "conll03-ner":
        _synthetic_conll03(tmp_path / "data")
    else:
        _excerpt_data(data["data"], tmp_path / "data", blocked=data["task"] == "tag")
    out = tmp_path / "run"
    args = ["train", data["task"], "--config", str(recipe), "--out", str(out), "--dry-run"]
    assert main([*args, "--data-dir", str(tmp_path / "data"), *overrides]) == 0
    trainer = json.loads((out / "trainer.json").read_text())
    assert 1 <= trainer["state"]["step"] <= DRY_RUN_STEPS  # a tiny file may hold one batch
    task = load_task(out, data_dir=tmp_path / "data")
    assert len(task.predict(["the old man"])) == 1
