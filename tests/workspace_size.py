"""How much a flow run adds to the test session's workspace: what "two demo runs in a row do
not double the workspace" is checked with, stage by stage (each stage's flow test reruns it
with the same inputs and asserts the rerun adds next to nothing)."""

from __future__ import annotations

import os
from pathlib import Path

# Machine-wide caches shared with the repository's workspace or written by the interpreter:
# not what a run makes.
NOT_RUN_OUTPUT = ("jars", "pycache")


def workspace_bytes(home: Path | str) -> int:
    """Bytes of every regular file under ``home`` (links not followed), caches left out."""
    total = 0
    for root, dirs, files in os.walk(home):
        if Path(root) == Path(home):
            dirs[:] = [d for d in dirs if d not in NOT_RUN_OUTPUT]
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                try:
                    total += os.path.getsize(path)
                except FileNotFoundError:  # a temporary file gone between listing and stat
                    pass
    return total


def assert_rerun_adds_little(first: int, rerun: int, share: float = 0.05) -> None:
    """The rerun (same inputs, everything cached) added ``rerun`` bytes, under ``share`` of the
    ``first`` run's: run records and logs, not another copy of models, checkpoints, shards or
    tables."""
    assert first > 0, "the first run wrote nothing to measure against"
    assert rerun < share * first, (
        f"a rerun with the same inputs added {rerun:,} bytes; the first run added {first:,}"
    )
