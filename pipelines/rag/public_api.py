"""A package's public API, read from its source without importing it: what a capped corpus
keeps first, so a demo-sized index holds what users ask about.

The public names of a package are its top-level ``__all__`` (every literal assignment,
``+=``, ``append`` and ``extend`` of it, inside ``if``/``try`` blocks too), or, without one,
its public top-level definitions and imports. Each name is found among the corpus's own
documents — the module-level definition of that name inside the package, preferring the
module the package imports it from — and an exported class brings its public methods. The
package's public subpackages' exports come next, a level down. Levels are filled in order,
packages taking turns within a level, so every package keeps its share of a small cap.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable, Sequence
from itertools import chain, zip_longest
from pathlib import Path


def package_dir(name: str) -> Path | None:
    """The folder of an installed top-level package (found, not imported)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def exported_names(init_file: Path) -> dict[str, str | None]:
    """Public name -> the module it is imported from (None: defined there, or not known)."""
    module = dotted_module(init_file)
    try:
        tree = ast.parse(init_file.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, RecursionError):
        return {}
    sources: dict[str, str | None] = {}
    listed: list[str] = []
    for node in _module_level(tree.body):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.module, node.level)
            for alias in node.names:
                if alias.name != "*":
                    sources[alias.asname or alias.name] = base
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            sources[node.name] = None
        listed += _all_literals(node)
    names = listed or [n for n in sources if not n.startswith("_")]
    return {n: sources.get(n) for n in dict.fromkeys(names)}


def _module_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Statements run at import: the body and the insides of if/try/with, not of functions
    or classes."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With):
            yield from _module_level(node.body)
            yield from _module_level(getattr(node, "orelse", []))
            yield from _module_level(getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)


def _all_literals(node: ast.stmt) -> list[str]:
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


def dotted_module(init_file: Path) -> str:
    """``site-packages/a/b/__init__.py`` -> ``a.b`` (walking up while folders are packages)."""
    parts, folder = [], init_file.parent
    while (folder / "__init__.py").is_file():
        parts.append(folder.name)
        folder = folder.parent
    return ".".join(reversed(parts))


def _absolute(package: str, module: str | None, level: int) -> str | None:
    if not level:
        return module
    parts = package.split(".")
    base = parts[: len(parts) - level + 1] if level <= len(parts) else []
    return ".".join(base + ([module] if module else [])) or None


def package_modules(package: str) -> set[str]:
    """Every module of an installed package, dotted (from its files: nothing imported)."""
    folder = package_dir(package)
    if folder is None:
        return set()
    modules = set()
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder.parent).with_suffix("").parts
        modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def public_api_levels(package: str) -> list[list[tuple[str, str | None]]]:
    """[(name, module imported from)] of the package itself, then of its public
    subpackages (``package.sub`` names), each level in the source's order."""
    folder = package_dir(package)
    if folder is None or not (folder / "__init__.py").is_file():
        return []
    top = [(f"{package}.{n}", src) for n, src in exported_names(folder / "__init__.py").items()]
    subpackages = sorted(
        p for p in folder.iterdir() if (p / "__init__.py").is_file() and not p.name.startswith("_")
    )
    below = [
        (f"{package}.{sub.name}.{n}", src)
        for sub in subpackages
        for n, src in exported_names(sub / "__init__.py").items()
    ]
    return [top, below]


def ranked_api_ids(source_ids: Sequence[str], packages: Iterable[str]) -> list[str]:
    """The corpus's document ids of the packages' public API, most public first: the
    package's exports, its subpackages' exports, then the public members of every exported
    class or module (one of each in turn); packages take turns within each tier."""
    by_name: dict[str, list[str]] = {}
    for source_id in source_ids:
        if source_id.startswith("py:") and "#" not in source_id:
            by_name.setdefault(source_id.rsplit(".", 1)[-1], []).append(source_id)
    members: dict[str, list[str]] = {}
    for source_id in source_ids:
        if source_id.startswith("py:"):
            members.setdefault(source_id.rsplit(".", 1)[0], []).append(source_id)
    packages = list(packages)
    modules = set().union(*(package_modules(p) for p in packages))
    per_package = [public_api_levels(p) for p in packages]
    per_package_ids = [
        _package_ranking(levels, by_name, members, modules) for levels in per_package
    ]
    return list(dict.fromkeys(_taking_turns(per_package_ids)))


def _package_ranking(
    levels: list[list[tuple[str, str | None]]],
    by_name: dict[str, list[str]],
    members: dict[str, list[str]],
    modules: set[str],
) -> list[str]:
    """One package's API documents: its own exports first, then, taking turns, the public
    members of its exported classes and modules, its subpackages' exports, and their
    members (each owner's members one at a time, so no one class fills a small cap)."""
    defined = [_definitions(level, by_name, modules) for level in levels]
    if not defined:
        return []
    owned = [_taking_turns([_public(members.get(d, [])) for d in level]) for level in defined]
    return defined[0] + _taking_turns(
        [owned[0], *(x for pair in zip(defined[1:], owned[1:], strict=True) for x in pair)]
    )


def _public(ids: list[str]) -> list[str]:
    return [i for i in sorted(ids) if not i.rsplit(".", 1)[-1].startswith("_")]


def _taking_turns(lists: Sequence[Sequence[str]]) -> list[str]:
    """The first of each list, then the second of each, …"""
    return [i for i in chain.from_iterable(zip_longest(*lists)) if i is not None]


def _definitions(
    exported: list[tuple[str, str | None]], by_name: dict[str, list[str]], modules: set[str]
) -> list[str]:
    """The document of each exported name that has one, in export order."""
    found = (_definition(dotted, source, by_name, modules) for dotted, source in exported)
    return list(dict.fromkeys(f for f in found if f))


def _definition(
    dotted: str, source: str | None, by_name: dict[str, list[str]], modules: set[str]
) -> str | None:
    """The document of ``package[.sub].name``: the module-level definition of ``name``
    inside the exporting package, in the module it is imported from when there is one
    (else the shortest module path); a module's own document when the name is a module."""
    exporter, name = dotted.rsplit(".", 1)
    if f"{exporter}.{name}" in modules:  # a module: its own document, when it has one
        module_doc = f"py:{exporter}.{name}"
        return module_doc if module_doc in by_name.get(name, []) else None
    candidates = [
        c
        for c in by_name.get(name, [])
        if c[3:].rsplit(".", 1)[0] in modules  # defined at a module's top level,
        and c[3:] not in modules  # not a module of that name
        and c[3:].startswith(exporter.split(".")[0] + ".")
    ]
    if not candidates:
        return None
    preferred = [c for c in candidates if source and c[3:].startswith(source + ".")]
    return min(preferred or candidates, key=lambda c: (c.count("."), c))
