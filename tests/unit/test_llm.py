"""infra/llm.py: batched in-process generation, seeded sampling, stop sequences, structured
output that always parses, and the HTTP client's retries, limits and key hygiene against a
local server."""

from __future__ import annotations

import random
import time

import pytest
import torch
from fake_openai import FakeServer, echo  # noqa: E402  (tests/ is on sys.path)
from tiny_model import scramble_weights  # noqa: E402

from infra.llm import (
    GenerationParams,
    LLMError,
    OpenAICompatibleLLM,
    PromptTooLongError,
    TransformersLLM,
    cut_at_stop,
    load_llm,
    plan_batches,
)
from infra.llm_fields import (
    Field,
    generate_fields,
    generate_templates,
    parse_fields,
    render_fields,
)

PROMPTS = [
    "The",
    "a",
    "",
    "日本語 text the café",
    "The pipeline reads delta rows 12 times. The model packs the mix 3 times. Each shard",
    "Our tokenizer checks",
]


@pytest.fixture(scope="module")
def llm(tiny_model_dir) -> TransformersLLM:
    """The tiny model with its weights scaled up: at init scale it repeats the last token,
    which would hide padding or position bugs; large weights make every output depend on
    every prompt token and position."""
    model = TransformersLLM(tiny_model_dir, device="cpu", tokens_per_batch=40)
    scramble_weights(model.model)
    return model


# ---------------------------------------------------------------------------- batching


def test_plan_batches_stays_within_budget_and_covers_every_prompt():
    lengths = [3, 40, 7, 7, 1, 100, 12, 5]
    batches = plan_batches(lengths, max_new_tokens=8, tokens_per_batch=64)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert [5] in batches  # too long for the budget: alone, not dropped
    for batch in batches:
        if len(batch) > 1:
            assert len(batch) * (max(lengths[i] for i in batch) + 8) <= 64
    assert len(batches) < len(lengths)  # short prompts do share batches


def test_batched_greedy_equals_one_prompt_at_a_time_in_order(llm):
    params = GenerationParams(max_new_tokens=12)
    widths = [len(i) for i in map(llm._encode, PROMPTS)]
    assert len(plan_batches(widths, 12, llm.tokens_per_batch)) >= 3  # several batches
    assert max(widths) > 5 * min(widths)
    batched = llm.generate(PROMPTS, params)
    alone = [llm.generate([p], params)[0] for p in PROMPTS]
    assert batched == alone
    assert len(set(batched)) == len(PROMPTS)  # distinct outputs: order is really checked
    assert llm.generate([], params) == []


def test_a_shared_prompt_prefix_is_computed_once_and_changes_no_output(llm, monkeypatch):
    import infra.llm as module

    head = "The pipeline reads delta rows and the model packs the mix into shards. " * 3
    prompts = [head + tail for tail in ("Each shard", "Our tokenizer checks", "a", "日本語")]
    ids = [llm._encode(p) for p in prompts]
    assert module._shared_prefix_length(ids) >= module.MIN_SHARED_PREFIX
    params = GenerationParams(max_new_tokens=10)
    monkeypatch.setattr(llm, "tokens_per_batch", 1 << 16)  # all four in one batch
    shared_calls = []
    original = llm._static_cache
    monkeypatch.setattr(
        llm,
        "_static_cache",
        lambda prefix, rows, length: (
            shared_calls.append(prefix.shape[1]),
            original(prefix, rows, length),
        )[1],
    )
    batched = llm.generate(prompts, params)
    assert shared_calls and shared_calls[0] >= module.MIN_SHARED_PREFIX
    assert batched == [llm.generate([p], params)[0] for p in prompts]


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(llm):
    params = GenerationParams(max_new_tokens=12, temperature=1.0, seed=7)
    torch.manual_seed(123)
    first = llm.generate(PROMPTS, params)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)  # generate did not consume or reseed it
    assert llm.generate(PROMPTS, params) == first
    other = llm.generate(PROMPTS, params.model_copy(update={"seed": 8}))
    assert other != first
    assert first != llm.generate(PROMPTS, GenerationParams(max_new_tokens=12))  # not greedy


