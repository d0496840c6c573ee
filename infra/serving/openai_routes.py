"""The ``/v1`` routes: models, chat completions and text completions; they read the model
from ``request.app.state`` and generate through its batcher."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request

from infra.serving.chat import render_chat
from infra.serving.errors import OpenAIError
from infra.serving.guards import bearer_check
from infra.serving.replies import respond
from infra.serving.schemas import ChatRequest, CompletionRequest

OWNER = "genai-lifecycle"


def _check_model(requested: str, served: str) -> None:
    if requested != served:
        raise OpenAIError(
            404,
            f"The model '{requested}' does not exist: this server serves '{served}'",
            param="model",
            code="model_not_found",
        )


def openai_router(api_key: str | None = None) -> APIRouter:
    """The ``/v1`` routes; they read the model from ``request.app.state``."""
    router = APIRouter(
        prefix="/v1", dependencies=[Depends(bearer_check(api_key))] if api_key else []
    )

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
        return await respond(request.app, "chat", body, [prompt], stops)

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, request.app.state.model_name)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        return await respond(request.app, "text", body, prompts)

    return router


def _model_card(app: FastAPI) -> dict:
    return {
        "id": app.state.model_name,
        "object": "model",
        "created": app.state.created,
        "owned_by": OWNER,
    }
