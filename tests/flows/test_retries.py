"""Prefect retries what may pass on a second try and never a bad input (the task's retry
condition): a ValueError runs once, an OSError twice."""

from __future__ import annotations

import pytest
from prefect import flow

from tasks.common import lake_task

pytestmark = pytest.mark.slow
attempts: dict[str, int] = {}


@lake_task("flaky", timeout_seconds=60, retries=1, tags=())
def flaky(kind: str) -> dict:
    attempts[kind] = attempts.get(kind, 0) + 1
    raise {"input": ValueError, "transient": OSError}[kind](f"{kind} failure")


@flow
def run_flaky(kind: str) -> bool:
    return flaky(kind, return_state=True).is_failed()  # a state returned would fail the flow


@pytest.mark.parametrize(("kind", "tries"), [("input", 1), ("transient", 2)])
def test_only_failures_that_may_pass_are_retried(prefect_server, kind, tries):
    assert run_flaky(kind) is True
    assert attempts[kind] == tries
