"""Markdown for Prefect artifacts and reports: one table helper, one cell escape."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def md_cell(value) -> str:
    """A value as one table cell: a pipe would split the cell, a newline would end the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(
    header: Sequence[str], rows: Iterable[Sequence], align: str | None = None, escape: bool = True
) -> list[str]:
    """A markdown table as lines. ``align``: one letter per column, ``l`` or ``r``
    (default: every column left). ``escape=False`` writes each cell as ``str()`` gives it,
    for a table whose exact bytes must stay as they were."""
    cell = md_cell if escape else str
    align = align or "l" * len(header)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", rule]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines
