"""A credential inside an endpoint URL reaches the endpoint and nothing else: after a flow
run with one, no file of the workspace (MLflow store, Delta tables, logs, Prefect's database
and results) holds it, raw or percent-encoded."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from fake_openai import FakeServer

from flows.review_summaries import ReviewSummariesConfig, review_summaries

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SECRET = "Kp7wQz9xNc3vBr5tLm2s"  # random-looking, so it can only come from this test


def files_holding(roots: list[Path], needles: list[bytes]) -> list[str]:
    """Every file under ``roots`` whose bytes contain one of ``needles`` (like ``grep -a``)."""
    hits = []
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            data = path.read_bytes()
            hits += [f"{path}: {n!r}" for n in needles if n in data]
    return hits


@pytest.fixture()
def endpoint():
    server = FakeServer(lambda n, path, body: (200, {}, {"choices": [{"text": " none\n"}]}))
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_a_credential_in_an_endpoint_url_is_stored_nowhere(
    spark, prefect_server, settings, endpoint
):
    import prefect.settings
    from prefect.logging.handlers import APILogHandler

    host = endpoint.base_url.removeprefix("http://")
    config = ReviewSummariesConfig(
        reviews={"n_products": 2, "reviews_per_product": 4, "span_days": 10, "seed": 11},
        summary={
            "method": "llm",
            "model": f"http://genai:{SECRET}@{host}#m",
            "min_group_reviews": 1,
            "groups_per_batch": 8,
        },
        make_task_model="never",
    )
    result = review_summaries(config)
    for name in ("prefect.flow_runs", "prefect.task_runs"):  # the run's log lines are in
        for handler in logging.getLogger(name).handlers:  # Prefect's database before we look
            if isinstance(handler, APILogHandler):
                handler.flush()

    assert result["summary"]["groups"] > 0  # the flow ran and the endpoint answered
    sent = {r["headers"].get("Authorization") for r in endpoint.requests}
    assert sent == {"Basic " + base64.b64encode(f"genai:{SECRET}".encode()).decode()}
    assert SECRET not in result["summary"]["model"]

    database = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    roots = [
        settings.home,  # MLflow store, lake, logs, caches
        Path(database.split(":///", 1)[1]).parent,  # Prefect's database
        Path(prefect.settings.PREFECT_LOCAL_STORAGE_PATH.value()),  # Prefect's results
    ]
    needles = [s.encode() for s in {SECRET, quote(SECRET, safe=""), quote_plus(SECRET)}]
    assert files_holding(roots, needles) == []
