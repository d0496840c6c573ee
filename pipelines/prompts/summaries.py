"""The batch summary job on Spark: reviews grouped per product x rating band x time window,
each partition answering its groups with a model loaded once per Python worker
(``mapInPandas``; an in-process HF model or an OpenAI-compatible endpoint), every answer cached
as its mini-batch finishes so a rerun after a failure redoes only unfinished groups. Only the
groups whose reviews changed since the last run (the reviews table's Change Data Feed) are
recomputed and merged, with the LLM's and the lexicon's flags and the per-window metrics,
into the gold tables."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from infra.tracking import PromptRef
from pipelines.prompts import windows
from pipelines.prompts.catalogue import RATING_BANDS
from pipelines.prompts.lexicon import coarse_language_flag
from pipelines.prompts.summariser import AnswerCache, Summariser, SummaryConfig, answer_groups
from pipelines.prompts.summary_prompt import Group

# --- the Spark job --------------------------------------------------------------------------

GROUP_KEY = ("product_id", "band", "window_start")
ANSWER_SCHEMA = (
    "product_id STRING, band STRING, window_start DATE, window STRING, review_count INT, "
    "summarised BOOLEAN, chunks INT, negative_points ARRAY<STRING>, "
    "liked_features ARRAY<STRING>, value_for_money STRING, flagged_review_ids ARRAY<STRING>, "
    "grounded DOUBLE, statements INT, unsupported_spans ARRAY<STRING>, raw STRING, "
    "parse_error STRING, prompt_tokens INT, completion_tokens INT, latency_ms DOUBLE, "
    "prompt_ms DOUBLE, generate_ms DOUBLE, parse_ms DOUBLE, ground_ms DOUBLE, "
    "invented_figures INT, prompt_preview STRING, cached BOOLEAN"
)
_ANSWER_COLUMNS = [c.split()[0] for c in ANSWER_SCHEMA.split(", ")]
PHASE_COLUMNS = ("prompt_ms", "generate_ms", "parse_ms", "ground_ms")  # worker-side timings


def with_group_columns(reviews_df, window: str, anchor: date | None = None):
    """Reviews with their rating band and window start (a DATE; ``anchor``: the newest
    review's date, which rolling windows count back from)."""
    from pyspark.sql import functions as F

    band = F.when(F.col("rating") <= 2, "low").when(F.col("rating") == 3, "mid").otherwise("high")
    return reviews_df.withColumn("band", band).withColumn(
        "window_start", windows.window_start_column(F.col("reviewed_at"), window, anchor)
    )


def group_frame(reviews_df, window: str, anchor: date | None = None, keys_df=None):
    """One row per (product, band, window) with its reviews in time order; only the groups
    in ``keys_df`` when given (all of each such group's reviews, not only the new ones)."""
    from pyspark.sql import functions as F

    df = with_group_columns(reviews_df, window, anchor)
    if keys_df is not None:
        df = df.join(keys_df, list(GROUP_KEY), "left_semi")
    review = F.struct("reviewed_at", "review_id", "rating", "title", "text")
    return df.groupBy(*GROUP_KEY).agg(
        F.sort_array(F.collect_list(review)).alias("reviews"),
        F.count("*").cast("int").alias("review_count"),
    )


def answer_frame(groups_df, job: dict, partitions: int):
    """mapInPandas over the groups: each partition loads the model once (see ``job_spec``)."""
    return groups_df.repartition(partitions, *GROUP_KEY).mapInPandas(
        _answer_partition(json.dumps(job)), ANSWER_SCHEMA
    )


def job_spec(
    llm_spec: str | dict,
    model_id: str,
    prompt,
    config: SummaryConfig,
    cache_dir: Path,
    threads_per_task: int,
) -> dict:
    """What every partition needs, JSON-able (it travels to executors): where the model is
    (a local HF dir every executor can read, or an endpoint), the prompt version's text, the
    settings, the cache dir."""
    return {
        "llm": llm_spec,
        "model_id": model_id,
        "prompt_uri": prompt.uri,
        "prompt_name": prompt.name,
        "prompt_version": prompt.version,
        "template": prompt.template,
        "config": config.model_dump(mode="json"),
        "cache_dir": str(cache_dir),
        "threads": threads_per_task,
    }


_WORKER_MODELS: dict[str, tuple] = {}  # per Python worker: a reused worker keeps its model


def _embed_for(job: dict):
    """The worker's embed function, the bundled MiniLM (clipped, memoised: grounding re-reads
    the sentences the extractive summariser just embedded)."""
    from pipelines.shared.embedder import Embedder, MemoisedEmbed

    if "embedder" not in _WORKER_MODELS:
        _WORKER_MODELS["embedder"] = (MemoisedEmbed(Embedder().embed_clipped), None)
    return _WORKER_MODELS["embedder"][0]


def _summariser_for(job: dict):
    from infra.llm import TransformersLLM, load_llm
    from pipelines.prompts.extractive import ExtractiveSummariser

    if job["config"]["method"] == "extractive":
        return ExtractiveSummariser(_embed_for(job), SummaryConfig(**job["config"]))
    key = json.dumps(job["llm"], sort_keys=True)
    if key not in _WORKER_MODELS:
        import torch

        torch.set_num_threads(max(1, int(job["threads"])))
        config = SummaryConfig(**job["config"])
        llm = (
            TransformersLLM(job["llm"], tokens_per_batch=config.tokens_per_batch)
            if isinstance(job["llm"], str) and Path(job["llm"]).is_dir()
            else load_llm(job["llm"])
        )
        _WORKER_MODELS[key] = (llm, getattr(llm, "tokenizer", None))
    llm, tokenizer = _WORKER_MODELS[key]
    prompt = PromptRef(job["prompt_name"], job["prompt_version"], job["template"])
    return Summariser(llm, prompt.format, SummaryConfig(**job["config"]), tokenizer)


def _answer_partition(job_json: str) -> Callable:
    def answer(batches):
        import pandas as pd

        job = json.loads(job_json)
        cache = AnswerCache(Path(job["cache_dir"]))
        summariser = None
        for frame in batches:
            groups = sorted(
                (_group_of(row, job["config"]["window"]) for row in frame.to_dict("records")),
                key=lambda g: g.key,
            )  # a rerun
            # after a failure finds the same groups done: in key order, cached as they finish
            if not groups:
                continue
            least = job["config"]["min_group_reviews"]
            asked = [g for g in groups if len(g.reviews) >= least]
            rows = [_counts_only_row(g) for g in groups if len(g.reviews) < least]
            if asked:
                summariser = summariser or _summariser_for(job)
                rows += [
                    _answer_row(g, _grounded(job, g, a), cached)
                    for g, a, cached in answer_groups(
                        summariser, asked, cache, job["model_id"], job["prompt_uri"]
                    )
                ]
            yield pd.DataFrame(rows, columns=_ANSWER_COLUMNS)

    return answer


def _grounded(job: dict, group: Group, answer: dict) -> dict:
    """The answer checked against the group's reviews (pipelines.prompts.summary_grounding),
    timed."""
    from pipelines.prompts.summary_grounding import fitted_threshold, ground_answer

    started = time.perf_counter()
    threshold = job["config"]["support_threshold"]
    checked = ground_answer(
        answer,
        group,
        _embed_for(job),
        fitted_threshold() if threshold is None else threshold,
    )
    return {**checked, "ground_ms": 1000 * (time.perf_counter() - started)}


def _counts_only_row(group: Group) -> dict:
    """A group below min_group_reviews: its counts, no summary."""
    return _answer_row(
        group,
        {"chunks": 0, "raw": "", "statements": 0, "unsupported_spans": []},
        cached=False,
        summarised=False,
    )


def _group_of(row: dict, window: str) -> Group:
    reviews = [dict(r.asDict() if hasattr(r, "asDict") else r) for r in row["reviews"]]
    for r in reviews:
        r["reviewed_at"] = str(r["reviewed_at"])
    return Group(row["product_id"], row["band"], str(row["window_start"]), window, reviews)


def _answer_row(group: Group, answer: dict, cached: bool, summarised: bool = True) -> dict:
    return {
        "product_id": group.product_id,
        "band": group.band,
        "window_start": date.fromisoformat(group.window_start),
        "window": group.window,
        "review_count": len(group.reviews),
        "summarised": summarised,
        **{k: answer.get(k) for k in _ANSWER_COLUMNS[6:-1]},
        "cached": cached,
    }


# --- incremental update of the gold tables --------------------------------------------------


def _tables():
    from infra.lake import TableSpec, expect

    summaries = TableSpec(
        layer="gold",
        name="review_summaries",
        schema=(
            "product_id STRING, band STRING, window_start DATE, window STRING, "
            "review_count INT, summarised BOOLEAN, chunks INT, negative_points ARRAY<STRING>, "
            "liked_features ARRAY<STRING>, value_for_money STRING, "
            "flagged_review_ids ARRAY<STRING>, grounded DOUBLE, statements INT, "
            "unsupported_spans ARRAY<STRING>, raw STRING, parse_error STRING, "
            "prompt_tokens INT, completion_tokens INT, latency_ms DOUBLE, model_uri STRING, "
            "prompt_uri STRING, prompt_version INT, mlflow_run_id STRING, "
            "reviews_table_id STRING, reviews_version LONG, updated_at TIMESTAMP"
        ),
        key=GROUP_KEY,
        # a parse failure is kept (raw text + error), so it is not an expectation
        expectations=(
            expect("column_values_to_be_in_set", column="band", value_set=list(RATING_BANDS)),
            expect("column_values_to_be_between", column="review_count", min_value=1),
            expect("column_values_to_not_be_null", column="model_uri"),
            expect("column_values_to_not_be_null", column="raw"),
        ),
        description="Per product x rating band x window: the answers to the seed's four "
        "questions (only statements the reviews support; the others counted in "
        "unsupported_spans), with method, model, prompt version and run. A group with fewer "
        "reviews than min_group_reviews has counts only (summarised false).",
    )
    flags = TableSpec(
        layer="gold",
        name="review_flags",
        schema=(
            "review_id STRING, product_id STRING, band STRING, window_start DATE, "
            "rating INT, llm_flagged BOOLEAN, lexicon_flagged BOOLEAN, flagged BOOLEAN, "
            "mlflow_run_id STRING, reviews_version LONG"
        ),
        key=("review_id",),
        description="Per review: flagged by the LLM as especially negative or inappropriate, "
        "by the coarse-language lexicon, or both.",
    )
    metrics = TableSpec(
        layer="gold",
        name="review_metrics",
        schema=(
            "product_id STRING, window_start DATE, window STRING, reviews INT, "
            "mean_rating DOUBLE, share_negative DOUBLE, previous_reviews INT, "
            "mean_rating_change DOUBLE, share_negative_change DOUBLE, reviews_version LONG"
        ),
        key=("product_id", "window_start"),
        expectations=(
            expect("column_values_to_be_between", column="mean_rating", min_value=1, max_value=5),
        ),
        description="Per product and window: counts, mean rating, share of 1-2 star reviews, "
        "and the change against the product's previous window.",
    )
    return summaries, flags, metrics


REVIEW_SUMMARIES, REVIEW_FLAGS, REVIEW_METRICS = _tables()


def last_processed(spark, root: Path | None = None) -> tuple[str, int, str] | None:
    """(reviews table id, version, window label) the summaries were last computed from;
    None: never."""
    from pyspark.sql import functions as F

    path = REVIEW_SUMMARIES.path(root)
    if not (path / "_delta_log").is_dir():
        return None
    row = (
        spark.read.format("delta")
        .load(str(path))
        .groupBy("reviews_table_id", "window")
        .agg(F.max("reviews_version").alias("v"))
        .orderBy(F.desc("v"))
        .first()
    )
    return None if row is None else (row["reviews_table_id"], int(row["v"]), row["window"])


def changed_keys(
    spark, reviews_path: str, start: int, end: int, window: str, anchor: date | None = None
):
    """Groups touched by the reviews table's changes in versions start..end (Change Data
    Feed): inserted and updated rows, and rows updated away or deleted."""
    from pyspark.sql import functions as F

    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", start)
        .option("endingVersion", end)
        .load(reviews_path)
        .where(
            F.col("_change_type").isin("insert", "update_postimage", "update_preimage", "delete")
        )
    )
    return with_group_columns(changes, window, anchor).select(*GROUP_KEY).distinct()


