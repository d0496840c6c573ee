"""infra/serving.py: the official ``openai`` client against the app around a tiny model —
chat, completions, streaming equal to the non-streamed greedy text, concurrent requests in
few model batches, n choices, OpenAI-shaped errors — plus the streaming decode path of
infra/llm.py; the key rule on every route, the limits, the bounded queue and the drain at
shutdown, the request log, and infra/logs.py."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import ANY

import httpx
import openai
import pytest
import torch
import uvicorn
from fastapi import APIRouter, FastAPI
from tiny_model import scramble_weights  # noqa: E402  (tests/ is on sys.path)

from infra.llm import (
    Completion,
    GenerationParams,
    OpenAICompatibleLLM,
    TransformersLLM,
    streamable_prefix,
)
from infra.serving import ServerLimits, answer_router, create_app
from infra.serving.app import server_config
from infra.serving.batching import Batcher
from infra.serving.chat import instruction_stops, render_chat
from infra.serving.schemas import ChatMessage
from pipelines.shared import templates

MODEL = "tiny"
PROMPTS = [
    "The",
    "a",
    "",
    "日本語 text the café",
    "Each shard packs the ☕ corpus 3 times.",
    "Our tokenizer checks",
]
GREEDY = dict(temperature=0, max_tokens=12)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A model this small runs fastest on one thread, and with other processes on the
    machine's cores, two spinning threads can make a 20 ms generation take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llm(tiny_model_dir, tmp_path_factory) -> TransformersLLM:
    """The tiny model with a 512-position context (the Alpaca template alone is ~125 tokens
    of its 512-token vocabulary) and large weights, so outputs differ from prompt to prompt."""
    model_dir = tmp_path_factory.mktemp("served") / "tiny"
    model_dir.mkdir()
    for file in Path(tiny_model_dir).iterdir():
        (model_dir / file.name).write_bytes(file.read_bytes())
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 512}))
    model = TransformersLLM(model_dir, device="cpu")
    scramble_weights(model.model)
    return model


class ServerThread:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a daemon thread."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(server_config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def server(llm):
    # A 100 ms window: 16 client threads on 2 busy cores need a moment to all get through.
    app = create_app(llm, MODEL, max_batch=16, batch_window_ms=100, template=templates)
    running = ServerThread(app)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)


def health(server) -> dict:
    return httpx.get(f"{server.url}/health").json()


def chat_prompt(llm, text: str) -> str:
    return render_chat([ChatMessage(role="user", content=text)], llm.tokenizer, templates)[0]


# ---------------------------------------------------------------------------- decode path


@pytest.mark.parametrize(
    "params",
    [
        GenerationParams(max_new_tokens=24),
        GenerationParams(max_new_tokens=24, temperature=1.0, seed=5),
    ],
    ids=["greedy", "sampled"],
)
def test_streamed_deltas_add_up_to_the_completions(llm, params):
    plain = llm.generate(PROMPTS, params)
    stop = plain[4][5:7]  # a stop the longest prompt's completion surely holds
    most_deltas = 0
    for stops in ([], [stop], ["\ufffd", " ", "e"]):
        step = params.model_copy(update={"stop": stops})
        deltas: dict[int, list[str]] = {i: [] for i in range(len(PROMPTS))}
        completions = llm.complete(
            PROMPTS, step, on_delta=lambda i, d, deltas=deltas: deltas[i].append(d)
        )
        assert [c.text for c in completions] == llm.generate(PROMPTS, step)
        assert ["".join(deltas[i]) for i in range(len(PROMPTS))] == [c.text for c in completions]
        assert all(d for parts in deltas.values() for d in parts)  # no empty deltas
        most_deltas = max([most_deltas] + [len(parts) for parts in deltas.values()])
    assert most_deltas > 5  # really streamed, step by step


def test_completion_counts_tokens_and_says_why_it_ended(llm):
    params = GenerationParams(max_new_tokens=10)
    full = llm.complete(PROMPTS, params)
    # An early end is an EOS (the tiny model writes one for PROMPTS[4]); else max_new_tokens.
    assert {c.finish_reason for c in full} == {"stop", "length"}
    assert all((c.finish_reason == "length") == (c.completion_tokens == 10) for c in full)
    assert [c.prompt_tokens for c in full] == [llm.count_tokens(p) for p in PROMPTS]
    longest = max(full, key=lambda c: c.completion_tokens)
    stop = longest.text[3:5]
    stopped = llm.complete(
        [PROMPTS[full.index(longest)]], params.model_copy(update={"stop": [stop]})
    )
    assert stopped[0].finish_reason == "stop" and stopped[0].completion_tokens < 10
    assert stopped[0].text == longest.text[: longest.text.find(stop)]


def test_streamable_prefix_holds_back_what_could_change():
    assert streamable_prefix("abc\n\n##", ["\n\n### End"]) == "abc"
    assert streamable_prefix("abc\n\n### End more", ["\n\n### End"]) == "abc"
    assert streamable_prefix("caf\ufffd", []) == "caf"  # half a multi-byte character
    assert streamable_prefix("ab", ["b", "abz"]) == ""  # "abz" could still start earlier
    assert streamable_prefix("hello", ["x"]) == "hello"


# ---------------------------------------------------------------------------- templates


def test_alpaca_template_for_chat_and_the_tokenizer_template_when_there_is_one(llm):
    from pipelines.shared.templates import format_example, prompt_of

    one = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content=[{"type": "text", "text": "Say hi"}]),
    ]
    assert render_chat(one, llm.tokenizer, templates) == (
        prompt_of("Be brief.\n\nSay hi"),
        instruction_stops(templates),
    )
    turns = one + [
        ChatMessage(role="assistant", content="hi"),
        ChatMessage(role="user", content="Again"),
    ]
    prompt, _ = render_chat(turns, llm.tokenizer, templates)
    assert prompt == format_example("Say hi", "hi") + "\n\n" + prompt_of("Be brief.\n\nAgain")
    templated = copy.deepcopy(llm.tokenizer)
    templated.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert render_chat(one, templated, templates) == (
        "<system>Be brief.<user>Say hi<assistant>",
        [],
    )


# ---------------------------------------------------------------------------- the server


@pytest.mark.slow
def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "genai-lifecycle"
    state = health(server)
    assert state["status"] == "ok" and state["model"] == MODEL and "batches" in state


@pytest.mark.slow
def test_completions_and_chat_answer_with_the_models_greedy_text(llm, client):
    reply = client.completions.create(model=MODEL, prompt=PROMPTS[3], **GREEDY)
    expected = llm.complete([PROMPTS[3]], GenerationParams(max_new_tokens=12))[0]
    assert reply.choices[0].text == expected.text and expected.text
    assert reply.object == "text_completion" and reply.model == MODEL
    assert reply.id.startswith("cmpl-") and reply.created > 0
    assert reply.choices[0].finish_reason == expected.finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        expected.prompt_tokens,
        12,
    )
    several = client.completions.create(model=MODEL, prompt=PROMPTS[:3], **GREEDY)
    assert [c.text for c in several.choices] == llm.generate(
        PROMPTS[:3], GenerationParams(max_new_tokens=12)
    )
    assert [c.index for c in several.choices] == [0, 1, 2]

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write the docs"}], **GREEDY
    )
    chat_params = GenerationParams(max_new_tokens=12, stop=instruction_stops(templates))
    assert (
        chat.choices[0].message.content
        == llm.generate([chat_prompt(llm, "Write the docs")], chat_params)[0]
    )
    assert chat.choices[0].message.role == "assistant" and chat.object == "chat.completion"
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens


@pytest.mark.slow
def test_streamed_text_equals_the_non_streamed_greedy_text(client):
    prompt = PROMPTS[3]  # multi-byte characters in the prompt and in the output
    plain = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=20)
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=prompt, temperature=0, max_tokens=20, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert len(chunks) > 3  # token by token, not one lump
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + [
        plain.choices[0].finish_reason
    ]

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    plain_chat = client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=20
    )
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        temperature=0,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain_chat.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain_chat.choices[
        0
    ].finish_reason
    assert chunks[-1].usage.completion_tokens == plain_chat.usage.completion_tokens
    assert all(c.object == "chat.completion.chunk" for c in chunks)


@pytest.mark.slow
def test_sixteen_concurrent_requests_share_at_most_four_model_batches(llm, server, client):
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} {i}" for i in range(16)]
    expected = [llm.generate([p], GenerationParams(max_new_tokens=8))[0] for p in prompts]
    before = health(server)["batches"]
    start = threading.Barrier(16)

    def ask(i: int) -> str:
        start.wait()
        if i % 4 == 3:  # streaming requests batch with the others
            return "".join(
                c.choices[0].text
                for c in client.completions.create(
                    model=MODEL, prompt=prompts[i], temperature=0, max_tokens=8, stream=True
                )
            )
        return (
            client.completions.create(model=MODEL, prompt=prompts[i], temperature=0, max_tokens=8)
            .choices[0]
            .text
        )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    assert answers == expected
    after = health(server)
    assert 1 <= after["batches"] - before <= 4, after
    assert after["largest_batch"] >= 4


@pytest.mark.slow
def test_bad_requests_get_openai_errors(client):
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model=MODEL, prompt="x " * 400, max_tokens=200)
    with pytest.raises(openai.BadRequestError, match="context"):  # before the stream starts
        client.completions.create(model=MODEL, prompt="x " * 400, max_tokens=200, stream=True)
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(
            model=MODEL, max_tokens=2, messages=[{"role": "assistant", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError, match="frobnicate"):
        client.completions.create(model=MODEL, prompt="x", extra_body={"frobnicate": 1})


@pytest.mark.slow
def test_the_projects_http_client_talks_to_the_server(llm, server):
    params = GenerationParams(max_new_tokens=10, stop=["\n"])
    prompts = PROMPTS[3:]
    texts = OpenAICompatibleLLM(f"{server.url}/v1", MODEL).generate(prompts, params)
    assert texts == llm.generate(prompts, params)
    chat = OpenAICompatibleLLM(f"{server.url}/v1", MODEL, mode="chat").generate(prompts, params)
    chat_params = params.model_copy(update={"stop": params.stop + instruction_stops(templates)})
    assert chat == llm.generate([chat_prompt(llm, p) for p in prompts], chat_params)


@pytest.mark.slow
def test_api_key_guards_v1_but_not_health(llm):
    running = ServerThread(create_app(llm, MODEL, api_key="sk-local-123", template=templates))
    try:
        base = f"{running.url}/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=base, api_key="sk-local-123", max_retries=0)
        assert ok.completions.create(model=MODEL, prompt="a", max_tokens=2).choices
        assert httpx.get(f"{running.url}/health").status_code == 200
    finally:
        running.stop()


def test_a_missing_model_dir_fails_at_app_creation_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        create_app(tmp_path / "no-such-model")


def test_a_taken_port_or_a_missing_key_variable_fails_before_the_model_loads(monkeypatch):
    from infra.serving.app import bind_socket, serve
    from infra.serving.guards import api_key_from_env

    taken = bind_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            serve("/never/loaded", port=port)
    finally:
        taken.close()
    monkeypatch.delenv("GENAI_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="GENAI_TEST_KEY"):
        serve("/never/loaded", port=port, api_key_env="GENAI_TEST_KEY")
    monkeypatch.setenv("GENAI_TEST_KEY", "k")
    assert api_key_from_env("GENAI_TEST_KEY") == "k" and api_key_from_env(None) is None


# ---------------------------------------------------------------------------- n choices


@pytest.mark.slow
def test_default_limits_admit_64_prompts_and_5_choices(llm, client):
    assert ServerLimits().max_stop_sequences == 16
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} {i}" for i in range(64)]
    reply = client.completions.create(model=MODEL, prompt=prompts, temperature=0, max_tokens=1)
    assert [c.index for c in reply.choices] == list(range(64))
    five = client.completions.create(model=MODEL, prompt="a", n=5, temperature=0, max_tokens=1)
    assert len(five.choices) == 5


@pytest.mark.slow
def test_n_choices_per_prompt_streamed_or_not(llm, client):
    several = client.completions.create(model=MODEL, prompt=PROMPTS[:2], n=2, **GREEDY)
    greedy = llm.generate(PROMPTS[:2], GenerationParams(max_new_tokens=12))
    # Prompt i's choices are i*n … i*n+n-1, as on OpenAI; a prompt's tokens count once.
    assert [(c.index, c.text) for c in several.choices] == list(
        enumerate([greedy[0], greedy[0], greedy[1], greedy[1]])
    )
    assert several.usage.prompt_tokens == sum(llm.count_tokens(p) for p in PROMPTS[:2])

    ask = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Write the docs"}],
        n=3,
        temperature=1.0,
        seed=4,
        max_tokens=8,
    )
    chat = client.chat.completions.create(**ask)
    sampled = GenerationParams(
        max_new_tokens=8, temperature=1.0, seed=4, stop=instruction_stops(templates)
    )
    expected = llm.generate([chat_prompt(llm, "Write the docs")] * 3, sampled)
    assert [c.message.content for c in chat.choices] == expected
    assert len(set(expected)) > 1  # three samples, not one answer thrice
    streamed = {i: "" for i in range(3)}
    finished = {}
    for chunk in client.chat.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
            finished[choice.index] = choice.finish_reason or finished.get(choice.index)
    assert list(streamed.values()) == expected
    assert finished == {c.index: c.finish_reason for c in chat.choices}


# ---------------------------------------------------------------------------- key and limits

KEY = "sk-local-123"
SMALL = ServerLimits(
    max_body_bytes=2048,
    max_prompts=4,
    max_n=2,
    max_stop_sequences=2,
    max_stop_chars=8,
    max_total_tokens=300,
    max_question_chars=50,
)


class FakeChain:
    """What ``answer_router`` needs of a RAG chain; an unknown user fails as a real lookup
    can, naming the file it looked in."""

    def prepare(self, question, user_id, extras):
        if user_id == "nobody":
            raise LookupError("user 'nobody' is not in /srv/genai/lake/users.delta (version 3)")
        return SimpleNamespace(prompt=question)

    def generation_params(self):
        return GenerationParams(max_new_tokens=2)

    def finish(self, prepared, text, generate_ms):
        return {"answer": text}


def extra_router() -> APIRouter:
    router = APIRouter()

    @router.get("/extra")
    async def extra():
        return {"ok": True}

    @router.get("/boom")
    async def boom():
        raise RuntimeError("a bug, reading /srv/genai/secret/state.json")

    return router


@pytest.fixture(scope="module")
def guarded(llm):
    """A server with a key, small limits, ``/answer`` and a router of a later stage."""
    app = create_app(
        llm,
        MODEL,
        api_key=KEY,
        template=templates,
        routers=[answer_router(FakeChain()), extra_router()],
        limits=SMALL,
    )
    running = ServerThread(app)
    yield running
    running.stop()


def call(server, method: str, path: str, body=None, auth: str | None = f"Bearer {KEY}", **kw):
    headers = {"Authorization": auth} if auth else {}
    return httpx.request(
        method, server.url + path, json=body, headers=headers | kw.pop("headers", {}), **kw
    )


ROUTES = {
    "models": ("GET", "/v1/models", None),
    "model": ("GET", f"/v1/models/{MODEL}", None),
    "chat": (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
    ),
    "completions": ("POST", "/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 1}),
    "answer": ("POST", "/answer", {"question": "Where?"}),
    "docs": ("GET", "/docs", None),
    "redoc": ("GET", "/redoc", None),
    "openapi": ("GET", "/openapi.json", None),
    "added router": ("GET", "/extra", None),
    "unknown path": ("GET", "/no-such-route", None),
}
AUTHS = {
    "no key": None,
    "wrong key": "Bearer sk-wrong",
    "key without Bearer": KEY,
    "right key": f"Bearer {KEY}",
}


@pytest.mark.slow
@pytest.mark.parametrize("auth", AUTHS.values(), ids=AUTHS.keys())
@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
def test_one_key_rule_covers_every_route_but_health(guarded, route, auth):
    method, path, body = route
    reply = call(guarded, method, path, body, auth=auth)
    if auth == f"Bearer {KEY}":
        assert reply.status_code == (404 if path == "/no-such-route" else 200), reply.text
    else:
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "invalid_api_key"
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert call(guarded, "GET", "/health", auth=None).status_code == 200


def test_a_keyless_server_serves_loopback_only_unless_allowed():
    from infra.serving.app import serve
    from infra.serving.guards import auth_summary, check_exposure

    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_exposure(host, None)
        assert auth_summary(host, None) == "auth: OFF (loopback only)"
    with pytest.raises(ValueError, match="0.0.0.0 without an API key.*--allow-no-auth"):
        serve("/never/loaded", host="0.0.0.0", port=1)  # refused before binding or loading
    for host in ("0.0.0.0", "::", "10.1.2.3", "gpu-box.internal"):
        with pytest.raises(ValueError, match="--api-key-env"):
            check_exposure(host, None)
        check_exposure(host, "k")
        check_exposure(host, None, allow_no_auth=True)
        assert "OFF" in auth_summary(host, None) and host in auth_summary(host, None)
    assert auth_summary("0.0.0.0", "k") == "auth: bearer key required on every route but /health"


LIMITED = {
    "prompts": ("/v1/completions", {"prompt": ["a"] * 5}, "max_prompts"),
    "n": ("/v1/completions", {"prompt": "a", "n": 3}, "max_n"),
    "stop count": (
        "/v1/completions",
        {"prompt": "a", "stop": ["x", "y", "z"]},
        "max_stop_sequences",
    ),
    "stop length": ("/v1/completions", {"prompt": "a", "stop": "123456789"}, "max_stop_chars"),
    "tokens": ("/v1/completions", {"prompt": "a", "max_tokens": 300}, "max_total_tokens"),
    "question": ("/answer", {"question": "q" * 51}, "max_question_chars"),
    "body size": ("/v1/completions", {"prompt": "x" * 3000}, "max_body_bytes"),
}


@pytest.mark.slow
@pytest.mark.parametrize("path, body, setting", LIMITED.values(), ids=LIMITED.keys())
def test_each_limit_answers_400_or_413_naming_its_setting(guarded, path, body, setting):
    body = {"model": MODEL, "max_tokens": 1, **body} if path.startswith("/v1") else body
    reply = call(guarded, "POST", path, body)
    assert reply.status_code == (413 if setting == "max_body_bytes" else 400), reply.text
    error = reply.json()["error"]
    assert f"limits.{setting}" in error["message"] and error["code"] == "limit_exceeded"
    assert error["request_id"] == reply.headers["X-Request-Id"]


@pytest.mark.slow
def test_a_chunked_body_is_counted_as_it_arrives(guarded):
    def chunked(body: dict):  # a generator: httpx sends no Content-Length
        data = json.dumps(body).encode()
        yield from (data[i : i + 500] for i in range(0, len(data), 500))

    small = {"model": MODEL, "prompt": "a", "max_tokens": 1}
    large = {**small, "prompt": "x" * 3000}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    url = f"{guarded.url}/v1/completions"
    assert httpx.post(url, content=chunked(small), headers=headers).status_code == 200
    reply = httpx.post(url, content=chunked(large), headers=headers)
    assert reply.status_code == 413 and "limits.max_body_bytes" in reply.text


@pytest.mark.slow
def test_answer_errors_never_show_server_paths(guarded):
    reply = call(guarded, "POST", "/answer", {"question": "Where?", "user_id": "nobody"})
    message = reply.json()["error"]["message"]
    assert reply.status_code == 404 and "nobody" in message and "<server path>" in message
    assert "/srv" not in reply.text and "users.delta" not in reply.text
    assert call(guarded, "POST", "/answer", {"question": "Where?"}).json() == {"answer": ANY}


@pytest.mark.slow
def test_an_unexpected_error_is_a_generic_500_with_the_request_id(guarded):
    reply = call(guarded, "GET", "/boom")
    assert reply.status_code == 500 and "/srv" not in reply.text
    assert reply.json()["error"] == {
        "message": "internal server error",
        "type": "server_error",
        "param": None,
        "code": None,
        "request_id": reply.headers["X-Request-Id"],
    }


def test_without_paths_keeps_urls_routes_and_words():
    from infra.serving.errors import without_paths

    assert without_paths("no file /home/me/.genai/x.parquet, at '/tmp/a/b' (or ~/c/d)") == (
        "no file <server path>, at '<server path>' (or <server path>)"
    )
    assert without_paths(r"C:\Users\me\x.txt failed") == "<server path> failed"
    kept = "POST /answer at http://host:8000/v1/models and/or 1/2"
    assert without_paths(kept) == kept


class GatedLLM:
    """The tiny model behind a gate: a model call waits until the test opens it, so that
    requests queue up behind it."""

    def __init__(self, llm):
        self.llm, self.entered, self.gate = llm, threading.Event(), threading.Event()

    def complete(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(30)
        return self.llm.complete(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.llm, name)


@pytest.mark.slow
def test_a_full_queue_answers_429_and_a_stopping_server_finishes_its_work(llm):
    app = create_app(llm, MODEL, max_batch=1, batch_window_ms=0, limits=ServerLimits(max_queue=1))
    gated = app.state.batcher.llm = GatedLLM(llm)
    running = ServerThread(app)
    ask = {"model": MODEL, "prompt": "a", "max_tokens": 2}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(call, running, "POST", "/v1/completions", ask, timeout=30)
        assert gated.entered.wait(10)  # the first is in the model
        second = pool.submit(call, running, "POST", "/v1/completions", ask, timeout=30)
        deadline = time.monotonic() + 10
        while health(running)["queued"] < 1:  # the second waits for it
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = call(running, "POST", "/v1/completions", ask)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert "limits.max_queue" in refused.json()["error"]["message"]
        running.server.should_exit = True  # what SIGTERM does: stop accepting, drain
        time.sleep(0.3)
        gated.gate.set()
        assert [f.result().status_code for f in (first, second)] == [200, 200]
    running.thread.join(10)
    assert not running.thread.is_alive()
    running.sock.close()


def test_stop_finishes_the_queued_generations(llm):
    async def queue_then_stop():
        batcher = Batcher(llm, max_batch=1, batch_window_ms=0)
        await batcher.start()
        futures = batcher.submit_all(PROMPTS[:3], GenerationParams(max_new_tokens=2))
        await batcher.stop()
        with pytest.raises(Exception, match="not running"):
            batcher.submit("a", GenerationParams())
        return [f.result() for f in futures]

    assert all(isinstance(c, Completion) for c in asyncio.run(queue_then_stop()))


def test_uvicorn_drains_at_shutdown_and_leaves_logging_and_access_lines_to_the_app():
    # (Its access log off is seen here, not in caplog: pytest hands non-propagating loggers,
    # as uvicorn's access logger is then, a handler of its own.)
    config = server_config(FastAPI())
    assert config.timeout_graceful_shutdown == 30 and config.access_log is False
    assert config.log_config is None


# ---------------------------------------------------------------------------- logging

REQUEST_LINE = re.compile(r"request (\S+) (GET|POST) (\S+) (\d{3}|-) (\d+\.\d) ms")


def request_lines(caplog, count: int) -> list[re.Match]:
    """The request log's lines; written once the response is out, so wait for them."""
    deadline = time.monotonic() + 5
    while True:
        lines = [
            REQUEST_LINE.fullmatch(r.getMessage())
            for r in caplog.records
            if r.name == "infra.serving.request_log"
        ]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


