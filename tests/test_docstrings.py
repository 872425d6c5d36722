"""Every public definition in rnnkit/ has a docstring (issue 25).

Public: a class or function whose name does not start with ``_``, at module level or inside a
public class (methods, nested classes). Functions nested in functions, and the members of
private classes, are not public and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rnnkit"

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def undocumented(tree: ast.AST, where: str) -> list[str]:
    """``where:line name`` of each public definition of ``tree`` without a docstring."""
    missing: list[str] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, Definition) or child.name.startswith("_"):
                continue
            if ast.get_docstring(child) is None:
                missing.append(f"{where}:{child.lineno} {prefix}{child.name}")
            if isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(tree, "")
    return missing


def test_every_public_definition_in_rnnkit_has_a_docstring():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the walk found the package
    missing = []
    for path in files:
        where = path.relative_to(PACKAGE.parent).as_posix()
        missing += undocumented(ast.parse(path.read_text(encoding="utf-8")), where)
    assert not missing, "public definitions without a docstring:\n" + "\n".join(missing)


def test_the_check_finds_what_it_should_and_only_that():
    source = '''
def bare(): pass
def _private(): pass
def documented():
    """Yes."""
    def inner(): pass
class Public:
    def method(self): pass
    async def coroutine(self): pass
    def _helper(self): pass
    class Nested:
        """Yes."""
        def deep(self): pass
class _Private:
    def method(self): pass
'''
    assert undocumented(ast.parse(source), "m.py") == [
        "m.py:2 bare",
        "m.py:7 Public",
        "m.py:8 Public.method",
        "m.py:9 Public.coroutine",
        "m.py:13 Public.Nested.deep",
    ]
