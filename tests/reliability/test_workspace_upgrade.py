"""A workspace made by the code before the stage-package move keeps working after it: its
registered model is served, the first rerun recomputes what the new module names invalidate
(without failing), and the rerun after that is all Cached.

The old code is the commit before the move, taken from this clone's own history and run in a
subprocess with that tree first on its path; the new code runs the same script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark]

REPO = Path(__file__).resolve().parents[2]
PRE_MOVE_COMMIT = "a974037886e7257422629713e3bdf87f747104f0"  # last commit of the flat layout
OLD_TREE_PATHS = ("pipelines", "infra", "tasks", "flows", "tests", "configs")

SCRIPT = r"""
import json, os, sys
from pathlib import Path

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "tests")]
from infra.settings import apply_environment

apply_environment()
from prefect.testing.utilities import prefect_test_harness

from flows.prepare_corpus import PrepareCorpusConfig, prepare_corpus

out = {"tree": os.getcwd()}
if sys.argv[1] == "make-model":
    from tiny_model import build_tiny_model_and_tokenizer
    from infra import registry, tracking

    model = build_tiny_model_and_tokenizer(Path(os.environ["GENAI_HOME"]) / "tiny")
    with tracking.start_run("workspace-upgrade", "tiny-model") as run:
        version = registry.register_model_dir("genai-tabledoc", model, run.run_id)
    registry.set_alias("genai-tabledoc", version)
if sys.argv[1] == "serve":
    from fastapi.testclient import TestClient

    from infra.serving import create_app
    from pipelines.shared import templates

    app = create_app("models:/genai-tabledoc@champion", template=templates)
    with TestClient(app) as client:
        reply = client.post("/v1/completions", json={
            "model": "genai-tabledoc@champion", "prompt": "CREATE TABLE", "max_tokens": 3,
            "temperature": 0})
    out["serve_status"], out["serve_body"] = reply.status_code, reply.json()

config = PrepareCorpusConfig.model_validate(
    {"corpus": {"packages": ["idna"]}, "mix": {"byte_budget": 100000}})


def rerun():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    state = prepare_corpus(config, return_state=True)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return {"completed": state.is_completed(),
            "states": {r.name.rsplit("-", 1)[0]: r.state.name for r in runs},
            "mix_rows": state.result()["rows"] if state.is_completed() else None}


with prefect_test_harness(server_startup_timeout=180):
    out["runs"] = [rerun() for _ in range(1 if sys.argv[1] == "make-model" else 2)]
print("RESULT " + json.dumps(out, default=str))
"""


def old_tree(into: Path) -> Path:
    """The pre-move code, extracted from git (the clone's history holds it)."""
    found = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{PRE_MOVE_COMMIT}^{{commit}}"],
        capture_output=True,
    )
    if found.returncode != 0:
        pytest.skip(
            f"commit {PRE_MOVE_COMMIT[:8]} (the pre-move code) is not in this clone's "
            "history: a shallow clone cannot run the upgrade test"
        )
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PRE_MOVE_COMMIT, *OLD_TREE_PATHS],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_script(tree: Path, workspace: Path, mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GENAI_FAULT"))}
    env.update(
        GENAI_HOME=str(workspace),
        PYTHONPATH=str(tree),
        PYTHONSAFEPATH="1",
        GENAI_JARS_DIR=os.environ.get("GENAI_JARS_DIR", str(REPO / ".genai" / "jars")),
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=tree,
        env=env,
        text=True,
        capture_output=True,
        timeout=900,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["tree"] == str(tree)
    return result


@pytest.mark.timeout(1800)  # two subprocesses, each a Spark session and a Prefect server
def test_a_workspace_from_before_the_move_serves_and_reruns(tmp_path):
    old = old_tree(tmp_path / "old")
    assert (old / "pipelines" / "synth.py").is_file()  # really the flat layout
    workspace = tmp_path / "workspace"

    made = run_script(old, workspace, "make-model")["runs"][0]
    assert made["completed"] and made["mix_rows"] > 0
    assert set(made["states"].values()) == {"Completed"}

    served = run_script(REPO, workspace, "serve")
    assert served["serve_status"] == 200, served["serve_body"]
    assert served["serve_body"]["choices"][0]["finish_reason"] in ("length", "stop")
    first, second = served["runs"]
    assert first["completed"] and first["mix_rows"] == made["mix_rows"]
    # every task's code moved, so none of the old cache entries may answer for it
    assert first["states"]["ingest-corpus"] == "Completed"
    assert first["states"]["mix-corpus"] == "Completed"
    assert second["completed"] and second["mix_rows"] == made["mix_rows"]
    lake_tasks = ("ingest-corpus", "clean-corpus", "dedup-corpus", "mix-corpus")
    assert [second["states"][name] for name in lake_tasks] == ["Cached"] * 4
    assert second["states"]["publish-corpus-report"] == "Completed"  # never cached: a report
