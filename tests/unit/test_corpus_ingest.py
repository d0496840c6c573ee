"""Bad user input through the real ingestion step and quality gate: quarantined with reasons
and counted, or — for missing paths and batches beyond the limit — nothing written at all."""

import json

import pytest

from infra.lake import QualityGateError, read_table
from pipelines.corpus.ingest import CORPUS_RAW, ingest_corpus
from pipelines.shared.documents import CorpusConfig
from pipelines.shared.input_files import InputFileError

pytestmark = pytest.mark.spark


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("GENAI_HOME", str(tmp_path / "home"))  # the lake follows the workspace
    return tmp_path


def good_line(i: int) -> str:
    return json.dumps({"id": f"doc-{i}", "text": f"Document number {i} explains a function."})


def test_bad_rows_are_quarantined_with_their_reason(spark, workspace):
    folder = workspace / "corpus"
    folder.mkdir()
    lines = [good_line(i) for i in range(150)]
    lines += [
        '{"id": "broken", "text": ',  # invalid JSON
        json.dumps({"text": "no id here"}),  # missing id
        json.dumps({"id": "typed", "text": 42}),  # wrong type
        json.dumps({"id": "doc-7", "text": "same id again"}),  # duplicate id
        json.dumps({"id": "huge", "text": "x" * 200_001}),
    ]  # oversize
    (folder / "docs.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))  # undecodable

    manifest = ingest_corpus(spark, CorpusConfig(paths=[str(folder)]), txn_id="bad-input")
    assert manifest["input_rows"] == 156
    assert manifest["quarantined"] == 7  # 5 bad lines, the text file, and the first doc-7
    assert manifest["written"] == manifest["rows"] == 149
    reasons = {
        r.origin: (r._reason, r.ingest_error)
        for r in read_table(spark, manifest["quarantine_table"]).collect()
    }
    by_line = {origin.rsplit(":", 1)[-1]: value for origin, value in reasons.items()}
    assert "invalid JSON" in by_line["151"][1]
    assert "expect_column_values_to_be_null(column=ingest_error)" in by_line["151"][0]
    assert "missing field 'id'" in by_line["152"][1]
    assert "expected string" in by_line["153"][1]
    assert "expect_column_values_to_be_unique(column=id)" in by_line["154"][0]
    assert "expect_column_value_lengths_to_be_between" in by_line["155"][0]
    assert any(
        "latin1.txt" in origin and "undecodable" in (error or "")
        for origin, (_, error) in reasons.items()
    )


def test_a_missing_path_fails_before_anything_is_written(spark, workspace):
    with pytest.raises(InputFileError, match="nowhere"):
        ingest_corpus(spark, CorpusConfig(paths=[str(workspace / "nowhere")]), txn_id="missing")
    assert not CORPUS_RAW.path().exists()


def test_a_mostly_bad_batch_commits_nothing(spark, workspace):
    folder = workspace / "bad"
    folder.mkdir()
    lines = [good_line(i) for i in range(10)] + [
        json.dumps({"id": f"x{i}", "text": ""}) for i in range(10)
    ]
    (folder / "docs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(QualityGateError, match=r"10 of 20 rows .*column_value_lengths"):
        ingest_corpus(spark, CorpusConfig(paths=[str(folder)]), txn_id="too-bad")
    assert not CORPUS_RAW.quarantine_path().exists()
    assert not CORPUS_RAW.path().exists()  # the gate refused before any table was created
