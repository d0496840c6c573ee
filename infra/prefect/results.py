"""Prefect's local result storage (``PREFECT_LOCAL_STORAGE_PATH``, by default
``$PREFECT_HOME/storage``, i.e. ``$GENAI_HOME/prefect/storage``): one file per persisted task
result, named by its cache key. A file not written for ``retention_hours`` is removed (a cache
hit reads it without rewriting it, so an entry in use still ages out): its task then runs
again the next time it is asked for. Outputs are keyed dirs and Delta transaction ids, so a
rerun mostly finds its work done; a registration task registers another model version. The
caller names the dir (Prefect's own setting resolves it); nothing here imports Prefect.
"""

from __future__ import annotations

import time
from pathlib import Path

from infra.disk import Removal, Sweep, age_hours, tree_bytes

CATEGORY = "prefect_results"


def result_files(storage: Path | str) -> list[Path]:
    """The result files in ``storage`` (regular files, not hidden), by name."""
    storage = Path(storage)
    if not storage.is_dir():
        return []
    return sorted(
        p for p in storage.iterdir() if p.is_file() and not p.is_symlink() and p.name[0] != "."
    )


def live_results(
    storage: Path | str, retention_hours: float, now: float | None = None
) -> list[Path]:
    """Result files a sweep with this retention keeps: what still references anything."""
    now = time.time() if now is None else now
    return [p for p in result_files(storage) if age_hours(p, now) <= retention_hours]


def stale_results(storage: Path | str, retention_hours: float, now: float | None = None) -> Sweep:
    """Result files older than ``retention_hours``: removable (see the module docstring)."""
    now = time.time() if now is None else now
    sweep = Sweep(CATEGORY)
    for path in result_files(storage):
        age = age_hours(path, now)
        if age > retention_hours:
            sweep.removals.append(
                Removal(str(path), tree_bytes(path), f"cached result written {age:.0f} h ago")
            )
    return sweep
