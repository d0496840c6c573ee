"""Reports of a retriever grid: the per-question table and the metrics per cell and k (CSV), a
chart of each metric against k per cell (PNG), the markdown report (a Prefect artifact), and
the grid logged to its parent MLflow run.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from pipelines.evaluation.retrieval_cells import (
    CellResult,
    best_cell,
    headline_metrics,
    ks_of,
    part_scores,
    resolve_metric,
)
from pipelines.evaluation.retrieval_metrics import METRICS, metric_names
from pipelines.shared.markdown import md_table

MARKDOWN_ROWS = 30  # per-question rows shown in the markdown report (the CSV has them all)
PER_QUESTION_CSV = "grid_per_question.csv"
METRICS_CSV = "grid_metrics.csv"
CHART_PNG = "grid_metrics.png"
MARKDOWN_FILE = "grid.md"


def write_grid_reports(
    results: Sequence[CellResult], out_dir: Path | str, metric: str | None = None
) -> dict[str, str]:
    """The per-question table (CSV), metrics per cell and k (CSV), a chart of each metric
    against k per cell (PNG) and the markdown report, in ``out_dir``: {kind: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "per_question_csv": out / PER_QUESTION_CSV,
        "metrics_csv": out / METRICS_CSV,
        "chart_png": out / CHART_PNG,
        "markdown": out / MARKDOWN_FILE,
    }
    _write_per_question_csv(results, paths["per_question_csv"])
    _write_metrics_csv(results, paths["metrics_csv"])
    plot_grid(results, paths["chart_png"])
    paths["markdown"].write_text(grid_markdown(results, metric))
    return {kind: str(path) for kind, path in paths.items()}


def _write_per_question_csv(results: Sequence[CellResult], path: Path) -> None:
    score_columns = metric_names(ks_of(results[0])) if results else []
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            [
                "cell",
                "chunk_size",
                "retriever",
                "eval_set",
                "question",
                "expected",
                "retrieved",
                "hit_rank",
                *score_columns,
            ]
        )
        for r in results:
            for row in r.per_question:
                writer.writerow(
                    [
                        r.cell.name,
                        r.cell.chunk_size,
                        r.cell.retriever,
                        row.get("eval_set", ""),
                        row["question"],
                        ";".join(row["expected"]),
                        ";".join(row["retrieved"]),
                        "" if row["hit_rank"] is None else row["hit_rank"],
                        *(row.get(c, "") for c in score_columns),
                    ]
                )


def _write_metrics_csv(results: Sequence[CellResult], path: Path) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["cell", "chunk_size", "retriever", "k", *METRICS, "cached", "run_id"])
        for r in results:
            for k in ks_of(r):
                writer.writerow(
                    [
                        r.cell.name,
                        r.cell.chunk_size,
                        r.cell.retriever,
                        k,
                        *(r.metrics[f"{m}_at_{k}"] for m in METRICS),
                        r.cached,
                        r.run_id or "",
                    ]
                )


