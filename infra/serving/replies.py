"""OpenAI's response shapes: one body, or server-sent chunks (``data: {chunk}`` …
``data: [DONE]``), built from the batcher's completions. With ``n`` choices per prompt, prompt
``i``'s choices are ``i*n … i*n+n-1``, as on OpenAI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from infra.llm import Completion
from infra.serving.batching import Batcher
from infra.serving.errors import OpenAIError, as_openai_error
from infra.serving.schemas import SamplingRequest

SSE_DONE = "data: [DONE]\n\n"


@dataclasses.dataclass
class Reply:
    """Builds the response bodies and stream chunks of one request, in OpenAI's shapes."""

    kind: Literal["chat", "text"]
    model: str
    n: int = 1  # choices per prompt
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    def _envelope(self, chunk: bool) -> dict:
        prefix, obj = (
            ("chatcmpl-", "chat.completion.chunk" if chunk else "chat.completion")
            if self.kind == "chat"
            else ("cmpl-", "text_completion")
        )
        return {
            "id": prefix + self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
        }

    def body(self, completions: Sequence[Completion]) -> dict:
        return {
            **self._envelope(chunk=False),
            "choices": [self._choice(i, c) for i, c in enumerate(completions)],
            "usage": self._usage(completions),
        }

    def _usage(self, completions: Sequence[Completion]) -> dict:
        # A prompt's n choices read it once: its tokens count once.
        prompt = sum(c.prompt_tokens for c in completions[:: self.n])
        completion = sum(c.completion_tokens for c in completions)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _choice(self, index: int, completion: Completion) -> dict:
        if self.kind == "chat":
            content = {"message": {"role": "assistant", "content": completion.text}}
        else:
            content = {"text": completion.text}
        return {
            "index": index,
            **content,
            "logprobs": None,
            "finish_reason": completion.finish_reason,
        }

    def chunk(
        self,
        index: int,
        text: str | None = None,
        finish_reason: str | None = None,
        role: bool = False,
    ) -> str:
        if self.kind == "chat":
            delta = (
                {"role": "assistant", "content": ""}
                if role
                else ({} if text is None else {"content": text})
            )
            choice = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": text or ""}
        return sse(
            {
                **self._envelope(chunk=True),
                "choices": [{**choice, "logprobs": None, "finish_reason": finish_reason}],
            }
        )

    def usage_chunk(self, completions: Sequence[Completion]) -> str:
        return sse(
            {**self._envelope(chunk=True), "choices": [], "usage": self._usage(completions)}
        )


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def outcome(future: asyncio.Future) -> Completion:
    """The future's Completion, or its error as an OpenAIError."""
    try:
        return future.result()
    except BaseException as err:  # noqa: BLE001  (CancelledError included: shutdown)
        raise as_openai_error(err) from None


async def respond(
    app: FastAPI,
    kind: Literal["chat", "text"],
    request: SamplingRequest,
    prompts: list[str],
    template_stops: Sequence[str] = (),
):
    """Complete ``prompts`` (``request.n`` times each) through the batcher and answer as
    OpenAI would: one body, or (``stream``) server-sent chunks. Errors found before the first
    token are plain errors."""
    params = request.generation_params(template_stops)
    reply = Reply(kind, app.state.model_name, request.n)
    batcher: Batcher = app.state.batcher
    # A prompt's n copies share params, hence one model call (and the prompt's keys and
    # values, computed once as a shared prefix); rows are sampled independently.
    choices = [prompt for prompt in prompts for _ in range(request.n)]
    if not request.stream:
        futures = batcher.submit_all(choices, params)
        await asyncio.wait(futures)
        return reply.body([outcome(f) for f in futures])
    events: asyncio.Queue = asyncio.Queue()  # (choice index, delta text or finished future)

    def put(index: int, item: str | asyncio.Future) -> None:
        events.put_nowait((index, item))

    for index, future in enumerate(batcher.submit_all(choices, params, on_delta=put)):
        future.add_done_callback(lambda f, index=index: put(index, f))
    first = await events.get()
    if isinstance(first[1], asyncio.Future):
        outcome(first[1])  # raises here, before any byte is sent, when it failed
    return StreamingResponse(
        _stream(reply, events, first, len(choices), request.include_usage()),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _stream(
    reply: Reply, events: asyncio.Queue, first: tuple, choices: int, include_usage: bool
):
    if reply.kind == "chat":  # OpenAI opens each chat choice with the role
        for index in range(choices):
            yield reply.chunk(index, role=True)
    finished: dict[int, Completion] = {}
    index, item = first
    while True:
        if isinstance(item, str):
            yield reply.chunk(index, text=item)
        else:
            try:
                finished[index] = outcome(item)
            except OpenAIError as err:  # headers are gone: the error goes in the stream
                yield sse(err.body())
                return
            yield reply.chunk(index, finish_reason=finished[index].finish_reason)
            if len(finished) == choices:
                break
        index, item = await events.get()
    if include_usage:
        yield reply.usage_chunk([finished[i] for i in range(choices)])
    yield SSE_DONE
