"""Prefect tasks of corpus preparation: each opens Spark, calls one pipelines step, tracks it."""

from __future__ import annotations

from prefect import task

from infra.tracking import flatten
from pipelines.corpus import dedup, mix, quality
from pipelines.corpus import ingest as corpus
from pipelines.corpus.minhash import DedupConfig
from pipelines.shared.documents import CorpusConfig
from tasks.common import NO_CACHE_POLICY, Progress, current_txn_id, lake_task, run_step

HOUR = 3600  # seconds


@lake_task("ingest-corpus", timeout_seconds=HOUR)
def ingest_corpus(
    config: CorpusConfig, source_fingerprint: str, parent_run: str | None = None
) -> dict:
    """Installed packages' docs (or the user's folders) → bronze/corpus_raw.

    source_fingerprint is only part of the cache key: it changes when the inputs do.
    """
    progress = Progress("reading documentation into bronze/corpus_raw")
    return run_step(
        "ingest-corpus",
        parent_run,
        config,
        lambda spark: corpus.ingest_corpus(
            spark, config, txn_id=current_txn_id(), progress=progress
        ),
    )


@lake_task("clean-corpus", timeout_seconds=HOUR)
def clean_corpus(raw: dict, config: quality.QualityConfig, parent_run: str | None = None) -> dict:
    """Normalise, redact PII, apply quality filters → silver/corpus_clean (+ rejections)."""
    progress = Progress("normalising, redacting and filtering into silver/corpus_clean")
    return run_step(
        "clean-corpus",
        parent_run,
        config,
        lambda spark: quality.clean_corpus_table(
            spark, raw, config, txn_id=current_txn_id(), progress=progress
        ),
    )


@lake_task("dedup-corpus", timeout_seconds=2 * HOUR)
def dedup_corpus(clean: dict, config: DedupConfig, parent_run: str | None = None) -> dict:
    """Exact + MinHash near-duplicate removal → silver/corpus_dedup (+ duplicates)."""
    progress = Progress("exact + MinHash dedup into silver/corpus_dedup")
    return run_step(
        "dedup-corpus",
        parent_run,
        config,
        lambda spark: dedup.dedup_corpus_table(
            spark, clean, config, txn_id=current_txn_id(), progress=progress
        ),
    )


@lake_task("mix-corpus", timeout_seconds=HOUR)
def mix_corpus(deduped: dict, config: mix.MixConfig, parent_run: str | None = None) -> dict:
    """Weighted sampling across sources to a byte budget → gold/pretrain_mix."""
    return run_step(
        "mix-corpus",
        parent_run,
        config,
        lambda spark: mix.mix_corpus(spark, deduped, config, txn_id=current_txn_id()),
    )


@task(name="publish-corpus-report", timeout_seconds=120, cache_policy=NO_CACHE_POLICY)
def publish_corpus_report(manifests: list[dict]) -> str:
    """The flow's artifact: one row per table written, then each step's stats."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(
        key="corpus-tables",
        table=[table_row(m) for m in manifests],
        description="Tables written by prepare-corpus",
    )
    markdown = corpus_report_markdown(manifests)
    create_markdown_artifact(
        key="corpus-report", markdown=markdown, description="prepare-corpus: counts per step"
    )
    return markdown


def table_row(manifest: dict) -> dict:
    return {
        "table": "/".join(manifest["table"].split("/")[-2:]),
        "version": manifest["version"],
        "rows": manifest["rows"],
        "quarantined": manifest.get("quarantined", 0),
        "mlflow_run": manifest.get("mlflow_run_id", "")[:8],
    }


def corpus_report_markdown(manifests: list[dict]) -> str:
    lines = [
        "# prepare-corpus",
        "",
        "| table | version | rows | quarantined |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['table']} | {r['version']} | {r['rows']} | {r['quarantined']} |"
        for r in map(table_row, manifests)
    ]
    for manifest in manifests:
        stats = manifest.get("stats")
        if stats:
            lines += [
                "",
                f"## {table_row(manifest)['table']}",
                "",
                "| step | count |",
                "|---|---|",
            ]
            lines += [f"| {k} | {v} |" for k, v in sorted(flatten(stats).items())]
    return "\n".join(lines) + "\n"
