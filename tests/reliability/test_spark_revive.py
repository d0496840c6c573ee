"""The test session's Spark JVM, killed for real, is replaced behind the same session object
(tests/conftest.py), so one lost JVM does not fail every later Spark test."""

from __future__ import annotations

import signal

import pytest
from spark_session import jvm_exit_code, revive_spark

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_a_killed_jvm_is_replaced_behind_the_same_session(spark, settings, request):
    from pyspark import SparkContext

    assert spark.range(3).count() == 3
    process = SparkContext._gateway.proc
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert jvm_exit_code() == -signal.SIGKILL

    with pytest.warns(UserWarning, match=r"exited with status -9 before .*test_spark_revive"):
        revive_spark(settings, request.node.nodeid)
    assert jvm_exit_code() is None
    assert spark.range(5).count() == 5  # the object the tests hold works again
    assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"
