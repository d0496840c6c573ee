"""Disk sweeps: what a clean-up removes (or, in a dry run, would remove), with sizes, and the
one way it removes a path.

Which paths are garbage is decided by the code that owns them (``pipelines.training.
checkpoint_gc``, ``pipelines.pretrain.shard_gc``, ``infra.prefect.results``, ``infra.vacuum``);
this module only measures, ages and removes. A dir vanishes whole: it is renamed to a hidden
sibling first (atomic), then deleted, so a reader never sees half of it.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

HOUR_S = 3600.0


@dataclass(frozen=True)
class Removal:
    path: str
    bytes: int  # on disk before removal (files' sizes; dirs' files summed)
    reason: str  # why nothing needs it: shown in dry runs and logs


@dataclass(frozen=True)
class Left:
    path: str
    reason: str  # why a clean-up left a candidate alone (it cannot tell it is unused)


@dataclass
class Sweep:
    """One category of a clean-up: what it removed (or would) and what it left, and why."""

    category: str
    removals: list[Removal] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removals)

    def as_dict(self) -> dict:
        return {
            "category": self.category,
            "bytes": self.bytes,
            "removed": [asdict(r) for r in self.removals],
            "left": [asdict(x) for x in self.left],
        }


def tree_bytes(path: Path | str) -> int:
    """Bytes of a file, or of every file under a dir (symlinks not followed); 0 when gone."""
    path = Path(path)
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except FileNotFoundError:
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # removed meanwhile
                pass
    return total


def newest_mtime(path: Path | str) -> float:
    """The latest modification time of ``path`` or anything under it: when it was last
    written (reading does not count, so this is a conservative age)."""
    path = Path(path)
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def age_hours(path: Path | str, now: float | None = None) -> float:
    """Hours since anything in ``path`` was last written."""
    return ((time.time() if now is None else now) - newest_mtime(path)) / HOUR_S


def remove_path(path: Path | str) -> int | None:
    """Remove a file or a whole dir; returns the bytes freed (None: it was already gone)."""
    path = Path(path)
    size = tree_bytes(path)
    try:
        if path.is_dir() and not path.is_symlink():
            trash = path.with_name(f".{path.name}.gc-{uuid.uuid4().hex[:8]}")
            os.rename(path, trash)  # atomic: the dir vanishes whole
            shutil.rmtree(trash, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:  # another process removed it first (a run pruning its own)
        return None
    return size


def apply(sweep: Sweep, dry_run: bool) -> Sweep:
    """Remove what ``sweep`` lists (nothing in a dry run); the result lists what was really
    removed, with the bytes that freed."""
    if dry_run:
        return sweep
    done = Sweep(sweep.category, left=list(sweep.left))
    for removal in sweep.removals:
        freed = remove_path(removal.path)
        if freed is not None:
            done.removals.append(Removal(removal.path, freed, removal.reason))
    return done
