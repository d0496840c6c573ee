"""Retriever evaluation: eval sets (template, hand-written, CSV), MLflow's retriever metrics,
and the chunk size x retriever grid with its on-disk cache."""

from __future__ import annotations

import math
import random
import re
from typing import NamedTuple

import pytest

from pipelines.evaluation import (
    retrieval_cells,
    retrieval_grid,
    retrieval_metrics,
    retrieval_reports,
    retrieval_sets,
    retrieval_templates,
)
from pipelines.evaluation.retrieval_cells import CellResult, GridCell, GridConfig
from pipelines.evaluation.retrieval_sets import EvalQuestion, EvalSet, EvalSetError

PACKAGES = ["mlflow", "prefect", "pyspark"]  # the default RAG corpus
SAMPLE_MODULES = {
    "mlflow.tracking.fluent",
    "mlflow.tracking.client",
    "prefect.flows",
    "prefect.tasks",
    "pyspark.sql.dataframe",
    "pyspark.sql.readwriter",
}


class Doc(NamedTuple):
    source_id: str
    text: str
    origin: str = ""


@pytest.fixture(scope="module")
def sample_docs() -> list[dict]:
    """Docstring records of a few real API modules (a fraction of a second, not the corpus)."""
    from pipelines.shared.documents import CorpusConfig, extract_records, list_work_items

    items = [
        i
        for i in list_work_items(CorpusConfig(packages=PACKAGES, sources=["docstring"]))
        if i.name in SAMPLE_MODULES
    ]
    assert {i.name for i in items} == SAMPLE_MODULES
    return [record for item in items for record in extract_records(item)]


def _identifier_parts(record: dict) -> tuple[set[str], set[str]]:
    """(identifiers, word parts) of a record's target, worked out here independently of the
    module: the module's last component and every qualname component, from the origin."""
    path = record["origin"].split("/", 1)[1].rsplit(":", 1)[0]
    module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    dotted = record["id"].removeprefix("py:").split("#")[0]
    qualname = dotted[len(module) + 1 :].split(".") if dotted != module else []
    identifiers = {module.rsplit(".", 1)[-1], *qualname}
    parts = set()
    for identifier in identifiers:
        for piece in identifier.split("_"):
            parts.update(
                p.lower()
                for p in re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+", piece)
                if len(p) >= 2
            )
    return {i.lower() for i in identifiers}, parts


def _assert_hidden(questions: EvalSet, records: list[dict]) -> None:
    by_id = {r["id"]: r for r in records}
    for q in questions:
        identifiers, parts = _identifier_parts(by_id[q.expected_source_ids[0]])
        text = q.question.lower()
        tokens = re.findall(r"\w+", text)
        assert not any(i in text for i in identifiers if len(i) >= 3), (q, identifiers)
        assert not any(t in parts or t in identifiers for t in tokens), (q, parts)
        assert not any(p in t for t in tokens for p in parts if len(p) >= 3), (q, parts)


# ------------------------------------------------------------------- template questions ---


def test_template_questions_never_reveal_their_target(sample_docs):
    questions = retrieval_templates.template_questions(sample_docs, n=None)
    assert len(questions) >= 60  # a good share of public API docstrings qualify
    _assert_hidden(questions, sample_docs)
    assert all(len(q.expected_source_ids) == 1 and q.question.endswith("?") for q in questions)
    assert any(q.question.startswith("How ") for q in questions)
    # e.g. mlflow.tracking.fluent.set_tags ("Log a batch of tags for the current run"):
    set_tags = [
        q for q in questions if q.expected_source_ids == ("py:mlflow.tracking.fluent.set_tags",)
    ]
    assert set_tags and "tag" not in set_tags[0].question.lower()
    assert "current run" in set_tags[0].question


def test_same_seed_gives_the_same_set_in_any_input_order(sample_docs):
    first = retrieval_templates.template_questions(sample_docs, n=40, seed=3)
    shuffled = list(sample_docs)
    random.Random(0).shuffle(shuffled)
    again = retrieval_templates.template_questions(shuffled, n=40, seed=3)
    other = retrieval_templates.template_questions(sample_docs, n=40, seed=4)
    assert len(first) == 40
    assert first.questions == again.questions and first.content_hash == again.content_hash
    assert first.content_hash != other.content_hash


