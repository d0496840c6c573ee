"""Delta tables by path, and the one write helper every stage uses (quality gate included)."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.settings import load_settings

LAYERS = ("bronze", "silver", "gold")
QUARANTINE_SUFFIX = "__quarantine"
REJECTED_SUFFIX = "__rejected"  # whole batches the gate refused, for the user to fix


def expect(kind: str, **kwargs: Any) -> dict:
    """One Great Expectations expectation in GE's own JSON form.

    ``expect("column_values_to_not_be_null", column="id")`` is
    ``{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}}``.
    Declared as data so a table's suite sits next to its schema without importing GE.
    """
    return {"type": f"expect_{kind}", "kwargs": kwargs}


@dataclass(frozen=True)
class TableSpec:
    layer: str  # bronze (as ingested) | silver (cleaned) | gold (what models read)
    name: str
    schema: str  # Spark DDL, e.g. "id STRING, text STRING"; writes must match it exactly
    expectations: tuple[dict, ...] = ()  # the table's GE suite, built with expect()
    key: tuple[str, ...] = ()  # primary key: MERGE matches on it
    max_quarantine_fraction: float = 0.05  # above this share of failing rows, commit nothing
    partition_by: tuple[str, ...] = ()
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"table {self.name}: layer {self.layer!r} is not one of {LAYERS}")

    @property
    def qualified_name(self) -> str:
        return f"{self.layer}/{self.name}"

    def path(self, lake: Path | None = None) -> Path:
        """Where the table lives: <lake>/<layer>/<name>; lake defaults to the workspace's."""
        return (lake or load_settings().lake) / self.layer / self.name

    def quarantine_path(self, lake: Path | None = None) -> Path:
        return self.path(lake).with_name(f"{self.name}{QUARANTINE_SUFFIX}")

    def rejected_path(self, lake: Path | None = None) -> Path:
        return self.path(lake).with_name(f"{self.name}{REJECTED_SUFFIX}")


class QualityGateError(ValueError):
    """A batch failed its table's expectations beyond what quarantine may absorb: the input
    must be fixed, so it is not retried (``infra.errors``)."""


class SchemaMismatchError(ValueError):
    """A write's columns differ from the table's declared (or stored) schema."""


WRITE_MODES = ("append", "overwrite", "merge")
CONFLICT_RETRIES = 5  # Delta's optimistic concurrency: a losing writer retries its commit
QUARANTINE_COLUMNS = "_reason STRING, _batch STRING, _quarantined_at TIMESTAMP"
# _reason is null for the rows of a refused batch that met every expectation
REJECTED_COLUMNS = "_reason STRING, _batch STRING, _rejected_at TIMESTAMP"


def table_ref(spark, path: Path | str) -> dict:
    """(path, Delta table id, version): what cache keys and lineage record about a table."""
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, str(path))
    detail = table.detail().select("id").first()
    version = table.history(1).select("version").first()
    return {"table": str(path), "table_id": detail["id"], "version": int(version["version"])}


DELTA_COMMIT = re.compile(r"^(\d{20})\.(?:json|checkpoint(?:\.\d+\.\d+)?\.parquet)$")


def logged_head(path: Path | str) -> dict | None:
    """``table_ref`` read from the Delta log's files, without Spark: the latest committed
    version (the highest commit or checkpoint file) and the table id from version 0's
    metaData. None when the log cannot say (no table, or version 0's commit cleaned up):
    ask Spark (``table_ref``) then. For checks that must not start a JVM, like a frequent
    schedule finding nothing changed."""
    log_dir = Path(path) / "_delta_log"
    versions = [int(m.group(1)) for f in _listing(log_dir) if (m := DELTA_COMMIT.match(f))]
    first = log_dir / f"{0:020d}.json"
    if not versions or not first.is_file():
        return None
    table_id = next(
        (
            action["metaData"]["id"]
            for line in first.read_text(encoding="utf-8").splitlines()
            if line.strip() and "metaData" in (action := json.loads(line))
        ),
        None,
    )
    if table_id is None:
        return None
    return {"table": str(path), "table_id": table_id, "version": max(versions)}


def _listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def read_table(spark, table: TableSpec | dict | Path | str, version: int | None = None):
    """A table's DataFrame, pinned to a version: a manifest's own version when given one."""
    if isinstance(table, TableSpec):
        path = table.path()
    elif isinstance(table, dict):
        path, version = table["table"], table["version"] if version is None else version
    else:
        path = table
    if not (Path(path) / "_delta_log").is_dir():
        raise FileNotFoundError(f"no Delta table at {path}")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.load(str(path))


def declared_schema(spark, spec: TableSpec):
    return spark.createDataFrame([], spec.schema).schema


