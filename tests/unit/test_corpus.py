"""pipelines.corpus.ingest: package documentation and user folders become raw corpus records."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from pipelines.corpus.ingest import build_corpus_raw, source_fingerprint
from pipelines.shared.documents import (
    CorpusConfig,
    WorkItem,
    extract_records,
    extract_with_status,
    iter_records,
    list_work_items,
)
from pipelines.shared.input_files import InputFileError

SYNTH_MODULE = '''\
"""Synthetic module docstring."""
import typing


class Widget:
    """A widget."""

    def spin(self, turns: int) -> None:
        """Spin the widget."""

    def _hidden(self):
        """Private: skipped."""

    def __init__(self):
        """Dunder: kept."""

    class Part:
        """A nested part."""

        def fit(self):
            """Fit the part."""

    @property
    def size(self):
        """Size getter."""
        return 1

    @size.setter
    def size(self, value):
        """Size setter."""

    def no_doc(self):
        pass


async def fetch(url):
    """Fetch asynchronously."""

    def inner():
        """Inside a function body: not read."""


if typing.TYPE_CHECKING:
    def compat():
        """Typed variant."""
else:
    def compat():
        """Runtime variant."""


def _private_helper():
    """Private: skipped."""
'''


def _docstring_item(path: Path, module: str) -> WorkItem:
    return WorkItem(
        "docstring",
        "synthpkg",
        "MIT",
        str(path),
        module,
        f"site-packages/{module.replace('.', '/')}.py",
    )


@pytest.fixture
def synth_package(tmp_path) -> Path:
    package = tmp_path / "site-packages" / "synthpkg"
    package.mkdir(parents=True)
    (package / "mod.py").write_text(SYNTH_MODULE)
    (package / "broken.py").write_text('"""Doc."""\ndef oops(:\n    pass\n')
    return package


def test_docstrings_get_qualified_ids_and_def_lines(synth_package):
    records = extract_records(_docstring_item(synth_package / "mod.py", "synthpkg.mod"))
    by_id = {r["id"]: r for r in records}
    assert list(by_id) == [
        "py:synthpkg.mod",
        "py:synthpkg.mod.Widget",
        "py:synthpkg.mod.Widget.spin",
        "py:synthpkg.mod.Widget.__init__",
        "py:synthpkg.mod.Widget.Part",
        "py:synthpkg.mod.Widget.Part.fit",
        "py:synthpkg.mod.Widget.size",
        "py:synthpkg.mod.Widget.size#2",
        "py:synthpkg.mod.fetch",
        "py:synthpkg.mod.compat",
        "py:synthpkg.mod.compat#2",
    ]
    assert by_id["py:synthpkg.mod.Widget.size"]["text"] == "Size getter."
    assert by_id["py:synthpkg.mod.Widget.size#2"]["text"] == "Size setter."
    assert by_id["py:synthpkg.mod.compat#2"]["text"] == "Runtime variant."
    assert by_id["py:synthpkg.mod"]["origin"] == "site-packages/synthpkg/mod.py:1"
    assert by_id["py:synthpkg.mod.Widget.spin"]["origin"] == "site-packages/synthpkg/mod.py:8"
    # decorated defs: the `def` line, not the decorator's
    assert by_id["py:synthpkg.mod.Widget.size"]["origin"].endswith("mod.py:24")
    assert {r["source"] for r in records} == {"docstring"}
    assert {(r["package"], r["licence"], r["ingest_error"]) for r in records} == {
        ("synthpkg", "MIT", None)
    }


def test_private_names_are_read_when_asked(synth_package):
    item = _docstring_item(synth_package / "mod.py", "synthpkg.mod")._replace(
        exclude_private=False
    )
    ids = {r["id"] for r in extract_records(item)}
    assert {"py:synthpkg.mod.Widget._hidden", "py:synthpkg.mod._private_helper"} <= ids


def test_syntax_error_file_is_skipped_and_flagged(synth_package):
    records, unparseable = extract_with_status(
        _docstring_item(synth_package / "broken.py", "synthpkg.broken")
    )
    assert records == [] and unparseable is True


def test_undecodable_python_keeps_docstrings_with_an_error(tmp_path):
    path = tmp_path / "latin.py"
    path.write_bytes(b'"""Caf\xe9 module."""\n')
    (record,) = extract_records(_docstring_item(path, "latin"))
    assert record["text"] == "Caf\ufffd module."
    assert record["ingest_error"] == "undecodable UTF-8 at byte 6"


# ----------------------------------------------------------- installed distributions --------


@pytest.fixture(scope="module")
def mlflow_records() -> list[dict]:
    # mlflow and mlflow-skinny ship the very same mlflow/*.py files: each is read once
    return list(iter_records(CorpusConfig(packages=["mlflow", "MLflow_Skinny"])))


def test_installed_package_docs_are_read(mlflow_records):
    by_id = {r["id"]: r for r in mlflow_records}
    start_run = by_id["py:mlflow.tracking.fluent.start_run"]
    assert start_run["package"] == "mlflow" and start_run["source"] == "docstring"
    assert "Start a new MLflow run" in start_run["text"]
    assert start_run["origin"].startswith("site-packages/mlflow/tracking/fluent.py:")
    metadata = by_id["pkg:mlflow:METADATA"]
    assert metadata["source"] == "metadata" and "MLflow" in metadata["text"]
    assert "pkg:mlflow-skinny:METADATA" in by_id
    licences = [r for r in mlflow_records if r["source"] == "licence"]
    assert any(
        r["id"].startswith("pkg:mlflow:mlflow-")
        and r["id"].endswith("LICENSE.txt")
        and "Apache License" in r["text"]
        for r in licences
    )
    # mlflow's METADATA `License:` holds the whole licence text: the record gets a short name
    assert metadata["licence"] == "Apache Software License"


def test_package_filter_and_exclusions(mlflow_records):
    counts = Counter(r["id"] for r in mlflow_records)
    assert [i for i, n in counts.items() if n > 1] == []
    assert {r["package"] for r in mlflow_records} == {"mlflow", "mlflow-skinny"}
    assert all(r["ingest_error"] is None for r in mlflow_records)
    docstrings = [r for r in mlflow_records if r["source"] == "docstring"]
    from_private = []
    for record in docstrings:
        file_parts = record["origin"].split(":")[0].split("/")[1:]
        assert not {"tests", "test"} & set(file_parts), record
        if any(p.startswith("_") and p != "__init__.py" for p in file_parts):
            from_private.append(record["id"])
    # a private module is read only for the public names a public package re-exports from
    # it (mlflow.set_tracking_uri): none of its own private names, a small share in all
    assert "py:mlflow.tracking._tracking_service.utils.set_tracking_uri" in from_private
    assert not any(i.rsplit(".", 1)[-1].startswith("_") for i in from_private)
    assert len(from_private) < 0.02 * len(docstrings)


def test_listing_normalises_names_and_rejects_unknown_packages():
    items = list_work_items(CorpusConfig(packages=["Great_Expectations"], sources=["metadata"]))
    assert [(i.kind, i.package) for i in items] == [("metadata", "great-expectations")]
    with pytest.raises(InputFileError, match="'no-such-dist'"):
        list_work_items(CorpusConfig(packages=["no-such-dist"]))
    with pytest.raises(InputFileError, match="genai-lifecycle"):
        list_work_items(CorpusConfig(packages=["genai_lifecycle"]))


def test_listing_everything_skips_this_project():
    packages = {i.package for i in list_work_items(CorpusConfig(sources=["metadata"]))}
    assert "genai-lifecycle" not in packages and {"mlflow", "pyyaml", "pyspark"} <= packages


# --------------------------------------------------------------------- user folders --------


@pytest.fixture
def user_root(tmp_path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    lines = [
        json.dumps({"id": "u1", "text": "fine", "extra": 1}).encode(),
        b'{"id": "u2", "text": ',
        json.dumps({"text": "no id"}).encode(),
        json.dumps({"id": "u4", "text": 5}).encode(),
        b"",
        b"[1, 2]",
        b'{"id": "u7", "text": "caf\xe9"}',
        json.dumps({"id": "u8", "text": "own source", "source": "wiki"}).encode(),
    ]
    (root / "docs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (root / "sub" / "note.txt").write_bytes(b"hello \xff world")
    (root / "sub" / "readme.md").write_text("# Title\n\nBody.\n")
    (root / "image.png").write_bytes(b"\x89PNG")  # not corpus: skipped in a folder
    pq.write_table(
        pa.table({"id": ["p0", None], "text": ["row zero", "row one"]}), root / "rows.parquet"
    )
    pq.write_table(pa.table({"id": ["q0"], "text": [7]}), root / "sub" / "typed.parquet")
    return root


def test_user_folder_records_name_their_problems(user_root):
    records = list(iter_records(CorpusConfig(paths=[str(user_root)])))
    by_origin = {r["origin"]: r for r in records}
    jsonl, txt = user_root / "docs.jsonl", user_root / "sub" / "note.txt"

    assert by_origin[f"{jsonl}:1"] == {
        "id": "u1",
        "source": "user",
        "package": None,
        "licence": None,
        "text": "fine",
        "origin": f"{jsonl}:1",
        "ingest_error": None,
    }
    assert by_origin[f"{jsonl}:2"]["ingest_error"].startswith("invalid JSON: ")
    assert by_origin[f"{jsonl}:2"]["id"] is None
    assert by_origin[f"{jsonl}:3"]["ingest_error"] == "missing field 'id'"
    assert by_origin[f"{jsonl}:3"]["text"] == "no id"
    assert by_origin[f"{jsonl}:4"]["ingest_error"] == "field 'text' is int, expected string"
    assert by_origin[f"{jsonl}:4"]["text"] is None and by_origin[f"{jsonl}:4"]["id"] == "u4"
    assert f"{jsonl}:5" not in by_origin  # a blank line is no record
    assert by_origin[f"{jsonl}:6"]["ingest_error"] == "expected a JSON object, got list"
    bad_utf8_offset = jsonl.read_bytes().index(b"\xe9")  # counted from the file's start
    assert (
        by_origin[f"{jsonl}:7"]["ingest_error"] == f"undecodable UTF-8 at byte {bad_utf8_offset}"
    )
    assert by_origin[f"{jsonl}:7"]["text"] == "caf\ufffd"
    assert by_origin[f"{jsonl}:8"]["source"] == "wiki"

    note = by_origin[str(txt)]
    assert note["id"] == "file:sub/note.txt" and note["source"] == "user"
    assert note["text"] == "hello \ufffd world"
    assert note["ingest_error"] == "undecodable UTF-8 at byte 6"
    assert by_origin[str(user_root / "sub" / "readme.md")]["id"] == "file:sub/readme.md"

    rows = user_root / "rows.parquet"
    assert by_origin[f"{rows}#0"]["id"] == "p0" and by_origin[f"{rows}#0"]["ingest_error"] is None
    assert by_origin[f"{rows}#1"]["ingest_error"] == "field 'id' is null, expected string"
    typed = by_origin[f"{user_root / 'sub' / 'typed.parquet'}#0"]
    assert typed["ingest_error"] == "field 'text' is int, expected string"
    assert len(records) == 7 + 2 + 3  # jsonl lines, text files, parquet rows: none dropped


def test_missing_path_fails_before_any_record(user_root, tmp_path):
    missing = tmp_path / "nope" / "corpus.jsonl"
    with pytest.raises(InputFileError, match=f"corpus path {missing} does not exist"):
        next(iter_records(CorpusConfig(paths=[str(user_root), str(missing)])))


def test_symlinks_are_refused(user_root, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the corpus")
    (user_root / "sub" / "link.txt").symlink_to(outside)
    with pytest.raises(InputFileError, match=r"link\.txt is a symlink .*outside the corpus"):
        list_work_items(CorpusConfig(paths=[str(user_root)]))
    (user_root / "sub" / "link.txt").unlink()
    (user_root / "inner").symlink_to(user_root / "sub")
    with pytest.raises(InputFileError, match="symlinks are refused"):
        list_work_items(CorpusConfig(paths=[str(user_root)]))


def test_unsupported_or_unreadable_file_is_named(tmp_path):
    named = tmp_path / "data.csv"
    named.write_text("id,text\n")
    with pytest.raises(InputFileError, match=f"corpus path {named}: unsupported file type"):
        list_work_items(CorpusConfig(paths=[str(named)]))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(InputFileError, match=f"corpus file {broken} cannot be read"):
        list_work_items(CorpusConfig(paths=[str(broken)]))


def test_single_file_path_ids_are_relative_to_its_folder(tmp_path):
    path = tmp_path / "one.md"
    path.write_text("Just one.")
    (record,) = iter_records(CorpusConfig(paths=[str(path)]))
    assert (record["id"], record["origin"], record["text"]) == (
        "file:one.md",
        str(path),
        "Just one.",
    )


def test_fingerprint_follows_user_files(user_root):
    config = CorpusConfig(paths=[str(user_root)])
    before = source_fingerprint(config)
    assert source_fingerprint(config) == before
    note = user_root / "sub" / "readme.md"
    note.write_text("# Title\n\nBody, edited.\n")
    after_edit = source_fingerprint(config)
    assert after_edit != before
    stat = note.stat()
    os.utime(note, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source_fingerprint(config) != after_edit  # same size, newer file


def test_fingerprint_follows_package_filter():
    assert source_fingerprint(CorpusConfig(packages=["pyyaml"])) == source_fingerprint(
        CorpusConfig(packages=["PyYAML"])
    )
    assert source_fingerprint(CorpusConfig(packages=["pyyaml"])) != source_fingerprint(
        CorpusConfig(packages=["pyyaml", "six"])
    )


# ---------------------------------------------------------------------------- Spark --------


@pytest.mark.spark
def test_spark_build_equals_in_process_records(spark, user_root, tmp_path):
    config = CorpusConfig(packages=["pyyaml"])
    expected = sorted(iter_records(config), key=lambda r: r["id"])
    frame, stats = build_corpus_raw(spark, config)
    rows = sorted((row.asDict() for row in frame.collect()), key=lambda r: r["id"])
    assert rows == expected and len(rows) > 20
    assert stats["distributions"] == 1 and stats["records"] == len(rows)
    assert stats["syntax_error_files"] == 0 and stats["files"] > 5

    broken = user_root / "sub" / "broken.py"  # .py is not a user format: ignored in a folder
    broken.write_text("def oops(:\n")
    frame, stats = build_corpus_raw(spark, CorpusConfig(paths=[str(user_root)], partitions=3))
    errors = frame.where("ingest_error IS NOT NULL").count()
    assert (frame.count(), errors, stats["records"], stats["files"]) == (12, 8, 12, 5)


@pytest.mark.spark
def test_spark_counts_syntax_error_files(spark, synth_package, monkeypatch):
    import pipelines.corpus.ingest as corpus

    items = [
        _docstring_item(synth_package / "mod.py", "synthpkg.mod"),
        _docstring_item(synth_package / "broken.py", "synthpkg.broken"),
    ]
    monkeypatch.setattr(corpus, "list_work_items", lambda config: items)  # driver-side listing
    frame, stats = build_corpus_raw(spark, CorpusConfig(packages=["synthpkg"]))
    assert frame.count() == stats["records"] == 11
    assert (stats["files"], stats["syntax_error_files"]) == (2, 1)
