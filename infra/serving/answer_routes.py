"""``POST /answer``: a RAG chain's answer, sources, citations and per-step latency; retrieval
runs in a worker thread and generation shares the app's batches with the ``/v1`` routes. The
question's length is capped (``limits.max_question_chars``); the chain's errors reach the client
without the server's file paths."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from infra.serving.errors import OpenAIError, client_message
from infra.serving.replies import outcome


class AnswerRequest(BaseModel):
    """``POST /answer``: a question, optionally for a user whose features the answer uses."""

    model_config = ConfigDict(extra="forbid")

    question: str
    user_id: str | None = None
    nights: int | None = Field(None, ge=1, le=60)  # the stay the price function prices
    season: Literal["low", "shoulder", "high"] | None = None


def answer_router(chain) -> APIRouter:
    """``POST /answer`` over a RAG chain (``pipelines.rag.chain.RagChain``): retrieval and
    feature lookups run in a worker thread, generation goes through the app's batcher (so
    answers share model batches with ``/v1`` requests)."""
    from starlette.concurrency import run_in_threadpool

    router = APIRouter()

    @router.post("/answer")
    async def answer(body: AnswerRequest, request: Request):
        request.app.state.limits.check_question(body.question)
        extras = {k: v for k, v in (("nights", body.nights), ("season", body.season)) if v}
        try:
            prepared = await run_in_threadpool(chain.prepare, body.question, body.user_id, extras)
        except LookupError as err:  # an unknown user or hotel id
            raise OpenAIError(
                404, client_message(err), param="user_id", code="not_found"
            ) from None
        except ValueError as err:  # a question too long or empty
            raise OpenAIError(400, client_message(err), param="question") from None
        started = time.perf_counter()
        future = request.app.state.batcher.submit(prepared.prompt, chain.generation_params())
        await asyncio.wait([future])
        completion = outcome(future)
        return chain.finish(prepared, completion.text, 1000 * (time.perf_counter() - started))

    return router
