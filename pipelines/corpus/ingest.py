"""The raw pretraining corpus: the documents of :mod:`pipelines.shared.documents` written to
bronze/corpus_raw, read on Spark executors so it scales out."""

from __future__ import annotations

import hashlib
import os

from infra.lake import TableSpec, expect
from pipelines.shared.documents import (
    FIELDS,
    MAX_DOC_CHARS,
    CorpusConfig,
    extract_with_status,
    list_work_items,
    listing_stats,
    normalise_dist_name,
    selected_distributions,
)

CORPUS_RAW_SCHEMA = (
    "id STRING, source STRING, package STRING, licence STRING, text STRING, "
    "origin STRING, ingest_error STRING"
)

CORPUS_RAW = TableSpec(
    layer="bronze",
    name="corpus_raw",
    schema=CORPUS_RAW_SCHEMA,
    key=("id",),
    expectations=(
        expect(
            "column_values_to_be_null", column="ingest_error"
        ),  # unreadable/undecodable/bad field
        expect("column_values_to_not_be_null", column="text"),
        expect(
            "column_value_lengths_to_be_between",
            column="text",
            min_value=1,
            max_value=MAX_DOC_CHARS,
        ),
        expect(
            "column_values_to_be_in_set",
            column="source",
            value_set=["metadata", "licence", "docstring", "user"],
        ),
    ),
    description="Documents as read: package documentation or the user's files.",
)


def build_corpus_raw(spark, config: CorpusConfig):
    """(DataFrame with CORPUS_RAW_SCHEMA, stats). The driver lists files; Spark extracts.

    Extraction runs once, here, so the stats are exact: the per-file results stay cached
    (memory, then disk) under the returned DataFrame, so writing it does not parse again;
    Spark frees them when the DataFrame is garbage-collected."""
    from pyspark import StorageLevel

    items = list_work_items(config)
    stats = listing_stats(config, items)
    context = spark.sparkContext
    slices = max(1, min(len(items), config.partitions or 4 * context.defaultParallelism))
    results = (
        context.parallelize(_interleave(items, slices), numSlices=slices)
        .map(extract_with_status)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    stats["records"], stats["syntax_error_files"] = results.map(_counts).fold((0, 0), _add)
    rows = results.flatMap(_rows)
    return spark.createDataFrame(rows, schema=CORPUS_RAW_SCHEMA), stats


def _interleave(items: list, slices: int) -> list:
    """Deal items round-robin: parallelize() cuts contiguous ranges, and one package's heavy
    files sit next to each other, so slice k gets items k, k+slices, ... instead."""
    return [item for k in range(slices) for item in items[k::slices]]


def _counts(result: tuple[list[dict], bool]) -> tuple[int, int]:
    return len(result[0]), int(result[1])


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]


def _rows(result: tuple[list[dict], bool]) -> list[tuple]:
    return [tuple(record[f] for f in FIELDS) for record in result[0]]


def source_fingerprint(config: CorpusConfig) -> str:
    """A cheap hash of what the corpus would read, for cache keys: a changed input changes it.
    Packages: sorted (distribution, version) after the filter. Paths: every file's relative
    path, size and mtime."""
    digest = hashlib.sha256()
    if config.paths:
        for item in list_work_items(config):
            stat = os.stat(item.path)
            digest.update(
                f"{item.path}\0{item.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
    else:
        for dist in selected_distributions(config):
            name = normalise_dist_name(dist.metadata["Name"])
            digest.update(f"{name}\0{dist.version}\n".encode())
    return digest.hexdigest()


def ingest_corpus(spark, config: CorpusConfig, txn_id: str, progress=None) -> dict:
    """Step: read the corpus into bronze/corpus_raw through the quality gate; its manifest."""
    from infra.lake import write_table

    df, stats = build_corpus_raw(spark, config)
    if progress:
        progress(0.6, f"extracted {stats['records']} documents from {stats['files']} files")
    manifest = write_table(spark, CORPUS_RAW, df, txn_id=txn_id, mode="overwrite")
    if progress:
        progress(1.0, f"bronze/corpus_raw v{manifest['version']}: {manifest['rows']} rows")
    manifest["stats"] = stats
    return manifest
