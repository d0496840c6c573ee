"""Fingerprints that cache keys are made of: the project code a task reaches, the data files
that code reads, and the content of files and folders given as inputs.

* Code: from a set of root modules, every project module reached through ``import`` and
  ``from … import`` anywhere in a module (inside functions too) and through strings that name
  a module (``"pipelines.rag.chain"`` or ``"pipelines.rag.chain:make_chain"``), transitively.
  Modules are read as source files, never imported.
* Data files: a project file that is not Python counts for a reached module when the
  module's strings name it by file name, name its folder by path (``"infra"``,
  ``"deepspeed"``), or name a folder beside the module (``"data"``).
* Inputs: a file's SHA-256; a folder's hash over its files' relative paths and hashes. An
  unchanged file (same size, mtime and ctime, hashed at least ``RACY_SECONDS`` after its
  mtime) reuses its recorded hash; anything else is hashed again.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import re
import textwrap
import time
from functools import cache
from pathlib import Path

PROJECT_PACKAGES = ("pipelines", "infra", "tasks")
MODULE_STRING = re.compile(r"^((?:pipelines|infra|tasks)(?:\.\w+)+)(?::\w+)?$")
RACY_SECONDS = 2.0  # an mtime this close to the hashing time may hide a later same-size edit
HASHES_FILE = "file-hashes.json"  # under the workspace's cache dir
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --- code --------------------------------------------------------------------------------


def code_fingerprint(*roots: str) -> str:
    """One hash over the sources of every project module reached from ``roots`` and the
    data files they read."""
    digest = hashlib.sha256(_sources_digest(tuple(sorted(roots))).encode())
    for path in sorted(data_files(roots)):  # hashed on every call: data may change under
        # a long-running worker, its code (already imported) does not
        digest.update(str(path).encode() + b"\0" + file_sha256(path).encode() + b"\0")
    return digest.hexdigest()


@cache
def _sources_digest(roots: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name, text in sorted(reached_sources(roots).items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


def clear_caches() -> None:
    """Forget the sources read so far (a new process would read them again)."""
    _sources_digest.cache_clear()
    _data_file_paths.cache_clear()


def reached_sources(roots) -> dict[str, str]:
    """Source text of the root modules and of every project module reached from them."""
    seen: dict[str, str] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        origin = module_file(name)
        if origin is None:  # ``module.attribute``: the module it is defined in
            if "." in name:
                pending.append(name.rsplit(".", 1)[0])
            continue
        source = origin.read_text()
        seen[name] = source
        pending.extend(n for n in referenced_modules(ast.parse(source)) if n != name)
    return seen


def referenced_modules(tree: ast.AST) -> list[str]:
    """Project module names a syntax tree imports or names in a string, anywhere in it."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if match := MODULE_STRING.match(node.value):
                found.append(match.group(1))
    return [name for name in found if name.split(".")[0] in PROJECT_PACKAGES]


def module_file(name: str) -> Path | None:
    """The module's source file, or None for names that are not modules (``from m import f``)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def data_files(roots) -> set[Path]:
    """The project's non-Python files that the reached modules read: named by file name in a
    module's strings, or a whole folder named by its path's parts (``"infra"``,
    ``"deepspeed"``) or by its name beside the module (``data/`` next to it)."""
    return set(_data_file_paths(tuple(sorted(roots))))


@cache
def _data_file_paths(roots: tuple[str, ...]) -> tuple[Path, ...]:
    """Which files count depends only on the sources, read once per process; their content
    is hashed on every call (``code_fingerprint``)."""
    found = set()
    for name, source in reached_sources(roots).items():
        here = module_file(name).parent
        strings = _string_constants(source)
        for path in project_data_files():
            folder = path.parent
            parts = folder.relative_to(PROJECT_ROOT).parts  # a package's own folder is
            named_folder = len(parts) > 1 and set(parts) <= strings  # not named by "infra"
            beside = folder.name in strings and folder.is_relative_to(here)
            if path.name in strings or named_folder or beside:
                found.add(path)
    return tuple(sorted(found))


@cache
def project_data_files() -> tuple[Path, ...]:
    return tuple(
        sorted(
            path
            for package in PROJECT_PACKAGES
            for path in (PROJECT_ROOT / package).rglob("*")
            if path.is_file()
            and path.suffix not in (".py", ".pyc")
            and "__pycache__" not in path.parts
        )
    )


def _string_constants(source: str) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def function_roots(fn) -> tuple[str, ...]:
    """The project modules a function's code refers to: what it imports, the module-level
    imports of its module that it names, and the same for the module's own functions and
    classes it calls, followed through."""
    module = inspect.getmodule(fn)
    tree = ast.parse(inspect.getsource(module))
    imported = _module_level_imports(tree)
    local = {
        node.name: node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    roots, pending, visited = set(), [ast.parse(textwrap.dedent(inspect.getsource(fn)))], set()
    while pending:
        node = pending.pop()
        roots.update(referenced_modules(node))
        for name in _names_used(node):
            if name in imported:
                roots.add(imported[name])
            elif name in local and name not in visited:
                visited.add(name)
                pending.append(local[name])
    return tuple(sorted(r for r in roots if r.split(".")[0] in PROJECT_PACKAGES))


def _module_level_imports(tree: ast.Module) -> dict[str, str]:
    """Bound name -> what it names (``module`` or ``module.attribute``)."""
    bound = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:  # ``import a.b`` binds ``a`` to reach ``a.b``
                bound[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _names_used(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


# --- inputs ------------------------------------------------------------------------------


def path_fingerprint(path: Path, hashes_file: Path | None = None) -> str:
    """SHA-256 of a file, or of a folder's (relative path, file hash) list."""
    path = Path(path)
    known = _load_hashes(hashes_file)
    if path.is_file():
        digest = _cached_sha256(path, known)
    else:
        h = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(file.relative_to(path)).encode() + b"\0")
            h.update(_cached_sha256(file, known).encode() + b"\0")
        digest = h.hexdigest()
    _save_hashes(hashes_file, known)
    return digest


def _cached_sha256(path: Path, known: dict) -> str:
    stat = path.stat()
    key = str(path.resolve())
    entry = known.get(key)
    if (
        entry
        and entry["bytes"] == stat.st_size
        and entry["mtime_ns"] == stat.st_mtime_ns
        and entry.get("ctime_ns") == stat.st_ctime_ns  # set by every write; no tool resets it
        and entry["hashed_at"] - stat.st_mtime_ns / 1e9 > RACY_SECONDS
    ):
        return entry["sha256"]
    digest = file_sha256(path)
    known[key] = {
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "sha256": digest,
        "hashed_at": time.time(),
    }
    return digest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_hashes(hashes_file: Path | None) -> dict:
    if hashes_file is None or not hashes_file.is_file():
        return {}
    try:
        return json.loads(hashes_file.read_text())
    except (OSError, ValueError):
        return {}  # a damaged record only costs hashing again


def _save_hashes(hashes_file: Path | None, known: dict) -> None:
    if hashes_file is None:
        return
    from infra.files import write_json_atomic

    hashes_file.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(hashes_file, known)


def is_input_path(value) -> bool:
    """A parameter value that names an existing file or folder (not a bare word)."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or len(value) > 4096 or "\n" in value:
        return False
    if os.sep not in value and "." not in value:
        return False
    if ":/" in value or not Path(value).exists():
        return False
    here = Path.cwd()  # "." or ".." name where a process runs, not an input to hash whole
    return Path(value).resolve() not in (here, *here.parents)
