"""A deployment run on a real Prefect server whose parameters misspell a config field fails at
validation, naming the field: refused when the run is created (the deployment enforces its
parameter schema), and failed before any task when a run is executed anyway."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TYPO = {"config": {"chunking": {"strategy": "recursive", "sise": 128}}}  # size


def flow_run_state(flow_run_id):
    from prefect import get_client

    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).state

    return asyncio.run(read())


@pytest.mark.slow
def test_a_misspelt_parameter_fails_the_deployment_run_naming_the_field(prefect_server):
    from prefect.deployments import run_deployment
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    from flows.build_index import build_index

    build_index.to_deployment(name="strict").apply()
    with pytest.raises(PrefectHTTPStatusError, match="'sise' was unexpected"):
        run_deployment("build-index/strict", parameters=TYPO, timeout=0)

    # a deployment that does not enforce its schema: the run starts and fails at validation
    build_index.to_deployment(name="lax", enforce_parameter_schema=False).apply()
    flow_run = run_deployment("build-index/lax", parameters=TYPO, timeout=0)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    executed = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "execute", str(flow_run.id)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    state = flow_run_state(flow_run.id)
    assert state.is_failed(), (state, executed.stderr[-3000:])
    assert "chunking.sise" in state.message and "Extra inputs are not permitted" in state.message
