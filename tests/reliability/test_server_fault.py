"""Fault under load: the model server (`infra.serving`, a process of its own) is killed while
the review-summaries job is part-way through its groups in endpoint mode; restarted, the job
rerun asks only for the groups it had not finished, and its result equals an uninterrupted
run's."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from infra.lake import write_table
from infra.tracking import PromptRef
from pipelines.prompts.schema import REVIEW_FIELDS, REVIEWS
from pipelines.prompts.summaries import REVIEW_SUMMARIES, update_review_summaries
from pipelines.prompts.summariser import SummaryConfig
from pipelines.prompts.summary_prompt import PROMPT_TEMPLATE

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PRODUCTS = [f"p{i}" for i in range(3)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ModelServer:
    """`infra.serving.serve` over the model in a subprocess; one request per model call
    (max_batch 1), so what a prompt gets does not depend on what it was batched with."""

    def __init__(self, model_dir: Path):
        self.model_dir, self.port = model_dir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = (
            "import sys; from infra.serving import serve; "
            "serve(sys.argv[1], '127.0.0.1', int(sys.argv[2]), max_batch=1)"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(model_dir), str(self.port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_until_up()

    def _wait_until_up(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read().decode()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the model server did not come up")

    def requests_served(self) -> int:
        return httpx.get(f"{self.url}/health", timeout=5).json()["requests"]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self.process.stderr.close()


@pytest.fixture(scope="module")
def long_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with room for review prompts (rotary positions have no weights)."""
    target = tmp_path_factory.mktemp("long") / "tiny-model"
    shutil.copytree(tiny_model_dir, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    return target


def write_reviews(spark, root: Path) -> dict:
    monday = datetime(2024, 1, 1, 12, tzinfo=UTC)
    rows = [
        {
            "review_id": f"{product}-{i}",
            "product_id": product,
            "rating": 1 + i % 5,
            "title": "t",
            "text": f"review {i} of {product}: the battery died",
            "reviewed_at": monday + timedelta(days=7 * (i % 2)),
            "source": "test",
            "origin": "test",
        }
        for product in PRODUCTS
        for i in range(6)
    ]
    df = spark.createDataFrame(
        [tuple(r.get(f) for f in REVIEW_FIELDS) for r in rows], REVIEWS.schema
    )
    return write_table(spark, REVIEWS, df, txn_id="reviews", mode="merge", root=root)


def summarise(spark, server: ModelServer, reviews: dict, root: Path, cache: Path, txn: str):
    spec = {
        "base_url": f"{server.url}/v1",
        "model": str(server.model_dir),
        "max_retries": 0,  # the job fails at once when the server goes
        "timeout_s": 30,
    }
    return update_review_summaries(
        spark,
        reviews,
        SummaryConfig(
            method="llm", window="week", min_group_reviews=1, groups_per_batch=1, partitions=1
        ),
        llm_spec=spec,
        model_id="tiny",
        prompt=PromptRef("review-summary", 1, PROMPT_TEMPLATE),
        txn_id=txn,
        run_id=txn,
        cache_dir=cache,
        root=root,
    )


def summaries(spark, root: Path) -> dict:
    rows = spark.read.format("delta").load(str(REVIEW_SUMMARIES.path(root))).collect()
    return {(r.product_id, r.band, str(r.window_start)): r.raw for r in rows}


def cached_answers(cache: Path) -> int:
    return len(list(cache.glob("*/*.json")))


def test_a_server_killed_mid_job_costs_only_the_unfinished_groups(spark, long_model, tmp_path):
    server = ModelServer(long_model)
    try:
        reference_root = tmp_path / "reference"
        whole = summarise(
            spark, server, write_reviews(spark, reference_root), reference_root,
            tmp_path / "reference-cache", "whole",
        )  # fmt: skip
        asked_uninterrupted = server.requests_served()
        expected = summaries(spark, reference_root)
        assert whole["groups"] == len(expected) >= 6

        root, cache = tmp_path / "lake", tmp_path / "cache"
        reviews = write_reviews(spark, root)
        killer = threading.Thread(target=kill_after_answers, args=(server, cache, 2))
        killer.start()
        with pytest.raises(Exception, match=r"POST|Connect|refused|failed"):
            summarise(spark, server, reviews, root, cache, "interrupted")
        killer.join()
        assert not REVIEW_SUMMARIES.path(root).exists()  # nothing half-written is visible
        done_before = cached_answers(cache)
        assert 2 <= done_before < whole["groups"]

        server = ModelServer(long_model)  # restarted
        rerun = summarise(spark, server, reviews, root, cache, "rerun")
        assert rerun["cached_groups"] == done_before  # finished groups are not asked again
        assert server.requests_served() < asked_uninterrupted
        assert summaries(spark, root) == expected  # the same answers as without the fault
    finally:
        server.stop()


def kill_after_answers(server: ModelServer, cache: Path, answers: int) -> None:
    """SIGKILL the server once ``answers`` groups are cached (the job is part-way through)."""
    deadline = time.monotonic() + 300
    while cached_answers(cache) < answers and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
