"""The chunk size x retriever grid, each cell cached: a cell's key covers its config, the
table version it reads, the eval set's content hash, the ks and the scoring code's version, so
a rerun reads back every cell whose inputs did not change and asks the retrievers only for the
others. The grid takes ``retrieve_for_cell(cell)`` from the caller (the RAG stage opens the
indexes); cells are written atomically, so a crash never leaves half a cell.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from infra import retriever_eval
from infra.files import write_json_atomic
from pipelines.evaluation import retrieval_metrics
from pipelines.evaluation.retrieval_cells import RETRIEVERS, CellResult, GridCell
from pipelines.evaluation.retrieval_metrics import KS, check_ks
from pipelines.evaluation.retrieval_reports import log_grid, write_grid_reports
from pipelines.evaluation.retrieval_sets import EvalSet


def code_version() -> str:
    """The source of the code that scores a cell (this module, the metrics module and MLflow's
    adapter) and MLflow's version: any of them changing invalidates cached cells."""
    digest = hashlib.sha256()
    for module in (__file__, retrieval_metrics.__file__, retriever_eval.__file__):
        digest.update(Path(module).read_bytes())
    digest.update(importlib.metadata.version("mlflow").encode())
    return digest.hexdigest()[:16]


def cell_key(
    cell: GridCell,
    table_version: str,
    eval_set: EvalSet,
    ks: Iterable[int],
    extra: Mapping | None = None,
) -> str:
    """Cache key of one cell: its config, the table version it reads, the eval set's content
    hash, the ks, this code's version, and anything else the caller says matters (e.g. the
    embedder, the retriever code's hash)."""
    payload = {
        "cell": cell._asdict(),
        "table": str(table_version),
        "eval_set": eval_set.content_hash,
        "ks": list(check_ks(ks)),
        "code": code_version(),
        "extra": dict(extra or {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_grid(
    cells: Iterable[GridCell],
    retrieve_for_cell: Callable[[GridCell], Callable],
    eval_set: EvalSet,
    cache_dir: Path | str,
    *,
    table_version: Callable[[GridCell], object] | Mapping,
    ks: Iterable[int] = KS,
    run=None,
    out_dir: Path | str | None = None,
    key_extra: Mapping | None = None,
    metric: str | None = None,
) -> list[CellResult]:
    """Evaluate every cell, reading back the cells whose key is already in ``cache_dir``.

    ``retrieve_for_cell(cell)`` gives the cell's ``retrieve(question, k)``; it is only called
    for cells not in the cache (opening an index can be costly). ``table_version`` says what a
    cell reads — a function of the cell, or a mapping by cell or by chunk size — e.g.
    ``"docs__recursive-128-16__all-minilm-l6-v2@7"``: a new table version means a new key.
    With ``run`` (a parent MLflow run), each computed cell gets a child run and the parent
    gets every cell's metric at step k, the best cell, and the reports; with ``out_dir``, the
    reports (write_grid_reports) are written there."""
    cells = list(cells)
    ks = check_ks(ks)
    _check_cells(cells)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    results = []
    for cell in cells:
        version = str(_table_version(table_version, cell))
        key = cell_key(cell, version, eval_set, ks, key_extra)
        path = cache / f"{cell.name}-{key[:20]}.json"
        stored = _read_cached(path, key)
        if stored is not None:
            results.append(_cell_result(stored, cached=True))
            continue
        evaluated = retrieval_metrics.evaluate_retriever(
            retrieve_for_cell(cell),
            eval_set,
            ks,
            run,
            run_name=cell.name,
            params={
                "chunk_size": cell.chunk_size,
                "retriever": cell.retriever,
                "table_version": version,
                "cache_key": key,
            },
        )
        record = {"key": key, "cell": cell._asdict(), "table_version": version, **evaluated}
        write_json_atomic(path, record, sort_keys=False)  # as MLflow gave it
        results.append(_cell_result(record, cached=False))
    if out_dir is not None:
        write_grid_reports(results, out_dir, metric)
    if run is not None:
        log_grid(results, run, out_dir, metric)
    return results


def _check_cells(cells: list[GridCell]) -> None:
    if not cells:
        raise ValueError("the grid has no cells")
    for cell in cells:
        if cell.retriever not in RETRIEVERS:
            raise ValueError(
                f"grid cell {cell}: unknown retriever {cell.retriever!r} "
                f"(expected one of {', '.join(RETRIEVERS)})"
            )
        if not isinstance(cell.chunk_size, int) or cell.chunk_size < 1:
            raise ValueError(f"grid cell {cell}: chunk_size must be a positive token count")
    duplicates = [c.name for c, n in Counter(cells).items() if n > 1]
    if duplicates:
        raise ValueError(f"grid cells repeated: {', '.join(duplicates)}")


def _table_version(table_version, cell: GridCell):
    if callable(table_version):
        return table_version(cell)
    for lookup in (cell, cell.chunk_size):
        if lookup in table_version:
            return table_version[lookup]
    raise KeyError(
        f"no table version for grid cell {cell.name} (give one per cell or per chunk size)"
    )


def _read_cached(path: Path, key: str) -> dict | None:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or torn: compute again
    return stored if isinstance(stored, dict) and stored.get("key") == key else None


def _cell_result(record: dict, cached: bool) -> CellResult:
    return CellResult(
        GridCell(**record["cell"]),
        record["key"],
        record["table_version"],
        record["metrics"],
        record["per_question"],
        record.get("run_id"),
        cached,
        record.get("eval_set", {}),
    )
