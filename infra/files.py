"""Crash-safe small-file writes: after a kill, a file is either the old one or the new one."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write a uniquely named temp file, fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload, indent: int | None = None) -> None:
    write_text_atomic(path, json.dumps(payload, indent=indent, sort_keys=True))


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (the entry lives in the dir)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
