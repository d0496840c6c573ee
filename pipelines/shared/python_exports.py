"""What a Python package's ``__init__`` makes public, read with ``ast`` (nothing imported):
its ``__all__`` and the names it imports from other modules. The API corpus uses it twice:
to read the docstrings of public names defined in private modules, and to put a package's
public API first when a demo-sized index keeps only some documents."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


class ImportedName(NamedTuple):
    bound: str  # the name in the importing module (its alias)
    module: str | None  # the absolute module it comes from (None: not resolvable)
    original: str  # the name in that module


def parse_module(path: Path) -> ast.Module | None:
    """The module's tree; None for a file that does not parse (third-party code is not ours
    to fix)."""
    try:
        return ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import: the body and the insides of if/try/with, not of functions
    or classes."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With):
            yield from module_level(node.body)
            yield from module_level(getattr(node, "orelse", []))
            yield from module_level(getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                yield from module_level(handler.body)


def imported_names(tree: ast.Module, package: str) -> Iterator[ImportedName]:
    """Every ``from x import y [as z]`` run at import by ``package``'s ``__init__``."""
    for node in module_level(tree.body):
        if isinstance(node, ast.ImportFrom):
            source = absolute_module(package, node.module, node.level)
            for alias in node.names:
                if alias.name != "*":
                    yield ImportedName(alias.asname or alias.name, source, alias.name)


def all_literals(node: ast.stmt) -> list[str]:
    """Names an ``__all__`` statement adds: = [...], += [...], .append("x"), .extend([...])."""
    value = None
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
    ):
        value = node.value
    elif (
        isinstance(node, ast.AugAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "__all__"
    ):
        value = node.value
    elif (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and isinstance(node.value.func.value, ast.Name)
        and node.value.func.value.id == "__all__"
        and node.value.args
    ):
        arg = node.value.args[0]
        value = ast.List([arg], ast.Load()) if node.value.func.attr == "append" else arg
    if value is None:
        return []
    try:
        names = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list | tuple) else []


def absolute_module(package: str, module: str | None, level: int) -> str | None:
    """The absolute name of ``from <level dots><module> import`` inside ``package``."""
    if not level:
        return module
    parts = package.split(".")
    base = parts[: len(parts) - level + 1] if level <= len(parts) else []
    return ".".join(base + ([module] if module else [])) or None


def is_private_module(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))
