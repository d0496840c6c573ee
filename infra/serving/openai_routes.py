"""The ``/v1`` routes: models, chat completions and text completions; they read the model
from ``request.app.state`` and generate through its batcher, within ``app.state.limits``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastapi import APIRouter, FastAPI, Request

from infra.serving.chat import render_chat
from infra.serving.errors import OpenAIError
from infra.serving.guards import ServerLimits
from infra.serving.replies import respond
from infra.serving.schemas import ChatRequest, CompletionRequest, SamplingRequest

OWNER = "genai-lifecycle"


def _check_model(requested: str, served: str) -> None:
    if requested != served:
        raise OpenAIError(
            404,
            f"The model '{requested}' does not exist: this server serves '{served}'",
            param="model",
            code="model_not_found",
        )


def openai_router() -> APIRouter:
    """The ``/v1`` routes; they read the model from ``request.app.state``."""
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def list_models(request: Request):
        return {"object": "list", "data": [_model_card(request.app)]}

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str, request: Request):
        _check_model(model_id, request.app.state.model_name)
        return _model_card(request.app)

    @router.post("/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        _check_model(body.model, request.app.state.model_name)
        prompt, stops = render_chat(
            body.messages, request.app.state.llm.tokenizer, request.app.state.template
        )
        return await _complete(request.app, "chat", body, [prompt], stops)

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, request.app.state.model_name)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        return await _complete(request.app, "text", body, prompts)

    return router


async def _complete(
    app: FastAPI,
    kind: Literal["chat", "text"],
    body: SamplingRequest,
    prompts: list[str],
    template_stops: Sequence[str] = (),
):
    """``respond``, once the request is found within the server's limits."""
    limits: ServerLimits = app.state.limits
    limits.check_sampling(len(prompts), body.n, body.stops())  # before tokenizing anything
    prompt_tokens = await app.state.batcher.count_tokens(prompts)
    limits.check(
        "max_total_tokens",
        "tokens asked for (prompt tokens + n * max_tokens, all prompts)",
        prompt_tokens + len(prompts) * body.n * body.max_new_tokens(),
        "max_tokens",
    )
    return await respond(app, kind, body, prompts, template_stops)


def _model_card(app: FastAPI) -> dict:
    return {
        "id": app.state.model_name,
        "object": "model",
        "created": app.state.created,
        "owned_by": OWNER,
    }
