"""A package's public API, read from its source without importing it, most used first: what
a capped corpus keeps first, so a demo-sized index holds what users ask about.

Which names are public: a package's ``__all__`` (every literal assignment, ``+=``,
``append`` and ``extend`` of it, inside ``if``/``try`` blocks too) or, without one, its
public top-level definitions and imports; the same for its public top-level modules
(``prefect.artifacts``) and, two levels down, its public subpackages (``pyspark.sql``,
``pyspark.sql.functions``). Each name is found among the corpus's own documents (the
module-level definition inside the package, preferring the module it is imported from) and
an exported class brings its public methods.

Which come first: the ones the package's own documentation calls most often (``name(`` in
the docstrings of the same subpackage: ``DataFrame.filter`` counts calls in
``pyspark.sql``, ``RDD.filter`` in ``pyspark.core``), a name already taken in that
subpackage counting half each time it comes again. Packages take turns, so each keeps its
share of a small cap. Measured against the export order alone on 50 everyday questions
(benchmarks/rag_public_api.py), this ordering keeps far more of their answers in a
1,000-document cap.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, zip_longest
from pathlib import Path

from pipelines.shared.python_exports import (
    all_literals,
    imported_names,
    module_level,
    parse_module,
)


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
    tree = parse_module(init_file)
    if tree is None:
        return {}
    sources: dict[str, str | None] = {
        i.bound: i.module for i in imported_names(tree, dotted_module(init_file))
    }
    listed: list[str] = []
    for node in module_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            sources[node.name] = None
        listed += all_literals(node)
    names = listed or [n for n in sources if not n.startswith("_")]
    return {n: sources.get(n) for n in dict.fromkeys(names)}


def dotted_module(init_file: Path) -> str:
    """``site-packages/a/b/__init__.py`` -> ``a.b`` (walking up while folders are packages)."""
    parts, folder = [], init_file.parent
    while (folder / "__init__.py").is_file():
        parts.append(folder.name)
        folder = folder.parent
    return ".".join(reversed(parts))


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


SUBPACKAGE_DEPTH = 3  # pyspark, pyspark.sql, pyspark.sql.functions
# How a docstring's examples use a name: call it or decorate with it
USE = re.compile(r"\b([A-Za-z_]\w*)\s*\(|@([A-Za-z_]\w*)")


def public_api_levels(package: str) -> list[list[tuple[str, str | None]]]:
    """[(dotted name, module imported from)] per level: the package's exports and its
    public top-level modules' names, then each level of public subpackages' exports."""
    folder = package_dir(package)
    if folder is None or not (folder / "__init__.py").is_file():
        return []
    levels, frontier = [], [(package, folder)]
    for depth in range(SUBPACKAGE_DEPTH):
        level, below = [], []
        for module, path in frontier:
            exported = exported_names(path / "__init__.py")
            level += [(f"{module}.{n}", source) for n, source in exported.items()]
            for child in sorted(p for p in path.iterdir() if not p.name.startswith("_")):
                if (child / "__init__.py").is_file() and child.name not in ("tests", "test"):
                    below.append((f"{module}.{child.name}", child))
                elif depth == 0 and child.suffix == ".py":
                    top = f"{module}.{child.stem}"
                    level += [(f"{top}.{n}", top) for n in exported_names(child)]
        levels.append(level)
        frontier = below
    return levels


def ranked_api_ids(documents: Mapping[str, str], packages: Iterable[str]) -> list[str]:
    """The ids of the packages' public API documents (``documents``: id -> text), most
    called first; packages take turns."""
    source_ids = list(documents)
    by_name: dict[str, list[str]] = {}
    members: dict[str, list[str]] = {}
    for source_id in source_ids:
        if source_id.startswith("py:"):
            members.setdefault(source_id.rsplit(".", 1)[0], []).append(source_id)
            if "#" not in source_id:
                by_name.setdefault(source_id.rsplit(".", 1)[-1], []).append(source_id)
    packages = list(packages)
    modules = set().union(*(package_modules(p) for p in packages))
    calls = calls_by_scope(documents)
    ranked = [
        most_called(_package_ranking(public_api_levels(p), by_name, members, modules), calls)
        for p in packages
    ]
    return list(dict.fromkeys(_taking_turns([[i for i, _ in r] for r in ranked])))


def _scope(source_id: str) -> str:
    """``py:pyspark.sql.dataframe.DataFrame.filter`` -> ``pyspark.sql``."""
    return ".".join(source_id[3:].split(".")[:2])


def calls_by_scope(documents: Mapping[str, str]) -> dict[str, Counter]:
    """Per subpackage, how many of its docstrings use each name (``USE``)."""
    calls: dict[str, Counter] = {}
    for source_id, text in documents.items():
        if source_id.startswith("py:"):
            used = {name for match in USE.findall(text) for name in match if name}
            calls.setdefault(_scope(source_id), Counter()).update(used)
    return calls


def most_called(ids: list[str], calls: dict[str, Counter]) -> list[tuple[str, float]]:
    """(id, uses) by how often their subpackage's docs use them, most first (a name's second
    document in the same subpackage counts half, its third a quarter, ...); ties keep
    ``ids``' order."""
    taken: Counter = Counter()
    score = {}
    for source_id in dict.fromkeys(ids):
        name = source_id.rsplit(".", 1)[-1]
        scope = _scope(source_id)
        score[source_id] = calls.get(scope, Counter())[name] / 2 ** taken[scope, name]
        taken[scope, name] += 1
    return sorted(score.items(), key=lambda item: -item[1])  # stable: ties keep export order


def _package_ranking(
    levels: list[list[tuple[str, str | None]]],
    by_name: dict[str, list[str]],
    members: dict[str, list[str]],
    modules: set[str],
) -> list[str]:
    """One package's API documents in export order: its own exports first, then, taking
    turns, the public members of its exported classes and modules, its subpackages'
    exports, and their members."""
    defined = [_definitions(level, by_name, modules) for level in levels]
    if not defined:
        return []
    owned = [_taking_turns([_owned(d, members) for d in level]) for level in defined]
    return defined[0] + _taking_turns(
        [owned[0], *(x for pair in zip(defined[1:], owned[1:], strict=True) for x in pair)]
    )


def _owned(owner: str, members: dict[str, list[str]]) -> list[str]:
    """An export's public members, then those of its nested classes
    (``SparkSession.Builder.getOrCreate``)."""
    direct = _public(members.get(owner, []))
    return direct + [m for d in direct for m in _public(members.get(d, []))]


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
