"""Where a run writes and which outside systems it talks to.

Everything a run writes lives under one workspace, ``$GENAI_HOME`` (default ``./.genai``).
Settings are read when asked for (never at import time), so tests and the CLI can point a
process at another workspace by setting the environment first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path  # the workspace root; every path below hangs off it unless overridden
    spark_master: str = "local[*]"  # local[*] on a laptop; spark://host:7077 or k8s://… at scale
    jars_dir: Path | None = (
        None  # Delta's jars; GENAI_JARS_DIR lets test workspaces share one copy
    )
    mlflow_uri: str | None = (
        None  # None: SQLite under the workspace; else a remote tracking server
    )
    spark_loopback: bool = True  # bind Spark to 127.0.0.1 (tests, laptops); False on a cluster

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def jars(self) -> Path:
        return self.jars_dir or self.home / "jars"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def scratch(self) -> Path:
        """Tools' temp dirs (Spark local dirs, Python/JVM temp files)."""
        return self.home / "tmp"

    def path(self, *parts: str) -> Path:
        return self.home.joinpath(*parts)


def load_settings() -> Settings:
    """Read settings from the environment (GENAI_* variables)."""
    env = os.environ
    jars = env.get("GENAI_JARS_DIR")
    return Settings(
        home=Path(env.get("GENAI_HOME", ".genai")).resolve(),
        spark_master=env.get("GENAI_SPARK_MASTER", "local[*]"),
        jars_dir=Path(jars).resolve() if jars else None,
        mlflow_uri=env.get("GENAI_MLFLOW_URI") or None,
        spark_loopback=env.get("GENAI_SPARK_LOOPBACK", "1") != "0",
    )


def tool_environment(settings: Settings) -> dict[str, str]:
    """Environment that keeps every tool's files inside the workspace and every tool offline.

    Must be applied before prefect, mlflow or transformers are imported: they read some of
    these variables once, at import.
    """
    home = settings.home
    env = {
        "GENAI_HOME": str(home),
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no telemetry from the local server
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_CLIENT_METRICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # Concurrency-slot leases on disk under PREFECT_HOME, not in the server's memory: a
        # slot held by a killed run is reclaimed when its lease expires (60 s for tag slots),
        # across a server restart too, instead of staying taken for good.
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
            "prefect.server.concurrency.lease_storage.filesystem"
        ),
        "GX_ANALYTICS_ENABLED": "false",  # Great Expectations would otherwise phone home
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow 3 reports usage unless told not to
        "HF_HUB_OFFLINE": "1",  # no code path downloads weights or data at run time
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(home / "hf"),
        "TORCH_EXTENSIONS_DIR": str(home / "torch_extensions"),
        "SPARK_LOCAL_DIRS": str(settings.scratch / "spark"),
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", _current_python()),
        "TMPDIR": str(settings.scratch),
    }
    if settings.jars_dir:
        env["GENAI_JARS_DIR"] = str(settings.jars_dir)
    if settings.spark_loopback:
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
    return env


def apply_environment(settings: Settings | None = None) -> Settings:
    """Export tool_environment() into this process and create the workspace dirs."""
    settings = settings or load_settings()
    env = tool_environment(settings)
    for key in ("PREFECT_HOME", "HF_HOME", "TORCH_EXTENSIONS_DIR", "SPARK_LOCAL_DIRS", "TMPDIR"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    settings.lake.mkdir(parents=True, exist_ok=True)
    settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    from infra.redaction import install_log_redaction

    install_log_redaction()  # every project process redacts its log records, Prefect's too
    return settings


def _current_python() -> str:
    import sys

    return sys.executable


if (
    __name__ == "__main__"
):  # `eval "$(python -m infra.settings)"` exports the workspace env to a shell
    import shlex

    for key, value in tool_environment(load_settings()).items():
        print(f"export {key}={shlex.quote(value)}")
