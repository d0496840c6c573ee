"""Flow serve-model: the OpenAI-compatible model server (infra/serving.py) as a flow run.

The run loads the model (``models:/genai-tabledoc@champion`` by default, or any local HF dir)
and serves ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models`` and ``/health`` (and,
with ``rag_preset``, the RAG chain's ``/answer``) until it is cancelled (cancelling it in the
Prefect UI stops the process, and the server with it).
``genai serve`` starts the same server in the foreground without Prefect.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from infra.serving import DEFAULT_BATCH_WINDOW_MS, DEFAULT_MAX_BATCH, ServerLimits
from pipelines.shared.presets import config_or_preset

FLOW_NAME = "serve-model"


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "models:/genai-tabledoc@champion"  # a models:/ URI or a local HF dir
    model_name: str | None = None  # what clients send as "model"; default: URI minus models:/
    host: str = "127.0.0.1"  # this machine only; another address needs api_key_env (or
    # allow_no_auth)
    port: int = Field(8000, ge=1, le=65535)  # Prefect has 4200 and MLflow 5000
    max_batch: int = Field(DEFAULT_MAX_BATCH, ge=1)  # requests per model call, at most
    batch_window_ms: float = Field(DEFAULT_BATCH_WINDOW_MS, ge=0)  # wait for a batch to fill, ms
    api_key_env: str | None = None  # name of the env var with the bearer token clients send
    allow_no_auth: bool = False  # serve a non-loopback host without a key: anyone may call it
    limits: ServerLimits = ServerLimits()  # body size, prompts, n, stops, tokens, queue
    torch_threads: int | None = Field(None, ge=1)  # model's CPU threads; None: all cores but one
    rag_preset: str | None = None  # configs/rag/<name>.yaml: also serve POST /answer over its
    # index, answered by the served model (e.g. model models:/genai-rag@champion)


@flow(name=FLOW_NAME, log_prints=True)
def serve_model(config: ServeConfig | None = None, preset: str | None = None) -> None:
    """Serve until cancelled (a long-running run by design: it never completes on its own);
    ``config``, or ``preset`` (configs/serve_model/<name>.yaml)."""
    config = config_or_preset(ServeConfig, "serve_model", config, preset)
    print(f"serving {config.model} on http://{config.host}:{config.port}/v1 until cancelled")
    serve_project_model(
        config.model,
        config.host,
        config.port,
        rag_preset=config.rag_preset,
        model_name=config.model_name,
        max_batch=config.max_batch,
        batch_window_ms=config.batch_window_ms,
        api_key_env=config.api_key_env,
        allow_no_auth=config.allow_no_auth,
        limits=config.limits,
        torch_threads=config.torch_threads,
    )


def serve_project_model(
    model: str, host: str, port: int, rag_preset: str | None = None, **options
) -> None:
    """The server around ``model``, chats rendered in the project's instruction template, plus
    ``POST /answer`` over ``rag_preset``'s index when given (what the flow and `genai serve`
    both run); ``options`` go to ``infra.serving.serve``."""
    from infra.serving import answer_router, serve
    from pipelines.rag.config import preset_chain
    from pipelines.shared import templates

    routers = [answer_router(preset_chain(rag_preset, model))] if rag_preset else []
    serve(model, host, port, routers=routers, template=templates, **options)
