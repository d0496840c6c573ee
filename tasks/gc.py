"""Prefect tasks of the workspace clean-up, one per category. Never cached: what they remove
depends on the disk's state, not on their parameters. Each returns ``Sweep.as_dict()``."""

from __future__ import annotations

import time

from prefect import task

from infra import disk
from infra.prefect import results
from pipelines.pretrain import shard_gc
from pipelines.shared.gc import GcConfig, latent_shard_sets
from pipelines.training import checkpoint_gc
from tasks.common import HEAVY, NO_CACHE_POLICY, tracked_step

MINUTE = 60


def _gc_task(name: str, tags: tuple[str, ...] = ()):
    return task(
        name=name,
        timeout_seconds=60 * MINUTE,
        retries=1,
        retry_delay_seconds=10,
        cache_policy=NO_CACHE_POLICY,
        tags=list(tags),
        log_prints=True,
    )


def _tracked(name: str, parent_run: str | None, config: GcConfig, sweep: disk.Sweep) -> dict:
    """Log the sweep (bytes, counts, each path) in the task's MLflow run and Prefect log."""
    verb = "would remove" if config.dry_run else "removed"
    with tracked_step(name, parent_run, config) as run:
        for r in sweep.removals:
            print(f"{verb} {r.path} ({r.bytes} bytes): {r.reason}")
        for x in sweep.left:
            print(f"left {x.path}: {x.reason}")
        run.log_metrics(
            {"bytes": sweep.bytes, "removed": len(sweep.removals), "left": len(sweep.left)}
        )
    return sweep.as_dict()


def _settings():
    from infra.settings import load_settings

    return load_settings()


@_gc_task("gc-checkpoints")
def prune_checkpoints(config: GcConfig, parent_run: str | None = None) -> dict:
    """Every training run's checkpoints beyond the newest ``keep_checkpoints`` complete ones."""
    runs = _settings().path("runs")
    sweep = checkpoint_gc.stale_checkpoints_of_runs(runs, config.keep_checkpoints)
    return _tracked("gc-checkpoints", parent_run, config, disk.apply(sweep, config.dry_run))


@_gc_task("gc-token-shards", tags=(HEAVY,))
def prune_token_shards(config: GcConfig, parent_run: str | None = None) -> list[dict]:
    """Token shard dirs nothing references (``pipelines.pretrain.shard_gc``); latent shard
    sets are listed and left."""
    from infra.spark import get_spark

    settings, now = _settings(), time.time()
    live = results.live_results(result_storage(), config.retention_hours, now)
    sweep = shard_gc.unreferenced_token_shards(
        get_spark(), settings.home, settings.lake, live, config.retention_hours, now
    )
    shards = _tracked("gc-token-shards", parent_run, config, disk.apply(sweep, config.dry_run))
    return [shards, latent_shard_sets(settings.home).as_dict()]


@_gc_task("gc-prefect-results")
def prune_results(config: GcConfig, parent_run: str | None = None) -> dict:
    """Cached task results not written for ``retention_hours``."""
    sweep = results.stale_results(result_storage(), config.retention_hours)
    return _tracked("gc-prefect-results", parent_run, config, disk.apply(sweep, config.dry_run))


@_gc_task("gc-vacuum-tables", tags=(HEAVY,))
def vacuum_tables(config: GcConfig, parent_run: str | None = None) -> dict:
    """Delta's VACUUM on every table of the lake, retaining ``retention_hours``."""
    from infra.spark import get_spark
    from infra.vacuum import vacuum_tables as vacuum

    sweep = vacuum(
        get_spark(),
        _settings().lake,
        config.retention_hours,
        dry_run=config.dry_run,
        allow_short_retention=config.allow_short_retention,
    )
    return _tracked("gc-vacuum-tables", parent_run, config, sweep)


def result_storage():
    """Where this process's Prefect persists task results (its own setting decides)."""
    from prefect.settings import get_current_settings

    return get_current_settings().results.local_storage_path
