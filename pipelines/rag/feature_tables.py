"""The feature tables of the RAG stage in the lake, and their online copy kept fresh:
``gold/user_preferences`` (key ``user_id``) and ``gold/hotels`` (key ``hotel_id``) written from
the seeded generator through the lake's quality gate and MERGEd on their keys, so an update
changes rows in place and the Change Data Feed shows exactly the rows that changed;
:func:`sync_online` copies only those rows into the online store (infra/online_store.py), or
the whole table the first time, when it was recreated, its schema changed or the feed cannot
cover the range.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.lake import TableSpec, expect
from infra.online_store import Change, OnlineStore, SyncState, parse_schema
from pipelines.rag.travel_data import (
    HOTEL_TYPES,
    LOYALTY_TIERS,
    MAX_PARTY,
    FeaturesConfig,
    generate_hotels,
    generate_user_preferences,
)

USER_PREFERENCES_SCHEMA = (
    "user_id STRING, avg_budget DOUBLE, hotel_preference STRING, "
    "preferred_city STRING, party_size INT, loyalty_tier STRING, "
    "updated_at TIMESTAMP"
)

USER_PREFERENCES = TableSpec(
    layer="gold",
    name="user_preferences",
    schema=USER_PREFERENCES_SCHEMA,
    key=("user_id",),  # implies not null + unique
    expectations=(
        # per night, in the hotels' currency (EUR); 0 would make every hotel over budget
        expect("column_values_to_be_between", column="avg_budget", min_value=0, strict_min=True),
        expect("column_values_to_not_be_null", column="avg_budget"),
        expect(
            "column_values_to_be_in_set", column="hotel_preference", value_set=list(HOTEL_TYPES)
        ),
        expect("column_values_to_not_be_null", column="preferred_city"),
        expect("column_values_to_match_regex", column="preferred_city", regex=r"\S"),
        expect(
            "column_values_to_be_between", column="party_size", min_value=1, max_value=MAX_PARTY
        ),
        expect("column_values_to_be_in_set", column="loyalty_tier", value_set=list(LOYALTY_TIERS)),
        expect("column_values_to_not_be_null", column="updated_at"),
    ),
    description="Per user: budget per night, preferred hotel type and city, party size, "
    "loyalty tier (the RAG chain's structured user context).",
)

HOTELS_SCHEMA = (
    "hotel_id STRING, name STRING, city STRING, neighbourhood STRING, "
    "hotel_type STRING, stars INT, rooms INT, amenities ARRAY<STRING>, "
    "base_price DOUBLE, occupancy DOUBLE, updated_at TIMESTAMP"
)

HOTELS = TableSpec(
    layer="gold",
    name="hotels",
    schema=HOTELS_SCHEMA,
    key=("hotel_id",),
    expectations=(
        expect("column_values_to_not_be_null", column="name"),
        expect("column_values_to_not_be_null", column="city"),
        expect("column_values_to_match_regex", column="city", regex=r"\S"),
        expect("column_values_to_be_in_set", column="hotel_type", value_set=list(HOTEL_TYPES)),
        expect("column_values_to_be_between", column="stars", min_value=1, max_value=5),
        expect("column_values_to_be_between", column="rooms", min_value=1),
        expect("column_values_to_not_be_null", column="amenities"),
        # per night for the room, EUR, before season and demand
        expect("column_values_to_be_between", column="base_price", min_value=0, strict_min=True),
        expect("column_values_to_not_be_null", column="base_price"),
        # share of rooms booked for the coming nights: the price calculator's demand
        expect("column_values_to_be_between", column="occupancy", min_value=0, max_value=1),
        expect("column_values_to_not_be_null", column="occupancy"),
        expect("column_values_to_not_be_null", column="updated_at"),
    ),
    description="Per hotel: city, neighbourhood, type, stars, rooms, amenities, base price "
    "per night and current occupancy (what the price calculator reads).",
)

FEATURE_TABLES: dict[str, TableSpec] = {spec.name: spec for spec in (USER_PREFERENCES, HOTELS)}

TableName = Literal["user_preferences", "hotels"]


# What the sync-online-features flow writes and keeps online (no docstring: it would become
# the flow parameter's description in Prefect's schema).
class SyncOnlineFeaturesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: FeaturesConfig = Field(default_factory=FeaturesConfig)  # what write-feature-tables
    # generates; bump data.revision (with write_tables: always) to update rows in place
    write_tables: Literal["if-missing", "always", "never"] = "if-missing"  # a schedule only
    # syncs what upstream pipelines wrote; the first run seeds the tables
    tables: list[TableName] = ["user_preferences", "hotels"]  # feature tables kept online
    store: str | None = None  # SQLite file; None: $GENAI_HOME/online/features.sqlite


def needs_tables(config: SyncOnlineFeaturesConfig) -> bool:
    """Whether the feature tables are (re)written before the sync: always, never, or when
    one of the synced tables has no Delta log yet."""
    if config.write_tables != "if-missing":
        return config.write_tables == "always"
    return any(not (FEATURE_TABLES[name].path() / "_delta_log").is_dir() for name in config.tables)


def _rows_frame(spark, spec: TableSpec, rows: Sequence[dict]):
    columns = [name for name, _ in parse_schema(spec.schema)]
    return spark.createDataFrame([tuple(row[c] for c in columns) for row in rows], spec.schema)


def upsert_rows(
    spark, spec: TableSpec, rows: Sequence[dict], txn_id: str, root: Path | None = None
) -> dict:
    """MERGE whole rows into a feature table on its key, through the quality gate; the
    table's manifest. Rows equal to the stored ones change nothing (no Change Data Feed
    entry), so a sync after re-writing the same data copies nothing."""
    from infra.lake import write_table

    return write_table(
        spark, spec, _rows_frame(spark, spec, rows), txn_id=txn_id, mode="merge", root=root
    )


def write_feature_tables(
    spark, config: FeaturesConfig, txn_id: str, root: Path | None = None
) -> dict[str, dict]:
    """Step: the generated users and hotels MERGEd into gold/user_preferences and gold/hotels;
    each table's manifest, by table name."""
    return {
        USER_PREFERENCES.name: upsert_rows(
            spark, USER_PREFERENCES, generate_user_preferences(config), txn_id, root
        ),
        HOTELS.name: upsert_rows(spark, HOTELS, generate_hotels(config), txn_id, root),
    }


