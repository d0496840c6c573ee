"""The model server: one FastAPI app speaking OpenAI's HTTP API over one in-process model.

- ``POST /v1/chat/completions`` and ``POST /v1/completions``: OpenAI's request and response
  shapes; ``"stream": true`` answers with server-sent events (``infra.serving.replies``).
- ``GET /v1/models`` (and ``/v1/models/{id}``): the one model served.
- ``GET /health``: liveness, plus the batcher's counters (requests, model batches, queue).
- ``POST /answer`` (with ``routers=[answer_router(chain)]``): the RAG chain's answer.
Later stages add routes with ``create_app(..., routers=[...])``; they find the model at
``app.state.llm`` and submit generations to ``app.state.batcher``, so they share its batches.

OpenAI defaults and limits. ``temperature`` defaults to 1 as on OpenAI (send 0 for greedy);
an omitted ``seed`` is 0, so that requests without one share batches (and are reproducible);
``max_tokens`` defaults to 256; ``n`` must be 1 (a list of prompts gives several choices on
``/v1/completions``); prompt + max_tokens must fit the model's context. Unknown fields, bad
values and a wrong model name are refused in OpenAI's error shape (400, 404).

Safety. No API key by default (the server binds 127.0.0.1); with one, every ``/v1`` call needs
``Authorization: Bearer <key>``. Prompts and completions are never logged: only counts and
timings. Models load from local files only (``infra.registry.model_dir``): nothing is
downloaded."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from infra.llm import TransformersLLM, load_llm_dir
from infra.serving.batching import DEFAULT_BATCH_WINDOW_MS, DEFAULT_MAX_BATCH, Batcher
from infra.serving.chat import InstructionTemplate
from infra.serving.errors import install_error_handlers
from infra.serving.guards import api_key_from_env
from infra.serving.openai_routes import OWNER, openai_router

log = logging.getLogger(__name__)


def default_model_name(model_ref: str | Path) -> str:
    """What clients call the model: the registry name (``genai-tabledoc@champion``) for a
    ``models:/`` URI, the path as given for a local dir."""
    return str(model_ref).removeprefix("models:/")


def create_app(
    llm_or_model: TransformersLLM | str | Path,
    model_name: str | None = None,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
    api_key: str | None = None,
    routers: Sequence[APIRouter] = (),
    template: InstructionTemplate | None = None,
) -> FastAPI:
    """The app around a loaded model, or around a ``models:/`` URI or HF dir loaded now
    (a missing dir or unknown model fails here, naming it). ``routers`` are included as they
    are (later stages' endpoints); ``api_key`` guards the ``/v1`` routes only; ``template``
    renders chats for models without a chat template (``infra.serving.chat``)."""
    if isinstance(llm_or_model, TransformersLLM):
        llm = llm_or_model
        model_name = model_name or default_model_name(llm.model_dir)
    else:
        llm = load_llm_dir(llm_or_model)
        model_name = model_name or default_model_name(llm_or_model)
    batcher = Batcher(llm, max_batch, batch_window_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title=f"{OWNER} model server", lifespan=lifespan)
    app.state.llm, app.state.model_name, app.state.batcher = llm, model_name, batcher
    app.state.created = int(time.time())
    app.state.template = template
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "requests": batcher.requests,
            "batches": batcher.batches,
            "largest_batch": batcher.largest_batch,
            "queued": batcher.queued,
        }

    app.include_router(openai_router(api_key))
    for router in routers:
        app.include_router(router)
    return app


def serve(
    model_ref: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
    api_key_env: str | None = None,
    log_level: str = "info",
    routers: Sequence[APIRouter] = (),
    template: InstructionTemplate | None = None,
) -> None:
    """Load the model and serve it until interrupted (Ctrl-C, SIGTERM, flow cancellation)."""
    import uvicorn

    api_key = api_key_from_env(api_key_env)
    sock = bind_socket(host, port)  # before the model loads: a taken port fails at once
    try:
        app = create_app(
            model_ref,
            model_name,
            max_batch=max_batch,
            batch_window_ms=batch_window_ms,
            api_key=api_key,
            routers=routers,
            template=template,
        )
        log.info(
            "serving %s as %r on http://%s:%d/v1", model_ref, app.state.model_name, host, port
        )
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on (host, port), or an OSError saying which address is taken.
    Listening at once claims the port (two bound, idle sockets could share it); connections
    made while the model loads wait in the backlog."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does its own
    try:
        sock.bind((host, port))
        sock.listen()
    except OSError as err:
        sock.close()
        raise OSError(
            f"cannot serve on {host}:{port}: {err.strerror}; choose another port"
        ) from None
    return sock