def update_review_summaries(
    spark,
    reviews: dict,
    config: SummaryConfig,
    *,
    llm_spec,
    model_id: str,
    prompt,
    txn_id: str,
    run_id: str | None,
    cache_dir: Path,
    root: Path | None = None,
    on_answers: Callable[[list[dict]], None] | None = None,
) -> dict:
    """Recompute exactly the groups with reviews added or changed since the last processed
    version of ``reviews`` (a bronze/reviews manifest), over all of each group's reviews,
    and MERGE them (with their flags and their products' metrics) into the gold tables.
    Every group again, replacing the tables, when the windows moved (a rolling window's
    newest review changed). Nothing new since then: nothing is written. Returns the tables'
    manifests, counts and ``phase_seconds`` (where the time went)."""
    from infra.lake import read_table

    clock = PhaseClock()
    table_id, version = reviews["table_id"], int(reviews["version"])
    reviews_df = read_table(spark, reviews)
    anchor = (
        windows.newest_review_date(reviews_df) if windows.rolling_days(config.window) else None
    )
    label = windows.window_label(config.window, anchor)
    previous = last_processed(spark, root)
    if previous == (table_id, version, label):
        return {"up_to_date": True, "groups": 0, "reviews_version": version}
    incremental = (
        previous is not None
        and previous[0] == table_id
        and previous[1] < version
        and previous[2] == label
    )
    keys = (
        changed_keys(spark, reviews["table"], previous[1] + 1, version, config.window, anchor)
        if incremental
        else None
    )
    groups = group_frame(reviews_df, config.window, anchor, keys).persist()
    try:
        group_count = groups.count()
        clock.lap("spark_read_group")
        if not group_count:
            return {"up_to_date": True, "groups": 0, "reviews_version": version}
        answers = _answers(spark, groups, config, llm_spec, model_id, prompt, cache_dir, label)
        try:
            counts = _answer_counts(answers)
            clock.lap("answer")
            traced = _traced_rows(answers)
            meta = {
                "model_uri": model_id,
                "prompt_uri": prompt.uri,
                "prompt_version": prompt.version,
                "mlflow_run_id": run_id,
                "reviews_table_id": table_id,
                "reviews_version": version,
            }
            mode = "merge" if incremental else "overwrite"
            windowing = (config.window, anchor, label)
            written = _write_gold(spark, reviews_df, answers, meta, windowing, txn_id, mode, root)
            clock.lap("writes")
        finally:
            answers.unpersist()
    finally:
        groups.unpersist()
    if on_answers is not None:
        on_answers(traced)
    clock.lap("traces")
    asked = counts["summarised"] or 0
    return {
        **written,
        "up_to_date": False,
        "incremental": incremental,
        "window": label,
        "groups": counts["groups"],
        "summarised_groups": asked,
        "cached_groups": counts["cached"] or 0,
        "parse_rate": (counts["parsed"] or 0) / asked if asked else 1.0,
        "grounded_share": counts["grounded_share"],
        "unsupported_statements": counts["unsupported"] or 0,
        "invented_figures": counts["invented_figures"] or 0,
        "statements": counts["statements"] or 0,
        "reviews_version": version,
        "since_version": previous[1] if incremental else None,
        "phase_seconds": {**clock.phases, **_worker_seconds(counts)},
    }


