"""Configs and predict options are dataclasses; every setting is declared once, here checked.

A field made with :func:`setting` carries its default, help text and bounds; from that one
declaration come the coercion and checks of :func:`from_dict` (YAML, ``key=value`` overrides,
CLI flags, JSON), the CLI's predict flags and the JSON Schema of :func:`json_schema` that the
server publishes. An unknown key or a bad value raises :class:`~rnnkit.errors.ConfigError`
naming the dotted key and, where there is a closed set or a range, the choices. Nested
dataclasses map to nested YAML mappings and to dotted override keys (``model.hidden_size=128``).
A config's ``validate()`` method, where it has one, checks only rules between fields.
"""

from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from rnnkit.errors import ConfigError
from rnnkit.parsing import MAX_YAML_BYTES, TooDeep, loads_yaml

T = TypeVar("T")

# Keys renamed so that one concept has one name in every task's config. An old name in a recipe
# or an override is an error that names the new one; the config.json of a model directory
# written before the renaming is read with its keys moved (:func:`upgrade`).
RENAMED = {
    "data.valid": "data.dev",
    "data.valid_fraction": "data.dev_fraction",
    "data.min_count": "data.min_freq",
    "model.min_freq": "data.min_freq",
    "model.word_dim": "model.embedding_dim",
    "model.dim": "model.embedding_dim",
    "model.source_dim": "model.source_embedding_dim",
    "model.target_dim": "model.target_embedding_dim",
    "train.amp": "train.precision",  # true → auto, false → fp32
    "train.cpu_amp": "train.precision",  # true → bf16
}


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A config or options field: its default, its help text and its bounds, inclusive but
    for ``low`` itself when ``low_open`` and ``high`` itself when ``high_open``. None, where
    the type allows it, is always in bounds."""
    meta = {"help": help, "low": low, "high": high, "low_open": low_open, "high_open": high_open}
    return dataclasses.field(default=default, metadata=meta)


def rate(default: float, help: str = "") -> Any:
    """A share of things dropped or smoothed (dropout): from 0 to below 1."""
    return setting(default, help, 0, 1, high_open=True)


def check_bounds(obj: Any, prefix: str = "") -> None:
    """Refuse a number of a dataclass field that lies outside its declared bounds."""
    for f in dataclasses.fields(obj):
        value, m = getattr(obj, f.name), f.metadata
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        low, high = m.get("low"), m.get("high")
        below = low is not None and (value <= low if m.get("low_open") else value < low)
        above = high is not None and (value >= high if m.get("high_open") else value > high)
        if below or above:
            raise ConfigError(f"bad value {value} for {prefix}{f.name} ({bounds_text(m)})")


def bounds_text(meta: Any) -> str:
    """``from 1 to 65,536``, ``above 0 to 1``, ``from 0 to below 1``: a field's range."""
    low = ("above " if meta.get("low_open") else "from ") + _num(meta.get("low"))
    return f"{low} to {'below ' if meta.get('high_open') else ''}{_num(meta.get('high'))}"


def _num(bound: float | None) -> str:
    if bound is None:
        return "any"
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, strict: bool = False) -> Any:
    """Check ``value`` against the annotation ``tp``; convert strings from the command line.

    ``strict`` is for values that arrive typed (JSON, Python): no conversion from strings, so
    ``"5"`` is no integer and ``"no"`` no boolean. A whole number still fills an int field and
    an int a float field, as JSON numbers do.
    """
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        spelled_none = not strict and isinstance(value, str) and value.lower() in ("none", "null")
        if (value is None or spelled_none) and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, strict)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if errors else ConfigError(f"bad value {value!r} for {key}")
    if origin is Literal:
        choices = get_args(tp)
        for choice in choices:
            if value == choice and (not strict or type(value) is type(choice)):  # True == 1
                return choice
            if not strict and isinstance(value, str) and str(choice) == value:
                return choice
        listed = ", ".join(str(c) for c in choices)
        raise ConfigError(f"bad value {value!r} for {key} (choices: {listed})")
    if origin in (list, tuple):
        (item_tp, *_) = get_args(tp) or (Any,)
        if isinstance(value, str) and not strict:
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"bad value {value!r} for {key} (expected a list)")
        return [_coerce(v, item_tp, f"{key}[{i}]", strict) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"bad value {value!r} for {key} (expected a mapping)")
        return from_dict(tp, value, prefix=key + ".", strict=strict)
    if tp is Any:
        return value
    if strict and isinstance(value, str) and tp in (bool, int, float):
        raise ConfigError(f"bad value {value!r} for {key} (expected {_EXPECTED[tp]}, not a string)")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"bad value {value!r} for {key} (expected true or false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"bad value {value!r} for {key} (expected an integer)")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"bad value {value!r} for {key} (expected an integer)") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"bad value {value!r} for {key} (expected a number)")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"bad value {value!r} for {key} (expected a number)") from None
        if not math.isfinite(number):  # NaN slips through every < and > check after this
            raise ConfigError(f"bad value {value!r} for {key} (must be a finite number)")
        return number
    if tp is str:
        if isinstance(value, (dict, list)) or (strict and not isinstance(value, str)):
            raise ConfigError(f"bad value {value!r} for {key} (expected a string)")
        return str(value)
    raise ConfigError(f"cannot read {key} as {_describe(tp)}")


