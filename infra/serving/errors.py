"""Errors answered in OpenAI's shape, ``{"error": {message, type, param, code}}``, for every
route of the app: validation problems name their field, model errors never quote the prompt."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """One line per problem, each naming its field (``messages.0.role: …``)."""
    lines, first_field = [], None
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"] if p != "body") or "body"
        first_field = first_field or where
        what = (
            "not a supported field"
            if problem["type"] == "extra_forbidden"
            else problem["msg"].removeprefix("Value error, ")
        )
        lines.append(f"{where}: {what}")
    return "; ".join(lines), first_field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, err: OpenAIError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        message, field = _validation_message(err)
        return OpenAIError(400, f"invalid request: {message}", param=field).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        kind = "invalid_request_error" if err.status_code < 500 else "server_error"
        return OpenAIError(err.status_code, str(err.detail), kind).response()


def as_openai_error(err: BaseException) -> OpenAIError:
    if isinstance(err, OpenAIError):
        return err
    if isinstance(err, asyncio.CancelledError):
        return OpenAIError(503, "the server is shutting down", "server_error")
    # The type and message only: a model error does not quote the prompt.
    return OpenAIError(500, f"generation failed: {type(err).__name__}: {err}", "server_error")


def error_message(err: BaseException) -> str:
    return err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else str(err)
