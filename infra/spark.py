"""The one SparkSession factory: Delta configured, jars cached in the workspace, no metastore.

Delta's jars are resolved from Maven Central by Spark's own Ivy resolver the first time, into
``<jars>/ivy``; the resolved list is then remembered in a small manifest so later sessions
(and test workspaces sharing ``GENAI_JARS_DIR``) start from local jars with no network at all.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

from infra.files import write_text_atomic
from infra.settings import Settings, apply_environment

SHUFFLE_PARTITIONS_LOCAL = 8  # Spark's 200 default turns small local jobs into 200 tiny tasks
LOCAL_UI_HISTORY = 100  # queries, jobs and stages the UI remembers


def delta_coordinate() -> str:
    """The Maven coordinate of the Delta jar matching the installed pyspark and delta-spark."""
    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    delta_version = importlib.metadata.version("delta-spark")
    return f"io.delta:delta-spark_{spark_minor}_2.13:{delta_version}"


def _jar_manifest(settings: Settings) -> Path:
    name = delta_coordinate().replace(":", "_")
    return settings.jars / f"{name}.jars"


def cached_delta_jars(settings: Settings) -> list[str] | None:
    """Local jar paths from an earlier resolution, or None when they must be resolved."""
    manifest = _jar_manifest(settings)
    if not manifest.exists():
        return None
    jars = manifest.read_text().split()
    return jars if jars and all(Path(j).exists() for j in jars) else None


def _remember_resolved_jars(settings: Settings) -> None:
    jars = sorted(str(p) for p in (settings.jars / "ivy" / "jars").glob("*.jar"))
    if jars:  # atomic: a concurrent reader never sees half a list
        write_text_atomic(_jar_manifest(settings), "\n".join(jars) + "\n")


def session_conf(settings: Settings, master: str | None = None) -> dict[str, str]:
    """Every SparkSession setting this project relies on, in one place."""
    scratch = settings.scratch / "spark"
    java_opts = f"-Djava.io.tmpdir={scratch} -Dderby.system.home={scratch}"
    master = master or settings.spark_master
    conf = {
        "spark.master": master,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.catalogImplementation": "in-memory",  # tables by path: no metastore_db anywhere
        "spark.sql.warehouse.dir": str(settings.home / "spark-warehouse"),
        "spark.driver.extraJavaOptions": java_opts,
        "spark.executor.extraJavaOptions": java_opts,
        "spark.ui.showConsoleProgress": "false",  # progress bars garble Prefect's logs
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",  # schema changes are explicit
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if master.startswith("local"):
        conf["spark.sql.shuffle.partitions"] = str(SHUFFLE_PARTITIONS_LOCAL)
        conf["spark.databricks.delta.snapshotPartitions"] = "2"  # tiny Delta logs: 50 is slow
        conf["spark.default.parallelism"] = str(os.cpu_count() or 2)
        # One long-lived local JVM (a worker, a server, the test session) runs thousands of
        # small queries: keep the UI history of the recent ones, not 1,000 plan graphs
        for history in ("sql.ui.retainedExecutions", "ui.retainedJobs", "ui.retainedStages"):
            conf[f"spark.{history}"] = str(LOCAL_UI_HISTORY)
    if settings.spark_loopback:
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    jars = cached_delta_jars(settings)
    if jars:
        conf["spark.jars"] = ",".join(jars)
    else:
        conf["spark.jars.packages"] = delta_coordinate()
        conf["spark.jars.ivy"] = str(settings.jars / "ivy")
    return conf


def get_spark(
    settings: Settings | None = None,
    master: str | None = None,
    app_name: str = "genai-lifecycle",
    extra_conf: dict[str, str] | None = None,
):
    """Return the process's SparkSession, creating it on first use."""
    from pyspark.sql import SparkSession

    settings = apply_environment(settings)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    settings.jars.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.appName(app_name)
    for key, value in {**session_conf(settings, master), **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if cached_delta_jars(settings) is None:
        _remember_resolved_jars(settings)
    return spark


def stop_spark() -> None:
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


if (
    __name__ == "__main__"
):  # `python -m infra.spark` resolves and caches Delta's jars (make install)
    session = get_spark(master="local[1]", app_name="fetch-delta-jars")
    session.stop()
    print(f"Delta jars for {delta_coordinate()}: {_jar_manifest(apply_environment())}")
