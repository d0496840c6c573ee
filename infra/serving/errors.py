"""Errors answered in OpenAI's shape, ``{"error": {message, type, param, code, request_id}}``,
for every route of the app: validation problems name their field, model errors never quote the
prompt, and text from inside the server never shows its file paths."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from contextvars import ContextVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# The id of the request being answered (set by ``infra.serving.request_log``): every error
# body carries it, so a client's report can be matched with the server's log line.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

# An absolute path of two or more parts (``/home/me/x.parquet``, ``~/x/y``, ``C:\x``); not a
# URL's path (after ``:`` or ``/``), nor a route like ``/answer``, nor ``and/or``.
_PART = r"[^\s/\\'\"`()\[\]{}<>,;]"  # a path ends at a space, quote, bracket or , ;
_PATH = re.compile(rf"(?<![\w/:.~-])~?/{_PART}+(?:/{_PART}*)+|\b[A-Za-z]:\\[^\s'\"`]+")


class OpenAIError(StarletteHTTPException):
    """An error answered in OpenAI's shape. An HTTPException, so that FastAPI passes it on
    when it is raised while the body is read (``guards.BodyLimit``) instead of making it a
    generic 400, and so that ``headers`` (``Retry-After``) go out with it."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(status, message, headers)
        self.message, self.type, self.param, self.code = message, type, param, code

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
                "request_id": REQUEST_ID.get(),
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


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
        return OpenAIError(err.status_code, str(err.detail), kind, headers=err.headers).response()


def as_openai_error(err: BaseException) -> OpenAIError:
    if isinstance(err, OpenAIError):
        return err
    if isinstance(err, asyncio.CancelledError):
        return OpenAIError(503, "the server is shutting down", "server_error")
    # The type and message only: a model error does not quote the prompt.
    return OpenAIError(
        500, f"generation failed: {type(err).__name__}: {client_message(err)}", "server_error"
    )


def error_message(err: BaseException) -> str:
    return err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else str(err)


def client_message(err: BaseException) -> str:
    """``err``'s message as a client may read it: server file paths replaced."""
    return without_paths(error_message(err))


def without_paths(text: str) -> str:
    return _PATH.sub("<server path>", text)
