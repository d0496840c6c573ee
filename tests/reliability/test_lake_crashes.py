"""Kill the writing process for real at the lake's fault points and check what survived."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infra.lake import read_table, table_ref

pytestmark = [pytest.mark.spark, pytest.mark.slow]
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from write_batch import ROWS, SPEC  # noqa: E402


def write_in_child(root: Path, txn: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.pop("GENAI_FAULT", None)
    if fault:
        env["GENAI_FAULT"] = fault
    return subprocess.run(
        [sys.executable, str(HERE / "write_batch.py"), str(root), txn],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )  # its own process group: the kill stays there


def test_kill_after_data_files_before_commit_changes_nothing(spark, lake_dir):
    first = write_in_child(lake_dir, "batch-1")
    assert first.returncode == 0, first.stderr[-2000:]
    before = table_ref(spark, SPEC.path(lake_dir))
    rows_before = read_table(spark, before).count()

    killed = write_in_child(lake_dir, "batch-2", fault="lake.after_files")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    data_files = list(SPEC.path(lake_dir).glob("*.parquet"))
    assert data_files, "the kill should leave orphan data files behind"
    assert table_ref(spark, SPEC.path(lake_dir)) == before
    assert read_table(spark, SPEC.path(lake_dir)).count() == rows_before


def test_kill_between_quarantine_and_table_then_retry_restores_the_exact_split(spark, lake_dir):
    killed = write_in_child(lake_dir, "batch-1", fault="lake.between_tables")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert read_table(spark, SPEC.quarantine_path(lake_dir)).count() == 40
    assert read_table(spark, SPEC.path(lake_dir)).count() == 0  # created, nothing committed

    retried = write_in_child(lake_dir, "batch-1")
    assert retried.returncode == 0, retried.stderr[-2000:]
    accepted = read_table(spark, SPEC.path(lake_dir))
    quarantined = read_table(spark, SPEC.quarantine_path(lake_dir))
    assert accepted.count() + quarantined.count() == len(ROWS)
    assert quarantined.count() == 40  # the retry did not quarantine the same rows twice
    assert accepted.select("id").distinct().count() == accepted.count() == 360
