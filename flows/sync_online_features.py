"""Flow sync-online-features: the feature tables (gold/user_preferences, gold/hotels) written
from the seeded generator when they are missing (or on request) → each table's rows changed
since the last sync copied into the online store that the RAG chain's feature lookups read
(SQLite under $GENAI_HOME/online/), so lookups see the lake's latest values within one
schedule interval."""
from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from pipelines.features import FEATURE_TABLES, FeaturesConfig
from tasks.common import tracked_flow
from tasks.features import sync_online_features as sync_task
from tasks.features import write_feature_tables

FLOW_NAME = "sync-online-features"
TableName = Literal["user_preferences", "hotels"]


class SyncOnlineFeaturesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: FeaturesConfig = Field(default_factory=FeaturesConfig)  # what write-feature-tables
    # generates; bump data.revision (with write_tables: always) to update rows in place
    write_tables: Literal["if-missing", "always", "never"] = "if-missing"  # a schedule only
    # syncs what upstream pipelines wrote; the first run seeds the tables
    tables: list[TableName] = ["user_preferences", "hotels"]  # feature tables kept online
    store: str | None = None  # SQLite file; None: $GENAI_HOME/online/features.sqlite


def needs_tables(config: SyncOnlineFeaturesConfig) -> bool:
    if config.write_tables != "if-missing":
        return config.write_tables == "always"
    return any(not (FEATURE_TABLES[name].path() / "_delta_log").is_dir()
               for name in config.tables)


@flow(name=FLOW_NAME, log_prints=True)
def sync_online_features(config: SyncOnlineFeaturesConfig | None = None,
                         preset: str | None = None) -> dict:
    """``config``, or ``preset`` (configs/sync_online_features/<name>.yaml: what a deployment
    names), or the defaults."""
    if config is None:
        from pipelines.config import load_preset

        config = load_preset(SyncOnlineFeaturesConfig, "sync_online_features", preset) \
            if preset else SyncOnlineFeaturesConfig()
    with tracked_flow(FLOW_NAME, config) as run:
        written = write_feature_tables(config.data, parent_run=run) \
            if needs_tables(config) else None
        synced = sync_task(list(config.tables), config.store, parent_run=run)
    return {"written": written, "synced": synced, "mlflow_run_id": run}
