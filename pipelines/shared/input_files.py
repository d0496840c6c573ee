"""Reading the user's input files safely: no symlinks followed, no path outside its root,
unreadable files named, undecodable bytes reported instead of raised."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


class InputFileError(ValueError):
    """An input file or folder that cannot be read: names the path and what was expected."""


def walk_refusing_symlinks(root: Path) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise InputFileError(f"corpus folder {root} cannot be read: {exc.strerror}") from exc
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            target = path.resolve()
            where = "outside" if not target.is_relative_to(root) else "inside"
            raise InputFileError(
                f"corpus path {path} is a symlink to {target} ({where} the "
                f"corpus root {root}); symlinks are refused, not followed"
            )
        if not path.resolve().is_relative_to(root):
            raise InputFileError(f"corpus path {path} resolves outside the corpus root {root}")
        if entry.is_dir():
            yield from walk_refusing_symlinks(path)
        elif entry.is_file():
            yield path


def check_readable(kind: str, path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
        if kind == "parquet":  # a corrupt footer would otherwise fail mid-job on an executor
            import pyarrow.parquet as pq

            pq.read_metadata(path)
    except Exception as exc:  # noqa: BLE001 - any failure to open is the user's input problem
        raise InputFileError(f"corpus file {path} cannot be read: {exc}") from exc


def decode_utf8(data: bytes) -> tuple[str, str | None]:
    """(text, error): undecodable bytes become U+FFFD and the first one is reported."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return data.decode("utf-8", errors="replace"), f"undecodable UTF-8 at byte {exc.start}"
