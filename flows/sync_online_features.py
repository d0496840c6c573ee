"""Flow sync-online-features: the feature tables (gold/user_preferences, gold/hotels) written
from the seeded generator when they are missing (or on request) → each table's rows changed
since the last sync copied into the online store that the RAG chain's feature lookups read
(SQLite under $GENAI_HOME/online/), so lookups see the lake's latest values within one
schedule interval."""

from __future__ import annotations

from prefect import flow

from pipelines.rag.feature_tables import SyncOnlineFeaturesConfig, needs_tables
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.features import sync_online_features as sync_task
from tasks.features import write_feature_tables

FLOW_NAME = "sync-online-features"


@flow(name=FLOW_NAME, log_prints=True)
def sync_online_features(
    config: SyncOnlineFeaturesConfig | None = None, preset: str | None = None
) -> dict:
    """``config``, or ``preset`` (configs/sync_online_features/<name>.yaml: what a deployment
    names), or the defaults."""
    config = config_or_preset(SyncOnlineFeaturesConfig, "sync_online_features", config, preset)
    with tracked_flow(FLOW_NAME, config) as run:
        written = (
            write_feature_tables(config.data, parent_run=run) if needs_tables(config) else None
        )
        synced = sync_task(list(config.tables), config.store, parent_run=run)
    return {"written": written, "synced": synced, "mlflow_run_id": run}
