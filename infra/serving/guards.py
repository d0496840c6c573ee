"""Who may call the server and how much one request may ask: the bearer-key check (compared
in constant time), the key read from the environment, and the per-request limits."""

from __future__ import annotations

import hmac
import os

from fastapi import Header

from infra.llm import GenerationParams
from infra.serving.errors import OpenAIError

DEFAULT_MAX_TOKENS = GenerationParams.model_fields["max_new_tokens"].default  # when not sent
MAX_STOP_SEQUENCES = 16  # each is searched for after every decoding step


def bearer_check(api_key: str):
    expected = f"Bearer {api_key}".encode()

    async def check(authorization: str | None = Header(None)) -> None:
        # Constant time: the comparison does not tell how much of a guess was right.
        if not hmac.compare_digest((authorization or "").encode(), expected):
            raise OpenAIError(
                401, "missing or wrong API key (Authorization: Bearer …)", code="invalid_api_key"
            )

    return check


def api_key_from_env(name: str | None) -> str | None:
    """The key in environment variable ``name`` (the key itself never goes on a command
    line, where ``ps`` shows it); an unset or empty variable is an error, not "no key"."""
    if not name:
        return None
    key = os.environ.get(name)
    if not key:
        raise ValueError(f"environment variable {name} (--api-key-env) is unset or empty")
    return key