class PhaseClock:
    """Seconds between laps, by phase name (driver side)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now


def _answers(spark, groups, config, llm_spec, model_id, prompt, cache_dir, label):
    """The groups answered on the executors (persisted), labelled with their window."""
    from pyspark.sql import functions as F

    threads = max(1, (os.cpu_count() or 1) // spark.sparkContext.defaultParallelism)
    job = job_spec(llm_spec, model_id, prompt, config, cache_dir, threads)
    partitions = config.partitions or spark.sparkContext.defaultParallelism
    return answer_frame(groups, job, partitions).withColumn("window", F.lit(label)).persist()


def _answer_counts(answers) -> dict:
    from pyspark.sql import functions as F

    summarised = F.col("summarised")
    row = answers.agg(
        F.count("*").alias("groups"),
        F.sum(summarised.cast("int")).alias("summarised"),
        F.sum((F.col("cached") & summarised).cast("int")).alias("cached"),
        F.sum((F.col("parse_error").isNull() & summarised).cast("int")).alias("parsed"),
        F.sum("statements").alias("statements"),
        F.sum(F.size("unsupported_spans")).alias("unsupported"),
        F.sum("invented_figures").alias("invented_figures"),
        *(F.sum(c).alias(c) for c in PHASE_COLUMNS),
    ).first()
    counts = row.asDict()
    made = counts["statements"] or 0
    counts["grounded_share"] = 1 - (counts["unsupported"] or 0) / made if made else 1.0
    return counts


def _worker_seconds(counts: dict) -> dict[str, float]:
    """Summed over the executors' groups (CPU-parallel: may exceed the answer phase)."""
    return {f"worker_{c.removesuffix('_ms')}": (counts[c] or 0) / 1000 for c in PHASE_COLUMNS}


