"""Prefect tasks of the RAG stage's structured data: the feature tables written to the lake,
and their online copy (SQLite) brought up to date from the tables' Change Data Feed."""

from __future__ import annotations

from prefect import task

from infra.online_store import OnlineStore
from pipelines.rag import feature_tables
from pipelines.rag.travel_data import FeaturesConfig
from tasks.common import HEAVY, NO_CACHE_POLICY, current_txn_id, lake_task, tracked_step

MINUTE = 60


@lake_task("write-feature-tables", timeout_seconds=30 * MINUTE)
def write_feature_tables(config: FeaturesConfig, parent_run: str | None = None) -> dict:
    """Generated users and hotels MERGEd on their keys into gold/user_preferences and
    gold/hotels through the quality gate: {"tables": {name: manifest}, "mlflow_run_id"}."""
    from infra.spark import get_spark

    with tracked_step("write-feature-tables", parent_run, config) as run:
        tables = feature_tables.write_feature_tables(get_spark(), config, txn_id=current_txn_id())
        for manifest in tables.values():
            run.log_table(manifest, role="output")
        run.log_metrics(
            {
                f"{name}.{k}": manifest[k]
                for name, manifest in tables.items()
                for k in ("rows", "written", "quarantined")
            }
        )
    return {"tables": tables, "mlflow_run_id": run.run_id}


# Not cached: what it must copy depends on the online store's own state, not on parameters.
@task(
    name="sync-online-features",
    timeout_seconds=30 * MINUTE,
    retries=2,
    retry_delay_seconds=10,
    cache_policy=NO_CACHE_POLICY,
    tags=[HEAVY],
    log_prints=True,
)
def sync_online_features(
    tables: list[str], store: str | None = None, parent_run: str | None = None
) -> dict:
    """Each feature table's rows changed since its last synced Delta version copied into the
    online store (the whole table the first time), one SQLite transaction per table:
    {"store": path, "tables": {name: sync manifest}, "mlflow_run_id"}."""
    from infra.spark import get_spark

    synced: dict[str, dict] = {}
    with (
        OnlineStore(store) as online,
        tracked_step(
            "sync-online-features", parent_run, {"tables": tables, "store": str(online.path)}
        ) as run,
    ):
        for name in tables:
            spec = feature_tables.FEATURE_TABLES[name]
            # Nothing changed (the every-15-minutes case): no Spark session, no job.
            synced[name] = feature_tables.unchanged_since_sync(
                spec.path(), spec, online
            ) or feature_tables.sync_online(get_spark(), spec.path(), spec, online)
            run.log_table(synced[name], role="input")
            print(
                f"{name}: {synced[name]['mode']} to version {synced[name]['version']}, "
                f"{synced[name]['upserted']} upserted, {synced[name]['deleted']} deleted, "
                f"{synced[name]['rows']} rows online"
            )
        run.log_metrics(
            {
                f"{name}.{k}": m[k]
                for name, m in synced.items()
                for k in ("upserted", "deleted", "rows")
            }
        )
    return {"store": str(online.path), "tables": synced, "mlflow_run_id": run.run_id}
