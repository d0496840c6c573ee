"""The RAG stage end to end on the tiny fixture model: features synced, the index built,
genai-rag made by finetune_task (2 steps), questions answered with sources from the pinned
index version; then /answer on the model server and `genai ask --json` over the same index,
and the retriever grid with its cache."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from fastapi.testclient import TestClient
from workspace_size import assert_rerun_adds_little, workspace_bytes

from flows.evaluate_retrieval import EvaluateRetrievalConfig, evaluate_retrieval
from flows.rag import RagConfig, rag
from infra import registry
from infra.serving import answer_router, create_app
from pipelines.rag.chain import open_chain
from pipelines.rag.config import index_config
from pipelines.rag.index import lancedb_dir

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SMALL_CORPUS = {"packages": ["mlflow"], "max_documents": 30}
SMALL_FEATURES = {"n_users": 5, "n_hotels": 6}
TRAIN = {
    "max_steps": 2,
    "micro_batch": 2,
    "warmup_steps": 1,
    "max_len": 1024,
    "zero_stage": 0,
    "checkpoint_every": 2,
    "eval_every": 2,
    "eval_batches": 1,
}


def small_config(**overrides) -> RagConfig:
    data = {
        "features": {"data": SMALL_FEATURES},
        "index": {"corpus": SMALL_CORPUS, "chunking": {"size": 96, "overlap": 8}},
        "answer": {"k": 3, "max_new_tokens": 6, "max_source_chars": 300},
        "training_questions": 12,
        "task_model": TRAIN,
        "questions": [
            {"question": "How do I log a metric for a run?"},
            {"question": "Which hotel suits me?", "user_id": "u0001"},
        ],
    }
    data.update(overrides)
    return RagConfig.model_validate(data)


@pytest.fixture(scope="module")
def first_run(spark, prefect_server, long_tiny_model, settings):
    before = workspace_bytes(settings.home)
    state = rag(
        small_config(make_task_model="always"), base=str(long_tiny_model), return_state=True
    )
    assert state.is_completed(), state.message
    return {**state.result(), "bytes_added": workspace_bytes(settings.home) - before}


def test_rag_flow_builds_the_index_makes_genai_rag_and_answers(first_run):
    index, answers = first_run["index"], first_run["answers"]
    assert index["chunks"] > index["documents"] >= 30 + 6  # the capped docs + the hotels
    assert index["chunks_embedded"] == index["chunks"]  # a new table: everything embedded
    assert first_run["task_model"]["champion"] is True
    assert registry.alias_version("genai-rag") is not None
    assert answers["model"] == "models:/genai-rag@champion"
    assert answers["version"] == index["version"]
    first, hotel = answers["answers"]
    for answer in (first, hotel):
        assert 1 <= len(answer["sources"]) <= 5  # listed_sources; k = 3 chunks quoted
        assert set(answer["cited"]) <= set(answer["sources"])
        assert answer["table_version"] == index["version"]
        assert answer["latency_ms"]["total_ms"] > 0
    assert first["features"] is None
    assert hotel["features"]["user_preferences"]["user_id"] == "u0001"


def test_a_rerun_with_nothing_new_embeds_nothing(first_run, long_tiny_model, settings):
    before = workspace_bytes(settings.home)
    state = rag(
        small_config(make_task_model="never"), base=str(long_tiny_model), return_state=True
    )
    assert state.is_completed(), state.message
    assert_rerun_adds_little(first_run["bytes_added"], workspace_bytes(settings.home) - before)
    again = state.result()["index"]
    assert again["table"] == first_run["index"]["table"]
    assert again["chunks_embedded"] == 0 and again["sources_written"] == 0
    assert again["chunks"] == first_run["index"]["chunks"]


def test_answer_endpoint_returns_the_pinned_top_k(first_run, long_tiny_model):
    config = small_config()
    served = config.answer.model_copy(update={"model": str(long_tiny_model)})
    chain = open_chain(
        index_config(config),
        served,
        lancedb_dir(),
        version=first_run["index"]["version"],
        load_model=False,
    )
    question = "How do I log a metric for a run?"
    quoted, expected = chain.listed(question)
    assert len(expected) == chain.config.listed_sources  # the top documents, once each
    assert expected[: len({h.source_id for h in quoted})] == list(
        dict.fromkeys(h.source_id for h in quoted)
    )
    app = create_app(long_tiny_model, "tiny", routers=[answer_router(chain)])
    with TestClient(app) as client:
        body = client.post("/answer", json={"question": question}).json()
        assert body["sources"] == expected
        assert set(body["cited"]) <= {h.source_id for h in quoted}
        assert body["table_version"] == first_run["index"]["version"]
        assert set(body["latency_ms"]) == {"retrieve_ms", "features_ms", "generate_ms", "total_ms"}

        user = client.post(
            "/answer", json={"question": "Cheapest hotel?", "user_id": "u0001", "nights": 2}
        )
        assert user.status_code == 200, user.text
        assert user.json()["features"]["user_preferences"]["user_id"] == "u0001"

        unknown = client.post("/answer", json={"question": "Hotels?", "user_id": "nobody"})
        assert unknown.status_code == 404 and "nobody" in unknown.text
        too_long = client.post("/answer", json={"question": "x" * 5000})
        assert too_long.status_code == 400 and "limit" in too_long.text


def test_genai_ask_prints_one_json_object(first_run, tmp_path, capsys, long_tiny_model):
    from flows.cli.main import main

    preset = tmp_path / "ask.yaml"
    preset.write_text(yaml.safe_dump(small_config().model_dump(mode="json")))
    code = main(
        [
            "ask",
            "--json",
            "--preset",
            str(preset),
            "--model",
            str(long_tiny_model),
            "How do I log a metric for a run?",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) >= {"answer", "sources", "cited", "latency_ms"}
    assert printed["sources"] and set(printed["cited"]) <= set(printed["sources"])
    assert printed["index"] == {
        "table": first_run["index"]["table"],
        "version": printed["index"]["version"],
    }

    code = main(
        ["ask", "--json", "--preset", str(preset), "--model", str(long_tiny_model), "x" * 5000]
    )
    assert code == 2 and "limit" in capsys.readouterr().err


HOTEL_LINE = re.compile(
    r"hotel:(?P<id>\S+) [^\n]*?: (?P<night>[\d.]+) EUR per night, (?P<total>[\d.]+) EUR for "
    r"(?P<nights>\d+) nights"
)


def quoting_answer(n, path, body):
    """An endpoint that answers only with what the prompt gave it: its first hotel's prices."""
    hotel = HOTEL_LINE.search(body["prompt"])
    text = (
        f"{hotel['night']} EUR per night, {hotel['total']} EUR for {hotel['nights']} nights "
        f"[hotel:{hotel['id']}]."
    )
    return 200, {}, {"choices": [{"text": text}]}