def _traced_rows(answers) -> list[dict]:
    from pyspark.sql import functions as F

    columns = ("prompt_preview", "raw", "parse_error", "latency_ms")
    tokens = ("prompt_tokens", "completion_tokens", "grounded")
    newly = answers.where(~F.col("cached") & F.col("summarised"))
    return [r.asDict() for r in newly.select(*GROUP_KEY, *columns, *tokens).collect()]


META_TYPES = {"prompt_version": "int", "mlflow_run_id": "string", "reviews_version": "long"}


def _write_gold(spark, reviews_df, answers, meta, windowing, txn_id, mode, root):
    """The answers, their reviews' flags and their products' window metrics, written."""
    from pyspark.sql import functions as F

    from infra.lake import write_table

    window, anchor, label = windowing
    columns = {k: F.lit(v).cast(META_TYPES.get(k, "string")) for k, v in meta.items()}
    dropped = ("prompt_preview", "cached", "invented_figures", *PHASE_COLUMNS)
    summaries = answers.drop(*dropped).withColumns(
        {**columns, "updated_at": F.current_timestamp()}
    )
    version, run_id = meta["reviews_version"], meta["mlflow_run_id"]
    touched = answers.select("product_id").distinct()
    frames = {
        "summaries": (REVIEW_SUMMARIES, summaries),
        "flags": (REVIEW_FLAGS, _flag_rows(reviews_df, answers, window, anchor, run_id, version)),
        "metrics": (
            REVIEW_METRICS,
            window_metrics(reviews_df, window, touched, version, anchor, label),
        ),
    }
    written = {}
    for name, (spec, frame) in frames.items():  # in this order: a retry redoes the rest
        written[name] = write_table(
            spark, spec, frame, txn_id=f"{txn_id}:{name}", mode=mode, root=root
        )
    return written


