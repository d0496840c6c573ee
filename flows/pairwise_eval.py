"""Flow pairwise-eval: double-blind human comparison of two models' table documentation.

``prepare``: both models document the same N unseen tables (held-out families of
silver/tabledoc_examples) → a rating sheet (CSV + static HTML) with sides randomised and
identities hidden, the key kept apart. Raters fill in L / R / T. ``score``: the filled sheets
→ win rates with 95 % intervals, per-rater results, Cohen's and Fleiss' κ → MLflow and a
Prefect markdown artifact. The seed's setup (4 raters, 62 tables) is
``genai pairwise-eval prepare --items 62`` then ``genai pairwise-eval score SHEET…``.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from pydantic import BaseModel, ConfigDict, Field

from tasks.common import NO_CACHE_POLICY, tracked_flow

FLOW_NAME = "pairwise-eval"


class PairwiseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_a: str = "models:/genai-tabledoc@champion"  # a models:/ URI or a local HF dir
    model_b: str = "models:/genai-base@champion"
    items: int = Field(62, ge=1)  # unseen tables to rate (the seed used 62)
    seed: int = 0  # side randomisation
    max_new_tokens: int = Field(384, ge=16)
    out_dir: str | None = None  # default: <workspace>/pairwise/<a>-vs-<b>


@task(name="prepare-rating-sheet", timeout_seconds=4 * 3600, cache_policy=NO_CACHE_POLICY)
def prepare_sheet(config: PairwiseConfig, pairs: dict, run_id: str) -> dict:
    from infra import registry, tracking
    from pipelines import pairwise, tabledoc_eval

    items = tabledoc_eval.read_items(pairs["test"], config.items)
    outputs = {side: tabledoc_eval.generate(registry.model_dir(model), items,
                                            config.max_new_tokens)
               for side, model in (("a", config.model_a), ("b", config.model_b))}
    rows = [{"item_id": f"item-{i:03d}", "input": item["prompt"], "output_a": a, "output_b": b}
            for i, (item, a, b) in enumerate(zip(items, outputs["a"], outputs["b"]))]
    out = Path(config.out_dir) if config.out_dir else _default_dir(config)
    sheet = pairwise.make_rating_sheet(rows, config.model_a, config.model_b, out, config.seed)
    run = tracking.Run(run_id)
    run.log_artifact(sheet["sheet_csv"], "sheet")
    run.log_artifact(sheet["sheet_html"], "sheet")  # the key stays out of the shared sheet dir
    run.log_artifact(sheet["key"], "key")
    print(f"rating sheet: {sheet['sheet_html']} (CSV {sheet['sheet_csv']}); key {sheet['key']}")
    return sheet


@task(name="score-rating-sheets", timeout_seconds=600, cache_policy=NO_CACHE_POLICY)
def score_sheets(sheets: list[str], key: str, model_a: str, model_b: str, run_id: str,
                 allow_missing: bool = False) -> dict:
    from prefect.artifacts import create_markdown_artifact

    from infra import tracking
    from pipelines import pairwise

    ratings = pairwise.read_ratings([Path(s) for s in sheets], key, allow_missing=allow_missing)
    summary = pairwise.summarise(ratings, model_a, model_b)
    run = tracking.Run(run_id)
    run.log_metrics({"a_win_rate": summary["a_win_rate"]["rate"],
                     "b_win_rate": summary["b_win_rate"]["rate"],
                     "tie_rate": summary["tie_rate"]["rate"], "raters": len(sheets),
                     "votes": len(ratings)})
    fleiss = summary["agreement"]["fleiss"]["kappa"]
    if fleiss is not None:
        run.log_metrics({"fleiss_kappa": fleiss})
    run.log_dict(summary, "pairwise_summary.json")
    create_markdown_artifact(key="pairwise-eval", markdown=pairwise.report_markdown(summary))
    return summary


def _default_dir(config: PairwiseConfig) -> Path:
    from infra.settings import load_settings

    def slug(model: str) -> str:
        return "".join(c if c.isalnum() else "-" for c in model.removeprefix("models:/"))

    return load_settings().home / "pairwise" / f"{slug(config.model_a)}-vs-{slug(config.model_b)}"


@flow(name=FLOW_NAME, log_prints=True)
def pairwise_eval(config: PairwiseConfig = PairwiseConfig(), pairs: dict | None = None,
                  sheets: list[str] | None = None, key: str | None = None,
                  allow_missing: bool = False) -> dict:
    """Without ``sheets``: prepare a sheet on ``pairs`` (default: the current
    silver/tabledoc_examples held-out split). With ``sheets`` and ``key``: score them."""
    with tracked_flow(FLOW_NAME, config) as run:
        if sheets:
            if not key:
                raise ValueError("scoring needs the sheet's key.json (key=…)")
            return score_sheets(sheets, key, config.model_a, config.model_b, run,
                                allow_missing)
        return prepare_sheet(config, pairs or current_pairs(), run)


def current_pairs() -> dict:
    """Pairs files of the workspace's current silver/tabledoc_examples table."""
    from infra.lake import table_ref
    from infra.settings import load_settings
    from infra.spark import get_spark
    from tasks.finetune import export_pairs

    path = load_settings().lake / "silver" / "tabledoc_examples"
    try:
        ref = table_ref(get_spark(), path)
    except Exception:
        raise FileNotFoundError(f"no table at {path}: run the finetune-sweep flow first") \
            from None
    return export_pairs(ref)
