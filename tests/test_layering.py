"""Layering: no module of the package reaches into another module's private names.

A name that starts with one underscore is its module's business. Another module that imports
it (``from .api import _Bound``) or reads it off an object (``compiled._kernel(...)``) ties
itself to internals that may change under it; the public API exists for that (the compiler
driver :mod:`lossdsl.compiler`, the binder :mod:`lossdsl.binding`, :class:`CompiledLoss`'s
public methods). The test reads the package's source with :mod:`ast`; it runs nothing.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import lossdsl

PACKAGE = Path(lossdsl.__file__).parent

def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _modules() -> dict[str, ast.Module]:
    return {path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text(), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def _defined(tree: ast.Module) -> set[str]:
    """Private names a module defines: functions, classes, module and class variables,
    attributes it assigns on any object, and names it imports under a private alias."""
    names: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            names.add(n.attr)
        elif isinstance(n, ast.alias) and n.asname:
            names.add(n.asname)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
    return {name for name in names if _private(name)}


def _package_import(node: ast.ImportFrom) -> bool:
    """Whether ``from X import ...`` imports from inside the package."""
    return node.level > 0 or (node.module or "").split(".")[0] == "lossdsl"


def _own_receiver(value: ast.expr) -> bool:
    """``self.x``, ``cls.x`` and ``super().x``: a class's own (or inherited) members."""
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "super")


def violations() -> list[tuple[str, int, str]]:
    """``(module, line, private name)`` of every cross-module private use."""
    modules = _modules()
    defined = {name: _defined(tree) for name, tree in modules.items()}
    found = []
    for module, tree in modules.items():
        elsewhere = set().union(*(names for other, names in defined.items() if other != module))
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and _package_import(n):
                for alias in n.names:
                    if _private(alias.name):
                        found.append((module, n.lineno, alias.name))
            elif (isinstance(n, ast.Attribute) and _private(n.attr)
                  and not _own_receiver(n.value)
                  and n.attr not in defined[module] and n.attr in elsewhere):
                found.append((module, n.lineno, n.attr))
    return found


def test_no_module_uses_another_modules_private_names():
    found = violations()
    assert not found, "private names used across modules:\n" + "\n".join(
        f"  lossdsl/{module}:{line}: {name}" for module, line, name in found)


def test_the_check_finds_a_planted_use(tmp_path, monkeypatch):
    planted = {"a.py": "def _helper():\n    return 1\n",
               "b.py": "from .a import _helper\nimport x\nx.y._helper()\n"}
    for name, text in planted.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert sorted(violations()) == [("b.py", 1, "_helper"), ("b.py", 3, "_helper")]
