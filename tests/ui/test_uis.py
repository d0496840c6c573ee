"""What a user looks at, in a real browser: the Prefect UI lists every deployment of
prefect.yaml with its schedule; reports/lifecycle.html renders with every image loaded.
(The runs, loss curves and models of a real lifecycle run: test_lifecycle_runs.py.)"""

from __future__ import annotations

import re

import httpx
import yaml
from conftest import REPO, wait_for_text  # noqa: E402  (tests/ui's own conftest)
from report_data import pretrain_result, tiny_png  # noqa: E402  (tests/ is on sys.path)

from infra import tracking
from pipelines.shared import lifecycle_report as report

SCHEDULE = re.compile(r"^(At |Every ).+", re.MULTILINE)


def test_the_prefect_ui_shows_every_deployment_with_its_schedule(prefect_ui, deployments, browser):
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    by_entrypoint = {d["name"] + "@" + d["entrypoint"]: d for d in declared}
    served = deployments
    assert len(served) == len(declared)

    browser.get(f"{prefect_ui.url}/deployments")
    wait_for_text(browser, ["Deployments", "every-15-min", "sync-online-features"])
    for deployment in served:
        flow = httpx.get(f"{prefect_ui.url}/api/flows/{deployment['flow_id']}").json()["name"]
        browser.get(f"{prefect_ui.url}/deployments/deployment/{deployment['id']}")
        text = wait_for_text(browser, [deployment["name"], flow, "Schedules"])
        shown = SCHEDULE.findall(text.split("Schedules", 1)[1].split("Triggers", 1)[0])
        declared_one = by_entrypoint[deployment["name"] + "@" + deployment["entrypoint"]]
        expected = len(declared_one.get("schedules") or [])
        assert len(shown) == expected, (deployment["name"], flow, text[:800])


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
