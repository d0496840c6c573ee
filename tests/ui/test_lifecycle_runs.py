"""A tiny lifecycle run the way users run it: a deployment on a process worker, watched and
rerun in the Prefect UI, its model and loss curve in the MLflow UI.

The pretrain deployment runs on a small gold/pretrain_mix (written here, as prepare-corpus
would) and fails in its third task, pretrain-model: a fault armed through a file that the
worker's runs read, removed as a user fixes a cause. The user presses **Retry** on the
failed flow run; the worker reruns it; the first two tasks are `Cached` (their outputs
untouched) and the run completes, registers genai-base as champion and publishes its
artifacts."""

from __future__ import annotations

import time

import httpx
import pytest
from conftest import wait_for_text  # noqa: E402  (tests/ui's own conftest)
from tiny_model import tiny_mix_rows, write_tiny_mix  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.spark

RUN_TIMEOUT_S = 240
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PRETRAIN = {
    "tokenizer": {"vocab_size": 512},
    "val_fraction": 0.15,
    "retries": 0,
    "train": {
        **dict(preset="tiny", seq_len=32, micro_batch=4, max_steps=8, warmup_steps=1),
        **dict(zero_stage=0, checkpoint_every=4, eval_every=4, eval_batches=2, seed=1),
    },
}
FIRST_TWO = ("train-tokenizer", "build-token-shards")


def deployment_id(prefect_ui, flow: str, name: str) -> str:
    response = httpx.get(f"{prefect_ui.url}/api/deployments/name/{flow}/{name}", timeout=30)
    response.raise_for_status()
    return response.json()["id"]


