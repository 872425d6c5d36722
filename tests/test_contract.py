"""Every registered task honours the task contract (rnnkit/tasks/base.py)."""

import dataclasses
import json

import pytest

import rnnkit
from rnnkit import checkpoint as ckpt
from rnnkit.config import from_dict, parse_overrides
from rnnkit.errors import ConfigError, InputError, LimitError
from rnnkit.tasks import TASKS, build_task, load_task, task_class
from rnnkit.tasks.base import (
    Limits,
    check_inputs,
    metric_goal,
    options_schema,
    resolve_options,
)
from rnnkit.train import Trainer
from tests.tiny import SAMPLE_INPUTS, overrides


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_is_built_trained_one_step_saved_reloaded_and_predicts_the_same(name, tmp_path):
    raw = parse_overrides(overrides(name, tmp_path / "data") + ["train.max_steps=1"])
    options = {"seed": 7, "length": 20} if name == "lm" else {}
    check_contract(name, raw, SAMPLE_INPUTS[name], tmp_path, options)


def check_contract(name: str, raw: dict, inputs: list[str], tmp_path, options=None) -> None:
    """What every registered task must do: declare the contract's members, train one step
    from the config ``raw``, report only metrics it can rank, save, reload, and answer
    ``inputs`` as plain JSON, the same after reloading, alone or together, in any order."""
    cls = task_class(name)
    members = {"Config", "default_metric", "train_batches", "evaluate", "evaluate_file",
               "predict", "format", "labels", "model_files", "from_dir", "Options", "metric_goals",
               "name"}  # fmt: skip
    missing = sorted(m for m in members if not hasattr(cls, m))
    assert not missing, f"{name} lacks {missing}"
    assert cls.name == name
    assert dataclasses.is_dataclass(cls.Options)
    assert set(cls.metric_goals.values()) <= {"max", "min"}

    config = from_dict(cls.Config, raw)
    task = build_task(name, config)
    summary = Trainer(task, config.train, tmp_path / "model", log=lambda _: None).fit()
    assert summary["steps"] == 1
    for metric in [*task.evaluate("dev"), task.default_metric]:
        metric_goal(task, metric)  # every metric is one the task knows how to rank
    assert isinstance(task.report, str)
    if task.labels():  # a closed set of answers: the evaluation's tables name each one scored
        assert task.report.strip(), f"{name} evaluated its labels but reported no table"
    if task.confusion is not None:
        labels, rows = task.confusion
        assert len(rows) == len(labels) and all(len(r) == len(labels) for r in rows)
        assert [label for label in labels if label not in task.report] == []

    ckpt.save_model(tmp_path / "saved", task)
    options = options or {}
    before = task.predict(inputs, options)
    assert len(before) == len(inputs)
    assert json.loads(json.dumps(before)) == before  # plain JSON data, nothing else
    assert all(
        isinstance(task.format(text, r), str) for text, r in zip(inputs, before, strict=True)
    )

    reloaded = load_task(tmp_path / "saved")
    assert type(reloaded) is cls
    assert reloaded.predict(inputs, options) == before
    # One at a time or all together, in any order: the same answers (up to the last bits of
    # floats, which depend on how a batch is padded).
    alone = [reloaded.predict([x], options)[0] for x in inputs]
    assert _close(alone, before)
    backwards = rnnkit.load(tmp_path / "saved").predict(list(reversed(inputs)), options)
    assert _close(backwards, before[::-1])


def _close(a, b, tol=1e-5) -> bool:
    """Equal plain data, floats within ``tol``."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", sorted(TASKS))
def test_options_are_checked_and_described(name):
    cls = task_class(name)
    schema = options_schema(cls.Options)
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(cls.Options)}
    assert resolve_options(cls) == cls.Options()
    with pytest.raises(ConfigError, match="options.nonsense"):
        resolve_options(cls, {"nonsense": 1})
    with pytest.raises(ConfigError, match="mapping"):
        resolve_options(cls, [1, 2])
    for field in dataclasses.fields(cls.Options):
        high = field.metadata.get("high")
        if high is not None:
            with pytest.raises(ConfigError, match=f"options.{field.name}"):
                resolve_options(cls, {field.name: high + 1})
        if field.type in ("float", "float | None"):
            with pytest.raises(ConfigError, match="finite"):
                resolve_options(cls, {field.name: float("nan")})


def test_inputs_must_be_a_bounded_list_of_strings():
    assert check_inputs(["a", ""]) == ["a", ""]
    with pytest.raises(InputError, match="not one string"):
        check_inputs("FUVEM")  # would otherwise be decrypted as five one-letter messages
    with pytest.raises(InputError, match="input 1 is NoneType"):
        check_inputs(["a", None])
    with pytest.raises(LimitError, match="3 inputs"):
        check_inputs(["a"] * 3, Limits(max_inputs=2))
    with pytest.raises(LimitError, match="input 0 has 11 characters"):
        check_inputs(["x" * 11], Limits(max_chars=10))


def test_metric_goals_decide_the_direction_and_refuse_unknown_names():
    tag = task_class("tag")
    assert metric_goal(tag, "f1") == "max"
    assert metric_goal(tag, "f1_PER") == "max"
    assert metric_goal(task_class("lm"), "perplexity") == "min"
    with pytest.raises(ConfigError, match="train.metric"):
        metric_goal(task_class("cipher"), "char_acc")


def test_a_misspelt_train_metric_stops_before_training(tmp_path):
    raw = parse_overrides(overrides("cipher", tmp_path) + ["train.metric=acuracy"])
    config = from_dict(task_class("cipher").Config, raw)
    with pytest.raises(ConfigError, match="acuracy"):
        Trainer(build_task("cipher", config), config.train, tmp_path / "m")
    assert not (tmp_path / "m").exists()
