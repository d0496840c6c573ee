"""Scale-out shown: the dedup job on a real Spark standalone master + worker (loopback)
gives the same decisions as local[*]."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyspark
import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from dedup_on_master import decisions  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_class(*args: str, env: dict, log: Path) -> subprocess.Popen:
    spark_home = Path(pyspark.__file__).parent
    return subprocess.Popen(
        [str(spark_home / "bin" / "spark-class"), *args],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_log(log: Path, text: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {log} after {seconds} s:\n{log.read_text()[-2000:]}")


@pytest.fixture
def standalone_cluster(tmp_path):
    spark_home = Path(pyspark.__file__).parent
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(tmp_path / "work"),
        "SPARK_LOG_DIR": str(tmp_path),
    }
    port = free_port()
    master = spark_class(
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--webui-port",
        str(free_port()),
        env=env,
        log=tmp_path / "master.log",
    )
    url = f"spark://127.0.0.1:{port}"
    worker = None
    try:
        wait_for_log(tmp_path / "master.log", "I have been elected leader")
        worker = spark_class(
            "org.apache.spark.deploy.worker.Worker",
            url,
            "--host",
            "127.0.0.1",
            "--webui-port",
            str(free_port()),
            "--cores",
            "2",
            "--memory",
            "2g",
            env=env,
            log=tmp_path / "worker.log",
        )
        wait_for_log(tmp_path / "worker.log", "Successfully registered with master")
        yield url
    finally:
        for process in (worker, master):
            if process is not None:
                os.killpg(process.pid, 15)
                process.wait(timeout=30)


def test_dedup_on_a_standalone_cluster_matches_local(spark, standalone_cluster):
    child = subprocess.run(
        [sys.executable, str(HERE / "dedup_on_master.py"), standalone_cluster],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    line = next(x for x in child.stdout.splitlines() if x.startswith("DECISIONS "))
    on_cluster = json.loads(line.removeprefix("DECISIONS "))
    local = json.loads(json.dumps(decisions(spark)))  # tuples -> lists, as in the child's JSON
    assert on_cluster == local
    assert len(local["duplicates"]) >= 40  # the job really found the injected copies
