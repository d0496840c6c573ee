"""The model server: one FastAPI app speaking OpenAI's HTTP API over one in-process model.

Endpoints
- ``POST /v1/chat/completions`` and ``POST /v1/completions``: OpenAI's request and response
  shapes; ``"stream": true`` answers with server-sent events, ``data: {chunk}`` … ``data: [DONE]``
  (chat chunks carry ``delta``s; ``stream_options.include_usage`` adds a usage chunk).
- ``GET /v1/models`` (and ``/v1/models/{id}``): the one model served.
- ``GET /health``: liveness, plus the batcher's counters (requests, model batches, queue).
- ``POST /answer`` (when the app is made with ``answer_router(chain)``): the RAG chain's
  answer, sources, citations and per-step latency.
Later stages add routes (RAG's ``/answer``) with ``create_app(..., routers=[...])`` or
``app.include_router``; they find the model at ``app.state.llm`` and submit generations to
``app.state.batcher``, so they share its batches.

Batching. Every generation goes through one ``Batcher``: an asyncio queue drained by one loop
that takes the first waiting request, waits up to ``batch_window_ms`` for others (at most
``max_batch`` in all), splits them into groups of equal generation parameters (max_tokens,
temperature, top_p, seed, stop) and runs ONE ``TransformersLLM.complete`` call per group on a
single worker thread — the only thread that runs the model or tokenizes (a fast tokenizer is
not safe to share between threads; chat templates are rendered as text only). Requests that
arrive while the model is busy queue up and form the next batch. ``batcher.batches`` counts
model calls. Streaming uses the same call: ``complete`` hands out each completion's text as it
grows, so a streamed completion is the non-streamed one, delta by delta. Sampled completions
are seeded per batch (see ``TransformersLLM``): reproducible for the same batch, not across.

Chat template. With a tokenizer that has a chat template, messages are rendered with it. The
project's own models have none: they were tuned on the Alpaca template of the fine-tuning
stage (``pipelines.synth.prompt_of``), so the conversation becomes that template —
system messages, then the last user message(s), form the instruction; earlier user/assistant
exchanges come first as finished Alpaca examples — and ``### End`` (with the blank line
before it) is a stop sequence, as the end-of-turn token is for chat-template models.

OpenAI defaults and limits. ``temperature`` defaults to 1 as on OpenAI (send 0 for greedy);
an omitted ``seed`` is 0, so that requests without one share batches (and are reproducible);
``max_tokens`` defaults to 256; ``n`` must be 1 (a list of prompts gives several choices on
``/v1/completions``); prompt + max_tokens must fit the model's context. Unknown fields, bad
values and a wrong model name are refused in OpenAI's error shape (400, 404).

Safety. No API key by default (the server binds 127.0.0.1); with one, every ``/v1`` call needs
``Authorization: Bearer <key>``. Prompts and completions are never logged: only counts and
timings. Models load from local files only (``infra.registry.model_dir``): nothing is
downloaded.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.llm import Completion, GenerationParams, TransformersLLM, load_llm_dir

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16  # requests per model call, at most
DEFAULT_BATCH_WINDOW_MS = 10.0  # how long a batch's first request waits for company, in ms
DEFAULT_MAX_TOKENS = GenerationParams.model_fields["max_new_tokens"].default  # when not sent
MAX_STOP_SEQUENCES = 16  # each is searched for after every decoding step
OWNER = "genai-lifecycle"


# ---------------------------------------------------------------------------- errors


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type, param, code)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """One line per problem, each naming its field (``messages.0.role: …``)."""
    lines, first_field = [], None
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"] if p != "body") or "body"
        first_field = first_field or where
        what = ("not a supported field" if problem["type"] == "extra_forbidden"
                else problem["msg"].removeprefix("Value error, "))
        lines.append(f"{where}: {what}")
    return "; ".join(lines), first_field


def _install_error_handlers(app: FastAPI) -> None:
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


def _as_openai_error(err: BaseException) -> OpenAIError:
    if isinstance(err, OpenAIError):
        return err
    if isinstance(err, asyncio.CancelledError):
        return OpenAIError(503, "the server is shutting down", "server_error")
    # The type and message only: a model error does not quote the prompt.
    return OpenAIError(500, f"generation failed: {type(err).__name__}: {err}", "server_error")


# ---------------------------------------------------------------------------- requests


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]  # images and audio are not for this server's models
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None  # accepted, not used

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False  # a last chunk with the usage counts and no choices


class SamplingRequest(BaseModel):
    """What chat and text completion requests share."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=1)  # default DEFAULT_MAX_TOKENS
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # OpenAI's default and range; 0: greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**62)  # None: 0 (so requests without share
    # batches); the range torch's generator takes, with room for the per-batch offset
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted, not used (and not logged)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported (send a list of prompts for several)")
        return n

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop):
        if isinstance(stop, list) and len(stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        return stop

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def generation_params(self, template_stops: Sequence[str] = ()) -> GenerationParams:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationParams(
            max_new_tokens=self.requested_max_tokens() or DEFAULT_MAX_TOKENS,
            temperature=self.temperature, top_p=self.top_p, seed=self.seed or 0,
            stop=[s for s in [*stops, *template_stops] if s])

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingRequest):
    prompt: str | Annotated[list[str], Field(min_length=1)]  # a list: a choice per prompt


