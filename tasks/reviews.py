"""Prefect tasks of the review-summary stage: reviews in, the stage's task model, the batch
summaries (incremental, traced), and the report."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from pipelines.finetune.lora import FinetuneConfig
from pipelines.prompts import ingest, quality, report, summaries, teacher, trace_policy
from pipelines.prompts.schema import ReviewsConfig
from pipelines.prompts.summariser import SummaryConfig
from pipelines.prompts.summary_prompt import PROMPT_NAME, PROMPT_TEMPLATE
from pipelines.shared.embedder import DEFAULT_EMBEDDER_NAME
from tasks.common import NO_CACHE_POLICY, current_txn_id, lake_task, run_step, tracked_step

HOUR = 3600
REVIEW_MODEL = "genai-reviews"


def _workspace(*parts: str) -> Path:
    from infra.settings import load_settings

    return load_settings().home.joinpath(*parts)


@lake_task("ingest-reviews", timeout_seconds=2 * HOUR)
def ingest_reviews(config: ReviewsConfig, parent_run: str | None = None) -> dict:
    """Review files by field mapping (or the seeded generator) into bronze/reviews through
    the quality gate; rejected rows quarantined and counted."""
    return run_step(
        "ingest-reviews",
        parent_run,
        config,
        lambda spark: ingest.write_reviews(spark, config, txn_id=current_txn_id()),
    )


@task(name="make-review-model", timeout_seconds=24 * HOUR, cache_policy=NO_CACHE_POLICY)
def make_review_model(
    config: ReviewsConfig,
    base: str,
    train: FinetuneConfig,
    window: str = "week",
    parent_run: str | None = None,
) -> dict:
    """genai-reviews: ``finetune_task`` on generated reviews and the rule teacher's answers,
    grouped by the summary job's ``window`` (the default summary model; any other model or
    endpoint can be configured instead)."""
    from tasks.finetune import finetune_task

    dataset = teacher.write_review_training_set(config, window, _workspace("finetune", "datasets"))
    return finetune_task(str(dataset), base, train, REVIEW_MODEL, parent_run=parent_run)


def resolve_summary_model(spec: str | dict) -> tuple[str | dict, str]:
    """(what executors load, the id recorded with every answer): a models:/ URI becomes its
    local dir and ``name/version``; an HF dir or endpoint is used as given."""
    from infra import registry
    from infra.redaction import redact

    if isinstance(spec, str) and spec.startswith("models:/"):
        version = registry.resolve(spec)
        pinned = f"models:/{version.name}/{version.version}"  # the alias may move later
        return str(registry.model_dir(pinned)), pinned
    shown = spec if isinstance(spec, str) else f"{spec.get('base_url')}#{spec.get('model')}"
    return spec, redact(shown)  # the id is stored with every answer: no credentials in it


@lake_task("summarise-reviews", timeout_seconds=12 * HOUR, retries=0)
def summarise_reviews(
    reviews_manifest: dict, config: SummaryConfig, parent_run: str | None = None
) -> dict:
    """The groups touched since the last processed reviews version, answered and merged into
    gold/review_summaries, review_flags and review_metrics; every model call traced."""
    from infra import tracking
    from infra.spark import get_spark

    prompt = (
        tracking.load_prompt(config.prompt)
        if config.prompt
        else tracking.register_prompt(
            PROMPT_NAME, PROMPT_TEMPLATE, "the seed's four questions, reviews quoted as data"
        )
    )
    llm_spec, model_id = (
        resolve_summary_model(config.model)
        if config.method == "llm"
        else (None, f"extractive:{DEFAULT_EMBEDDER_NAME}")  # no model: the reviews' sentences
    )
    with tracked_step("summarise-reviews", parent_run, config) as run:
        run.log_table(reviews_manifest, role="input")
        run.set_tags({"prompt_uri": prompt.uri, "model": model_id})

        policy = trace_policy.TracePolicy(config.trace_first_groups, config.trace_sample)
        run.log_params({"trace_policy": policy.describe()})
        traced = {}

        def trace(answers: list[dict]) -> None:
            chosen = policy.choose(answers, key=lambda a: tuple(a[k] for k in summaries.GROUP_KEY))
            traced["calls"] = tracking.log_llm_traces(
                run.run_id, "summarise-review-group", [_call(a) for a in chosen]
            )
            traced["untraced"] = len(answers) - len(chosen)

        result = summaries.update_review_summaries(
            get_spark(),
            reviews_manifest,
            config,
            llm_spec=llm_spec,
            model_id=model_id,
            prompt=prompt,
            txn_id=current_txn_id(),
            run_id=run.run_id,
            cache_dir=_workspace("cache", "batch_llm"),
            on_answers=trace,
        )
        for name in ("summaries", "flags", "metrics"):
            if name in result:
                run.log_table(result[name], role="output")
        counted = ("groups", "summarised_groups", "cached_groups", "parse_rate")
        counted += ("grounded_share", "statements", "unsupported_statements", "invented_figures")
        run.log_metrics(
            {
                **{k: result[k] for k in counted if k in result},
                **{f"phase_seconds.{k}": v for k, v in result.get("phase_seconds", {}).items()},
                "traced_calls": traced.get("calls", 0),
                "untraced_calls": traced.get("untraced", 0),
            }
        )
        return {
            **result,
            "traced_calls": traced.get("calls", 0),
            "prompt_uri": prompt.uri,
            "model": model_id,
            "mlflow_run_id": run.run_id,
        }


def _call(answer: dict) -> dict:
    """One traced model call: the group's prompt (its tail, where the reviews are) and answer."""
    return {
        "inputs": {"prompt": answer["prompt_preview"]},
        "outputs": {"raw": answer["raw"], "parse_error": answer["parse_error"]},
        "latency_ms": answer["latency_ms"],
        "prompt_tokens": answer["prompt_tokens"],
        "completion_tokens": answer["completion_tokens"],
        "group": "/".join(str(answer[k]) for k in summaries.GROUP_KEY),
        "grounded": answer.get("grounded"),
    }


