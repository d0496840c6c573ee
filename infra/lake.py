"""Delta tables by path, and the one write helper every stage uses (quality gate included)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.settings import Settings, load_settings

LAYERS = ("bronze", "silver", "gold")
QUARANTINE_SUFFIX = "__quarantine"


def expect(kind: str, **kwargs: Any) -> dict:
    """One Great Expectations expectation in GE's own JSON form.

    ``expect("column_values_to_not_be_null", column="id")`` is
    ``{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}}``.
    Declared as data so a table's suite sits next to its schema without importing GE.
    """
    return {"type": f"expect_{kind}", "kwargs": kwargs}


@dataclass(frozen=True)
class TableSpec:
    layer: str  # bronze (as ingested) | silver (cleaned) | gold (what models read)
    name: str
    schema: str  # Spark DDL, e.g. "id STRING, text STRING"; writes must match it exactly
    expectations: tuple[dict, ...] = ()  # the table's GE suite, built with expect()
    key: tuple[str, ...] = ()  # primary key: MERGE matches on it
    max_quarantine_fraction: float = 0.05  # above this share of failing rows, commit nothing
    partition_by: tuple[str, ...] = ()
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"table {self.name}: layer {self.layer!r} is not one of {LAYERS}")

    @property
    def qualified_name(self) -> str:
        return f"{self.layer}/{self.name}"

    def path(self, settings: Settings | None = None) -> Path:
        return (settings or load_settings()).lake / self.layer / self.name

    def quarantine_path(self, settings: Settings | None = None) -> Path:
        return (settings or load_settings()).lake / self.layer / f"{self.name}{QUARANTINE_SUFFIX}"