# ---------------------------------------------------------------------------- chat template


def render_chat(messages: Sequence[ChatMessage], tokenizer) -> tuple[str, list[str]]:
    """The prompt for a conversation and the stop sequences its template implies."""
    if messages[-1].role != "user":
        raise OpenAIError(400, "the last message must be the user's", param="messages")
    if getattr(tokenizer, "chat_template", None):
        turns = [{"role": m.role, "content": m.text()} for m in messages]
        prompt = tokenizer.apply_chat_template(turns, tokenize=False,
                                               add_generation_prompt=True)
        return prompt, []
    return alpaca_chat_prompt(messages), alpaca_stops()


def alpaca_chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """The fine-tuning stage's Alpaca template for a conversation: earlier user/assistant
    exchanges as finished examples, then system text + the pending user text as the
    instruction (consecutive messages of one role are joined by a blank line)."""
    # The template the models were tuned on lives with the stage that writes the examples.
    from pipelines.synth import format_example, prompt_of

    system = [m.text() for m in messages if m.role in ("system", "developer")]
    blocks, pending = [], []  # finished examples; user texts awaiting a reply
    for message in messages:
        if message.role == "user":
            pending.append(message.text())
        elif message.role == "assistant":
            if not pending:
                raise OpenAIError(400, "an assistant message must follow a user message",
                                  param="messages")
            blocks.append(format_example("\n\n".join(pending), message.text()))
            pending = []
    blocks.append(prompt_of("\n\n".join(system + pending)))
    return "\n\n".join(blocks)


def alpaca_stops() -> list[str]:
    """End of the response in the Alpaca template; the blank line before it goes too."""
    from pipelines.synth import END_MARKER

    return [f"\n\n{END_MARKER}", END_MARKER]


# ---------------------------------------------------------------------------- batching


@dataclasses.dataclass
class Job:
    """One prompt to complete. ``on_delta`` and the future's callbacks run on the event loop,
    every delta before the future resolves."""

    prompt: str
    params: GenerationParams
    future: asyncio.Future  # a Completion, or an OpenAIError
    on_delta: Callable[[str], None] | None = None


