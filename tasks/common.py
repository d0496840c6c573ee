"""What every task shares: cache keys, result persistence, timeouts, tags, progress.

A task's cache key hashes (1) its name, (2) its parameters — configs as JSON, upstream
manifests with their (table path, Delta table id, version) — and (3) the source of the
pipelines module it calls plus every project module that module imports. Change the data,
the config or the code and the task runs again; change nothing and a rerun reuses its result.
The same key is the Delta transaction id of the task's writes, so a retried write is a no-op.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE as NO_CACHE_POLICY  # noqa: F401  (re-exported)

PROJECT_PACKAGES = ("pipelines", "infra")
UNCACHED_PARAMETERS = ("parent_run",)  # the flow's MLflow run differs per flow run
HEAVY = "heavy"  # tag shared by Spark/training tasks: a concurrency limit on it serialises them


@cache
def code_fingerprint(module: str) -> str:
    """Hash of a project module's source and of every project module it imports, transitively."""
    sources = project_sources(module)
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return digest.hexdigest()


def project_sources(module: str) -> dict[str, str]:
    """Source text of a module and of the project modules it imports, by module name."""
    seen: dict[str, str] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        spec = _find_module(name)
        if spec is None or spec.origin is None:
            continue
        source = Path(spec.origin).read_text()
        seen[name] = source
        pending.extend(_project_imports(source, name))
    return seen


def _project_imports(source: str, module: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in found if name.split(".")[0] in PROJECT_PACKAGES and name != module]


def _find_module(name: str):
    """The module's spec, or None for names that are not modules (``from m import function``)."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def jsonable(value):
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def task_key(task_name: str, pipelines_module: str, parameters: dict) -> str:
    from infra.settings import load_settings

    payload = {
        "task": task_name,
        "workspace": str(load_settings().home),  # results point into this workspace's lake
        "parameters": {
            k: jsonable(v) for k, v in parameters.items() if k not in UNCACHED_PARAMETERS
        },
        "code": code_fingerprint(pipelines_module),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"{task_name}-{hashlib.sha256(blob).hexdigest()[:32]}"


def lake_task(
    name: str,
    pipelines_module: str,
    timeout_seconds: float,
    retries: int = 1,
    tags: tuple[str, ...] = (HEAVY,),
):
    """Decorate a task that calls one pipelines function and returns a JSON manifest."""

    def key_fn(context, parameters):
        return task_key(name, pipelines_module, parameters)

    return task(
        name=name,
        cache_key_fn=key_fn,
        persist_result=True,
        result_serializer="json",  # manifests are small JSON documents, readable on disk
        timeout_seconds=timeout_seconds,
        retries=retries,
        retry_delay_seconds=5,
        tags=list(tags),
        log_prints=True,
    )


class Progress:
    """A Prefect progress artifact that a pipelines function advances through a callback."""

    def __init__(self, description: str):
        from prefect.artifacts import create_progress_artifact

        self._id = create_progress_artifact(progress=0.0, description=description)

    def __call__(self, fraction: float, message: str = "") -> None:
        from prefect import get_run_logger
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self._id, progress=round(100 * min(max(fraction, 0.0), 1.0), 1))
        if message:
            get_run_logger().info("%3.0f%% %s", 100 * fraction, message)


def current_txn_id() -> str:
    """The running task's cache key: the Delta transaction id of the writes it makes."""
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    return context.task.cache_key_fn(context, context.parameters)


def run_step(name: str, parent_run: str | None, config, step) -> dict:
    """Run ``step(spark) -> manifest`` inside an MLflow child run of the flow's run.

    The run gets the config as params, the manifest's tables (inputs and outputs, with Delta
    versions) as lineage, its stats as metrics; the manifest gains the run's id.
    """
    from infra.spark import get_spark

    spark = get_spark()
    with tracked_step(name, parent_run, config) as run:
        return log_manifest(run, step(spark))


@contextmanager
def tracked_step(name: str, parent_run: str | None, config=None):
    """The task's MLflow run: a child of the flow's run (or its own experiment), tagged with
    the Prefect flow and task run, with the config as params. Yields ``infra.tracking.Run``."""
    from infra import tracking

    experiment = tracking.experiment_of(parent_run) if parent_run else name
    with tracking.start_run(experiment, name, parent=parent_run, tags=prefect_tags()) as run:
        if config is not None:
            run.log_params(jsonable(config))
        yield run


def log_manifest(run, manifest: dict) -> dict:
    """Lineage and stats of one step in its MLflow run; returns the manifest with the run id."""
    for ref in manifest.get("inputs", []):
        run.log_table(ref, role="input")
    run.log_table(manifest, role="output")
    for side in manifest.get("outputs", {}).values():
        run.log_table(side, role="output")
    run.log_metrics(
        {
            "rows": manifest["rows"],
            "quarantined": manifest.get("quarantined", 0),
            **manifest.get("stats", {}),
        }
    )
    run.log_dict(manifest, "manifest.json")
    return {**manifest, "mlflow_run_id": run.run_id}


def prefect_tags() -> dict:
    """Tags that link an MLflow run back to the Prefect flow and task run that made it."""
    from prefect.runtime import flow_run, task_run

    tags = {
        "prefect.flow_run_id": flow_run.id,
        "prefect.flow_run_name": flow_run.name,
        "prefect.flow_run_url": flow_run.ui_url,
        "prefect.task_run_id": task_run.id,
    }
    return {k: v for k, v in tags.items() if v}


@contextmanager
def tracked_flow(experiment: str, config=None):
    """The flow run's MLflow parent run, linked both ways with the Prefect flow run.

    MLflow gets the Prefect flow run's id, name and UI URL as tags; Prefect gets a link
    artifact pointing at the MLflow run. Yields the MLflow run id for the tasks' child runs.
    """
    from prefect.artifacts import create_link_artifact
    from prefect.runtime import flow_run

    from infra import tracking

    run_name = flow_run.name or experiment
    with tracking.start_run(experiment, run_name, tags=prefect_tags()) as run:
        if config is not None:
            run.log_params(jsonable(config))
        create_link_artifact(
            key="mlflow-run",
            link=tracking.run_url(run.run_id),
            link_text=f"MLflow run {run.run_id[:8]}",
            description=f"Metrics, params and lineage of {experiment}",
        )
        yield run.run_id