@pytest.mark.slow
def test_one_log_line_per_request_with_its_id_and_no_secrets(guarded, caplog):
    caplog.set_level(logging.INFO)
    secret = "secret body text 42"
    body = {"model": MODEL, "prompt": secret, "max_tokens": 1}
    ok = call(guarded, "POST", "/v1/completions", body, headers={"X-Request-Id": "client-7"})
    missing = call(guarded, "GET", "/v1/models/no-such-model", headers={"X-Request-Id": "a b"})
    refused = call(guarded, "GET", "/v1/models", auth="Bearer sk-wrong-key")
    assert ok.status_code == 200 and ok.headers["X-Request-Id"] == "client-7"
    assert re.fullmatch(r"[0-9a-f]{32}", missing.headers["X-Request-Id"])  # "a b": not kept
    assert missing.json()["error"]["request_id"] == missing.headers["X-Request-Id"]
    assert refused.json()["error"]["request_id"] == refused.headers["X-Request-Id"]
    lines = request_lines(caplog, 3)
    assert [line.groups()[:4] for line in lines] == [
        ("client-7", "POST", "/v1/completions", "200"),
        (missing.headers["X-Request-Id"], "GET", "/v1/models/{model_id:path}", "404"),
        (refused.headers["X-Request-Id"], "GET", "/v1/models", "401"),
    ]
    assert secret not in caplog.text and KEY not in caplog.text and "sk-wrong" not in caplog.text


