"""What a user looks at, in a real browser: the Prefect UI lists every deployment of
prefect.yaml with its schedule; the MLflow UI shows an experiment's run with its loss-curve
image and a registered model with its `champion` alias; reports/lifecycle.html renders with
every image loaded."""

from __future__ import annotations

import re
import subprocess

import httpx
import yaml
from conftest import REPO, _bin, wait_for_text  # noqa: E402  (tests/ui's own conftest)
from report_data import pretrain_result, tiny_png  # noqa: E402  (tests/ is on sys.path)

from infra import tracking
from pipelines.shared import lifecycle_report as report

SCHEDULE = re.compile(r"^(At |Every ).+", re.MULTILINE)


def deploy_all(prefect_ui) -> list[dict]:
    env = prefect_ui.env
    pool = [_bin("prefect"), "work-pool", "create", "genai-process", "--type", "process"]
    subprocess.run(pool, env=env, cwd=REPO, capture_output=True, check=False)
    deployed = subprocess.run(
        [_bin("prefect"), "--no-prompt", "deploy", "--all"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    response = httpx.post(f"{prefect_ui.url}/api/deployments/filter", json={}, timeout=30)
    response.raise_for_status()
    return response.json()


def test_the_prefect_ui_shows_every_deployment_with_its_schedule(prefect_ui, browser):
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    deployments = {d["name"] + "@" + d["entrypoint"]: d for d in declared}
    served = deploy_all(prefect_ui)
    assert len(served) == len(declared)

    browser.get(f"{prefect_ui.url}/deployments")
    wait_for_text(browser, ["Deployments", "every-15-min", "sync-online-features"])
    for deployment in served:
        flow = httpx.get(f"{prefect_ui.url}/api/flows/{deployment['flow_id']}").json()["name"]
        browser.get(f"{prefect_ui.url}/deployments/deployment/{deployment['id']}")
        text = wait_for_text(browser, [deployment["name"], flow, "Schedules"])
        shown = SCHEDULE.findall(text.split("Schedules", 1)[1].split("Triggers", 1)[0])
        declared_one = deployments[deployment["name"] + "@" + deployment["entrypoint"]]
        expected = len(declared_one.get("schedules") or [])
        assert len(shown) == expected, (deployment["name"], flow, text[:800])


def test_the_mlflow_ui_shows_the_run_its_loss_curve_and_the_champion(mlflow_ui, browser, tmp_path):
    with tracking.start_run("ui-check", "pretrain-demo") as run:
        png = tmp_path / "loss_curve.png"
        png.write_bytes(tiny_png())
        run.log_artifact(png)
        run.log_metrics({"val_loss": 4.88})
    client = tracking.client()
    client.create_registered_model("ui-base")
    version = client.create_model_version("ui-base", str(tmp_path), run_id=run.run_id)
    client.set_registered_model_alias("ui-base", "champion", version.version)
    experiment = client.get_run(run.run_id).info.experiment_id

    browser.get(f"{mlflow_ui.url}/#/experiments/{experiment}/runs")
    wait_for_text(browser, ["ui-check", "pretrain-demo"])
    browser.get(f"{mlflow_ui.url}/#/experiments/{experiment}/runs/{run.run_id}/artifacts")
    wait_for_text(browser, ["loss_curve.png"])
    browser.get(f"{mlflow_ui.url}/#/models/ui-base")
    wait_for_text(browser, ["ui-base", "champion"])


def test_the_lifecycle_report_renders_with_every_image_loaded(browser, settings, tmp_path):
    with tracking.start_run("ui-report", "pretrain") as run:
        png = tmp_path / "loss_curve.png"
        png.write_bytes(tiny_png())
        run.log_artifact(png)
    uri = "models:/ui-report-base/1"
    stage = report.stage_report("pretraining", pretrain_result(run.run_id, uri), 120.0, 240)
    page = report.render([stage], None, 120.0)
    path = report.write_report(settings.home / "reports" / report.REPORT_NAME, page)

    browser.get(path.as_uri())
    wait_for_text(browser, ["What the lifecycle made", "pretraining", "unigram"])
    images = browser.execute_script(
        "return [...document.images].map(i => [i.complete, i.naturalWidth])"
    )
    assert images and all(complete and width > 0 for complete, width in images)
