"""The table-write helper: quality gate, quarantine, idempotent commits, schema guard, MERGE."""

import pytest

from infra.lake import (
    QualityGateError,
    SchemaMismatchError,
    TableSpec,
    expect,
    read_table,
    table_ref,
    write_table,
)

pytestmark = pytest.mark.spark

DOCS = TableSpec(
    layer="bronze",
    name="docs",
    schema="id STRING, text STRING, score INT",
    key=("id",),
    expectations=(
        expect("column_value_lengths_to_be_between", column="text", min_value=1, max_value=20),
        expect("column_values_to_be_between", column="score", min_value=0, max_value=5),
    ),
    max_quarantine_fraction=0.2,
)


def rows(n, start=0, bad=()):
    out = []
    for i in range(start, start + n):
        text = "" if i in bad else f"doc {i}"
        out.append((f"d{i:04d}", text, i % 5))
    return out


def frame(spark, data):
    return spark.createDataFrame(data, DOCS.schema)


def test_append_creates_a_change_data_feed_table_and_reports_a_manifest(spark, lake_dir):
    manifest = write_table(spark, DOCS, frame(spark, rows(10)), txn_id="t1", root=lake_dir)
    assert manifest["rows"] == 10 and manifest["quarantined"] == 0
    assert manifest["table"] == str(lake_dir / "bronze" / "docs")
    props = spark.sql(f"SHOW TBLPROPERTIES delta.`{manifest['table']}`").collect()
    assert {r.key: r.value for r in props}["delta.enableChangeDataFeed"] == "true"
    assert manifest == {**manifest, **table_ref(spark, manifest["table"])}


def test_failing_rows_go_to_quarantine_with_their_expectation(spark, lake_dir):
    data = rows(20, bad={3, 7}) + [("d9999", "far too long a text for this table", 9)]
    manifest = write_table(spark, DOCS, frame(spark, data), txn_id="t1", root=lake_dir)
    assert (manifest["written"], manifest["quarantined"], manifest["input_rows"]) == (18, 3, 21)
    quarantine = read_table(spark, manifest["quarantine_table"]).collect()
    reasons = {r.id: r._reason for r in quarantine}
    assert set(reasons) == {"d0003", "d0007", "d9999"}
    assert "expect_column_value_lengths_to_be_between" in reasons["d0003"]
    # one row can break two expectations: both are named
    assert "expect_column_values_to_be_between(column=score" in reasons["d9999"]
    assert "expect_column_value_lengths_to_be_between" in reasons["d9999"]
    assert {r.id for r in read_table(spark, manifest).collect()}.isdisjoint(reasons)


def test_a_batch_over_the_quarantine_limit_commits_nothing_and_names_expectations(spark, lake_dir):
    write_table(spark, DOCS, frame(spark, rows(5)), txn_id="t1", root=lake_dir)
    before = table_ref(spark, DOCS.path(lake_dir))
    bad = frame(spark, rows(10, start=100, bad=set(range(100, 104))))  # 40 % bad > 20 %
    with pytest.raises(QualityGateError) as err:
        write_table(spark, DOCS, bad, txn_id="t2", root=lake_dir)
    assert "4 of 10 rows" in str(err.value)
    assert "expect_column_value_lengths_to_be_between(column=text" in str(err.value)
    assert table_ref(spark, DOCS.path(lake_dir)) == before
    assert not DOCS.quarantine_path(lake_dir).exists()

    # the whole batch is kept where the error says, failing rows with their reasons
    rejected = DOCS.rejected_path(lake_dir)
    assert f"{rejected} (_batch = 't2'" in str(err.value)
    kept = {r.id: r for r in read_table(spark, rejected).collect()}
    assert len(kept) == 10 and {r._batch for r in kept.values()} == {"t2"}
    failing = {i for i, r in kept.items() if r._reason}
    assert failing == {f"d{i:04d}" for i in range(100, 104)}
    assert "expect_column_value_lengths_to_be_between" in kept["d0100"]._reason
    # a retry of the same write adds nothing to it
    with pytest.raises(QualityGateError):
        write_table(spark, DOCS, bad, txn_id="t2", root=lake_dir)
    assert read_table(spark, rejected).count() == 10


def test_same_transaction_twice_writes_once(spark, lake_dir):
    batch = frame(spark, rows(10, bad={2}))
    first = write_table(spark, DOCS, batch, txn_id="same", root=lake_dir)
    second = write_table(spark, DOCS, batch, txn_id="same", root=lake_dir)
    assert second["version"] == first["version"]
    assert read_table(spark, DOCS.path(lake_dir)).count() == 9
    assert read_table(spark, DOCS.quarantine_path(lake_dir)).count() == 1


def test_duplicate_keys_are_quarantined_and_merge_upserts(spark, lake_dir):
    write_table(spark, DOCS, frame(spark, rows(5)), txn_id="t1", root=lake_dir)
    update = frame(
        spark,
        [
            ("d0001", "changed", 1),
            ("d0100", "new", 2),
            ("d0100", "dup", 2),
            ("d0101", "new", 3),
            ("d0102", "new", 3),
            ("d0103", "new", 3),
            ("d0104", "new", 3),
            ("d0105", "new", 3),
            ("d0106", "new", 3),
            ("d0107", "new", 3),
            ("d0108", "new", 3),
        ],
    )
    manifest = write_table(spark, DOCS, update, txn_id="m1", mode="merge", root=lake_dir)
    table = {r.id: r.text for r in read_table(spark, manifest).collect()}
    assert table["d0001"] == "changed" and "d0100" not in table  # both copies quarantined
    assert len(table) == 5 + 8
    again = write_table(spark, DOCS, update, txn_id="m1", mode="merge", root=lake_dir)
    assert again["version"] == manifest["version"]


def test_unplanned_schema_changes_are_refused(spark, lake_dir):
    extra = frame(spark, rows(3)).withColumnRenamed("score", "rating")
    with pytest.raises(
        SchemaMismatchError, match="missing column 'score'.*unexpected column 'rating'"
    ):
        write_table(spark, DOCS, extra, txn_id="t1", root=lake_dir)
    write_table(spark, DOCS, frame(spark, rows(3)), txn_id="t1", root=lake_dir)
    wider = TableSpec(layer="bronze", name="docs", schema=DOCS.schema + ", lang STRING")
    data = spark.createDataFrame([("x", "y", 1, "en")], wider.schema)
    with pytest.raises(SchemaMismatchError, match="allow_schema_change"):
        write_table(spark, wider, data, txn_id="t2", root=lake_dir)
    manifest = write_table(
        spark, wider, data, txn_id="t2", root=lake_dir, allow_schema_change=True
    )
    assert manifest["rows"] == 4


def test_commit_conflicts_are_retried_then_surface(monkeypatch):
    from delta.exceptions import ConcurrentAppendException

    from infra import lake

    monkeypatch.setattr("time.sleep", lambda seconds: None)
    attempts = []

    def commit_losing_twice():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConcurrentAppendException("another writer added files")
        return "committed"

    assert lake._retry_conflicts(commit_losing_twice) == "committed" and len(attempts) == 3

    def always_losing():
        raise ConcurrentAppendException("another writer added files")

    with pytest.raises(ConcurrentAppendException):
        lake._retry_conflicts(always_losing, attempts=2)