def test_stop_sequence_cuts_output_and_stops_generation_early(llm, monkeypatch):
    params = GenerationParams(max_new_tokens=24)
    full = llm.generate(PROMPTS, params)
    stop = full[4][6:8]  # a string the longest prompt's completion surely holds
    widths = []
    generate = llm.model.generate

    def spy(input_ids, **kwargs):
        out = generate(input_ids, **kwargs)
        widths.append(out.shape[1] - input_ids.shape[1])
        return out

    monkeypatch.setattr(llm.model, "generate", spy)
    stopped = llm.generate([PROMPTS[4]], params.model_copy(update={"stop": [stop, "\x00"]}))
    assert stopped == [full[4][: full[4].find(stop)]]
    assert stop not in stopped[0]
    assert widths[0] < 24  # generation ended at the stop, not at max_new_tokens
    stopped_all = llm.generate(PROMPTS, params.model_copy(update={"stop": [stop]}))
    assert stopped_all == [cut_at_stop(text, [stop]) for text in full]


def test_cut_at_stop_uses_the_earliest_stop():
    assert cut_at_stop("abc. def\nx", ["\n", "."]) == "abc"
    assert cut_at_stop("abc", ["z", ""]) == "abc"


# ---------------------------------------------------------------------------- structured


FIELDS = [
    Field("topic", "Topic:", ["\n"], 8),
    Field("score", " Score:", [" ", "\n"], 4),
    Field("why", "Why:", ["e", "."], 12),
]


def _assert_well_formed(results, fields):
    for values in results:
        assert list(values) == [f.name for f in fields]
        for f in fields:
            assert not any(s in values[f.name] for s in f.stop)
            assert values[f.name] == values[f.name].strip()
        assert parse_fields(fields, render_fields(fields, values)) == values


def test_structured_output_on_the_tiny_model_always_parses(llm):
    results = generate_fields(llm, PROMPTS, FIELDS)
    assert len(results) == len(PROMPTS)
    _assert_well_formed(results, FIELDS)
    assert any(v for values in results for v in values.values())  # not vacuously empty
    sampled = generate_fields(llm, PROMPTS, FIELDS, GenerationParams(temperature=1.0, seed=3))
    _assert_well_formed(sampled, FIELDS)


def test_no_generation_runs_past_the_models_positions(llm, monkeypatch):
    limit = llm.context_length
    assert limit == 128  # the tiny preset's
    near = "x" * 400  # nearly the whole context, whatever the tokenizer makes of it
    while llm.count_tokens(near) > limit - 5:
        near = near[:-10]
    widths = []
    generate = llm.model.generate

    def spy(input_ids, **kwargs):
        widths.append(input_ids.shape[1] + kwargs["max_new_tokens"])
        return generate(input_ids, **kwargs)

    monkeypatch.setattr(llm.model, "generate", spy)
    [completion] = llm.complete([near], GenerationParams(max_new_tokens=50))
    assert widths == [limit]  # prompt + answer end at the last position, not past it
    assert completion.completion_tokens <= limit - llm.count_tokens(near)

    with pytest.raises(PromptTooLongError, match=r"prompt 1 \(1 of 2 too long\) is \d+ tokens"):
        llm.complete(["short", "y" * 2000], GenerationParams(max_new_tokens=4))


