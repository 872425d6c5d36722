"""Every recipe in configs/ is a valid config of its task, and runs end to end on its data."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from rnnkit.cli import DRY_RUN_STEPS
from rnnkit.config import from_dict, read_yaml
from rnnkit.data.tagged import read_conllu
from rnnkit.datasets import english
from rnnkit.tasks import TASKS, task_class
from tests.conftest import SHARED_DATA

CONFIGS = Path(__file__).parent.parent / "configs"
# Search spaces for `rnnkit tune` sit beside their recipes (tests/test_tune.py checks them).
RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.endswith(".space.yaml"))


def test_the_recipes_are_the_documented_ones_and_cover_every_task():
    root = Path(__file__).parent.parent
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    named = {m for doc in docs for m in re.findall(r"configs/([\w-]+)\.yaml", doc.read_text())}
    assert {recipe.stem for recipe in RECIPES} == named
    assert {read_yaml(recipe)["task"] for recipe in RECIPES} == set(TASKS)


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
# the file, so that filters (translate's prefixes) and splits still find examples. The
# excerpts live in tests/data/recipes (SOURCE.md there: origins and licenses), so that the
# suite needs no ../shared/data; where that folder is, a test checks them against it.
EXCERPTS = Path(__file__).parent / "data" / "recipes"
EXCERPT_CHARS = 10_000
# Bigger where a recipe needs more: an adaptive softmax's first cutoff (2,000 words), and
# enough short pairs with the tutorial's prefixes for a dev split.
EXCERPT_CHARS_OF = {"wikitext-2/train.txt": 40_000, "eng-fra/fra.txt": 60_000}
# Data that cannot be shipped is made up in its format instead (see _synthetic_data).
SYNTHETIC = ("conll2003/", "trec/", "sst2/")
# Data another command makes from the datasets: the dry run makes it from the excerpts.
MADE = ("runs/english-text/",)


def _excerpt(text: bytes, blocked: bool, budget: int = EXCERPT_CHARS) -> bytes:
    """Bytes, not text: some files are not UTF-8 (TREC is Latin-1), and stay as they are.
    ``blocked`` files hold one example per blank-line block (tagged sentences), the others
    one per line."""
    pieces = text.split(b"\n\n") if blocked else text.split(b"\n")
    step = max(1, round(len(text) / budget))
    return (b"\n\n" if blocked else b"\n").join(pieces[::step]).rstrip(b"\n") + b"\n"


def recipe_files() -> dict[str, bool]:
    """Every data file a recipe names (relative to the data directory) → whether it holds one
    example per blank-line block (tagged sentences)."""
    files = {}
    for recipe in RECIPES:
        data = read_yaml(recipe)
        for value in data["data"].values():
            if isinstance(value, str) and "/" in value and not value.startswith(MADE):
                files[value] = data["task"] == "tag"
    return files


def write_excerpts(target: Path = EXCERPTS) -> None:
    """(Re)write the excerpts of every shipped recipe file from ../shared/data:
    ``python -c "from tests.test_recipes import write_excerpts; write_excerpts()"``."""
    for name, blocked in recipe_files().items():
        if not name.startswith(SYNTHETIC):
            budget = EXCERPT_CHARS_OF.get(name, EXCERPT_CHARS)
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_excerpt((SHARED_DATA / name).read_bytes(), blocked, budget))


def _synthetic_data(target: Path) -> None:
    """Reuters text (CoNLL-2003) cannot be shipped, nor TREC (no license): their formats can
    (the contextual test's file; questions with a Latin-1 byte, as TREC has)."""
    from tests.test_contextual import CONLL03

    for name in ("eng.train", "eng.testa", "eng.testb"):
        (target / "conll2003").mkdir(parents=True, exist_ok=True)
        (target / "conll2003" / name).write_text(CONLL03 * 3, encoding="utf-8")
    questions = [
        "HUM:ind Who wrote {} ?", "LOC:city Where is {} ?", "NUM:date When was {} built ?",
        "DESC:def What is {} ?", "ENTY:animal What animal lives in {} ?",
        "ABBR:exp What does {} stand for ?",
    ]  # fmt: skip
    places = ["Lima", "Paris", "Oslo", "the caf\xe9", "Rome", "Cairo", "Quito"]
    lines = [q.format(p) for p in places for q in questions]
    (target / "trec").mkdir(parents=True, exist_ok=True)
    (target / "trec" / "train_5500.label").write_bytes("\n".join(lines * 3).encode("latin-1"))
    (target / "trec" / "TREC_10.label").write_bytes("\n".join(lines).encode("latin-1"))
    (target / "sst2").mkdir(parents=True, exist_ok=True)
    reviews = "".join(f"{i % 2} a {w} film .\n" for i, w in enumerate(["fine", "dull"] * 20))
    (target / "sst2" / "stsa.binary.train").write_text(reviews, encoding="utf-8")


@pytest.fixture(scope="module")
def recipe_data(tmp_path_factory) -> Path:
    """A data directory holding every file the recipes name: excerpts and made-up data."""
    import shutil

    data = tmp_path_factory.mktemp("recipe-data")
    shutil.copytree(EXCERPTS, data, dirs_exist_ok=True)
    _synthetic_data(data)
    english.write(data / MADE[0], data)
    return data


def test_every_recipe_file_has_an_excerpt_or_is_made_up():
    shipped = {n for n in recipe_files() if not n.startswith(SYNTHETIC)}
    assert shipped and all((EXCERPTS / name).is_file() for name in shipped)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no ../shared/data to compare with")
def test_the_excerpts_are_cut_from_the_shared_data(tmp_path):
    write_excerpts(tmp_path)
    for name in recipe_files():
        if not name.startswith(SYNTHETIC):
            assert (tmp_path / name).read_bytes() == (EXCERPTS / name).read_bytes(), name


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_dry_run(recipe, tmp_path, recipe_data):
    from rnnkit.cli import main
    from rnnkit.tasks import load_task

    data = read_yaml(recipe)
    overrides = []
    if data["task"] == "tag" and data["model"].get("contextual"):
        # The character LMs are other runs' directories; tests/test_contextual.py trains a
        # pair and runs this recipe with them.
        overrides.append("model.contextual=[]")
    if data["model"].get("pretrained", "").startswith("runs/"):  # another run's vectors
        overrides.append("model.pretrained=")
    for key, value in data["data"].items():  # made files: from the excerpts, not ./runs
        if isinstance(value, str) and value.startswith(MADE):
            overrides.append(f"data.{key}={recipe_data / value}")
    if data["task"] == "cipher":  # messages are made, not read: fewer of them
        overrides += ["data.train_messages=512", "data.eval_messages=128"]
    out = tmp_path / "run"
    args = ["train", data["task"], "--config", str(recipe), "--out", str(out), "--dry-run"]
    assert main([*args, "--data-dir", str(recipe_data), *overrides]) == 0
    trainer = json.loads((out / "trainer.json").read_text())
    assert 1 <= trainer["state"]["step"] <= DRY_RUN_STEPS  # a tiny file may hold one batch
    task = load_task(out, data_dir=recipe_data)
    assert len(task.predict(["the old man"])) == 1


def test_the_english_text_reads_every_training_split_and_no_held_out_sentence(recipe_data):
    made = recipe_data / MADE[0]
    train = (made / "train.txt").read_text(encoding="utf-8").splitlines()
    dev = (made / "dev.txt").read_text(encoding="utf-8").splitlines()
    ewt = recipe_data / "ud-english-ewt"
    sentences = {
        split: [" ".join(s.tokens) for s in read_conllu(ewt / f"en_ewt-ud-{split}.conllu")]
        for split in ("train", "dev", "test")
    }
    assert dev == sentences["dev"]
    assert not (set(sentences["dev"]) | set(sentences["test"])) & set(train)
    counts = Counter(train)
    assert all(counts[s] >= english.EWT_REPEATS for s in sentences["train"])
    assert "a fine film ." in counts and "Who wrote Lima ?" in counts  # labels stripped
    shakespeare = (recipe_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert shakespeare.splitlines()[0] in counts
    tatoeba = (recipe_data / "eng-fra" / "fra.txt").read_text(encoding="utf-8").splitlines()
    assert counts[tatoeba[0].split("\t")[0]] >= 1
