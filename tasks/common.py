"""What every task shares: cache keys, result persistence, timeouts, tags, progress.

A task's cache key hashes (1) its name; (2) its parameters: configs as JSON, upstream
manifests with their (table path, Delta table id, version), and for a file or folder given by
path (outside the workspace, whose files the upstream manifests name) its content; (3) its own
module's source and every project module its function reaches, transitively, with the data
files those modules read (``infra.fingerprints``). Change the data, the config or the code and
the task runs again; change nothing and a rerun reuses its result. The same key is the Delta
transaction id of the task's writes, so a retried write is a no-op.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE as NO_CACHE_POLICY  # noqa: F401  (re-exported)

from infra.fingerprints import (
    HASHES_FILE,
    MODULE_STRING,
    code_fingerprint,
    function_roots,
    is_input_path,
    path_fingerprint,
)

UNCACHED_PARAMETERS = ("parent_run",)  # the flow's MLflow run differs per flow run
HEAVY = "heavy"  # tag shared by Spark/training tasks: a concurrency limit on it serialises them


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


def keyed(value, home: Path):
    """A parameter as it enters the key: input files and folders by content as well."""
    if isinstance(value, dict):
        if "table_id" in value:  # a manifest: the Delta version pins its content
            return value
        return {k: v if is_output_field(k) else keyed(v, home) for k, v in value.items()}
    if isinstance(value, list):
        return [keyed(v, home) for v in value]
    if isinstance(value, str) and value.startswith("models:/") and "@" in value:
        return registered_version(value)  # an alias moves: the version it names now
    if is_input_path(value) and not Path(value).resolve().is_relative_to(home):
        return {
            "path": value,
            "sha256": path_fingerprint(Path(value), home / "cache" / HASHES_FILE),
        }
    return value


def task_code(fn, named: tuple[str, ...] = ()) -> str:
    """Hash of the task's module source and of the project code its function reaches, plus
    the modules its parameters name (a preset's ``"pipelines.x.y:callable"``)."""
    own, roots = _task_module(fn)
    return f"{own}:{code_fingerprint(*roots, *named)}"


def named_modules(value) -> tuple[str, ...]:
    """Project modules that strings inside a parameter name."""
    if isinstance(value, dict):
        return tuple(m for v in value.values() for m in named_modules(v))
    if isinstance(value, list):
        return tuple(m for v in value for m in named_modules(v))
    if isinstance(value, str) and (match := MODULE_STRING.match(value)):
        return (match.group(1),)
    return ()


def is_output_field(name: str) -> bool:
    """Fields that name where a task writes (``out_dir``, ``output_path``): their content is
    the task's result, never its input."""
    return name == "out" or name.startswith(("out_", "output")) or name.endswith("_out_dir")


def input_key(value):
    """What a model or dataset reference stands for now, as cache keys see it."""
    from infra.settings import load_settings

    return keyed(jsonable(value), load_settings().home.resolve())


def registered_version(uri: str) -> str:
    """``models:/name@alias`` as ``models:/name/<version>`` (unchanged when unset)."""
    from infra import registry

    name, alias = uri.removeprefix("models:/").split("@", 1)
    version = registry.alias_version(name, alias)
    return uri if version is None else f"models:/{name}/{version.version}"


@cache
def _task_module(fn) -> tuple[str, tuple[str, ...]]:
    module = inspect.getmodule(fn)
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest(), function_roots(fn)


def task_key(task_name: str, fn, parameters: dict) -> str:
    from infra.settings import load_settings

    home = load_settings().home.resolve()
    values = {k: jsonable(v) for k, v in parameters.items() if k not in UNCACHED_PARAMETERS}
    payload = {
        "task": task_name,
        "workspace": str(home),  # results point into this workspace's lake
        "parameters": {k: keyed(v, home) for k, v in values.items()},
        "code": task_code(fn, tuple(sorted(set(named_modules(values))))),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"{task_name}-{hashlib.sha256(blob).hexdigest()[:32]}"


def retry_unless_input_error(task, task_run, state) -> bool:
    """Prefect's retry condition: a bad input (``infra.errors.is_input_error``) fails the same
    way on every try, so only the other failures are retried."""
    from infra.errors import is_input_error

    err = state.data if isinstance(state.data, BaseException) else None
    if err is None:
        try:
            err = state.result(raise_on_failure=False)
        except Exception as unreadable:  # a result that cannot be read: retry, as before
            err = unreadable
    return not is_input_error(err if isinstance(err, BaseException) else None)


def lake_task(
    name: str,
    timeout_seconds: float,
    retries: int = 1,
    tags: tuple[str, ...] = (HEAVY,),
):
    """Decorate a task that calls pipelines functions and returns a JSON manifest."""

    def decorate(fn):
        def key_fn(context, parameters):
            return task_key(name, fn, parameters)

        return task(
            name=name,
            cache_key_fn=key_fn,
            persist_result=True,
            result_serializer="json",  # manifests are small JSON documents, readable on disk
            timeout_seconds=timeout_seconds,
            retries=retries,
            retry_delay_seconds=5,
            retry_condition_fn=retry_unless_input_error,
            tags=list(tags),
            log_prints=True,
        )(fn)

    return decorate


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
