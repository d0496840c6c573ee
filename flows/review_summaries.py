"""Flow review-summaries: reviews in (files by mapping, or the seeded generator) → the
stage's task model genai-reviews when it is the configured model and has no champion yet →
summaries of exactly the (product, band, window) groups that received reviews since the last
run, merged into the gold tables → the report (Prefect artifact + static HTML)."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from pipelines.finetune.lora import FinetuneConfig, task_model_training
from pipelines.prompts.schema import ReviewsConfig
from pipelines.prompts.summariser import SummaryConfig
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.finetune import task_model_needed
from tasks.reviews import (
    REVIEW_MODEL,
    evaluate_review_model,
    ingest_reviews,
    make_review_model,
    publish_review_report,
    summarise_reviews,
)

FLOW_NAME = "review-summaries"


class ReviewSummariesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviews: ReviewsConfig = Field(default_factory=ReviewsConfig)  # what is summarised
    training_reviews: ReviewsConfig = Field(  # what genai-reviews learns from: generated
        default_factory=lambda: ReviewsConfig(seed=1)
    )  # products of its own, not the data
    summary: SummaryConfig = Field(default_factory=SummaryConfig)
    base: str = "models:/genai-base@champion"  # what genai-reviews is fine-tuned from
    task_model: FinetuneConfig = Field(default_factory=lambda: task_model_training(512))
    make_task_model: Literal["if-missing", "always", "never"] = "if-missing"  # only when
    # summary.model is genai-reviews' champion, and (if-missing) summary.method is llm
    eval_groups: int = Field(64, ge=1)  # held-out groups genai-reviews is scored on


def uses_task_model(config: ReviewSummariesConfig) -> bool:
    """The LLM method answers with the model; the extractive one needs it only when asked
    to make it anyway (to compare it, as the demo does)."""
    return config.summary.method == "llm" or config.make_task_model == "always"


@flow(name=FLOW_NAME, log_prints=True)
def review_summaries(
    config: ReviewSummariesConfig | None = None, base: str | None = None, preset: str | None = None
) -> dict:
    """``config``, or ``preset`` (configs/review_summaries/<name>.yaml: what a deployment
    names); ``base`` overrides ``config.base`` (the lifecycle passes the model it just
    trained)."""
    config = config_or_preset(ReviewSummariesConfig, "review_summaries", config, preset)
    base = base or config.base
    with tracked_flow(FLOW_NAME, config) as run:
        ingested = ingest_reviews(config.reviews, parent_run=run)
        task_model = quality = None
        if uses_task_model(config) and task_model_needed(
            config.summary.model, REVIEW_MODEL, config.make_task_model
        ):
            task_model = make_review_model(
                config.training_reviews,
                base,
                config.task_model,
                config.summary.window,
                parent_run=run,
            )
            quality = evaluate_review_model(
                task_model["uri"],
                base,
                config.training_reviews,
                config.summary,
                config.eval_groups,
                parent_run=run,
            )
        summary = summarise_reviews(ingested, config.summary, parent_run=run)
        report = publish_review_report(summary)
    return {
        "reviews": ingested,
        "task_model": task_model,
        "task_model_quality": quality,
        "summary": summary,
        "report": report,
        "mlflow_run_id": run,
    }