_EXPECTED = {bool: "true or false", int: "an integer", float: "a number"}


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "", strict: bool = False) -> T:
    """Build dataclass ``cls`` from a (nested) mapping, rejecting unknown keys by name.

    ``strict``: the values arrive typed (JSON, Python), so a string is never read as a number
    or a boolean; without it, strings from the command line and YAML are converted.
    """
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        old = prefix + str(unknown[0])
        if old in RENAMED:
            raise ConfigError(f"config key '{old}' is now called '{RENAMED[old]}'")
        choices = ", ".join(fields)
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (choices: {choices})")
    kwargs = {}
    for key, value in data.items():
        default = _field_default(fields[key])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # A partial section overrides the owner's own defaults for it, not the section
            # class's generic ones (a task may default to another learning rate).
            value = merge(dataclasses.asdict(default), value)
        kwargs[key] = _coerce(value, hints[key], prefix + key, strict)
    obj = cls(**kwargs)
    check_bounds(obj, prefix)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def section(cls: type, **values: Any) -> Any:
    """A config field whose default is ``cls(**values)``: a task's own training defaults."""
    return dataclasses.field(default_factory=lambda: cls(**values))


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config with every key of :data:`RENAMED` moved to its new name."""
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    train = config.get("train")
    if isinstance(train, dict) and ("amp" in train or "cpu_amp" in train):
        # Two switches became one setting: CPU autocast on means bf16; autocast off on
        # CUDA means fp32; the old defaults (CUDA on, CPU off) become auto.
        amp, cpu_amp = train.pop("amp", True), train.pop("cpu_amp", False)
        train.setdefault("precision", "bf16" if cpu_amp else "auto" if amp else "fp32")
    for old, new in RENAMED.items():
        (part, key), (new_part, new_key) = old.split("."), new.split(".")
        if isinstance(config.get(part), dict) and key in config[part]:
            value = config[part].pop(key)
            config.setdefault(new_part, {}).setdefault(new_key, value)
    return config


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def to_dict(obj: Any) -> dict[str, Any]:
    """The plain-data form of a config dataclass (what ``config.json`` stores)."""
    return dataclasses.asdict(obj)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["model.hidden_size=128", "train.lr=0.01"]`` into a nested mapping.

    Values are parsed as YAML scalars (so ``3``, ``0.5``, ``true`` and ``null`` have their
    natural types); the dataclass types then decide what is acceptable.
    """
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        key, raw = pair.split("=", 1)
        if not key:
            raise ConfigError(f"override {pair!r} has an empty key")
        try:
            value = loads_yaml(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        except TooDeep as err:
            raise ConfigError(f"override {key}: the value is {err}") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} sets a key inside a non-mapping value")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base`` (``extra`` wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe; a missing file or bad syntax is a one-line ConfigError."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES // 1024} kB; not a recipe")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = loads_yaml(text)
    except TooDeep as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    return data


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of a flat settings dataclass (predict options): types, defaults, bounds
    and help, from each field's :func:`setting` declaration."""
    hints = get_type_hints(cls)
    properties = {}
    for f in dataclasses.fields(cls):
        prop, m = _json_type(hints[f.name]), f.metadata
        prop["default"] = f.default
        prop["description"] = m.get("help", "")
        for bound, is_open, closed, open_ in (
            ("low", "low_open", "minimum", "exclusiveMinimum"),
            ("high", "high_open", "maximum", "exclusiveMaximum"),
        ):
            if m.get(bound) is not None:
                prop[open_ if m.get(is_open) else closed] = m[bound]
        properties[f.name] = prop
    return {
        "title": cls.__name__,
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }


def _json_type(tp: Any) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_json_type(arg) for arg in get_args(tp)]}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    if tp in names:
        return {"type": names[tp]}
    raise TypeError(f"no JSON type for the annotation {tp!r}")


__all__ = [
    "setting",
    "check_bounds",
    "json_schema",
    "from_dict",
    "to_dict",
    "parse_overrides",
    "merge",
    "read_yaml",
]