def _flag_rows(reviews_df, answers, window: str, anchor, run_id, version):
    """Flags of every review in the recomputed groups: the LLM's and the lexicon's."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType

    lexicon = F.udf(lambda text: bool(coarse_language_flag(text or "")), BooleanType())
    flagged = (
        answers.select(F.explode_outer("flagged_review_ids").alias("review_id"))
        .where(F.col("review_id").isNotNull())
        .distinct()
        .withColumn("llm_flagged", F.lit(True))
    )
    rows = (
        with_group_columns(reviews_df, window, anchor)
        .join(answers.select(*GROUP_KEY), list(GROUP_KEY), "left_semi")
        .join(flagged, "review_id", "left")
        .select(
            "review_id",
            "product_id",
            "band",
            "window_start",
            F.col("rating").cast("int").alias("rating"),
            F.coalesce("llm_flagged", F.lit(False)).alias("llm_flagged"),
            lexicon("text").alias("lexicon_flagged"),
        )
    )
    return rows.withColumns(
        {
            "flagged": F.col("llm_flagged") | F.col("lexicon_flagged"),
            "mlflow_run_id": F.lit(run_id).cast("string"),
            "reviews_version": F.lit(version).cast("long"),
        }
    )


def window_metrics(reviews_df, window: str, products_df, version, anchor=None, label=None):
    """Per product and window (all windows of the given products): count, mean rating,
    share of 1-2 star reviews, and their change against the product's previous window."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    per_window = (
        with_group_columns(reviews_df, window, anchor)
        .join(products_df, "product_id", "left_semi")
        .groupBy("product_id", "window_start")
        .agg(
            F.count("*").cast("int").alias("reviews"),
            F.avg("rating").alias("mean_rating"),
            F.avg((F.col("rating") <= 2).cast("double")).alias("share_negative"),
        )
    )
    order = Window.partitionBy("product_id").orderBy("window_start")
    return per_window.select(
        "product_id",
        "window_start",
        F.lit(label or window).alias("window"),
        "reviews",
        "mean_rating",
        "share_negative",
        F.lag("reviews").over(order).alias("previous_reviews"),
        (F.col("mean_rating") - F.lag("mean_rating").over(order)).alias("mean_rating_change"),
        (F.col("share_negative") - F.lag("share_negative").over(order)).alias(
            "share_negative_change"
        ),
        F.lit(version).cast("long").alias("reviews_version"),
    )
