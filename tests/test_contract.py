"""Every registered task honours the task contract (rnnkit/tasks/base.py)."""

import dataclasses
import inspect
import json
import typing

import pytest
import torch

import rnnkit
from rnnkit import checkpoint as ckpt
from rnnkit.config import from_dict, parse_overrides
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, InputError, LimitError
from rnnkit.tasks import TASKS, build_task, load_task, task_class
from rnnkit.tasks.base import (
    Evaluation,
    Limits,
    Task,
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
    class_vars, instance_vars, methods = protocol_members(Task)
    missing = sorted(m for m in class_vars | set(methods) if not hasattr(cls, m))
    assert not missing, f"{name} lacks {missing}"
    for method, expected in methods.items():
        if isinstance(inspect.getattr_static(cls, method), staticmethod):  # called without self
            expected = expected.replace(parameters=list(expected.parameters.values())[1:])
        assert_accepts(getattr(cls, method), expected, f"{name}.{method}")
    assert cls.name == name
    assert dataclasses.is_dataclass(cls.Options)
    assert set(cls.metric_goals.values()) <= {"max", "min"}
    assert list(cls.VOCABS)[0] == "vocab.json"

    config = from_dict(cls.Config, raw)
    task = build_task(name, config)
    assert not [m for m in instance_vars if not hasattr(task, m)], f"{name} lacks {instance_vars}"
    assert isinstance(task.model, torch.nn.Module) and isinstance(task.config, cls.Config)
    assert all(isinstance(getattr(task, a), Vocab) for a in cls.VOCABS.values())
    summary = Trainer(task, config.train, tmp_path / "model", log=lambda _: None).fit()
    assert summary["steps"] == 1
    found = task.evaluate("dev")
    assert isinstance(found, Evaluation) and isinstance(found.report, str)
    for metric in [*found, task.default_metric]:
        metric_goal(task, metric)  # every metric is one the task knows how to rank
    if found.confusion is not None:
        labels, rows = found.confusion
        assert len(rows) == len(labels) and all(len(r) == len(labels) for r in rows)

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
    for attribute in cls.VOCABS.values():  # the constructor took them back, in VOCABS order
        assert getattr(reloaded, attribute) == getattr(task, attribute)
    assert reloaded.predict(inputs, options) == before
    # One at a time or all together, in any order: the same answers (up to the last bits of
    # floats, which depend on how a batch is padded).
    alone = [reloaded.predict([x], options)[0] for x in inputs]
    assert _close(alone, before)
    backwards = rnnkit.load(tmp_path / "saved").predict(list(reversed(inputs)), options)
    assert _close(backwards, before[::-1])


def protocol_members(protocol: type) -> tuple[set[str], set[str], dict[str, inspect.Signature]]:
    """What ``protocol`` declares: its class variables, what an instance has (attributes
    from its annotations, and properties), and its methods and class methods with their
    signatures (the constructor included: storage.py builds tasks through it)."""
    annotations = {}
    for klass in reversed(protocol.__mro__):
        if getattr(klass, "_is_protocol", False) and klass is not typing.Protocol:
            annotations.update(getattr(klass, "__annotations__", {}))
    class_vars = {n for n, a in annotations.items() if str(a).startswith("ClassVar")}
    methods = {}
    properties = set()
    for name, value in vars(protocol).items():
        if isinstance(value, property):  # read on an instance: a property or an attribute
            properties.add(name)
        elif isinstance(value, classmethod) or (callable(value) and not name.startswith("_")):
            methods[name] = inspect.signature(getattr(protocol, name))
    methods["__init__"] = inspect.signature(vars(protocol)["__init__"])
    return class_vars, set(annotations) - class_vars | properties, methods


def assert_accepts(member, expected: inspect.Signature, where: str) -> None:
    """``member`` (a task's method or class method) takes every parameter of
    ``expected`` in order, with the same names, kinds and defaults; any parameter it adds
    has a default. Types are the type checker's to compare (``make lint``)."""
    found = list(inspect.signature(member).parameters.values())
    want = list(expected.parameters.values())
    described = f"{where}{inspect.signature(member)} does not fit the contract's {expected}"
    assert len(found) >= len(want), described
    for have, need in zip(found, want, strict=False):
        assert (have.name, have.kind, have.default) == (need.name, need.kind, need.default), (
            described
        )
    for extra in found[len(want) :]:
        assert extra.default is not extra.empty or extra.kind is extra.VAR_KEYWORD, described


def test_the_contract_check_catches_a_wrong_signature():
    class_vars, instance_vars, methods = protocol_members(Task)
    assert {"name", "Config", "Options", "VOCABS", "metric_goals"} <= class_vars
    assert {"config", "model", "default_metric"} <= instance_vars
    assert {"__init__", "build", "from_dir", "predict", "evaluate", "labels"} <= set(methods)

    def evaluate(self, split: str = "test"):  # another default
        ...

    with pytest.raises(AssertionError, match="does not fit"):
        assert_accepts(evaluate, methods["evaluate"], "evaluate")

    def predict(self, texts, options=None):  # renamed
        ...

    with pytest.raises(AssertionError, match="does not fit"):
        assert_accepts(predict, methods["predict"], "predict")


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
