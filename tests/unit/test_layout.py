"""The code's shape: small modules, no import cycles inside pipelines/, and the import
contracts (pyproject.toml, ``[tool.importlinter]``) that really catch a layer violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 600  # past this a module mixes concerns: split it along its seams
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def module_lengths(*folders: str) -> dict[str, int]:
    return {
        str(path.relative_to(REPO)): len(path.read_text().splitlines())
        for folder in folders
        for path in sorted((REPO / folder).rglob("*.py"))
    }


def import_cycles(package: str) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), imports inside functions
    included: a cycle there still ties the modules together."""
    graph = grimp.build_graph(package)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_in_pipelines_or_infra_passes_the_size_limit():
    too_long = {
        p: n for p, n in module_lengths("pipelines", "infra").items() if n > MAX_MODULE_LINES
    }
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_the_size_check_sees_every_module():
    lengths = module_lengths("pipelines", "infra")
    assert "pipelines/training/loop.py" in lengths and "infra/lake.py" in lengths
    assert all(n > 0 for p, n in lengths.items() if not p.endswith("__init__.py"))


def test_pipelines_has_no_import_cycle():
    assert import_cycles("pipelines") == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyclic import a  # inside a function\n")
    (pkg / "c.py").write_text("from cyclic import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclic") == [["cyclic.a", "cyclic.b"]]


@pytest.mark.slow
def test_import_contracts_catch_a_pipelines_module_importing_prefect(tmp_path):
    for name in ("flows", "tasks", "pipelines", "infra"):
        shutil.copytree(
            REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "data")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    kept = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, text=True, capture_output=True
    )
    assert kept.returncode == 0, kept.stdout[-2000:]

    victim = tmp_path / "pipelines" / "corpus" / "mix.py"
    victim.write_text(victim.read_text() + "\n\ndef _flow():\n    import prefect  # noqa: F401\n")
    broken = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, text=True, capture_output=True
    )
    assert broken.returncode == 1
    assert "pipelines never imports prefect BROKEN" in broken.stdout
    assert "pipelines.corpus.mix -> prefect" in broken.stdout