def delete_rows(spark, spec: TableSpec, keys: Iterable, root: Path | None = None) -> dict:
    """Delete rows by key (a user who left, a hotel delisted); the table's manifest. Deletes
    bypass the quality gate (nothing is written to check) and are idempotent: deleting a
    missing key changes nothing. One-column keys only."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from infra.lake import table_ref

    if len(spec.key) != 1:
        raise ValueError(
            f"{spec.qualified_name}: delete_rows needs a one-column key, not {spec.key}"
        )
    keys = list(keys)
    path = spec.path(root)
    if keys:
        table = DeltaTable.forPath(spark, str(path))
        table.delete(F.col(spec.key[0]).isin(keys))
    return table_ref(spark, path)


def sync_online(
    spark, table_path: Path | str, spec: TableSpec, store: OnlineStore, version: int | None = None
) -> dict:
    """Bring the online copy of a Delta table to ``version`` (default: the latest).

    Incremental when the store last synced this same table (same Delta table id and schema)
    at an earlier version: the Change Data Feed of the versions since then, reduced to the
    last change of each key (inserted/updated rows upserted, deleted rows deleted). A full
    copy otherwise — the first time, a recreated table, a changed schema, or a feed that
    cannot cover the range (e.g. vacuumed). Never moves the store backwards. Returns a
    manifest: table, table_id, version, mode (full | incremental | up_to_date),
    from_version, upserted, deleted, rows (online), store."""
    from infra.lake import read_table, table_ref

    path = Path(table_path)
    if not (path / "_delta_log").is_dir():
        raise FileNotFoundError(
            f"no Delta table at {path}: write {spec.qualified_name} first "
            f"(the write-feature-tables task)"
        )
    ref = table_ref(spark, path)
    target = ref["version"] if version is None else int(version)
    state = store.sync_state(spec.name)
    same_table = (
        state is not None and state.table_id == ref["table_id"] and state.schema == spec.schema
    )
    manifest = {
        **ref,
        "version": target,
        "online_table": spec.name,
        "store": str(store.path),
        "from_version": state.version if same_table else None,
    }
    if same_table and state.version >= target:
        return {
            **manifest,
            "version": state.version,
            "mode": "up_to_date",
            "upserted": 0,
            "deleted": 0,
            "rows": store.count(spec.name),
        }
    mode, reason = "full", _full_copy_reason(state, ref, spec)
    if same_table:
        try:
            changes = _latest_changes(spark, path, spec, state.version + 1, target)
            mode = "incremental"
        except _spark_errors() as exc:  # e.g. the feed was off for, or vacuumed out of, the range
            reason = (
                f"change data feed unreadable for versions {state.version + 1}.."
                f"{target}: {str(exc).splitlines()[0][:200]}"
            )
    if mode == "full":
        snapshot = read_table(spark, path, version=target)
        changes = (Change(row.asDict(recursive=True)) for row in snapshot.toLocalIterator())
    counts = store.apply(
        spec,
        changes,
        source=str(path),
        table_id=ref["table_id"],
        version=target,
        full=mode == "full",
    )
    return {**manifest, "mode": mode, **counts, "full_copy_reason": reason}


def unchanged_since_sync(
    table_path: Path | str, spec: TableSpec, store: OnlineStore
) -> dict | None:
    """``sync_online``'s "up_to_date" manifest when the store already holds the table's
    latest version, decided from the Delta log's files alone (no Spark); None when the table
    changed or the log cannot tell, and ``sync_online`` must run."""
    from infra.lake import logged_head

    ref = logged_head(table_path)
    state = store.sync_state(spec.name)
    if ref is None or state is None:
        return None
    if state.table_id != ref["table_id"] or state.schema != spec.schema:
        return None
    if state.version < ref["version"]:
        return None
    return {
        **ref,
        "version": state.version,
        "online_table": spec.name,
        "store": str(store.path),
        "from_version": state.version,
        "mode": "up_to_date",
        "upserted": 0,
        "deleted": 0,
        "rows": store.count(spec.name),
    }


def _spark_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    return PySparkException, Py4JJavaError


def _full_copy_reason(state: SyncState | None, ref: dict, spec: TableSpec) -> str | None:
    if state is None:
        return "first sync"
    if state.table_id != ref["table_id"]:
        return f"table recreated (id {state.table_id} -> {ref['table_id']})"
    if state.schema != spec.schema:
        return "schema changed"
    return None


CHANGE_TYPES = ("insert", "update_postimage", "delete")  # update_preimage: the old row, unused


def _latest_changes(spark, path: Path, spec: TableSpec, start: int, end: int) -> list[Change]:
    """The last change of each key in versions start..end of the table's Change Data Feed."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    feed = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", start)
        .option("endingVersion", end)
        .load(str(path))
        .where(F.col("_change_type").isin(*CHANGE_TYPES))
    )
    # within one commit a key can be both deleted and inserted (an overwrite): the row wins
    written_last = F.when(F.col("_change_type") == "delete", 0).otherwise(1)
    order = Window.partitionBy(*spec.key).orderBy(F.desc("_commit_version"), F.desc(written_last))
    latest = (
        feed.withColumn("_n", F.row_number().over(order))
        .where("_n = 1")
        .select(*[c for c, _ in parse_schema(spec.schema)], "_change_type")
    )
    changes = []
    for row in latest.collect():  # changed rows only: small next to the table
        values = row.asDict(recursive=True)
        deleted = values.pop("_change_type") == "delete"
        changes.append(Change(values, deleted))
    return changes
