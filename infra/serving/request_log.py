"""One log line per request — id, method, route, status, latency — and the request's id in the
``X-Request-Id`` response header and in every error body. Never the body, the query string or
any header (the bearer key is one): only what the line names."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.serving.errors import REQUEST_ID, OpenAIError

log = logging.getLogger(__name__)

HEADER = "x-request-id"
# A client's own id is kept when it cannot garble a log line: short, no spaces or controls.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestLog:
    """The app's outermost middleware, so that refusals (401, 413) are logged and carry an
    id too; an exception no handler answered is answered here, a generic 500 with the id,
    and still raised, so that uvicorn logs its traceback."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = incoming_id(scope) or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        status: int | None = None
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status is None:
                error = OpenAIError(500, "internal server error", "server_error")
                await error.response()(scope, receive, send_with_id)
            raise
        finally:
            log.info(
                "request %s %s %s %s %.1f ms",
                request_id,
                scope["method"],
                route_path(scope),
                status or "-",  # "-": none sent (the client went away)
                1000 * (time.perf_counter() - started),
            )
            REQUEST_ID.reset(token)


def incoming_id(scope: Scope) -> str | None:
    sent = Headers(scope=scope).get(HEADER)
    return sent if sent and _SANE_ID.fullmatch(sent) else None


def route_path(scope: Scope) -> str:
    """The matched route's template (``/v1/models/{model_id:path}``: ids in paths stay out of
    the log), else the path as sent — still percent-encoded, so it cannot break the line."""
    route = getattr(scope.get("route"), "path", None)
    return route or scope.get("raw_path", scope["path"].encode())[:200].decode("latin-1")
