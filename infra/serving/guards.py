"""Who may call the server and how much one request may ask: the bearer-key rule (one ASGI
middleware for the whole app, compared in constant time), the key read from the environment,
the refusal to expose a keyless server beyond this machine, and ``ServerLimits``."""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from infra.serving.errors import OpenAIError

OPEN_ROUTES = {("GET", "/health")}  # the only ones a key is never asked for
LOOPBACK_NAMES = {"localhost"}


class ServerLimits(BaseModel):
    """How much one request may ask, and how many generations may wait; a request over one
    is refused (400, 413 for the body, 429 for the queue) with a message naming the setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(1 << 20, ge=1)  # request body, counted as it arrives
    max_prompts: int = Field(256, ge=1)  # prompts in one /v1/completions request
    max_n: int = Field(8, ge=1)  # choices per prompt
    max_stop_sequences: int = Field(16, ge=0)  # each is searched for after every decoding step
    max_stop_chars: int = Field(256, ge=1)  # characters in one stop sequence
    max_total_tokens: int = Field(65_536, ge=1)  # prompt tokens + n * max_tokens, all prompts
    max_queue: int = Field(1024, ge=1)  # generations waiting for the model; when full: 429
    max_question_chars: int = Field(4000, ge=1)  # POST /answer's question

    def exceeded(
        self,
        setting: str,
        what: str,
        value: int | str,
        param: str | None = None,
        status: int = 400,
    ) -> OpenAIError:
        """The refusal of ``what`` (``value`` of it) over the limit ``setting``."""
        return OpenAIError(
            status,
            f"{what}: {value}, more than the server's limit of {getattr(self, setting)} "
            f"(setting limits.{setting})",
            param=param,
            code="limit_exceeded",
        )

    def check(self, setting: str, what: str, value: int, param: str | None = None) -> None:
        if value > getattr(self, setting):
            raise self.exceeded(setting, what, value, param)

    def check_sampling(self, prompts: int, n: int, stops: Sequence[str]) -> None:
        """What a request asks for, before anything is tokenized."""
        self.check("max_prompts", "prompts in one request", prompts, "prompt")
        self.check("max_n", "n (choices per prompt)", n, "n")
        self.check("max_stop_sequences", "stop sequences", len(stops), "stop")
        longest = max(map(len, stops), default=0)
        self.check("max_stop_chars", "characters in a stop sequence", longest, "stop")

    def check_question(self, question: str) -> None:
        self.check("max_question_chars", "characters in the question", len(question), "question")


class BearerAuth:
    """With a key, every request but ``OPEN_ROUTES`` needs ``Authorization: Bearer <key>``,
    else 401. Middleware rather than a route dependency, so that one rule covers every route:
    ``/v1``, ``/answer``, any router added, FastAPI's ``/docs`` and ``/openapi.json``, and
    unknown paths (which then tell nothing about the routes)."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            error = OpenAIError(
                401,
                "missing or wrong API key (Authorization: Bearer …)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            return await error.response()(scope, receive, send)
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        if (scope["method"], scope["path"]) in OPEN_ROUTES:
            return True
        sent = Headers(scope=scope).get("authorization", "").encode("latin-1")  # the raw bytes
        # Constant time: the comparison does not tell how much of a guess was right.
        return hmac.compare_digest(sent, self.expected)


class BodyLimit:
    """A body over ``limits.max_body_bytes`` is answered 413: at once when its Content-Length
    says so, else as soon as the bytes received pass the limit (a chunked body has no length
    to check up front)."""

    def __init__(self, app: ASGIApp, limits: ServerLimits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            return await self._too_large(declared).response()(scope, receive, send)
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limits.max_body_bytes:
                raise self._too_large(f"at least {received}")  # answered by the app's handler
            return message

        await self.app(scope, counted, send)

    def _too_large(self, size: str) -> OpenAIError:
        return self.limits.exceeded("max_body_bytes", "request body bytes", size, status=413)


def api_key_from_env(name: str | None) -> str | None:
    """The key in environment variable ``name`` (the key itself never goes on a command
    line, where ``ps`` shows it); an unset or empty variable is an error, not "no key"."""
    if not name:
        return None
    key = os.environ.get(name)
    if not key:
        raise ValueError(f"environment variable {name} (--api-key-env) is unset or empty")
    return key


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(host: str, api_key: str | None, allow_no_auth: bool = False) -> None:
    """Refuse to serve beyond this machine without a key, unless told to (``allow_no_auth``):
    anyone who reaches the address could use the model."""
    if api_key is None and not allow_no_auth and not is_loopback(host):
        raise ValueError(
            f"refusing to serve on {host} without an API key: anyone who can reach it could "
            "use the model; set --api-key-env VAR (clients send Authorization: Bearer <key>), "
            "bind 127.0.0.1, or pass --allow-no-auth"
        )


def auth_summary(host: str, api_key: str | None) -> str:
    """The line the server logs at start, saying who may call it."""
    if api_key is not None:
        return "auth: bearer key required on every route but /health"
    if is_loopback(host):
        return "auth: OFF (loopback only)"
    return f"auth: OFF on {host} (--allow-no-auth): anyone who can reach it can use the model"
