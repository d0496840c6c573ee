"""Headless Chromium (Debian's, driven through its own chromedriver: nothing is downloaded)
over the real UIs: a Prefect server and an MLflow UI started for this folder on free loopback
ports, over the test session's workspace. Without chromium the tests skip, naming what to
install; a failing test leaves a screenshot under the workspace's ui-screenshots/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from service_process import free_port, start_service  # noqa: E402  (tests/ is on sys.path)

from infra.settings import tool_environment

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PAGE_TIMEOUT_S = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.ui)
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


class Service:
    """A UI server in its own process group, its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict, health: str, log_dir: Path):
        self.name, self.health = name, health
        self.log = log_dir / f"{name}.log"
        self.process = start_service(command, env, self.log, health, cwd=REPO)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="session")
def ui_settings(settings):
    """The folder's own workspace: the tiny lifecycle's tables, models and runs stay out of
    the rest of the suite's, and its MLflow UI shows only what this folder made."""
    ui = replace(settings, home=settings.home / "ui-workspace")
    ui.home.mkdir(parents=True, exist_ok=True)
    return ui


@pytest.fixture(scope="session")
def ui_env(ui_settings) -> dict:
    env = {**os.environ, **tool_environment(ui_settings), "GENAI_PROJECT_DIR": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    return env


@pytest.fixture(scope="session")
def prefect_ui(ui_env, ui_settings):
    port = free_port()
    command = [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {**ui_env, "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    service = Service(
        "prefect-ui", command, env, f"http://127.0.0.1:{port}/api/health", ui_settings.home
    )
    service.url = f"http://127.0.0.1:{port}"
    service.env = {**env, "PREFECT_API_URL": f"{service.url}/api"}
    yield service
    service.stop()


@pytest.fixture(scope="session")
def mlflow_ui(ui_env, ui_settings):
    port = free_port()
    command = [
        *(_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--backend-store-uri", ui_settings.tracking_uri),
        *("--default-artifact-root", ui_settings.mlflow_artifacts.as_uri(), "--workers", "1"),
    ]
    service = Service(
        "mlflow-ui", command, ui_env, f"http://127.0.0.1:{port}/health", ui_settings.home
    )
    service.url = f"http://127.0.0.1:{port}"
    yield service
    service.stop()


@pytest.fixture(scope="session")
def deployments(prefect_ui) -> list[dict]:
    """Every deployment of prefect.yaml, deployed the way `make up` does, on the UI's server."""
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


@pytest.fixture(scope="session")
def fault_file(ui_settings) -> Path:
    """Where the worker's flow runs look for armed fault points (infra/faults.py)."""
    return ui_settings.home / "armed-faults"


@pytest.fixture(scope="session")
def worker(prefect_ui, deployments, fault_file, ui_settings):
    """A process worker on the deployments' pool, as `make up` starts one."""
    port = free_port()
    env = {
        **prefect_ui.env,
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # picks a run up in seconds, not the default 10
        "PREFECT_WORKER_WEBSERVER_PORT": str(port),
        "GENAI_FAULT_FILE": str(fault_file),
        "GENAI_FAULT_MODE": "raise",  # an armed point fails its task; nothing is killed
    }
    command = [_bin("prefect"), "worker", "start", "--pool", "genai-process"]
    service = Service(
        "prefect-worker",
        [*command, "--with-healthcheck"],
        env,
        f"http://127.0.0.1:{port}/health",
        ui_settings.home,
    )
    yield service
    service.stop()


@pytest.fixture(scope="session")
def chromium():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "chromium and chromedriver are not installed: `sudo apt-get install -y chromium "
            "chromium-driver` (make install does it when run as root)"
        )
    os.environ["SE_AVOID_STATS"] = "true"  # selenium's usage statistics: off, as everything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()


@pytest.fixture
def browser(chromium, request, settings):
    """The session's Chromium; a screenshot of the page when the test fails."""
    yield chromium
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        shots = settings.home / "ui-screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        chromium.save_screenshot(str(shots / f"{request.node.name}.png"))


def wait_for_text(driver, texts: list[str], timeout_s: float = PAGE_TIMEOUT_S) -> str:
    """The page's text once it shows every one of ``texts`` (single-page apps render late)."""
    deadline = time.monotonic() + timeout_s
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    missing = [t for t in texts if t not in body]
    raise AssertionError(f"{driver.current_url} never showed {missing}; it showed: {body[:1500]}")