class Batcher:
    """Groups concurrent generations into few model calls; see the module docstring."""

    def __init__(self, llm: TransformersLLM, max_batch: int = DEFAULT_MAX_BATCH,
                 batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS):
        if max_batch < 1 or batch_window_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and batch_window_ms >= 0, got "
                             f"{max_batch}, {batch_window_ms}")
        self.llm = llm
        self.max_batch = max_batch
        self.window_s = batch_window_ms / 1000
        self.requests = 0  # jobs submitted
        self.batches = 0  # model calls made
        self.largest_batch = 0  # jobs in the largest model call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._runner: asyncio.Task | None = None
        self._worker: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        # One thread: the model and its tokenizer never run on two threads at once.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._runner = asyncio.create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._runner.cancel()
        try:
            await self._runner
        except asyncio.CancelledError:
            pass
        while not self._queue.empty():  # nobody will serve them: answer now
            _settle(self._queue.get_nowait().future, asyncio.CancelledError())
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._runner = None

    def submit(self, prompt: str, params: GenerationParams,
               on_delta: Callable[[str], None] | None = None) -> asyncio.Future:
        """Queue one generation; await the returned future for its Completion."""
        if self._runner is None:
            raise OpenAIError(503, "the model server is not running", "server_error")
        job = Job(prompt, params, self._loop.create_future(), on_delta)
        self.requests += 1
        self._queue.put_nowait(job)
        return job.future

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            for group in _groups_of_equal_params(jobs):
                try:
                    await self._loop.run_in_executor(self._worker, self._generate, group)
                except Exception as err:  # a bug, not a model error: answer, keep serving
                    log.exception("batcher failed on a group of %d requests", len(group))
                    for job in group:
                        _settle(job.future, err)

    async def _collect(self) -> list[Job]:
        """The first waiting job, plus those arriving within the window (up to max_batch)."""
        jobs = [await self._queue.get()]
        deadline = self._loop.time() + self.window_s
        while len(jobs) < self.max_batch:
            remaining = deadline - self._loop.time()
            try:
                if remaining <= 0:  # the window is over: take only what already waits
                    jobs.append(self._queue.get_nowait())
                    continue
                async with asyncio.timeout(remaining):  # never loses a job, unlike wait_for
                    jobs.append(await self._queue.get())
            except (asyncio.QueueEmpty, TimeoutError):
                break
        return jobs

    def _generate(self, jobs: list[Job]) -> None:
        """One model call for jobs of equal params; runs on the worker thread."""
        fitting = [job for job in jobs if self._fits_context(job)]
        if not fitting:
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(fitting))
        started = time.perf_counter()
        try:
            completions = self.llm.complete([job.prompt for job in fitting], fitting[0].params,
                                            on_delta=self._relay_deltas(fitting))
        except Exception as err:  # the batch fails, the server goes on
            log.exception("model batch of %d requests failed", len(fitting))
            for job in fitting:
                self._settle_from_worker(job, err)
            return
        log.info("batch %d: %d requests, %d completion tokens in %.2f s", self.batches,
                 len(fitting), sum(c.completion_tokens for c in completions),
                 time.perf_counter() - started)
        for job, completion in zip(fitting, completions):
            self._settle_from_worker(job, completion)

    def _fits_context(self, job: Job) -> bool:
        """Whether prompt + max_tokens fits the model; a job that does not is answered 400."""
        limit = self.llm.context_length
        if limit is None:
            return True
        prompt_tokens, max_tokens = self.llm.count_tokens(job.prompt), job.params.max_new_tokens
        if prompt_tokens + max_tokens <= limit:
            return True
        self._settle_from_worker(job, OpenAIError(
            400, f"the prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                 f"{prompt_tokens + max_tokens} > the model's context of {limit} tokens; "
                 "shorten the prompt or lower max_tokens", param="max_tokens",
            code="context_length_exceeded"))
        return False

    def _relay_deltas(self, jobs: list[Job]):
        def relay(index: int, delta: str) -> None:
            if jobs[index].on_delta is not None:
                self._on_loop(jobs[index].on_delta, delta)
        return relay

    def _settle_from_worker(self, job: Job, outcome: Completion | BaseException) -> None:
        self._on_loop(_settle, job.future, outcome)  # after the job's deltas: FIFO

    def _on_loop(self, callback: Callable, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed under a batch at shutdown: nobody to tell
            pass


def _settle(future: asyncio.Future, outcome: Completion | BaseException) -> None:
    if future.done():  # the client went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(_as_openai_error(outcome))
    else:
        future.set_result(outcome)


def _groups_of_equal_params(jobs: Iterable[Job]) -> list[list[Job]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.params.model_dump_json(), []).append(job)
    return list(groups.values())


# ---------------------------------------------------------------------------- responses


@dataclasses.dataclass
class _Reply:
    """Builds the response bodies and stream chunks of one request, in OpenAI's shapes."""

    kind: Literal["chat", "text"]
    model: str
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    def _envelope(self, chunk: bool) -> dict:
        prefix, obj = (("chatcmpl-", "chat.completion.chunk" if chunk else "chat.completion")
                       if self.kind == "chat" else ("cmpl-", "text_completion"))
        return {"id": prefix + self.id, "object": obj, "created": self.created,
                "model": self.model}

    def body(self, completions: Sequence[Completion]) -> dict:
        return {**self._envelope(chunk=False),
                "choices": [self._choice(i, c) for i, c in enumerate(completions)],
                "usage": _usage(completions)}

    def _choice(self, index: int, completion: Completion) -> dict:
        if self.kind == "chat":
            content = {"message": {"role": "assistant", "content": completion.text}}
        else:
            content = {"text": completion.text}
        return {"index": index, **content, "logprobs": None,
                "finish_reason": completion.finish_reason}

    def chunk(self, index: int, text: str | None = None, finish_reason: str | None = None,
              role: bool = False) -> str:
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if role else (
                {} if text is None else {"content": text})
            choice = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": text or ""}
        return _sse({**self._envelope(chunk=True),
                     "choices": [{**choice, "logprobs": None, "finish_reason": finish_reason}]})

    def usage_chunk(self, completions: Sequence[Completion]) -> str:
        return _sse({**self._envelope(chunk=True), "choices": [],
                     "usage": _usage(completions)})


def _usage(completions: Sequence[Completion]) -> dict:
    prompt = sum(c.prompt_tokens for c in completions)
    completion = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def _outcome(future: asyncio.Future) -> Completion:
    """The future's Completion, or its error as an OpenAIError."""
    try:
        return future.result()
    except BaseException as err:  # noqa: BLE001  (CancelledError included: shutdown)
        raise _as_openai_error(err) from None


async def respond(app: FastAPI, kind: Literal["chat", "text"], request: SamplingRequest,
                  prompts: list[str], template_stops: Sequence[str] = ()):
    """Complete ``prompts`` through the batcher and answer as OpenAI would: one body, or
    (``stream``) server-sent chunks. Errors found before the first token are plain errors."""
    params = request.generation_params(template_stops)
    reply = _Reply(kind, app.state.model_name)
    batcher: Batcher = app.state.batcher
    if not request.stream:
        futures = [batcher.submit(prompt, params) for prompt in prompts]
        await asyncio.wait(futures)
        return reply.body([_outcome(f) for f in futures])
    events: asyncio.Queue = asyncio.Queue()  # (choice index, delta text or finished future)
    for index, prompt in enumerate(prompts):
        put = functools.partial(_put_event, events, index)
        batcher.submit(prompt, params, on_delta=put).add_done_callback(put)
    first = await events.get()
    if isinstance(first[1], asyncio.Future):
        _outcome(first[1])  # raises here, before any byte is sent, when it failed
    return StreamingResponse(_stream(reply, events, first, len(prompts),
                                     request.include_usage()),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _put_event(events: asyncio.Queue, index: int, item: str | asyncio.Future) -> None:
    events.put_nowait((index, item))


async def _stream(reply: _Reply, events: asyncio.Queue, first: tuple, choices: int,
                  include_usage: bool):
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
                finished[index] = _outcome(item)
            except OpenAIError as err:  # headers are gone: the error goes in the stream
                yield _sse(err.body())
                return
            yield reply.chunk(index, finish_reason=finished[index].finish_reason)
            if len(finished) == choices:
                break
        index, item = await events.get()
    if include_usage:
        yield reply.usage_chunk([finished[i] for i in range(choices)])
    yield SSE_DONE


# ---------------------------------------------------------------------------- the app


def _check_model(requested: str, served: str) -> None:
    if requested != served:
        raise OpenAIError(404, f"The model '{requested}' does not exist: this server serves "
                               f"'{served}'", param="model", code="model_not_found")


def _bearer_check(api_key: str):
    expected = f"Bearer {api_key}".encode()

    async def check(authorization: str | None = Header(None)) -> None:
        # Constant time: the comparison does not tell how much of a guess was right.
        if not hmac.compare_digest((authorization or "").encode(), expected):
            raise OpenAIError(401, "missing or wrong API key (Authorization: Bearer …)",
                              code="invalid_api_key")
    return check


def openai_router(api_key: str | None = None) -> APIRouter:
    """The ``/v1`` routes; they read the model from ``request.app.state``."""
    router = APIRouter(prefix="/v1",
                       dependencies=[Depends(_bearer_check(api_key))] if api_key else [])

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
        prompt, stops = render_chat(body.messages, request.app.state.llm.tokenizer)
        return await respond(request.app, "chat", body, [prompt], stops)

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, request.app.state.model_name)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        return await respond(request.app, "text", body, prompts)

    return router


def _model_card(app: FastAPI) -> dict:
    return {"id": app.state.model_name, "object": "model", "created": app.state.created,
            "owned_by": OWNER}


class AnswerRequest(BaseModel):
    """``POST /answer``: a question, optionally for a user whose features the answer uses."""

    model_config = ConfigDict(extra="forbid")

    question: str
    user_id: str | None = None
    nights: int | None = Field(None, ge=1, le=60)  # the stay the price function prices
    season: Literal["low", "shoulder", "high"] | None = None


def answer_router(chain) -> APIRouter:
    """``POST /answer`` over a RAG chain (``pipelines.rag_chain.RagChain``): retrieval and
    feature lookups run in a worker thread, generation goes through the app's batcher (so
    answers share model batches with ``/v1`` requests)."""
    from starlette.concurrency import run_in_threadpool

    router = APIRouter()

    @router.post("/answer")
    async def answer(body: AnswerRequest, request: Request):
        extras = {k: v for k, v in (("nights", body.nights), ("season", body.season)) if v}
        try:
            prepared = await run_in_threadpool(chain.prepare, body.question, body.user_id,
                                               extras)
        except LookupError as err:  # an unknown user or hotel id
            raise OpenAIError(404, _message(err), param="user_id", code="not_found") from None
        except ValueError as err:  # a question too long or empty
            raise OpenAIError(400, _message(err), param="question") from None
        started = time.perf_counter()
        future = request.app.state.batcher.submit(prepared.prompt, chain.generation_params())
        await asyncio.wait([future])
        completion = _outcome(future)
        return chain.finish(prepared, completion.text, 1000 * (time.perf_counter() - started))

    return router


def _message(err: BaseException) -> str:
    return err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else str(err)


def default_model_name(model_ref: str | Path) -> str:
    """What clients call the model: the registry name (``genai-tabledoc@champion``) for a
    ``models:/`` URI, the path as given for a local dir."""
    return str(model_ref).removeprefix("models:/")


def create_app(llm_or_model: TransformersLLM | str | Path, model_name: str | None = None, *,
               max_batch: int = DEFAULT_MAX_BATCH,
               batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS, api_key: str | None = None,
               routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The app around a loaded model, or around a ``models:/`` URI or HF dir loaded now
    (a missing dir or unknown model fails here, naming it). ``routers`` are included as they
    are (later stages' endpoints); ``api_key`` guards the ``/v1`` routes only."""
    if isinstance(llm_or_model, TransformersLLM):
        llm = llm_or_model
        model_name = model_name or default_model_name(llm.model_dir)
    else:
        llm = load_llm_dir(llm_or_model)
        model_name = model_name or default_model_name(llm_or_model)
    batcher = Batcher(llm, max_batch, batch_window_ms)

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
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "requests": batcher.requests,
                "batches": batcher.batches, "largest_batch": batcher.largest_batch,
                "queued": batcher.queued}

    app.include_router(openai_router(api_key))
    for router in routers:
        app.include_router(router)
    return app


def api_key_from_env(name: str | None) -> str | None:
    """The key in environment variable ``name`` (the key itself never goes on a command
    line, where ``ps`` shows it); an unset or empty variable is an error, not "no key"."""
    if not name:
        return None
    key = os.environ.get(name)
    if not key:
        raise ValueError(f"environment variable {name} (--api-key-env) is unset or empty")
    return key


def serve(model_ref: str | Path, host: str = "127.0.0.1", port: int = 8000, *,
          model_name: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
          batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS, api_key_env: str | None = None,
          log_level: str = "info", routers: Sequence[APIRouter] = ()) -> None:
    """Load the model and serve it until interrupted (Ctrl-C, SIGTERM, flow cancellation)."""
    import uvicorn

    api_key = api_key_from_env(api_key_env)
    sock = bind_socket(host, port)  # before the model loads: a taken port fails at once
    try:
        app = create_app(model_ref, model_name, max_batch=max_batch,
                         batch_window_ms=batch_window_ms, api_key=api_key, routers=routers)
        log.info("serving %s as %r on http://%s:%d/v1", model_ref, app.state.model_name, host,
                 port)
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()


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
        raise OSError(f"cannot serve on {host}:{port}: {err.strerror}; choose another "
                      "port") from None
    return sock
