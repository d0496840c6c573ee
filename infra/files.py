"""Crash-safe small-file writes: after a kill, a file is either the old one or the new one."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a uniquely named temp file, fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` of ``text`` in UTF-8."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(
    path: Path, payload, indent: int | None = None, sort_keys: bool = True
) -> None:
    """``payload`` as JSON through :func:`write_text_atomic`; ``sort_keys=False`` keeps the
    mappings' own order (a record read back as it was written)."""
    write_text_atomic(path, json.dumps(payload, indent=indent, sort_keys=sort_keys))


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (the entry lives in the dir)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
