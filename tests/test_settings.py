"""Every setting is declared once (``rnnkit.config.setting``): change a bound in that one place
and the CLI, the HTTP schema the server publishes and the config and options checks all follow."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from rnnkit.cli import build_parser, main
from rnnkit.config import from_dict, parse_overrides
from rnnkit.errors import ConfigError
from rnnkit.serve.app import create_app
from rnnkit.tasks import TASKS, task_class
from rnnkit.tasks.base import resolve_options
from tests.tiny import overrides


def _redeclare(monkeypatch, cls: type, name: str, **bounds) -> None:
    """Change the bounds in the declaration of field ``name`` of dataclass ``cls``."""
    field = cls.__dataclass_fields__[name]
    monkeypatch.setattr(field, "metadata", MappingProxyType({**field.metadata, **bounds}))


def _bounded_options() -> list[tuple[str, str]]:
    return [
        (name, f.name)
        for name in sorted(TASKS)
        for f in dataclasses.fields(task_class(name).Options)
        if f.metadata.get("low") is not None or f.metadata.get("high") is not None
    ]


def _verb_with_flag(flag: str, help: str) -> str:
    """The verb whose ``flag`` has the declared ``help``: the option's predict verb."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    (verb,) = [
        verb
        for verb, parser in sub.choices.items()
        if any(flag in a.option_strings and a.help.startswith(help) for a in parser._actions)
    ]
    return verb


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_config_bound_moves_the_config_check_and_the_cli(name, monkeypatch, tmp_path, capsys):
    cls = task_class(name)
    raw = parse_overrides(overrides(name, tmp_path / "data"))
    config = from_dict(cls.Config, raw)
    epochs = config.train.epochs
    _redeclare(monkeypatch, type(config.train), "epochs", high=epochs, high_open=True)
    with pytest.raises(ConfigError, match=rf"train.epochs \(from 1 to below {epochs}\)"):
        from_dict(cls.Config, raw)
    code = main(["train", name, *overrides(name, tmp_path / "data"), "--out", str(tmp_path / "m")])
    assert code == 2
    assert f"train.epochs (from 1 to below {epochs})" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("name", "option"), _bounded_options())
def test_an_option_bound_moves_the_cli_the_http_schema_and_the_check(
    name, option, monkeypatch, tmp_path, capsys
):
    cls = task_class(name)
    field = cls.Options.__dataclass_fields__[option]
    # A value the declaration accepts today: the default, or the lowest allowed.
    value = field.default if field.default is not None else field.metadata["low"]
    flag = f"--{option.replace('_', '-')}"
    verb = _verb_with_flag(flag, field.metadata["help"])
    argv = [verb, "--model", str(tmp_path / "absent"), flag, str(value)]

    def published() -> dict:
        schema = create_app({name: cls}).openapi()["components"]["schemas"]
        return schema[f"{name}PredictRequest"]["properties"]["options"]["properties"][option]

    assert resolve_options(cls, {option: value}).__dict__[option] == value
    assert published().get("maximum") == field.metadata["high"]
    assert main(argv) == 2
    assert f"options.{option}" not in capsys.readouterr().err  # it fails later, on the model

    _redeclare(monkeypatch, cls.Options, option, high=value, high_open=True)
    with pytest.raises(ConfigError, match=f"bad value {value} for options.{option} "):
        resolve_options(cls, {option: value})
    assert published()["exclusiveMaximum"] == value and "maximum" not in published()
    assert main(argv) == 2
    assert f"bad value {value} for options.{option} " in capsys.readouterr().err
