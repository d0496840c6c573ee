"""Flow gc: the workspace's disk kept bounded — checkpoints beyond the newest few of every
training run, cached Prefect results past the retention window, token shard sets nothing
references, Delta history past the window (VACUUM). ``dry_run`` lists what would go, with
sizes; a run reports the bytes freed per category. Latent shard sets are listed and left."""

from __future__ import annotations

from prefect import flow

from pipelines.shared.gc import GcConfig, gc_report
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.gc import prune_checkpoints, prune_results, prune_token_shards, vacuum_tables

FLOW_NAME = "gc"


@flow(name=FLOW_NAME, log_prints=True)
def gc(config: GcConfig | None = None, preset: str | None = None) -> dict:
    """``config``, or ``preset`` (configs/gc/<name>.yaml: what a deployment names), or the
    defaults. Returns ``pipelines.shared.gc.gc_report``: bytes per category, each path."""
    config = config_or_preset(GcConfig, "gc", config, preset)
    with tracked_flow(FLOW_NAME, config) as run:
        sweeps = [
            prune_checkpoints(config, parent_run=run),
            prune_results(config, parent_run=run),  # the shard sweep trusts the ones it keeps
            *prune_token_shards(config, parent_run=run),
            vacuum_tables(config, parent_run=run),
        ]
    return {**gc_report(sweeps, config.dry_run), "mlflow_run_id": run}