def start_run(prefect_ui, flow: str, name: str, parameters: dict) -> str:
    deployment = deployment_id(prefect_ui, flow, name)
    response = httpx.post(
        f"{prefect_ui.url}/api/deployments/{deployment}/create_flow_run",
        json={"parameters": parameters},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["id"]


def flow_run(prefect_ui, run_id: str) -> dict:
    response = httpx.get(f"{prefect_ui.url}/api/flow_runs/{run_id}", timeout=30)
    response.raise_for_status()
    return response.json()


def wait_until_final(prefect_ui, run_id: str, after_attempt: int = 0) -> dict:
    """The flow run once it ends an attempt later than ``after_attempt``."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run = flow_run(prefect_ui, run_id)
        if run["state_type"] in FINAL and run["run_count"] > after_attempt:
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} still {run['state_name']} after {RUN_TIMEOUT_S} s")


def task_states(prefect_ui, run_id: str) -> dict[str, str]:
    """task name -> its latest state's name, for one flow run."""
    response = httpx.post(
        f"{prefect_ui.url}/api/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
        timeout=30,
    )
    response.raise_for_status()
    return {run["name"].rsplit("-", 1)[0]: run["state"]["name"] for run in response.json()}


def outputs_of(ui_settings) -> dict[str, float]:
    """Modification times of the first two tasks' outputs: unchanged when they are reused."""
    made = [
        *(ui_settings.home / "tokenizers").rglob("*"),
        *(ui_settings.home / "tokens").rglob("*"),
    ]
    assert made, "the first two tasks wrote nothing"
    return {str(path): path.stat().st_mtime_ns for path in made}


def press_retry(browser, prefect_ui, run_id: str) -> None:
    browser.get(f"{prefect_ui.url}/runs/flow-run/{run_id}")
    wait_for_text(browser, ["Failed", "Retry"])
    browser.find_element("xpath", "//button[normalize-space()='Retry']").click()
    confirm = browser.find_elements(
        "xpath", "//div[@role='dialog']//button[normalize-space()='Retry']"
    )
    if confirm:
        confirm[0].click()


@pytest.fixture(scope="module")
def lifecycle(prefect_ui, worker, fault_file, chromium, spark, ui_settings) -> dict:
    """The pretrain run failed in its third task, fixed, and retried in the UI."""
    mix = write_tiny_mix(spark, ui_settings.lake, tiny_mix_rows(300))
    fault_file.write_text("pretrain.start\n")
    run_id = start_run(
        prefect_ui, "pretrain", "weekly", {"config": PRETRAIN, "mix": mix, "preset": None}
    )
    failed = wait_until_final(prefect_ui, run_id)
    failed_states = task_states(prefect_ui, run_id)
    before = outputs_of(ui_settings)

    fault_file.unlink()  # the user fixes the cause
    press_retry(chromium, prefect_ui, run_id)
    retried = wait_until_final(prefect_ui, run_id, after_attempt=failed["run_count"])
    return {
        "failed": failed,
        "failed_states": failed_states,
        "retried": retried,
        "retried_states": task_states(prefect_ui, run_id),
        "outputs_before": before,
        "outputs_after": outputs_of(ui_settings),
    }


def test_a_failed_run_retried_in_the_ui_reuses_its_first_two_tasks(lifecycle, prefect_ui, browser):
    assert lifecycle["failed"]["state_type"] == "FAILED"
    failed = lifecycle["failed_states"]
    assert list(failed)[:3] == [*FIRST_TWO, "pretrain-model"], failed  # in the order they ran
    assert [failed[name] for name in FIRST_TWO] == ["Completed", "Completed"], failed
    assert failed["pretrain-model"] == "Failed", failed

    assert lifecycle["retried"]["state_type"] == "COMPLETED", lifecycle["retried"]["state"]
    retried = lifecycle["retried_states"]
    assert [retried[name] for name in FIRST_TWO] == ["Cached", "Cached"], retried
    assert retried["pretrain-model"] == "Completed" and "register-base-model" in retried
    assert lifecycle["outputs_after"] == lifecycle["outputs_before"]  # not recomputed

    run_id = lifecycle["retried"]["id"]
    browser.get(f"{prefect_ui.url}/runs/flow-run/{run_id}?tab=Task+Runs")
    wait_for_text(browser, ["Completed", "Cached", "train-tokenizer", "pretrain-model"])


def test_the_flow_run_page_shows_its_task_graph_and_artifacts(lifecycle, prefect_ui, browser):
    run_id = lifecycle["retried"]["id"]
    browser.get(f"{prefect_ui.url}/runs/flow-run/{run_id}")
    wait_for_text(browser, ["pretrain", "Completed"])
    graphs = browser.find_elements("css selector", ".flow-run-graph canvas, canvas")
    assert graphs and graphs[0].size["width"] > 100, "no task graph on the flow run page"
    response = httpx.post(
        f"{prefect_ui.url}/api/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [run_id]}}},
        timeout=30,
    )
    assert {"pretrain-quality", "pretrain-report"} <= {a["key"] for a in response.json()}
    tab = "//*[not(*) and normalize-space(.)='Artifacts']"  # the tab's label, as a user sees it
    next(e for e in browser.find_elements("xpath", tab) if e.is_displayed()).click()
    wait_for_text(browser, ["Flow run", "Task runs"])  # the tasks' cards load when scrolled to
    section = browser.find_element("xpath", "//*[not(*) and normalize-space(.)='Task runs']")
    browser.execute_script("arguments[0].scrollIntoView()", section)
    wait_for_text(browser, ["pretrain-quality", "pretrain-report"])


def test_the_mlflow_ui_shows_the_loss_curve_and_the_champion(lifecycle, mlflow_ui, browser):
    client = httpx.Client(base_url=f"{mlflow_ui.url}/api/2.0/mlflow", timeout=30)
    experiment = client.get("/experiments/get-by-name", params={"experiment_name": "pretrain"})
    experiment_id = experiment.json()["experiment"]["experiment_id"]
    runs = client.post("/runs/search", json={"experiment_ids": [experiment_id]}).json()["runs"]
    parent = next(r for r in runs if "mlflow.parentRunId" not in tags_of(r))
    step = next(
        r
        for r in runs
        if r["info"]["run_name"] == "pretrain-model" and r["info"]["status"] == "FINISHED"
    )
    run_id = step["info"]["run_id"]

    browser.get(f"{mlflow_ui.url}/#/experiments/{experiment_id}/runs")
    wait_for_text(browser, [parent["info"]["run_name"]])
    browser.get(
        f"{mlflow_ui.url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/loss_curve.png"
    )
    wait_for_text(browser, ["loss_curve.png"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        images = browser.execute_script(
            "return [...document.images].filter(i => i.complete && i.naturalWidth > 200)"
            ".map(i => i.src)"
        )
        if images:
            break
        time.sleep(0.5)
    assert images, "the loss curve never rendered"
    browser.get(f"{mlflow_ui.url}/#/models/genai-base")
    wait_for_text(browser, ["genai-base", "champion"])


def tags_of(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}
