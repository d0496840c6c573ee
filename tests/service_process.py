"""A server the tests start as a process of its own (its own process group, its output in a
log file), and the wait until it answers its health URL."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(
    command: list[str], env: dict, log: Path, health: str, cwd: Path | None = None
) -> subprocess.Popen:
    """The process, once ``health`` answers 200; RuntimeError with its log's end if it
    exits or stays silent for 3 minutes."""
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{command[0]} did not answer {health}: {log.read_text()[-2000:]}")