def test_template_skips_generic_short_shared_and_non_docstring_documents():
    shared = "Compute the rolling average of a numeric series over a sliding window."
    docs = [
        Doc(
            "py:pkg.mod.Thing.__init__",
            "Initialize self.  See help(type(self)) for the accurate signature of this object.",
        ),
        Doc("py:pkg.mod.name", "Return the name."),
        Doc("py:pkg.a.first_average", shared),
        Doc("py:pkg.b.second_average", shared),
        Doc("pkg:pkg:METADATA", "A package that starts tracked runs and records metrics."),
        Doc(
            "py:pkg.mod.start_run",
            "Start a new tracked run so that later metrics and "
            "parameters are recorded under it.\n\nArgs:\n    name: the run's name.",
        ),
    ]
    questions = retrieval_templates.template_questions(docs, n=None)
    assert [q.expected_source_ids for q in questions] == [("py:pkg.mod.start_run",)]
    words = re.findall(r"\w+", questions.questions[0].question.lower())
    assert not {"start", "run", "runs", "mod"} & set(words)
    assert "metrics" in words
    with pytest.raises(EvalSetError, match="no document qualifies"):
        retrieval_templates.template_questions(docs[:2], n=None)


def test_summary_line_reduces_markup_to_words():
    text = (
        "Returns a :class:`~pyspark.sql.DataFrame` read from ``path``; see `the docs "
        "<https://example.org>`_ (e.g. for CSV). More text here.\n\nArgs: ..."
    )
    assert retrieval_templates.summary_line(text) == (
        "Returns a DataFrame read from path; see the docs (e.g. for CSV)"
    )
    assert retrieval_templates.summary_line(".. note:: directive first") == ""


# ------------------------------------------------------------------- hand-written + CSV ---


def test_hand_written_set_loads():
    questions = retrieval_sets.hand_written_questions()
    assert len(questions) >= 50
    assert len({q.question for q in questions}) == len(questions)
    assert sum(len(q.expected_source_ids) > 1 for q in questions) >= 10  # multi-answer ones
    packages = {q.expected_source_ids[0].split(".")[0] for q in questions}
    assert packages == {"py:mlflow", "py:prefect", "py:pyspark"}


@pytest.mark.slow
def test_hand_written_ids_exist_and_all_templates_hide_targets_on_the_default_corpus():
    """Reads the whole default corpus (mlflow, prefect, pyspark docstrings: ~6-11 s)."""
    from pipelines.shared.documents import CorpusConfig, iter_records

    records = list(
        iter_records(CorpusConfig(packages=PACKAGES, sources=["metadata", "docstring"]))
    )
    known = {r["id"] for r in records}
    assert retrieval_sets.unknown_ids(retrieval_sets.hand_written_questions(), known) == {}
    templates = retrieval_templates.template_questions(records, n=None)
    assert len(templates) > 1000
    _assert_hidden(templates, [r for r in records if r["id"].startswith("py:")])


