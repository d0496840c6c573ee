"""Delta history past a retention window: Delta's own VACUUM on every table of the lake
(``lake/<layer>/<name>``, ``__quarantine`` and ``__rejected`` tables included).

VACUUM deletes data files that no table version younger than the retention window needs (and
files no commit ever named, older than the window). What it deletes ends time travel to
versions older than the window, and a Change Data Feed read starting that far back: the
project's readers pin versions for one run (an answer set, a grid) and its CDF consumers run
every 15 minutes or nightly, well inside 7 days.

- **Retention.** 168 h (7 days) is Delta's default ``delta.deletedFileRetentionDuration`` and
  the least its ``retentionDurationCheck`` lets VACUUM use: a shorter window can delete the
  files of a write still in progress (written, not yet committed — ``lake.after_files``) or of
  the version a long reader pinned. ``allow_short_retention`` lifts the check for this call
  only, for a workspace where nothing else runs.
- **No new versions.** VACUUM's own history entries (``VACUUM START`` / ``END``) are turned off
  for the call: a commit would move every table's version, and a new upstream version is a new
  cache key (``tasks/common.py``) — a weekly clean-up would re-tokenize, re-train, re-embed.
- **Listing.** VACUUM lists a table's files in as many Spark tasks as Spark's listing
  parallelism, 10,000 by default: on 2 local cores that is ~75 s per tiny table. The call
  uses the session's own parallelism (its cores) instead, ~4 s.
- **Sizes.** A dry run is Delta's ``VACUUM … DRY RUN`` (the files it would delete); a real run
  measures those files first and reports the ones that are gone afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from infra.disk import Left, Removal, Sweep

CATEGORY = "delta"
DELTA_RETENTION_HOURS = 168.0  # Delta's default deletedFileRetentionDuration: 7 days
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
TOO_SHORT = "DELTA_VACUUM_RETENTION_PERIOD_TOO_SHORT"  # Delta's error class for the check


def delta_tables(lake: Path | str) -> list[Path]:
    """Every Delta table of the lake (a dir ``<layer>/<name>`` holding ``_delta_log``)."""
    lake = Path(lake)
    if not lake.is_dir():
        return []
    return sorted(p.parent for p in lake.glob("*/*/_delta_log") if p.is_dir())


def check_retention(retention_hours: float, allow_short_retention: bool = False) -> None:
    if retention_hours < 0:
        raise ValueError(f"retention_hours must be >= 0, got {retention_hours}")
    if retention_hours < DELTA_RETENTION_HOURS and not allow_short_retention:
        raise ValueError(
            f"retention_hours {retention_hours:g} is below Delta's "
            f"{DELTA_RETENTION_HOURS:g} h: VACUUM would delete files that a write in "
            "progress has not committed yet, or that a reader pinned to an older version "
            "still reads. Set allow_short_retention only when nothing else uses the lake"
        )


def vacuum_tables(
    spark,
    lake: Path | str,
    retention_hours: float = DELTA_RETENTION_HOURS,
    dry_run: bool = False,
    allow_short_retention: bool = False,
) -> Sweep:
    """VACUUM every table of ``lake``; one removal per table (its files summed).

    A table whose own ``delta.deletedFileRetentionDuration`` is longer than the window is
    left (Delta refuses, and the table's setting wins)."""
    check_retention(retention_hours, allow_short_retention)
    sweep = Sweep(CATEGORY)
    with _vacuum_conf(spark, retention_hours < DELTA_RETENTION_HOURS):
        for table in delta_tables(lake):
            try:
                files = _files_to_delete(spark, table, retention_hours)
                if files and not dry_run:
                    _vacuum(spark, table, retention_hours)
            except Exception as err:
                if TOO_SHORT not in str(err):
                    raise
                sweep.left.append(Left(str(table), "its deletedFileRetentionDuration is longer"))
                continue
            if not dry_run:
                files = {p: n for p, n in files.items() if not Path(p).exists()}
            if files:
                reason = f"{len(files)} files no version of the last {retention_hours:g} h reads"
                sweep.removals.append(Removal(str(table), sum(files.values()), reason))
    return sweep


def _files_to_delete(spark, table: Path, retention_hours: float) -> dict[str, int]:
    """What VACUUM would delete now: local path -> bytes (Hadoop's ``.crc`` sidecar too)."""
    rows = spark.sql(f"VACUUM delta.`{table}` RETAIN {retention_hours:f} HOURS DRY RUN").collect()
    files = {}
    for row in rows:
        path = Path(unquote(urlparse(row["path"]).path))
        sidecar = path.with_name(f".{path.name}.crc")
        files[str(path)] = sum(p.stat().st_size for p in (path, sidecar) if p.is_file())
    return files


def _vacuum(spark, table: Path, retention_hours: float) -> None:
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, str(table)).vacuum(float(retention_hours))


@contextmanager
def _vacuum_conf(spark, short_retention: bool) -> Iterator[None]:
    """No history entries for VACUUM, file listing in as many tasks as the session has
    cores, the retention check lifted only for a short window (already allowed by the
    caller). The session's own settings come back afterwards."""
    wanted = {
        VACUUM_LOGGING: "false",
        LISTING_PARALLELISM: str(max(1, spark.sparkContext.defaultParallelism)),
    }
    if short_retention:
        wanted[RETENTION_CHECK] = "false"
    before = {key: spark.conf.get(key, None) for key in wanted}
    for key, value in wanted.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