def conform_to_schema(spark, df, spec: TableSpec, label: str | None = None):
    """Select the declared columns in order; refuse missing, extra or retyped columns."""
    declared = declared_schema(spark, spec)
    label = label or spec.qualified_name
    actual = {f.name: f.dataType for f in df.schema.fields if f.name != "_row_id"}
    expected = {f.name: f.dataType for f in declared.fields}
    problems = [
        f"missing column {name!r} ({t.simpleString()})"
        for name, t in expected.items()
        if name not in actual
    ]
    problems += [f"unexpected column {name!r}" for name in actual if name not in expected]
    problems += [
        f"column {name!r} is {actual[name].simpleString()}, declared {t.simpleString()}"
        for name, t in expected.items()
        if name in actual and actual[name] != t
    ]
    if problems:
        raise SchemaMismatchError(
            f"write to {label} does not match its declared schema: " + "; ".join(problems)
        )
    return df.select(*expected)


def _stored_schema_problem(spark, path: Path, spec: TableSpec) -> str | None:
    stored = {f.name: f.dataType for f in spark.read.format("delta").load(str(path)).schema}
    declared = {f.name: f.dataType for f in declared_schema(spark, spec).fields}
    if stored == declared:
        return None
    return (
        f"table {path} stores columns {sorted(stored)} but {spec.qualified_name} declares "
        f"{sorted(declared)}; change the table on purpose with allow_schema_change=True"
    )


def ensure_table(spark, path: Path, schema_ddl: str, partition_by: tuple[str, ...] = ()) -> None:
    """Create the Delta table (empty, Change Data Feed on) if it does not exist yet."""
    from delta.tables import DeltaTable

    if (path / "_delta_log").is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    builder = (
        DeltaTable.createIfNotExists(spark)
        .location(str(path))
        .addColumns(spark.createDataFrame([], schema_ddl).schema)
        .property("delta.enableChangeDataFeed", "true")
    )
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    _retry_conflicts(builder.execute)


def write_table(
    spark,
    spec: TableSpec,
    df,
    *,
    txn_id: str,
    mode: str = "append",
    root: Path | None = None,
    allow_schema_change: bool = False,
) -> dict:
    """Gate, quarantine and commit one batch to a table; return its manifest.

    Order matters for crash safety: failing rows go to ``<name>__quarantine`` first, then the
    accepted rows to the table, both tagged with the same Delta transaction id (txnAppId =
    txn_id). A retry after a crash anywhere re-runs this function: whatever already committed
    is skipped by Delta, the rest is written, so accepted + quarantined = input exactly once.
    ``txn_id`` must identify the logical write (tasks pass their cache key), not the attempt.

    A batch the gate refuses (too many failing rows, or a table-level expectation failed)
    reaches neither table: the whole batch goes to ``<name>__rejected`` under the same
    transaction id, each row with the expectations it failed, and the QualityGateError names
    that table and the id — accepted + quarantined + rejected = input.
    """
    from pyspark.sql import functions as F

    from infra.faults import fault_point, kill_when_file_appears
    from infra.gate import ROW_ID, run_suite

    if mode not in WRITE_MODES:
        raise ValueError(f"write mode {mode!r} is not one of {WRITE_MODES}")
    if mode == "merge" and not spec.key:
        raise ValueError(f"{spec.qualified_name} has no key: MERGE needs one")
    path, quarantine_path = spec.path(root), spec.quarantine_path(root)
    df = conform_to_schema(spark, df, spec)
    if (path / "_delta_log").is_dir() and not allow_schema_change:
        if problem := _stored_schema_problem(spark, path, spec):
            raise SchemaMismatchError(problem)

    batch = df.withColumn(ROW_ID, F.monotonically_increasing_id()).persist()
    try:
        rows = batch.count()
        report = run_suite(batch, spec.qualified_name, suite_for(spec), rows)
        reasons = _reasons_frame(spark, report)
        if _refused(spec, report):
            rejected = _write_rejected(spark, spec, batch, reasons, root, txn_id)
            raise QualityGateError(_refusal(spec, report, rejected, txn_id))
        accepted = batch.join(reasons, ROW_ID, "left_anti").drop(ROW_ID)
        quarantined = (
            batch.join(reasons, ROW_ID)
            .drop(ROW_ID)
            .withColumn("_batch", F.lit(txn_id))
            .withColumn("_quarantined_at", F.current_timestamp())
        )

        ensure_table(spark, path, spec.schema, spec.partition_by)
        if report.failed_rows:
            ensure_table(spark, quarantine_path, f"{spec.schema}, {QUARANTINE_COLUMNS}")
            _commit(spark, quarantined, quarantine_path, "append", txn_id, allow_schema_change)
        fault_point("lake.between_tables")
        existing = {p.name for p in path.glob("**/*.parquet")}
        kill_when_file_appears("lake.after_files", path, "**/*.parquet", existing)
        _commit(spark, accepted, path, mode, txn_id, allow_schema_change, spec)
    finally:
        batch.unpersist()

    manifest = table_ref(spark, path)
    written = rows - report.failed_rows
    manifest.update(
        # an overwrite's table is exactly what was written: no need to count it again
        rows=written if mode == "overwrite" else read_table(spark, manifest).count(),
        input_rows=rows,
        written=written,
        quarantined=report.failed_rows,
        quarantine_table=str(quarantine_path) if report.failed_rows else None,
        expectations_failed=dict(report.unexpected),
    )
    return manifest


