"""Named fault points for reliability tests.

A test sets ``GENAI_FAULT=<point>`` in a child process's environment; when that process
reaches the named point it kills its whole process group with SIGKILL (no cleanup, no
finally blocks: the same as a machine losing power). ``GENAI_FAULT_MODE=raise`` makes the
point raise ``InjectedFault`` instead (a task failing with an error, for retry/cache tests).
``GENAI_FAULT_SKIP=n`` lets the armed point pass n times first (e.g. fail the second
checkpoint, not the first). ``GENAI_FAULT_FILE=<path>`` arms the points listed in that
file, one per line, for as long as it exists: a long-lived process (a Prefect worker and the
flow runs it starts) is armed and disarmed without a restart, as a user fixes a cause.
Unset, every point is a no-op.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

ENV = "GENAI_FAULT"
MODE_ENV = "GENAI_FAULT_MODE"
SKIP_ENV = "GENAI_FAULT_SKIP"
FILE_ENV = "GENAI_FAULT_FILE"
_passes: dict[str, int] = {}  # how often each armed point was passed in this process


class InjectedFault(RuntimeError):
    """Raised at an armed fault point in raise mode."""


def armed(point: str) -> bool:
    return os.environ.get(ENV) == point or point in _points_in_fault_file()


def _points_in_fault_file() -> set[str]:
    path = os.environ.get(FILE_ENV)
    try:
        return set(Path(path).read_text().split()) if path else set()
    except FileNotFoundError:
        return set()


def fault_point(point: str) -> None:
    """Kill the process group here when the environment names this point."""
    if armed(point) and _passes.get(point, 0) < int(os.environ.get(SKIP_ENV, "0")):
        _passes[point] = _passes.get(point, 0) + 1
        return
    if armed(point):
        if os.environ.get(MODE_ENV) == "raise":
            raise InjectedFault(f"fault injected at {point}")
        _kill_group()


def reset_fault_counts() -> None:
    """Start GENAI_FAULT_SKIP counting afresh (a new run in the same process)."""
    _passes.clear()


def kill_when_file_appears(point: str, directory: Path, pattern: str, existing: set[str]) -> None:
    """Arm a watcher that kills the process group once a new file matching pattern appears.

    For points inside a library call we cannot hook into (Delta writes its data files, then
    commits): the watcher fires after the first new data file exists, before the commit.
    """
    if not armed(point):
        return

    def watch() -> None:
        while True:
            found = {p.name for p in directory.glob(pattern)} - existing
            if found:
                _kill_group()
            time.sleep(0.002)

    threading.Thread(target=watch, name=f"fault:{point}", daemon=True).start()


def _kill_group() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)
