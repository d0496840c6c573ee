"""review-summaries end to end on the tiny fixture model: reviews in, genai-reviews made by
finetune_task (2 steps) and scored on held-out products, summaries merged into the gold
tables with every model call traced, and the report written."""

from __future__ import annotations

import pytest
from workspace_size import assert_rerun_adds_little, workspace_bytes

from flows.review_summaries import ReviewSummariesConfig, review_summaries
from infra import registry, tracking
from pipelines.prompts.summary_prompt import PROMPT_NAME

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_review_summaries_flow_makes_its_model_then_summarises(
    spark, prefect_server, long_tiny_model, settings
):
    small = {"n_products": 2, "reviews_per_product": 6, "span_days": 20}
    config = ReviewSummariesConfig(
        reviews=small,
        training_reviews={**small, "seed": 5},
        summary={
            "method": "llm",
            "window": "month",
            "min_group_reviews": 1,
            "groups_per_batch": 8,
        },
        task_model={
            "max_steps": 2,
            "micro_batch": 4,
            "warmup_steps": 1,
            "max_len": 256,
            "zero_stage": 0,
            "checkpoint_every": 2,
            "eval_every": 2,
            "eval_batches": 1,
        },
    )
    before = workspace_bytes(settings.home)
    state = review_summaries(config, base=str(long_tiny_model), return_state=True)
    assert state.is_completed(), state.message
    first_added = workspace_bytes(settings.home) - before
    result = state.result()

    assert result["task_model"]["champion"] is True
    assert registry.alias_version("genai-reviews") is not None
    quality = result["task_model_quality"]
    for who in ("task_model", "base", "keyword_baseline"):
        assert 0 <= quality[who]["precision"] <= 1 and 0 <= quality[who]["recall"] <= 1
        assert quality[who]["groups"] > 0
    assert quality["keyword_baseline"]["recall"] > 0  # the baseline names some aspects

    summary = result["summary"]
    assert summary["groups"] > 0 and 0 <= summary["parse_rate"] <= 1
    assert summary["model"].startswith("models:/genai-reviews/")
    assert summary["prompt_uri"] == tracking.load_prompt(f"prompts:/{PROMPT_NAME}@latest").uri
    rows = spark.read.format("delta").load(summary["summaries"]["table"]).collect()
    assert len(rows) == summary["groups"]
    assert {r.mlflow_run_id for r in rows} == {summary["mlflow_run_id"]}
    assert all(r.raw for r in rows)  # parse failures keep their raw text
    parsed = sum(r.parse_error is None for r in rows)
    assert summary["parse_rate"] == parsed / len(rows)  # the rate is the rows' own

    import mlflow

    run = tracking.client().get_run(summary["mlflow_run_id"])
    traces = mlflow.search_traces(locations=[run.info.experiment_id], return_type="list")
    mine = [
        t
        for t in traces
        if t.info.request_metadata.get("mlflow.sourceRun") == summary["mlflow_run_id"]
    ]
    assert len(mine) == summary["groups"] == summary["traced_calls"]  # all, at this scale
    assert run.data.params["trace_policy"].startswith("all calls of the first 20 groups")
    for metric in ("parse_rate", "grounded_share", "phase_seconds.answer", "traced_calls"):
        assert metric in run.data.metrics, metric
    assert set(summary["phase_seconds"]) >= {"spark_read_group", "answer", "writes"}
    assert all(r.grounded is None or 0 <= r.grounded <= 1 for r in rows)
    # what the report shows is only what the reviews support
    assert all(not (set(r.negative_points or []) & set(r.unsupported_spans)) for r in rows)

    page = result["report"]["html"]
    html = open(page, encoding="utf-8").read()
    assert "<h1>Review summaries</h1>" in html and rows[0].product_id in html
    assert html.index("<h2>Needs attention</h2>") < html.index("<h2>All other products</h2>")

    # a night with reviews of new products: only their groups are summarised, the rest kept
    later = config.model_copy(update={"reviews": config.reviews.model_copy(update={"seed": 7})})
    second = review_summaries(later, base=str(long_tiny_model))["summary"]
    assert second["incremental"] and second["since_version"] == summary["reviews_version"]
    rows_after = spark.read.format("delta").load(summary["summaries"]["table"]).collect()
    fresh = [r for r in rows_after if r.mlflow_run_id == second["mlflow_run_id"]]
    assert len(fresh) == second["groups"] and len(rows_after) == len(rows) + len(fresh)
    assert {r.product_id for r in fresh}.isdisjoint({r.product_id for r in rows})

    # the same night again: nothing new to summarise, no second model, next to no new bytes
    before_rerun = workspace_bytes(settings.home)
    again = review_summaries(later, base=str(long_tiny_model))["summary"]
    assert again == second  # the same inputs: the summarise task's cached result
    table = summary["summaries"]["table"]
    assert spark.read.format("delta").load(table).count() == len(rows_after)
    assert_rerun_adds_little(first_added, workspace_bytes(settings.home) - before_rerun)