def test_user_csv_with_both_separators(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(
        "\ufeffquestion,expected_source_ids,note\n"
        "How do I log a metric?,py:a.log_metric; py:a.log_metrics,two ways\n"
        '"Start a run, then?",py:a.start_run|py:a.end_run|py:a.start_run,\n',
        encoding="utf-8",
    )
    eval_set = retrieval_sets.load_eval_set(
        path, known_ids={"py:a.log_metric", "py:a.log_metrics", "py:a.start_run", "py:a.end_run"}
    )
    assert eval_set.name == "mine" and len(eval_set) == 2
    assert eval_set.questions[0] == EvalQuestion(
        "How do I log a metric?",
        ("py:a.log_metric", "py:a.log_metrics"),
        "two ways",
        "mine.csv row 1",
    )
    assert eval_set.questions[1].expected_source_ids == ("py:a.start_run", "py:a.end_run")


@pytest.mark.parametrize(
    "rows, message",
    [
        ("ok?,py:a\n,py:b\n", r"row 2 \(line 3\): 'question' is missing"),
        ("ok?,py:a\nno ids?, ; |\n", r"row 2 \(line 3\): 'expected_source_ids' needs"),
        ("ok?,py:a,extra\n", r"row 1 \(line 2\): more fields than the header"),
    ],
)
def test_user_csv_bad_row_names_file_and_row(tmp_path, rows, message):
    path = tmp_path / "bad.csv"
    path.write_text("question,expected_source_ids\n" + rows)
    with pytest.raises(EvalSetError, match=re.escape(str(path)) + " " + message):
        retrieval_sets.load_csv(path)


def test_user_csv_missing_column_unknown_id_and_bad_jsonl(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text("query,ids\nq?,py:a\n")
    with pytest.raises(
        EvalSetError,
        match=r"cols.csv: missing column\(s\) question, "
        r"expected_source_ids",
    ):
        retrieval_sets.load_csv(path)
    path.write_text("question,expected_source_ids\nq?,py:a;py:typo\n")
    with pytest.raises(EvalSetError, match=r"cols.csv row 1: py:typo"):
        retrieval_sets.load_csv(path, known_ids={"py:a"})
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text(
        '{"question": "q?", "expected_source_ids": ["py:a"]}\n'
        '{"question": "q2?", "expected_source_ids": "py:a"}\n'
    )
    with pytest.raises(EvalSetError, match=r"q.jsonl line 2: 'expected_source_ids' must be"):
        retrieval_sets.load_eval_set(jsonl)


def test_content_hash_follows_questions_and_expected_ids_only():
    a = EvalSet("a", (EvalQuestion("q?", ("x", "y"), "note", "f:1"),))
    b = EvalSet("b", (EvalQuestion("q?", ("y", "x"), "", "g:9"),))
    c = EvalSet("a", (EvalQuestion("q?", ("x",)),))
    assert a.content_hash == b.content_hash != c.content_hash
    assert len(EvalSet.combine("ab", a, b, c)) == 1


# ------------------------------------------------------------------------ evaluation ---


def test_dedup_source_ids_keeps_first_rank():
    class Hit(NamedTuple):
        chunk_id: str
        source_id: str

    assert retrieval_metrics.dedup_source_ids(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]
    assert retrieval_metrics.dedup_source_ids(["a", "a", "b", "c"], k=2) == ["a", "b"]
    hits = [Hit("a#0-5", "a"), Hit("a#5-9", "a"), Hit("b#0-3", "b")]
    assert retrieval_metrics.dedup_source_ids(hits) == ["a", "b"]


def _toy_set() -> EvalSet:
    return EvalSet(
        "toy",
        (EvalQuestion("where are a and b?", ("a", "b")), EvalQuestion("where is c?", ("c",))),
    )


def test_mlflow_metrics_match_a_hand_computed_case():
    answers = {"where are a and b?": ["a", "x", "a", "b"], "where is c?": ["y", "z"]}
    result = retrieval_metrics.evaluate_retriever(
        lambda q, k: answers[q][: k + 1], _toy_set(), ks=(1, 2, 3)
    )
    first, second = result["per_question"]
    assert first["retrieved"] == ["a", "x", "b"]  # two chunks of "a" count once
    assert (first["hit_rank"], second["hit_rank"]) == (1, None)
    # binary-relevance nDCG@3 for relevant ranks 1 and 3 out of 2 relevant documents
    ndcg = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert first["ndcg_at_3"] == pytest.approx(ndcg, abs=1e-6)
    assert (first["precision_at_2"], first["recall_at_1"], first["recall_at_3"]) == (0.5, 0.5, 1)
    metrics = result["metrics"]
    assert metrics["precision_at_3"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-6)
    assert metrics["ndcg_at_3"] == pytest.approx(ndcg / 2, abs=1e-6)
    assert metrics["recall_at_1"] == pytest.approx(0.25)
    assert set(metrics) == set(retrieval_metrics.metric_names((1, 2, 3)))
    from infra.tracking import client

    logged = client().get_run(result["run_id"]).data.metrics
    assert logged["ndcg_at_3/mean"] == pytest.approx(ndcg / 2, abs=1e-6)


def test_grid_cells_are_cached_on_disk(tmp_path):
    calls = []

    def retrieve_for_cell(cell: GridCell):
        def retrieve(question: str, k: int) -> list[str]:
            calls.append((cell, question))
            good = {"where are a and b?": ["a", "b"], "where is c?": ["c"]}[question]
            return good if cell.retriever == "hybrid" else ["x", *good]

        return retrieve

    cells = [GridCell(64, "vector"), GridCell(64, "hybrid")]
    kwargs = dict(
        table_version={64: "docs__recursive-64-8@3"}, ks=range(1, 4), out_dir=tmp_path / "report"
    )
    from infra.tracking import client, start_run

    with start_run("test-rag-eval", "grid") as parent:
        first = retrieval_grid.evaluate_grid(
            cells, retrieve_for_cell, _toy_set(), tmp_path / "cache", run=parent, **kwargs
        )
    assert len(calls) == 4 and not any(r.cached for r in first)
    again = retrieval_grid.evaluate_grid(
        cells, retrieve_for_cell, _toy_set(), tmp_path / "cache", **kwargs
    )
    assert len(calls) == 4  # read back: the retrievers were not asked again
    assert all(r.cached for r in again)
    assert [r.metrics for r in again] == [r.metrics for r in first]
    assert [r.run_id for r in again] == [r.run_id for r in first]
    newer = retrieval_grid.evaluate_grid(
        cells,
        retrieve_for_cell,
        _toy_set(),
        tmp_path / "cache",
        **{**kwargs, "table_version": {64: "docs__recursive-64-8@4"}},
    )
    assert len(calls) == 8 and not any(r.cached for r in newer)

    best = retrieval_cells.best_cell(first, "ndcg_at_3")
    assert best.cell == GridCell(64, "hybrid") and best.metrics["ndcg_at_3"] == 1
    history = client().get_metric_history(parent.run_id, "chunk64-hybrid.ndcg")
    assert [m.step for m in history] == [1, 2, 3]
    children = client().search_runs(
        [client().get_run(parent.run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.run_id}'",
    )
    assert {c.info.run_name for c in children} == {"chunk64-vector", "chunk64-hybrid"}

    report = tmp_path / "report"
    assert (report / "grid_metrics.png").read_bytes()[:4] == b"\x89PNG"
    per_question = (report / "grid_per_question.csv").read_text().splitlines()
    assert len(per_question) == 1 + 2 * 2 and "hit_rank" in per_question[0]
    markdown = retrieval_reports.grid_markdown(again, "ndcg_at_3")
    assert "**chunk64-hybrid**" in markdown and "| where is c? | c | c | 1 |" in markdown
    assert retrieval_cells.grid_summary(again, "ndcg_at_3")["best"]["cell"] == "chunk64-hybrid"


def test_grid_config_and_bad_cells():
    assert len(GridConfig().cells()) == 9 and GridConfig().ks == tuple(range(1, 11))
    with pytest.raises(ValueError, match="unknown retriever 'bm25'"):
        retrieval_grid.evaluate_grid(
            [GridCell(64, "bm25")], lambda c: None, _toy_set(), "unused", table_version={64: 1}
        )
    with pytest.raises(ValueError, match="metric 'mrr' not computed"):
        retrieval_cells.best_cell(
            [CellResult(GridCell(64, "fts"), "k", "v", {"ndcg_at_1": 1.0}, [], None)], "mrr"
        )


def test_combined_sets_are_reported_per_eval_set():
    hand = EvalSet("hand", (EvalQuestion("h1?", ("a",)), EvalQuestion("h2?", ("b",))))
    template = EvalSet("template", (EvalQuestion("t1?", ("c",)),))
    combined = EvalSet.combine("hand + template", hand, template)
    assert [q.part for q in combined] == ["hand", "hand", "template"]

    def result(cell: GridCell, scores: list[float]) -> CellResult:
        rows = [
            {
                "question": q.question,
                "eval_set": q.part,
                "expected": list(q.expected_source_ids),
                "retrieved": [],
                "hit_rank": None,
                "recall_at_1": 0.0,
                "ndcg_at_1": score,
            }
            for q, score in zip(combined, scores, strict=False)
        ]
        metrics = {"precision_at_1": 0.0, "recall_at_1": 0.0, "ndcg_at_1": sum(scores) / 3}
        return CellResult(cell, "k", "v", metrics, rows, None)

    # fts wins overall on the template question, hybrid wins the hand-written ones
    results = [result(GridCell(64, "fts"), [0, 0, 1]), result(GridCell(64, "hybrid"), [0.5, 0, 0])]
    summary = retrieval_cells.grid_summary(results, "ndcg_at_1")
    assert summary["best"]["cell"] == "chunk64-fts"
    by_set = summary["by_eval_set"]
    assert by_set["hand"]["questions"] == 2 and by_set["template"]["questions"] == 1
    assert by_set["hand"]["best"] == {"cell": "chunk64-hybrid", "ndcg_at_1": 0.25}
    assert by_set["template"]["best"]["cell"] == "chunk64-fts"
    markdown = retrieval_reports.grid_markdown(results, "ndcg_at_1")
    assert "| cell | hand (2) | template (1) |" in markdown
    assert "| chunk64-hybrid | **0.250** | 0.000 |" in markdown
