"""JSON and YAML read with bounds on size and nesting.

Python's parsers recurse once per level of nesting: ``'[' * 100000`` ends in a
``RecursionError`` thousands of lines long, from a file of 200 kB. Every JSON or YAML file
rnnkit reads (model directories, journals, locks, recipes, overrides) goes through here, so
that such a file, or one far larger than any rnnkit writes, is one error naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# Nothing rnnkit writes nests deeper than 4 levels (config.json: file → section → key → list);
# a recipe's YAML is as shallow. 64 leaves room for any hand-written file.
MAX_DEPTH = 64
MAX_JSON_BYTES = 512 * 2**20  # a vocabulary of millions of words is well under this
MAX_YAML_BYTES = 2**20  # recipes are a few hundred bytes


class TooDeep(ValueError):
    """A document nests deeper than :data:`MAX_DEPTH`."""


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply lists and mappings nest in ``value`` (a scalar is 0), without recursion;
    raises :class:`TooDeep` as soon as ``limit`` is passed."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        level += 1
        if level > limit:
            raise TooDeep(f"nested more than {limit} levels deep")
        deepest = max(deepest, level)
        todo.extend((child, level) for child in children)
    return deepest


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that raises :class:`ValueError` (never ``RecursionError``) for a
    document nested deeper than :data:`MAX_DEPTH`."""
    return _shallow(json.loads, text)


def loads_yaml(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`TooDeep` instead of ``RecursionError``.

    ``yaml.YAMLError`` passes through for the caller to place (it carries a line)."""
    import yaml

    return _shallow(yaml.safe_load, text)


def _shallow(parse: Callable[[Any], Any], text: str | bytes) -> Any:
    """``parse(text)``, with deep nesting turned into :class:`TooDeep`: the parser's own
    recursion limit, or :func:`depth_of` for what passed it."""
    try:
        value = parse(text)
    except RecursionError:
        raise TooDeep(f"nested more than {MAX_DEPTH} levels deep") from None
    depth_of(value)
    return value


__all__ = [
    "MAX_DEPTH", "MAX_JSON_BYTES", "MAX_YAML_BYTES", "TooDeep", "depth_of", "loads_json",
    "loads_yaml",
]  # fmt: skip