# A process of its own: pytest's capture handlers sit on this one's root logger.
CONFIGURE_TWICE = """
import json, logging, sys
from infra.logs import configure_logging
log_file = sys.argv[1]
root = logging.getLogger()
configure_logging(log_file=log_file)
configure_logging(log_file=log_file)  # again: no second handler
seen = {"handlers": sorted(type(h).__name__ for h in root.handlers), "level": root.level,
        "infra": logging.getLogger("infra").level, "httpx": logging.getLogger("httpx").level}
logging.getLogger("infra.serving.app").info("serving tiny on http://127.0.0.1:8000/v1")
logging.getLogger("httpx").info("HTTP Request: GET ...")  # noise: held back
logging.getLogger("mlflow.store").info("Creating initial MLflow database tables")  # too
configure_logging(verbose=True)
seen["verbose"] = [root.level, logging.getLogger("httpx").level, len(root.handlers)]
prefects = logging.StreamHandler()  # a handler already there, as Prefect's at its import
root.handlers = [prefects]
root.setLevel(logging.WARNING)
configure_logging(console_tracebacks=False)
seen["kept"] = [root.handlers == [prefects], logging.getLogger("infra").level]
try:
    raise RuntimeError("boom")
except RuntimeError:
    logging.getLogger("flows.cli").exception("the run failed")  # on the console: no traceback
print(json.dumps(seen))
"""


