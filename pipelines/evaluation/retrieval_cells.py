"""The retriever grid's shape and results: cells (chunk size x retriever), the flow's grid
config, one evaluated (or cache-read) cell's result, and the summary of a grid — the best cell
by a metric, each cell's headline numbers, and the scores per eval set of a combined one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

RETRIEVERS = ("vector", "fts", "hybrid")
CHUNK_SIZES = (64, 128, 256)  # embedder tokens; all-MiniLM-L6-v2 reads at most 256

Retriever = Literal["vector", "fts", "hybrid"]


class GridCell(NamedTuple):
    """One grid cell: the chunk table (by chunk size, in embedder tokens) and the retriever."""

    chunk_size: int
    retriever: Retriever

    @property
    def name(self) -> str:
        return f"chunk{self.chunk_size}-{self.retriever}"


class GridConfig(BaseModel):
    """The evaluate-retrieval grid (a flow parameter)."""

    model_config = ConfigDict(extra="forbid")

    # Chunk sizes in embedder tokens: one table each (all-MiniLM-L6-v2 reads at most 256).
    chunk_sizes: list[int] = Field(default_factory=lambda: list(CHUNK_SIZES))
    # Retrievers read from each table: LanceDB vector search, its full-text index, and their
    # reciprocal-rank fusion.
    retrievers: list[Retriever] = Field(default_factory=lambda: list(RETRIEVERS))
    max_k: int = Field(10, ge=1, le=100)  # metrics at every k from 1 to max_k
    # the best cell maximises this mean; None: nDCG at max_k (rank-aware, uses the whole list)
    metric: str | None = None

    @field_validator("chunk_sizes")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError("chunk_sizes must be positive token counts")
        return value

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(range(1, self.max_k + 1))

    def cells(self) -> list[GridCell]:
        return grid_cells(self.chunk_sizes, self.retrievers)


def grid_cells(
    chunk_sizes: Iterable[int] = CHUNK_SIZES, retrievers: Iterable[str] = RETRIEVERS
) -> list[GridCell]:
    return [
        GridCell(size, retriever)
        for size in dict.fromkeys(chunk_sizes)
        for retriever in dict.fromkeys(retrievers)
    ]


@dataclass
class CellResult:
    """One evaluated (or cache-read) grid cell."""

    cell: GridCell
    key: str  # the cache key it was stored under
    table_version: str  # what the cell read (table name and version, as given)
    metrics: dict[str, float]  # mean per metric name, e.g. ndcg_at_10
    per_question: list[dict]
    run_id: str | None  # the MLflow run that computed it (an earlier one on a cache hit)
    cached: bool = False
    eval_set: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "cell": self.cell._asdict(),
            "name": self.cell.name,
            "key": self.key,
            "table_version": self.table_version,
            "metrics": self.metrics,
            "per_question": self.per_question,
            "run_id": self.run_id,
            "cached": self.cached,
            "eval_set": self.eval_set,
        }


def best_cell(results: Sequence[CellResult], metric: str | None = None) -> CellResult:
    """The cell with the highest mean ``metric`` (the first one in grid order on a tie);
    None = nDCG at the largest k computed."""
    metric = resolve_metric(results, metric)
    if metric not in results[0].metrics:
        raise ValueError(f"metric {metric!r} not computed (have {', '.join(results[0].metrics)})")
    return max(results, key=lambda r: r.metrics[metric])


def resolve_metric(results: Sequence[CellResult], metric: str | None) -> str:
    if not results:
        raise ValueError("no grid results to choose from")
    return metric or f"ndcg_at_{max(ks_of(results[0]))}"


def grid_summary(results: Sequence[CellResult], metric: str | None = None) -> dict:
    """A small JSON-able manifest: the best cell and each cell's headline numbers."""
    metric = resolve_metric(results, metric)
    best = best_cell(results, metric)
    return {
        "metric": metric,
        "best": {"cell": best.cell.name, metric: best.metrics[metric]},
        "eval_set": best.eval_set,
        "cells": [
            {
                "cell": r.cell.name,
                "cached": r.cached,
                "run_id": r.run_id,
                "table_version": r.table_version,
                **{m: r.metrics[m] for m in headline_metrics(r.metrics, metric)},
            }
            for r in results
        ],
        "by_eval_set": {
            part: {
                "questions": count,
                "best": {"cell": max(cells, key=cells.get), metric: max(cells.values())},
                "cells": cells,
            }
            for part, (count, cells) in part_scores(results, metric).items()
        },
    }


def part_scores(
    results: Sequence[CellResult], metric: str
) -> dict[str, tuple[int, dict[str, float]]]:
    """{eval set: (questions, {cell: mean metric})} for each set a combined eval set was
    made of — template questions and hand-written ones can favour different cells. The means
    are over the per-question scores MLflow gave, as the cells' own means are."""
    parts: dict[str, tuple[int, dict[str, float]]] = {}
    for r in results:
        by_part: dict[str, list[float]] = {}
        for row in r.per_question:
            by_part.setdefault(row.get("eval_set", ""), []).append(row[metric])
        for part, values in by_part.items():
            parts.setdefault(part, (len(values), {}))[1][r.cell.name] = sum(values) / len(values)
    return parts


def headline_metrics(metrics: Mapping[str, float], metric: str) -> list[str]:
    ks = sorted({int(name.rsplit("_", 1)[1]) for name in metrics})
    top = ks[-1]
    wanted = [f"precision_at_{ks[0]}", "recall_at_5", f"recall_at_{top}", f"ndcg_at_{top}", metric]
    return list(dict.fromkeys(m for m in wanted if m in metrics))


def ks_of(result: CellResult) -> list[int]:
    """The ks a cell's metrics were computed at."""
    return sorted({int(name.rsplit("_", 1)[1]) for name in result.metrics})
