"""Prefect tasks of human evaluation: the blind pairwise rating sheet of two models' table
documentation, and the scoring of the filled sheets into MLflow and a Prefect artifact."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from pipelines.evaluation import pairwise, pairwise_report, pairwise_tabledoc
from pipelines.evaluation.pairwise_tabledoc import PairwiseConfig
from tasks.common import NO_CACHE_POLICY


@task(name="prepare-rating-sheet", timeout_seconds=4 * 3600, cache_policy=NO_CACHE_POLICY)
def prepare_sheet(config: PairwiseConfig, pairs: dict, run_id: str) -> dict:
    """Both models document the held-out tables of ``pairs``; the sheet and key go to MLflow."""
    from infra import registry, tracking
    from infra.settings import load_settings

    out = (
        Path(config.out_dir)
        if config.out_dir
        else pairwise_tabledoc.default_sheet_dir(
            load_settings().home, config.model_a, config.model_b
        )
    )
    sheet = pairwise_tabledoc.prepare_sheet(
        (registry.model_dir(config.model_a), registry.model_dir(config.model_b)),
        config.model_a,
        config.model_b,
        pairs["test"],
        config.items,
        config.max_new_tokens,
        out,
        config.seed,
    )
    run = tracking.Run(run_id)
    run.log_artifact(sheet["sheet_csv"], "sheet")
    run.log_artifact(sheet["sheet_html"], "sheet")  # the key stays out of the shared sheet dir
    run.log_artifact(sheet["key"], "key")
    print(f"rating sheet: {sheet['sheet_html']} (CSV {sheet['sheet_csv']}); key {sheet['key']}")
    return sheet


@task(name="score-rating-sheets", timeout_seconds=600, cache_policy=NO_CACHE_POLICY)
def score_sheets(
    sheets: list[str],
    key: str,
    model_a: str,
    model_b: str,
    run_id: str,
    allow_missing: bool = False,
) -> dict:
    from prefect.artifacts import create_markdown_artifact

    from infra import tracking

    summary = pairwise.score_sheets(sheets, key, model_a, model_b, allow_missing=allow_missing)
    run = tracking.Run(run_id)
    run.log_metrics(
        {
            "a_win_rate": summary["a_win_rate"]["rate"],
            "b_win_rate": summary["b_win_rate"]["rate"],
            "tie_rate": summary["tie_rate"]["rate"],
            "raters": len(sheets),
            "votes": summary["votes"],
        }
    )
    fleiss = summary["agreement"]["fleiss"]["kappa"]
    if fleiss is not None:
        run.log_metrics({"fleiss_kappa": fleiss})
    run.log_dict(summary, "pairwise_summary.json")
    create_markdown_artifact(
        key="pairwise-eval", markdown=pairwise_report.report_markdown(summary)
    )
    return summary


@task(name="current-tabledoc-examples", timeout_seconds=600, cache_policy=NO_CACHE_POLICY)
def current_tabledoc_examples() -> dict:
    """The workspace's current silver/tabledoc_examples as a pinned table reference."""
    from infra.lake import table_ref
    from infra.settings import load_settings
    from infra.spark import get_spark

    path = load_settings().lake / "silver" / "tabledoc_examples"
    try:
        return table_ref(get_spark(), path)
    except Exception:
        raise FileNotFoundError(f"no table at {path}: run the finetune-sweep flow first") from None