def suite_for(spec: TableSpec) -> tuple[dict, ...]:
    """The declared suite, plus what a key implies: present and unique (MERGE needs both)."""
    implied = [expect("column_values_to_not_be_null", column=k) for k in spec.key]
    if len(spec.key) == 1:
        implied.append(expect("column_values_to_be_unique", column=spec.key[0]))
    elif spec.key:
        implied.append(expect("compound_columns_to_be_unique", column_list=list(spec.key)))
    return tuple(e for e in implied if e not in spec.expectations) + tuple(spec.expectations)


def _refused(spec: TableSpec, report) -> bool:
    return bool(report.table_failures) or report.fraction > spec.max_quarantine_fraction


def _write_rejected(spark, spec: TableSpec, batch, reasons, root, txn_id: str) -> Path:
    """The whole refused batch, each row with the expectations it failed (null: none), as one
    commit of ``<name>__rejected`` under the batch's transaction id (a retry adds nothing)."""
    from pyspark.sql import functions as F

    from infra.gate import ROW_ID

    path = spec.rejected_path(root)
    rows = (
        batch.join(reasons, ROW_ID, "left")
        .drop(ROW_ID)
        .withColumn("_batch", F.lit(txn_id))
        .withColumn("_rejected_at", F.current_timestamp())
    )
    ensure_table(spark, path, f"{spec.schema}, {REJECTED_COLUMNS}")
    _commit(spark, rows, path, "append", txn_id, allow_schema_change=False)
    return path


def _refusal(spec: TableSpec, report, rejected: Path, txn_id: str) -> str:
    if report.table_failures:
        why = "a table-level expectation failed"
    else:
        why = f"over max_quarantine_fraction {spec.max_quarantine_fraction:.1%}"
    return (
        f"{spec.qualified_name}: {report.failed_rows} of {report.rows} rows "
        f"({report.fraction:.1%}) fail its expectations, {why}; nothing was committed to the "
        f"table. Failed: {report.describe()}. The batch's rows are in {rejected} "
        f"(_batch = '{txn_id}', each with the expectations it failed in _reason)"
    )


def _reasons_frame(spark, report):
    """One row per failing row id with every expectation it broke, '; '-joined."""
    from pyspark.sql import functions as F

    from infra.gate import ROW_ID

    failures = spark.createDataFrame(report.failures, f"{ROW_ID} LONG, _reason STRING")
    return failures.groupBy(ROW_ID).agg(
        F.concat_ws("; ", F.array_sort(F.collect_set("_reason"))).alias("_reason")
    )


def _commit(
    spark,
    df,
    path: Path,
    mode: str,
    txn_id: str,
    allow_schema_change: bool,
    spec: TableSpec | None = None,
) -> None:
    if mode == "merge":
        _retry_conflicts(lambda: _merge(spark, df, path, txn_id, spec.key))
        return
    writer = df.write.format("delta").mode(mode).option("txnAppId", txn_id).option("txnVersion", 1)
    if allow_schema_change:
        writer = writer.option("overwriteSchema" if mode == "overwrite" else "mergeSchema", "true")
    _retry_conflicts(lambda: writer.save(str(path)))


_merge_lock = threading.Lock()  # txn ids for MERGE travel in session conf


def _merge(spark, df, path: Path, txn_id: str, key: tuple[str, ...]) -> None:
    from delta.tables import DeltaTable

    condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in key)
    # update only rows whose values differ: re-merging the same rows changes nothing, so the
    # Change Data Feed shows real changes only (incremental consumers rely on it)
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in df.columns if c not in key)
    with _merge_lock:
        spark.conf.set("spark.databricks.delta.write.txnAppId", txn_id)
        spark.conf.set("spark.databricks.delta.write.txnVersion", "1")
        try:
            (
                DeltaTable.forPath(spark, str(path))
                .alias("t")
                .merge(df.alias("s"), condition)
                .whenMatchedUpdateAll(condition=changed or None)
                .whenNotMatchedInsertAll()
                .execute()
            )
        finally:
            spark.conf.unset("spark.databricks.delta.write.txnAppId")
            spark.conf.unset("spark.databricks.delta.write.txnVersion")


def _retry_conflicts(action, attempts: int = CONFLICT_RETRIES):
    """Run a Delta commit, retrying when another writer won the optimistic-concurrency race."""
    import random
    import time

    import delta.exceptions as conflicts

    # delta-spark's Python conflict classes do not share a base class: name each of them
    retryable = (
        conflicts.DeltaConcurrentModificationException,
        conflicts.ConcurrentWriteException,
        conflicts.MetadataChangedException,
        conflicts.ProtocolChangedException,
        conflicts.ConcurrentAppendException,
        conflicts.ConcurrentDeleteReadException,
        conflicts.ConcurrentDeleteDeleteException,
        conflicts.ConcurrentTransactionException,
    )
    for attempt in range(attempts):
        try:
            return action()
        except retryable:
            if attempt == attempts - 1:
                raise
            time.sleep((2**attempt) * 0.2 * (1 + random.random()))
