"""The test session's SparkSession: started once, and replaced behind the same object when
its JVM has ended between tests (see ``revive_spark``)."""

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


def revive_spark(settings, where: str) -> None:
    """When the session's JVM has ended between tests (the OS reclaiming memory on a loaded
    CI machine, say), start a new one behind the same session object and say so in the
    warnings summary with its exit status. A JVM that dies during a test still fails that
    test through its own Spark calls."""
    import warnings

    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    code = jvm_exit_code()
    dead = SparkSession._instantiatedSession
    if code is None or dead is None:
        return
    warnings.warn(
        f"the Spark JVM had exited with status {code} before {where}; a new one was started",
        stacklevel=1,
    )
    # pyspark keeps the dead JVM's handles in class attributes: forget them, start afresh
    SparkContext._active_spark_context = SparkContext._gateway = SparkContext._jvm = None
    SparkSession._instantiatedSession = SparkSession._activeSession = None
    fresh = start_spark(settings)
    dead.__dict__.update(fresh.__dict__)  # tests and fixtures hold the old session object
    SparkSession._instantiatedSession = SparkSession._activeSession = dead