def test_configure_logging_once_for_the_whole_process(tmp_path):
    log_file = tmp_path / "logs" / "genai.log"
    run = subprocess.run(
        [sys.executable, "-c", CONFIGURE_TWICE, str(log_file)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(run.stdout)
    assert seen["handlers"] == ["FileHandler", "StreamHandler"]
    assert (seen["level"], seen["infra"], seen["httpx"]) == (
        logging.WARNING,  # other libraries' INFO lines stay out
        logging.INFO,  # the project's show
        logging.WARNING,
    )
    assert seen["verbose"] == [logging.INFO, logging.NOTSET, 2]
    assert seen["kept"] == [True, logging.INFO]  # its INFO lines show now
    line = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO infra.serving.app: serving tiny on .*"
    assert re.fullmatch(line, log_file.read_text().strip())
    console = run.stderr.strip().splitlines()
    assert re.fullmatch(line, console[0]) and len(console) == 2
    assert console[1].endswith("ERROR flows.cli: the run failed")  # and no traceback


def test_the_model_keeps_a_core_free_for_the_server_and_a_bad_count_is_refused(monkeypatch):
    import torch

    from infra.serving import app as server_app

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert server_app.model_threads() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert server_app.model_threads() == 1  # one core: the model still gets a thread
    before = torch.get_num_threads()
    try:
        server_app.set_model_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="torch_threads must be at least 1"):
            server_app.set_model_threads(0)
    finally:
        torch.set_num_threads(before)
