"""The pairwise summary as a report: markdown for a Prefect artifact (outcome rates with their
intervals, per-rater tallies, agreement), and that markdown plus the JSON summary on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from infra.files import write_bytes_atomic
from pipelines.shared.markdown import md_cell


def report_markdown(summary: dict) -> str:
    """The summary as markdown (for a Prefect artifact)."""
    a, b = summary["model_a"], summary["model_b"]
    lines = [
        f"## Pairwise evaluation: {md_cell(a)} vs {md_cell(b)}",
        "",
        f"{summary['votes']} votes from {len(summary['raters'])} raters on "
        f"{summary['items']} items; double-blind, sides drawn at random per item.",
        "",
        "| outcome | votes | rate | 95 % CI (Wilson) |",
        "|---|---:|---:|---|",
    ]
    for label, field in (
        (f"{a} wins", "a_win_rate"),
        (f"{b} wins", "b_win_rate"),
        ("tie", "tie_rate"),
        (f"{a} among decisive votes", "a_share_of_decisive"),
        ("left side among decisive votes", "left_share_of_decisive"),
    ):
        p = summary.get(field)
        if p is not None:
            ci = f"{_pct(p['ci95'][0])} to {_pct(p['ci95'][1])}" if p["ci95"] else "n/a"
            lines.append(
                f"| {md_cell(label)} | {p['count']}/{p['n']} | {_pct(p['rate'])} | {ci} |"
            )
    lines += [
        "",
        "### Raters",
        "",
        f"| rater | votes | {md_cell(a)} | {md_cell(b)} | tie |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {md_cell(r)} | {t['votes']} | {t['a_wins']} | {t['b_wins']} | {t['ties']} |"
        for r, t in summary["per_rater"].items()
    ]
    fleiss = summary["agreement"]["fleiss"]
    lines += [
        "",
        "### Agreement (by model, not by side)",
        "",
        f"Fleiss' kappa: {_kappa(fleiss)} over {fleiss['items']} items rated by all "
        f"{fleiss['raters']} raters.",
        "",
        "| raters | items | Cohen's kappa |",
        "|---|---:|---|",
    ]
    lines += [
        f"| {md_cell(' / '.join(c['raters']))} | {c['items']} | {_kappa(c)} |"
        for c in summary["agreement"]["cohen"]
    ]
    lines += [
        "",
        "Intervals treat votes as independent; votes on one item are correlated, "
        "so the true uncertainty is somewhat wider.",
    ]
    return "\n".join(lines) + "\n"


def write_report(summary: dict, out_dir: Path | str) -> dict:
    """``pairwise_summary.json`` and ``pairwise_report.md`` in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "pairwise_summary.json", "markdown": out_dir / "pairwise_report.md"}
    write_bytes_atomic(paths["json"], json.dumps(summary, indent=2, ensure_ascii=False).encode())
    write_bytes_atomic(paths["markdown"], report_markdown(summary).encode("utf-8"))
    return {k: str(p) for k, p in paths.items()}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _kappa(entry: dict) -> str:
    return f"{entry['kappa']:.3f}" if entry["kappa"] is not None else f"n/a ({entry['note']})"