def inventing_answer(n, path, body):
    """An endpoint made to answer wrongly: a budget and a hotel that are in no feature."""
    return 200, {}, {"choices": [{"text": "A budget of 10 EUR per night fits [hotel:h999]."}]}


@pytest.mark.parametrize("respond, grounded", [(quoting_answer, True), (inventing_answer, False)])
def test_genai_ask_marks_an_answer_that_quotes_what_it_was_not_given(
    first_run, tmp_path, capsys, respond, grounded
):
    from fake_openai import FakeServer

    from flows.cli.main import main

    server = FakeServer(respond)
    preset = tmp_path / "ask.yaml"
    preset.write_text(yaml.safe_dump(small_config().model_dump(mode="json")))
    try:
        code = main(
            [
                *("ask", "--json", "--preset", str(preset), "--user-id", "u0001"),
                *("--model", f"{server.base_url}#judge-me", "Which hotel suits me for 2 nights?"),
            ]
        )
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["grounded"] is grounded, printed
    if grounded:
        assert printed["ungrounded_spans"] == [] and printed["cited"]
    else:
        assert printed["ungrounded_spans"] == ["10 EUR", "[hotel:h999]"]


def test_retriever_grid_scores_every_cell_and_reads_them_back(first_run):
    config = EvaluateRetrievalConfig.model_validate(
        {
            "index": {"corpus": SMALL_CORPUS, "hotels": None},
            "grid": {"chunk_sizes": [64], "max_k": 3},
            "questions": {"template": 8},
        }
    )
    state = evaluate_retrieval(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert len(result["cells"]) == 3 and not any(c["cached"] for c in result["cells"])
    assert result["best"]["cell"] in {c["cell"] for c in result["cells"]}
    assert 0 < result["best"][result["metric"]] <= 1  # some question finds its document
    again = evaluate_retrieval(config)
    assert all(c["cached"] for c in again["cells"])
    assert again["best"] == result["best"]
    pinned = {c["table_version"] for c in result["cells"]}
    assert pinned == {f"{result['indexes'][64]['table']}@{result['indexes'][64]['version']}"}
