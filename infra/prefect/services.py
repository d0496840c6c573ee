"""`genai up` / `genai down`: the local Prefect server, a process worker, the MLflow UI.

Each service runs in the background with its log and pid file under ``$GENAI_HOME/services``;
the Prefect server keeps its SQLite database in PREFECT_HOME (inside the workspace), the same
database that runs made without a server (``make demo``) write to — so they show in the UI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from infra.settings import load_settings

HOST = "127.0.0.1"
PREFECT_PORT = 4200
MLFLOW_PORT = 5000
WORK_POOL = "genai-process"
HEAVY_TAG_LIMIT = 1  # heavy (Spark/training) task runs at once: 2 cores cannot share more
PROJECT_DIR = Path(__file__).resolve().parents[2]


def api_url() -> str:
    return f"http://{HOST}:{PREFECT_PORT}/api"


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def use_running_server() -> bool:
    """Point this process at the `make up` server when it is running (call before prefect)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if healthy(f"{api_url()}/health"):
        os.environ["PREFECT_API_URL"] = api_url()
        return True
    return False


def _services_dir() -> Path:
    path = load_settings().home / "services"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _start(name: str, command: list[str], env: dict[str, str]) -> None:
    pid_file = _services_dir() / f"{name}.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        print(f"{name}: already running (pid {pid_file.read_text().strip()})")
        return
    log = open(_services_dir() / f"{name}.log", "ab")
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=PROJECT_DIR,
        start_new_session=True,
    )
    pid_file.write_text(str(process.pid))
    print(f"{name}: started (pid {process.pid}, log {log.name})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _wait_healthy(url: str, name: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if healthy(url):
            return
        time.sleep(0.5)
    raise RuntimeError(
        f"{name} did not answer {url} within {seconds:.0f} s; "
        f"see {_services_dir() / (name + '.log')}"
    )


def _prefect(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_bin("prefect"), *args],
        env=env,
        cwd=PROJECT_DIR,
        check=check,
        capture_output=True,
        text=True,
    )


def up() -> int:
    settings = load_settings()
    env = {**os.environ, "GENAI_PROJECT_DIR": str(PROJECT_DIR)}
    env.pop("PREFECT_API_URL", None)
    _start(
        "prefect-server",
        [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(PREFECT_PORT)],
        env,
    )
    _wait_healthy(f"{api_url()}/health", "prefect-server")
    env["PREFECT_API_URL"] = api_url()
    if _prefect("work-pool", "inspect", WORK_POOL, env=env, check=False).returncode != 0:
        _prefect("work-pool", "create", WORK_POOL, "--type", "process", env=env)
    _prefect("concurrency-limit", "create", "heavy", str(HEAVY_TAG_LIMIT), env=env, check=False)
    deployed = _prefect("deploy", "--all", env=env, check=False)
    if deployed.returncode != 0:
        print(deployed.stdout[-3000:], deployed.stderr[-3000:], file=sys.stderr)
        return deployed.returncode
    _start("prefect-worker", [_bin("prefect"), "worker", "start", "--pool", WORK_POOL], env)
    _start(
        "mlflow-ui",
        [
            _bin("mlflow"),
            "server",
            "--host",
            HOST,
            "--port",
            str(MLFLOW_PORT),
            "--backend-store-uri",
            settings.tracking_uri,
            "--default-artifact-root",
            settings.mlflow_artifacts.as_uri(),
            "--workers",
            "1",
        ],
        env,
    )
    _wait_healthy(f"http://{HOST}:{MLFLOW_PORT}/health", "mlflow-ui")
    print(schedule_report(deployed_schedules()))
    print(f"Prefect UI: http://{HOST}:{PREFECT_PORT}   MLflow UI: http://{HOST}:{MLFLOW_PORT}")
    return 0


def deployed_schedules() -> list[dict]:
    """Every schedule of every deployment on the `up` server: deployment (flow/name),
    schedule (cron or interval), active, id."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    rows = []
    with temporary_settings({PREFECT_API_URL: api_url()}), get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        for deployment in client.read_deployments():
            for schedule in deployment.schedules:
                rows.append(
                    {
                        "deployment": f"{flows.get(deployment.flow_id, '?')}/{deployment.name}",
                        "schedule": _describe(schedule.schedule),
                        "active": schedule.active,
                        "id": str(schedule.id),
                    }
                )
    return sorted(rows, key=lambda r: r["deployment"])


def _describe(schedule) -> str:
    if getattr(schedule, "cron", None):
        return f"cron {schedule.cron} ({getattr(schedule, 'timezone', None) or 'UTC'})"
    if getattr(schedule, "interval", None):
        return f"every {schedule.interval}"
    return type(schedule).__name__


def schedule_report(rows: list[dict]) -> str:
    """What `make up` prints: which schedules now run and how to pause them."""
    width = max((len(r["deployment"]) for r in rows), default=10)
    lines = [f"{len(rows)} schedules ({sum(r['active'] for r in rows)} active):"]
    lines += [
        f"  {r['deployment']:<{width}}  {r['schedule']:<28} "
        f"{'active' if r['active'] else 'paused'}  {r['id']}"
        for r in rows
    ]
    prefect = os.path.relpath(_bin("prefect"), PROJECT_DIR)
    lines += [
        "The 15-minute feature sync only copies rows that changed (nothing changed: no Spark,",
        "a few file reads); the heavy flows run nightly or weekly, one at a time (tag heavy).",
        f"Pause one:  {prefect} deployment schedule pause <deployment> <id>",
        f"Pause all:  {prefect} deployment schedule pause --all   (resume: ... resume --all)",
    ]
    return "\n".join(lines)


def down() -> int:
    for pid_file in sorted(_services_dir().glob("*.pid")):
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)  # each service leads its own session/group
            print(f"{pid_file.stem}: stopped (pid {pid})")
        pid_file.unlink()
    return 0
