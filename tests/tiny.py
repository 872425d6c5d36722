"""Tiny trained models of every task, on small generated data, for the contract, server and
browser tests. Each trains in seconds on one CPU thread."""

from __future__ import annotations

from pathlib import Path

from rnnkit.config import from_dict, parse_overrides
from rnnkit.tasks import TASKS, build_task, task_class
from rnnkit.train import Trainer
from tests.test_classify import tsv_overrides
from tests.test_embed import _corpus
from tests.test_tag import ner_overrides
from tests.test_translate import write_pairs

# Inputs that every task must answer, including the awkward ones: empty, unknown, odd characters.
SAMPLE_INPUTS = {
    "cipher": ["FUVEMVEMNMERPDRF", "", "uryyb, jbeyq!"],
    "lm": ["the cat", "", "zebra"],
    "tag": ["the man saw Elena Annason in Paris", "", "Zorro went to Oslo"],
    "classify": ["a dog near the river", "", "nothing known here"],
    "embed": ["cat", "unicorn", "milk"],
    "translate": ["je suis fatigue .", "", "il est tres grand ."],
}


def overrides(task: str, root: Path) -> list[str]:
    """``key=value`` overrides that make a tiny, quick recipe of ``task`` with data in root."""
    root.mkdir(parents=True, exist_ok=True)
    quiet = ["train.progress=false", "train.device=cpu"]
    if task == "cipher":
        return [
            "model.embedding_dim=8", "model.hidden_size=32", "data.train_messages=2048",
            "train.batch_size=32", "data.eval_messages=256", "train.epochs=3", *quiet,
        ]  # fmt: skip
    if task == "lm":
        text = root / "lm.txt"
        text.write_text("the cat sat on the mat. the dog ate the bone. " * 100)
        return [
            f"data.train={text}", f"data.dev={text}", "data.bptt=32",
            "model.embedding_dim=16", "model.hidden_size=32", "train.batch_size=8",
            "train.epochs=2", *quiet,
        ]  # fmt: skip
    if task == "tag":
        return ner_overrides(root, "model.head=crf", "train.epochs=4")
    if task == "classify":
        return tsv_overrides(root, "train.epochs=4")
    if task == "embed":
        corpus = _corpus(root / "corpus.txt")
        return [
            f"data.train={corpus}", "data.min_freq=1", "data.subsample=0",
            "data.eval_examples=200", "model.embedding_dim=8", "train.batch_size=64",
            "train.epochs=2",
            *quiet,
        ]  # fmt: skip
    if task == "translate":
        pairs = write_pairs(root / "pairs.tsv")
        return [
            f"data.file={pairs}", "model.source_embedding_dim=16", "model.target_embedding_dim=16",
            "model.hidden_size=16", "model.decoder_size=16", "train.epochs=3",
            "train.batch_size=16", *quiet,
        ]  # fmt: skip
    raise KeyError(task)


def train_tiny(task: str, root: Path, *extra: str) -> Path:
    """Train a tiny ``task`` model; returns its model directory ``root/model``."""
    config = from_dict(
        task_class(task).Config, parse_overrides(overrides(task, root) + list(extra))
    )
    built = build_task(task, config)
    out = root / "model"
    Trainer(built, config.train, out, log=lambda _: None).fit()
    return out


def train_all(root: Path) -> dict[str, Path]:
    """A tiny trained model of every registered task, by task name."""
    return {task: train_tiny(task, root / task) for task in TASKS}
