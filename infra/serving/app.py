"""The model server: one FastAPI app speaking OpenAI's HTTP API over one in-process model.

- ``POST /v1/chat/completions`` and ``POST /v1/completions``: OpenAI's request and response
  shapes; ``"stream": true`` answers with server-sent events (``infra.serving.replies``).
- ``GET /v1/models`` (and ``/v1/models/{id}``): the one model served.
- ``GET /health``: liveness, plus the batcher's counters (requests, model batches, queue).
- ``POST /answer`` (with ``routers=[answer_router(chain)]``): the RAG chain's answer.
Later stages add routes with ``create_app(..., routers=[...])``; they find the model at
``app.state.llm`` and submit generations to ``app.state.batcher``, so they share its batches.

OpenAI defaults. ``temperature`` defaults to 1 as on OpenAI (send 0 for greedy); an omitted
``seed`` is 0, so that requests without one share batches (and are reproducible); ``max_tokens``
defaults to 256; ``n`` choices per prompt (a list of prompts on ``/v1/completions`` gives
``n`` for each; streaming too); prompt + max_tokens must fit the model's context. Unknown
fields, bad values and a wrong model name are refused in OpenAI's error shape (400, 404), each
error body carrying the request's id.

Limits (``guards.ServerLimits``, ``create_app(limits=…)``; each refusal names its setting): the
request body (1 MiB: 413, counted as it arrives, so a chunked body is cut off too), prompts per
request (256), ``n`` (8), stop sequences (16, of 256 characters each), tokens per request
(prompt tokens + n * max_tokens over all prompts: 65,536), the ``/answer`` question (4,000
characters): 400; generations waiting for the model (1,024): 429 with ``Retry-After``. On
SIGTERM or Ctrl-C the server stops accepting, lets the requests in flight finish (up to
``graceful_shutdown_s``) and the batcher finishes what it holds before it stops.

Safety. No API key by default, and then only a loopback address is served (another needs
``allow_no_auth``); with a key, every route but ``GET /health`` — ``/v1``, ``/answer``, added
routers, ``/docs``, ``/openapi.json``, unknown paths — needs ``Authorization: Bearer <key>``
(compared in constant time; 401 otherwise). The log has one line per request (id, method, route,
status, latency; uvicorn's access log is off), never a body, a prompt, a completion or a header;
error messages never show the server's file paths. Models load from local files only
(``infra.registry.model_dir``): nothing is downloaded."""

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
from infra.logs import configure_logging
from infra.serving.batching import DEFAULT_BATCH_WINDOW_MS, DEFAULT_MAX_BATCH, Batcher
from infra.serving.chat import InstructionTemplate
from infra.serving.errors import install_error_handlers
from infra.serving.guards import (
    BearerAuth,
    BodyLimit,
    ServerLimits,
    api_key_from_env,
    auth_summary,
    check_exposure,
)
from infra.serving.openai_routes import OWNER, openai_router
from infra.serving.request_log import RequestLog

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 30.0  # how long requests in flight may take to finish at shutdown


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
    limits: ServerLimits | None = None,
) -> FastAPI:
    """The app around a loaded model, or around a ``models:/`` URI or HF dir loaded now
    (a missing dir or unknown model fails here, naming it). ``routers`` are included as they
    are (later stages' endpoints); ``api_key`` guards every route but ``GET /health``;
    ``template`` renders chats for models without a chat template (``infra.serving.chat``);
    ``limits`` bound what one request may ask (``ServerLimits()``'s defaults)."""
    limits = limits or ServerLimits()
    if isinstance(llm_or_model, TransformersLLM):
        llm = llm_or_model
        model_name = model_name or default_model_name(llm.model_dir)
    else:
        llm = load_llm_dir(llm_or_model)
        model_name = model_name or default_model_name(llm_or_model)
    batcher = Batcher(llm, max_batch, batch_window_ms, limits.max_queue)

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
    app.state.template, app.state.limits = template, limits
    install_error_handlers(app)
    # The last added runs first: ids and the log line for every request, then the key, then
    # the body's size (callers without the key learn nothing, not even the limits).
    app.add_middleware(BodyLimit, limits=limits)
    if api_key is not None:
        app.add_middleware(BearerAuth, api_key=api_key)
    app.add_middleware(RequestLog)

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

    app.include_router(openai_router())
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
    allow_no_auth: bool = False,
    limits: ServerLimits | None = None,
    graceful_shutdown_s: float = GRACEFUL_SHUTDOWN_S,
    log_level: str = "info",
    routers: Sequence[APIRouter] = (),
    template: InstructionTemplate | None = None,
    torch_threads: int | None = None,
) -> None:
    """Load the model and serve it until interrupted (Ctrl-C, SIGTERM, flow cancellation).
    A non-loopback ``host`` needs a key (``api_key_env``) or ``allow_no_auth``.
    ``torch_threads`` (default ``model_threads()``) is the model's CPU thread count."""
    import uvicorn

    configure_logging(verbose=log_level == "debug")
    api_key = api_key_from_env(api_key_env)
    check_exposure(host, api_key, allow_no_auth)
    sock = bind_socket(host, port)  # before the model loads: a taken port fails at once
    try:
        set_model_threads(torch_threads or model_threads())
        app = create_app(
            model_ref,
            model_name,
            max_batch=max_batch,
            batch_window_ms=batch_window_ms,
            api_key=api_key,
            routers=routers,
            template=template,
            limits=limits,
        )
        log.info(
            "serving %s as %r on http://%s:%d/v1", model_ref, app.state.model_name, host, port
        )
        log.info(auth_summary(host, api_key))
        log.info("model threads: %d of %d cores", _torch_threads(), usable_cores())
        uvicorn.Server(server_config(app, log_level, graceful_shutdown_s)).run(sockets=[sock])
    finally:
        sock.close()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or taskset sets it)."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def model_threads() -> int:
    """All cores but one for the model's CPU work: the event loop, HTTP parsing, streaming and
    the token-counting thread keep one core. With every core in torch's pool, a machine shared
    with other work starves some requests (docs/BENCHMARKS.md, serve_load on 2 cores: p99/p50
    32 with two threads beside other jobs, 1.7 with one); alone, two threads give 1.2x the
    throughput of one with both tails in the goal — ``torch_threads`` for a dedicated host."""
    return max(1, usable_cores() - 1)


def set_model_threads(threads: int) -> None:
    import torch

    if threads < 1:
        raise ValueError(f"torch_threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def server_config(
    app: FastAPI, log_level: str = "info", graceful_shutdown_s: float = GRACEFUL_SHUTDOWN_S
):
    """uvicorn's settings for ``app``: logging left as ``infra.logs`` set it up (no second
    setup), no access log (``RequestLog`` writes one line per request, without secrets), and
    ``graceful_shutdown_s`` for the requests in flight to finish when told to stop."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_shutdown_s,
    )


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
