"""The test session's SparkSession: started once; a JVM that ended between tests is reported
with its exit status (``report_dead_jvm``)."""

from __future__ import annotations

import sys


def start_spark(settings):
    from infra.spark import get_spark

    return get_spark(settings, extra_conf={"spark.ui.enabled": "false"})


def jvm_exit_code() -> int | None:
    """The Spark JVM's exit status once it has ended (None: running, or never started)."""
    if "pyspark" not in sys.modules:
        return None
    from pyspark import SparkContext

    process = getattr(SparkContext._gateway, "proc", None)
    return None if process is None else process.poll()


def report_dead_jvm(where: str) -> None:
    """Fail with the Spark JVM's exit status when it has ended (the OS reclaiming memory on a
    loaded machine, say), so the run says when and how it went instead of only failing every
    later Spark test with a connection error."""
    code = jvm_exit_code()
    if code is not None:
        import pytest

        pytest.fail(f"the test session's Spark JVM had exited with status {code} before {where}")
