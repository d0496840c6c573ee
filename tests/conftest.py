"""Shared fixtures. The test session gets its own workspace; Delta's jars are shared with the
repository's workspace (GENAI_JARS_DIR) so they are resolved once per machine, not per test run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="genai-test-"))

# Before any project or tool import: tools read some of these once, at import time.
os.environ["GENAI_HOME"] = str(_SESSION_HOME)
os.environ.setdefault("GENAI_JARS_DIR", str(REPO / ".genai" / "jars"))
os.environ.setdefault("GENAI_SPARK_MASTER", "local[2]")

from spark_session import jvm_exit_code, report_dead_jvm, start_spark  # noqa: E402

from infra.settings import apply_environment, load_settings  # noqa: E402

apply_environment()


@pytest.fixture(scope="session")
def settings():
    return load_settings()


@pytest.fixture(scope="session")
def spark(settings):
    """One SparkSession for the whole test session (a JVM start costs ~7 s)."""
    session = start_spark(settings)
    yield session
    if jvm_exit_code() is None:
        session.stop()


@pytest.fixture(autouse=True)
def _spark_alive(request):
    report_dead_jvm(request.node.nodeid)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """torch's thread count is process-wide: a test that serves in-process (the server sets
    it) must not change the arithmetic of later tests that compare against subprocesses."""
    import sys

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    yield
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def lake_dir(settings, request) -> Path:
    """A fresh lake folder per test, so tests never see each other's tables."""
    path = settings.home / "lakes" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny HF causal LM + tokenizer dir (safetensors), built once per test session."""
    from tiny_model import build_tiny_model_and_tokenizer  # tests/ is on sys.path

    return build_tiny_model_and_tokenizer(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def long_tiny_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with room for a stage's prompts (its 128 positions hold less than the
    Alpaca template and an answer): its config allows 1,024 positions (rotary positions have
    no weights, so the weights are the tiny model's own)."""
    import json
    import shutil

    target = tmp_path_factory.mktemp("long") / "tiny-model"
    shutil.copytree(tiny_model_dir, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
    return target
