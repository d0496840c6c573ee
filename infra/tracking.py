"""MLflow: SQLite + local artifacts under the workspace (or a remote server by setting).

One experiment per flow; one parent run per flow run, one child run per task. Everything is
logged through explicit run ids (never MLflow's thread-local "active run"), because Prefect
may run tasks in worker threads. Secrets never reach MLflow: params whose key names a secret
are dropped, and every param, tag and trace attribute goes through ``infra.redaction`` (a
credential inside an endpoint URL is cut out of it).
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from infra.redaction import names_secret, redact
from infra.settings import Settings, apply_environment, load_settings

INVALID_NAME_CHARS = re.compile(r"[^\w\-. :/]")
MLFLOW_UI = "http://127.0.0.1:5000"  # `make up` serves the UI here; GENAI_MLFLOW_UI overrides


def client(settings: Settings | None = None):
    """The MLflow client of the workspace's tracking store (one per store, reused)."""
    return _client_for((settings or load_settings()).tracking_uri)


@lru_cache(maxsize=4)
def _client_for(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(name: str, settings: Settings | None = None) -> str:
    """The flow's experiment, created on first use with its artifacts under the workspace."""
    settings = apply_environment(settings)
    mlflow_client = client(settings)
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = (settings.mlflow_artifacts / name).as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it between our two calls
        return mlflow_client.get_experiment_by_name(name).experiment_id


def run_url(run_id: str) -> str:
    run = client().get_run(run_id)
    base = os.environ.get("GENAI_MLFLOW_UI", MLFLOW_UI)
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


@dataclass
class Run:
    """A handle on one MLflow run; every call names the run explicitly."""

    run_id: str

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        # never store credentials, even if a config carries one
        batch = [
            Param(metric_name(k), redact(str(v))[:6000])
            for k, v in flatten(params).items()
            if not names_secret(k)
        ]
        for start in range(0, len(batch), 100):  # MLflow's per-request limit on params
            client().log_batch(self.run_id, params=batch[start : start + 100])

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(metric_name(k), float(v), now, step or 0)
            for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for start in range(0, len(batch), 1000):
            client().log_batch(self.run_id, metrics=batch[start : start + 1000])

    def set_tags(self, tags: dict) -> None:
        mlflow_client = client()
        for key, value in tags.items():
            mlflow_client.set_tag(self.run_id, key, redact(str(value)))

    def log_table(self, ref: dict, role: str = "input") -> None:
        """Lineage: the Delta table (path + version) this run read or wrote."""
        from mlflow.data.delta_dataset_source import DeltaDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        name = "/".join(Path(ref["table"]).parts[-2:])
        source = DeltaDatasetSource(
            path=ref["table"],
            delta_table_version=ref["version"],
            delta_table_id=ref.get("table_id"),
        )
        dataset = MetaDataset(source=source, name=name, digest=f"{ref['version']}")
        tag = InputTag(key="mlflow.data.context", value=role)
        client().log_inputs(self.run_id, [DatasetInput(dataset._to_mlflow_entity(), [tag])])
        self.log_params(
            {f"{role}.{name}.path": ref["table"], f"{role}.{name}.version": ref["version"]}
        )

    def log_dict(self, data: dict, artifact_file: str) -> None:
        client().log_dict(self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        client().log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        client().log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path | str, artifact_path: str | None = None) -> None:
        client().log_artifacts(self.run_id, str(directory), artifact_path)


@contextmanager
def start_run(experiment: str, run_name: str, parent: str | None = None, tags: dict | None = None):
    """Open a run (a child when parent is given); FINISHED on success, FAILED on an error."""
    mlflow_client = client()
    all_tags = {"mlflow.runName": run_name, **{k: redact(str(v)) for k, v in (tags or {}).items()}}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    run = mlflow_client.create_run(experiment_id(experiment), tags=all_tags, run_name=run_name)
    try:
        yield Run(run.info.run_id)
    except BaseException:
        mlflow_client.set_terminated(run.info.run_id, status="FAILED")
        raise
    mlflow_client.set_terminated(run.info.run_id, status="FINISHED")


def experiment_of(run_id: str) -> str:
    mlflow_client = client()
    return mlflow_client.get_experiment(mlflow_client.get_run(run_id).info.experiment_id).name


def metric_name(key: str) -> str:
    """MLflow allows letters, digits and _ - . space : / in names ("11+" becomes "11plus")."""
    return INVALID_NAME_CHARS.sub("_", key.replace("+", "plus"))


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, default=str)
        else:
            out[name] = value
    return out