def plot_grid(results: Sequence[CellResult], path: Path | str) -> Path:
    """One panel per metric (precision, recall, nDCG) against k; a line per cell, colour by
    retriever, line style by chunk size. Drawn without pyplot (no global figure state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(METRICS), sharey=True)
    sizes = sorted({r.cell.chunk_size for r in results})
    styles = ["-", "--", ":", "-."]
    colours = {"vector": "tab:blue", "fts": "tab:orange", "hybrid": "tab:green"}
    for axis, family in zip(axes, METRICS, strict=False):
        for r in results:
            ks = ks_of(r)
            axis.plot(
                ks,
                [r.metrics[f"{family}_at_{k}"] for k in ks],
                marker="o",
                markersize=3,
                color=colours.get(r.cell.retriever),
                linestyle=styles[sizes.index(r.cell.chunk_size) % len(styles)],
                label=r.cell.name,
            )
        axis.set_title(f"{'nDCG' if family == 'ndcg' else family}@k")
        axis.set_xlabel("k")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("mean over questions")
    axes[-1].legend(fontsize="small", loc="best")
    if results and results[0].eval_set:
        info = results[0].eval_set
        figure.suptitle(
            f"Retriever grid on {info.get('name')} ({info.get('questions')} questions)"
        )
    figure.savefig(path, dpi=110)
    return Path(path)


def grid_markdown(results: Sequence[CellResult], metric: str | None = None) -> str:
    """The grid as markdown (for a Prefect artifact): one row per cell with headline metrics,
    the best cell marked, then the best cell's per-question table."""
    metric = resolve_metric(results, metric)
    best = best_cell(results, metric)
    columns = headline_metrics(best.metrics, metric)
    info = best.eval_set
    lines = [
        f"# Retriever evaluation: {info.get('name', 'eval set')}",
        "",
        f"{info.get('questions', len(best.per_question))} questions (eval set hash "
        f"`{str(info.get('hash', ''))[:12]}`). Best cell by {metric}: "
        f"**{best.cell.name}** = {best.metrics[metric]:.3f}.",
        "",
    ]
    lines += md_table(
        ["cell", "chunk size", "retriever", *columns, "cached"],
        [
            [
                f"**{r.cell.name}**" if r is best else r.cell.name,
                r.cell.chunk_size,
                r.cell.retriever,
                *(f"{r.metrics[c]:.3f}" for c in columns),
                "yes" if r.cached else "no",
            ]
            for r in results
        ],
        "lrl" + "r" * len(columns) + "l",
    )
    lines += _part_lines(results, metric)
    top = max(ks_of(best))
    lines += ["", f"## Per question, {best.cell.name}", ""]
    lines += md_table(
        ["question", "expected", "top retrieved", "hit rank", f"recall@{top}", f"ndcg@{top}"],
        [
            [
                row["question"],
                ", ".join(row["expected"]),
                ", ".join(row["retrieved"][:3]),
                "miss" if row["hit_rank"] is None else str(row["hit_rank"]),
                f"{row[f'recall_at_{top}']:.2f}",
                f"{row[f'ndcg_at_{top}']:.2f}",
            ]
            for row in best.per_question[:MARKDOWN_ROWS]
        ],
        "lllrrr",
    )
    hidden = len(best.per_question) - MARKDOWN_ROWS
    if hidden > 0:
        lines += ["", f"... {hidden} more questions in {PER_QUESTION_CSV}."]
    return "\n".join(lines) + "\n"


def _part_lines(results: Sequence[CellResult], metric: str) -> list[str]:
    """A table of ``metric`` per cell for each eval set of a combined one (none for one)."""
    parts = part_scores(results, metric)
    if len(parts) < 2:
        return []
    names = list(parts)
    rows = []
    for r in results:
        values = []
        for name in names:
            cells = parts[name][1]
            value = f"{cells[r.cell.name]:.3f}"
            values.append(f"**{value}**" if r.cell.name == max(cells, key=cells.get) else value)
        rows.append([r.cell.name, *values])
    return [
        "",
        f"## {metric} by eval set",
        "",
        *md_table(
            ["cell", *(f"{n} ({parts[n][0]})" for n in names)], rows, "l" + "r" * len(names)
        ),
    ]


def log_grid(
    results: Sequence[CellResult],
    run,
    out_dir: Path | str | None = None,
    metric: str | None = None,
) -> None:
    """Log the grid to the parent run: each cell's metric families at step k (MLflow charts
    them against k), the best cell, and the reports in ``out_dir`` as artifacts."""
    from infra import tracking

    metric = resolve_metric(results, metric)
    handle = run if hasattr(run, "log_metrics") else tracking.Run(str(run))
    for r in results:
        for k in ks_of(r):
            handle.log_metrics(
                {f"{r.cell.name}.{family}": r.metrics[f"{family}_at_{k}"] for family in METRICS},
                step=k,
            )
    best = best_cell(results, metric)
    handle.log_metrics({f"best.{metric}": best.metrics[metric]})
    handle.set_tags({"best_cell": best.cell.name, "eval_set_hash": best.eval_set.get("hash", "")})
    if out_dir is not None:
        handle.log_artifacts(out_dir, "retrieval_grid")
