"""infra/serving.py: the official ``openai`` client against the app around a tiny model —
chat, completions, streaming equal to the non-streamed greedy text, concurrent requests in
few model batches, OpenAI-shaped errors — plus the streaming decode path of infra/llm.py."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn
from tiny_model import scramble_weights  # noqa: E402  (tests/ is on sys.path)

from infra.llm import GenerationParams, OpenAICompatibleLLM, TransformersLLM, streamable_prefix
from infra.serving import create_app
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
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
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