class ScriptedLLM:
    """Returns adversarial completions (stops inside, whitespace, overlapping stops) and
    records the texts it was asked to continue."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.calls: list[list[str]] = []

    def generate(self, prompts, params=None):
        self.calls.append(list(prompts))
        return [
            "".join(self.rng.choice("ab e.\n:aa") for _ in range(self.rng.randint(0, 12)))
            for _ in prompts
        ]


def test_structured_output_parses_whatever_the_model_writes():
    fields = FIELDS + [Field("tail", "T:", ["aa", "\n\n"], 4)]  # "a" + "aa" could misparse
    fake = ScriptedLLM()
    results = generate_fields(fake, [f"p{i}\n" for i in range(300)], fields)
    _assert_well_formed(results, fields)
    # The text for field 2 is the prompt, field 1 rendered with its terminator, then prefix 2.
    assert fake.calls[1][0] == "p0\n" + "Topic:" + results[0]["topic"] + "\n" + " Score:"


def test_a_template_that_grows_to_the_models_positions_stops_filling(llm):
    # The first field's answer may take the prompt to the last positions; the fields after
    # it are left empty instead of generated past the model's positions (or refused).
    near = "x" * 400
    while llm.count_tokens(near) > llm.context_length - 3:
        near = near[:-10]
    fields = [Field(f"f{i}", f"F{i}:", ["\n"], 8) for i in range(4)]
    [values] = generate_fields(llm, [near], fields, GenerationParams(temperature=0.0))
    assert set(values) < {f.name for f in fields}  # some field was never asked for
    assert "f0" in values
    [short] = generate_fields(llm, ["short"], fields, GenerationParams(temperature=0.0))
    assert set(short) == {f.name for f in fields}


def test_render_parse_round_trip_and_clear_parse_error():
    values = {"topic": "delta tables", "score": "3", "why": "fast"}
    text = render_fields(FIELDS, values)
    assert text == "Topic:delta tables\n Score:3 Why:fast" + "e"
    assert parse_fields(FIELDS, text) == values
    assert parse_fields(FIELDS, text[:-1]) == values  # a missing last terminator is fine
    with pytest.raises(ValueError, match="'score'"):
        parse_fields(FIELDS, "Topic:x\nScore:3 Why:y.")
    with pytest.raises(ValueError, match="stop"):
        Field("bad", "B:", [], 4)


# ---------------------------------------------------------------------------- HTTP client


@pytest.fixture
def serve():
    servers = []

    def start(respond=None, delay_s: float = 0.0) -> FakeServer:
        servers.append(FakeServer(respond, delay_s))
        return servers[-1]

    yield start
    for server in servers:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_completions_and_chat_hit_their_paths_with_their_bodies(serve):
    server = serve()
    params = GenerationParams(max_new_tokens=5, temperature=0.5, top_p=0.9, seed=4, stop=["|"])
    completions = OpenAICompatibleLLM(server.base_url, "m1")
    assert completions.generate(["x|y", "z"], params) == ["text:x", "text:z"]  # cut client-side
    chat = OpenAICompatibleLLM(server.base_url + "/", "m2", mode="chat")
    assert chat.generate(["hi"], params) == ["chat:hi"]
    # the two completions go out concurrently: find the first prompt's request by its body
    first = next(r for r in server.requests if r["body"].get("prompt") == "x|y")
    chat_request = server.requests[-1]
    assert first["path"] == "/v1/completions"
    assert first["body"] == {
        "model": "m1",
        "prompt": "x|y",
        "max_tokens": 5,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 4,
        "stop": ["|"],
    }
    assert chat_request["path"] == "/v1/chat/completions"
    assert chat_request["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert chat_request["body"]["model"] == "m2" and "prompt" not in chat_request["body"]


def test_429_with_retry_after_is_retried_then_succeeds(serve):
    server = serve(
        lambda n, path, body: (
            (429, {"Retry-After": "0"}, "slow down") if n == 0 else (200, {}, echo(path, body))
        )
    )
    llm = OpenAICompatibleLLM(server.base_url, "m", backoff_s=30)  # Retry-After wins
    started = time.perf_counter()
    assert llm.generate(["a"]) == ["text:a"]
    assert len(server.requests) == 2
    assert time.perf_counter() - started < 5


def test_read_timeout_is_retried(serve):
    server = serve(
        lambda n, path, body: (time.sleep(1.0 if n == 0 else 0), (200, {}, echo(path, body)))[1]
    )
    llm = OpenAICompatibleLLM(server.base_url, "m", timeout_s=0.3, backoff_s=0.01)
    assert llm.generate(["a"]) == ["text:a"]
    assert len(server.requests) == 2


def test_persistent_500_gives_up_after_max_retries_with_a_clear_error(serve):
    server = serve(lambda n, path, body: (500, {}, "boom " + "x" * 5000))
    llm = OpenAICompatibleLLM(server.base_url, "m", max_retries=2, backoff_s=0.01)
    with pytest.raises(LLMError) as err:
        llm.generate(["a"])
    message = str(err.value)
    assert "500" in message and "boom" in message and f"{server.base_url}/completions" in message
    assert len(message) < 1000  # the body is truncated
    assert len(server.requests) == 3


def test_400_fails_at_once(serve):
    server = serve(lambda n, path, body: (400, {}, {"error": "bad max_tokens"}))
    llm = OpenAICompatibleLLM(server.base_url, "m", backoff_s=0.01)
    with pytest.raises(LLMError, match="400.*bad max_tokens"):
        llm.generate(["a"])
    assert len(server.requests) == 1


def test_concurrency_is_limited_and_order_kept(serve):
    server = serve(delay_s=0.05)
    llm = OpenAICompatibleLLM(server.base_url, "m", max_concurrency=3)
    prompts = [f"p{i}" for i in range(15)]
    assert llm.generate(prompts) == [f"text:{p}" for p in prompts]
    assert 2 <= server.max_in_flight <= 3


def test_api_key_goes_in_the_header_and_never_in_errors(serve, monkeypatch):
    secret = "sk-test-0123456789"
    server = serve(
        lambda n, path, body: (
            (401, {}, f"invalid key {secret}") if n == 1 else (200, {}, echo(path, body))
        )
    )
    llm = OpenAICompatibleLLM(server.base_url, "m", api_key=secret)
    assert llm.generate(["a"]) == ["text:a"]
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    with pytest.raises(LLMError) as err:
        llm.generate(["a"])
    assert "401" in str(err.value) and secret not in str(err.value)
    assert secret not in repr(llm)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    OpenAICompatibleLLM(server.base_url, "m").generate(["a"])
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-from-env"


# ---------------------------------------------------------------------------- load_llm


def test_load_llm_dispatches_on_the_spec(tiny_model_dir, tmp_path):
    local = load_llm(str(tiny_model_dir))
    assert isinstance(local, TransformersLLM)
    assert isinstance(load_llm({"model_dir": tiny_model_dir, "device": "cpu"}), TransformersLLM)
    remote = load_llm("http://127.0.0.1:9/v1#m")
    assert isinstance(remote, OpenAICompatibleLLM)
    assert (remote.base_url, remote.model, remote.url) == (
        "http://127.0.0.1:9/v1",
        "m",
        "http://127.0.0.1:9/v1/completions",
    )
    chat = load_llm({"base_url": "https://host/v1", "model": "x", "mode": "chat"})
    assert chat.url == "https://host/v1/chat/completions"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_llm(str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError, match="#"):
        load_llm("http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="base_url"):
        load_llm({"model": "x"})


def test_templates_per_prompt_parse_and_join_their_prefix_and_value():
    templates = [
        [Field("d", "D:", joiner=" ")] + [Field(f"c{k}", f"- c{k}:", joiner=" ") for k in range(n)]
        for n in (0, 1, 3)
    ]
    fake = ScriptedLLM(seed=1)
    prompts = ["p0\n", "p1\n", "p2\n"]
    results = generate_templates(fake, prompts, templates)
    for fields, values in zip(templates, results, strict=False):
        _assert_well_formed([values], fields)
        assert set(values) == {f.name for f in fields}
    # the model continues right after the prefix; rendering puts the joiner back
    assert all(text.endswith(":") for call in fake.calls for text in call)
    assert render_fields(templates[0], {"d": "x"}) == "D: x\n"
    with pytest.raises(ValueError, match="2 templates for 3 prompts"):
        generate_templates(fake, prompts, templates[:2])
