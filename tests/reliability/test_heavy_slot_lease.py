"""A run SIGKILLed inside a `heavy` task does not keep the one heavy slot for good: its lease
(on disk under PREFECT_HOME, the workspace's setting) expires and the server frees the slot
within 90 s, with no `prefect gcl update` — and so it does when the server itself was
restarted while the lease was held (leases kept in the server's memory would be lost then,
and the slot never freed). Real processes: a Prefect server, flow processes, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from service_process import free_port, start_service  # noqa: E402  (tests/ is on sys.path)

from infra.settings import load_settings, tool_environment

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RELEASE_WITHIN_S = 90
HOLDER = """
import time
from prefect import flow, task

@task(tags=["heavy"])
def hold():
    print("holding", flush=True)
    time.sleep(3600)

@flow
def holds_heavy():
    hold()

holds_heavy()
"""


class PrefectServer:
    def __init__(self, env: dict, port: int, log: Path):
        self.env, self.port, self.log = env, port, log
        self.api = f"http://127.0.0.1:{port}/api"
        self.process = None

    def start(self) -> None:
        command = [str(Path(sys.executable).with_name("prefect")), "server", "start"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.process = start_service(command, self.env, self.log, f"{self.api}/health")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


def active_heavy_slots(api: str) -> int:
    response = httpx.get(f"{api}/v2/concurrency_limits/tag:heavy", timeout=10)
    response.raise_for_status()
    return response.json()["active_slots"]


def wait_for(predicate, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s")


@pytest.fixture
def server(tmp_path):
    home = tmp_path / "genai"
    env = {**os.environ, **tool_environment(replace(load_settings(), home=home))}
    env.pop("PREFECT_API_URL", None)
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    server = PrefectServer(env, free_port(), tmp_path / "server.log")
    server.start()
    env["PREFECT_API_URL"] = server.api
    subprocess.run(
        [
            str(Path(sys.executable).with_name("prefect")),
            "concurrency-limit",
            "create",
            "heavy",
            "1",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    yield server
    if server.process.poll() is None:
        server.kill()


def start_holder(server: PrefectServer, tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen(
        [sys.executable, str(script)],
        env={**server.env, "PREFECT_API_URL": server.api},
        stdout=(tmp_path / "holder.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(lambda: active_heavy_slots(server.api) == 1, 120, "the heavy slot taken")
    return holder


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def test_a_killed_run_frees_the_heavy_slot_even_across_a_server_restart(server, tmp_path):
    assert server.env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"].endswith(".filesystem")

    kill(start_holder(server, tmp_path))
    assert active_heavy_slots(server.api) == 1  # taken by a process that is gone
    waited = wait_for(
        lambda: active_heavy_slots(server.api) == 0, RELEASE_WITHIN_S, "the slot freed"
    )
    print(f"slot freed {waited:.0f} s after the kill")

    holder = start_holder(server, tmp_path)
    server.kill()  # the server goes down while the lease is held
    kill(holder)
    server.start()
    assert active_heavy_slots(server.api) == 1
    waited = wait_for(
        lambda: active_heavy_slots(server.api) == 0,
        RELEASE_WITHIN_S,
        "the slot freed after the restart",
    )
    print(f"slot freed {waited:.0f} s after the restart")