@task(name="publish-review-report", timeout_seconds=HOUR, cache_policy=NO_CACHE_POLICY)
def publish_review_report(summary: dict) -> dict:
    """The latest window per product as a Prefect markdown artifact and a static HTML page."""
    from prefect.artifacts import create_markdown_artifact

    from infra.files import write_text_atomic
    from infra.spark import get_spark

    built = report.review_report(get_spark(), "Review summaries")
    create_markdown_artifact(
        key="review-summaries",
        markdown=built["markdown"],
        description="Latest review summaries per product",
    )
    page = _workspace("reports", "review_summaries.html")
    page.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(page, built["html"])
    return {
        "html": str(page),
        "products": built["products"],
        "groups": built["groups"],
        "summaries_version": (summary.get("summaries") or {}).get("version"),
    }


@task(name="evaluate-review-model", timeout_seconds=6 * HOUR, cache_policy=NO_CACHE_POLICY)
def evaluate_review_model(
    model: str,
    base: str,
    config: ReviewsConfig,
    summary: SummaryConfig,
    max_groups: int = 64,
    parent_run: str | None = None,
) -> dict:
    """Negative points of the task model on held-out generated products (another seed),
    scored against the generator's aspect records beside the untuned base and the keyword
    baseline: precision and recall of named criticised aspects."""
    from infra import registry
    from infra.llm import TransformersLLM
    from pipelines.evaluation.reviews import compare_negative_points

    def load_llm(ref: str) -> TransformersLLM:
        return TransformersLLM(registry.model_dir(ref), tokens_per_batch=summary.tokens_per_batch)

    result = quality.score_review_models(
        config,
        summary,
        {"task_model": model, "base": base},
        load_llm,
        compare_negative_points,
        max_groups,
    )
    scores = result["scores"]
    with tracked_step(
        "evaluate-review-model",
        parent_run,
        {
            "model": model,
            "base": base,
            "heldout_seed": result["heldout_seed"],
            "groups": result["groups"],
        },
    ) as run:
        run.log_metrics({f"{who}.{k}": v for who, s in scores.items() for k, v in s.items()})
    return {**scores, "model_ref": model, "base_ref": base}