# ------------------------------------------------------------------------- prompt registry


@dataclass(frozen=True)
class PromptRef:
    """One registered prompt version: its URI (``prompts:/<name>/<version>``) and text."""

    name: str
    version: int
    template: str

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"

    def format(self, **values: str) -> str:
        """The template with its ``{{name}}`` variables filled; a missing value is an error,
        and filled text is never re-scanned (a review quoting "{{x}}" stays as written)."""

        def fill(match: re.Match) -> str:
            if match.group(1) not in values:
                raise KeyError(f"prompt {self.uri} needs a value for {{{{{match.group(1)}}}}}")
            return values[match.group(1)]

        return _PROMPT_VARIABLE.sub(fill, self.template)


_PROMPT_VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def register_prompt(name: str, template: str, message: str) -> PromptRef:
    """The newest version of prompt ``name`` when its text is ``template``, else a new
    version (so a code default is registered once, and an edited prompt gets a version)."""
    apply_environment()
    import mlflow

    latest = load_prompt(f"prompts:/{name}@latest", allow_missing=True)
    if latest is not None and latest.template == template:
        return latest
    version = mlflow.genai.register_prompt(name=name, template=template, commit_message=message)
    return PromptRef(name, int(version.version), version.template)


def load_prompt(uri: str, allow_missing: bool = False) -> PromptRef | None:
    """A prompt version by URI: ``prompts:/<name>/<version>`` or ``prompts:/<name>@<alias>``."""
    apply_environment()
    import mlflow

    version = mlflow.genai.load_prompt(uri, allow_missing=allow_missing, link_to_model=False)
    if version is None:
        return None
    return PromptRef(version.name, int(version.version), version.template)


# ---------------------------------------------------------------------------------- traces


def log_llm_traces(run_id: str, name: str, calls: list[dict]) -> int:
    """One MLflow trace per LLM call of a run: ``calls`` hold ``inputs``, ``outputs``,
    ``latency_ms``, ``prompt_tokens``, ``completion_tokens`` and any string attributes.
    The traces land in the run's experiment, linked to the run; returns how many."""
    import time

    apply_environment()
    import mlflow
    from mlflow.environment_variables import MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE

    experiment = client().get_run(run_id).info.experiment_id
    # the background exporter drops what does not fit its queue: flush before it fills
    # (a trace's export may take a few queue slots)
    per_flush = max(1, int(MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE.get()) // 4)
    now = time.time_ns()
    for index, call in enumerate(calls):
        if index and index % per_flush == 0:
            mlflow.flush_trace_async_logging()
        latency_ns = int(call.get("latency_ms", 0) * 1e6)
        attributes = {
            k: redact(str(v))
            for k, v in call.items()
            if k not in ("inputs", "outputs") and v is not None
        }
        span = mlflow.start_span_no_context(
            name,
            span_type="LLM",
            inputs=call.get("inputs"),
            attributes=attributes,
            experiment_id=experiment,
            metadata={"mlflow.sourceRun": run_id},
            start_time_ns=now - latency_ns,
        )
        span.set_outputs(call.get("outputs"))
        span.end(end_time_ns=now)
    mlflow.flush_trace_async_logging()  # export runs in the background: finish it here
    return len(calls)
