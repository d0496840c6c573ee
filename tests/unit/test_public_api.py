"""A capped corpus keeps the package's public API first, read from its source (never
imported): exports by __all__, re-exports found where they are defined, class members,
public top-level modules and subpackages, the names the package's own docs use most first."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.rag.documents import RagCorpusConfig, load_documents
from pipelines.rag.public_api import exported_names, ranked_api_ids


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def toypkg(tmp_path, monkeypatch):
    write(
        tmp_path / "toypkg" / "__init__.py",
        "raise RuntimeError('never imported')\n"
        "from toypkg.core.client import Client\n"
        "from .fluent import log_value as log_value\n"
        "__all__ = ['Client', 'log_value']\n"
        "try:\n    __all__ += ['sub']\nexcept ImportError:\n    pass\n"
        "__all__.append('missing_name')\n",
    )
    write(tmp_path / "toypkg" / "fluent.py", "def log_value(): 'Log.'\n")
    write(tmp_path / "toypkg" / "artifacts.py", "def make_report(): 'R.'\ndef _hidden(): ''\n")
    write(tmp_path / "toypkg" / "core" / "__init__.py", "")
    write(tmp_path / "toypkg" / "core" / "client.py", "class Client:\n  def get(self): 'G.'\n")
    write(tmp_path / "toypkg" / "sub" / "__init__.py", "from .reader import Reader\n")
    write(tmp_path / "toypkg" / "sub" / "reader.py", "class Reader:\n  def json(self): 'J.'\n")
    write(tmp_path / "toypkg" / "sub" / "deep" / "__init__.py", "from .fns import col\n")
    write(tmp_path / "toypkg" / "sub" / "deep" / "fns.py", "def col(): 'C.'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "toypkg"


def test_exported_names_are_read_from_every_form_of_all(toypkg):
    assert exported_names(toypkg / "__init__.py") == {
        "Client": "toypkg.core.client",
        "log_value": "toypkg.fluent",
        "sub": None,
        "missing_name": None,
    }


def test_the_public_api_comes_most_used_first_and_nothing_else(toypkg):
    docs = {
        "py:toypkg.core.client.Client": "A client. Client() then c.get().",
        "py:toypkg.core.client.Client.get": "Get.",
        "py:toypkg.core.client.Client._private": "internal.",
        "py:toypkg.fluent.log_value": "Log a value: log_value(1)",
        "py:toypkg.internal.log_value": "the same name elsewhere: not the exported one",
        "py:toypkg.artifacts.make_report": "make_report()",  # a public top-level module
        "py:toypkg.sub": "Readers. Reader().json(); Reader().json()",
        "py:toypkg.sub.reader.Reader": "Reader().json()",
        "py:toypkg.sub.reader.Reader.json": "Read JSON: json()",
        "py:toypkg.sub.deep.fns.col": "A column: col('x')",  # two levels down
        "py:toypkg.unrelated.helper": "helper() helper() helper()",  # used, but not public
    }
    ranked = ranked_api_ids(docs, ["toypkg"])
    assert set(ranked) == set(docs) - {
        "py:toypkg.core.client.Client._private",
        "py:toypkg.internal.log_value",
        "py:toypkg.unrelated.helper",
    }
    # Reader.json: called in 3 docs of toypkg.sub; Reader in 2; then 1 use each, in export order
    assert ranked[:2] == ["py:toypkg.sub.reader.Reader.json", "py:toypkg.sub.reader.Reader"]
    assert ranked.index("py:toypkg.core.client.Client") < ranked.index("py:toypkg.sub")


def test_public_names_defined_in_private_modules_are_in_the_corpus():
    # mlflow.set_tracking_uri lives in mlflow.tracking._tracking_service.utils: a private
    # module whose public names mlflow.tracking re-exports; its internals stay out
    ids = {d.source_id for d in load_documents(RagCorpusConfig(packages=["mlflow"])).documents}
    assert "py:mlflow.tracking._tracking_service.utils.set_tracking_uri" in ids
    assert "py:mlflow.tracking._model_registry.fluent.register_model" in ids
    private = [i for i in ids if any(p.startswith("_") for p in i[3:].split(".")[:-1])]
    assert private and all(not i.rsplit(".", 1)[-1].startswith("_") for i in private)
    assert len(private) < 0.05 * len(ids)


def test_a_small_cap_keeps_what_users_call_where_striding_did_not():
    everyday = {
        "py:mlflow.tracking.fluent.start_run",
        "py:mlflow.tracking.fluent.log_param",
        "py:mlflow.tracking.fluent.log_metric",
        "py:mlflow.tracking._tracking_service.utils.set_tracking_uri",
        "py:mlflow.pyfunc.load_model",
    }

    def kept(order: str) -> set[str]:
        config = RagCorpusConfig(packages=["mlflow"], max_documents=100, cap_order=order)
        return {d.source_id for d in load_documents(config).documents}

    assert everyday <= kept("public_api")
    assert len(everyday & kept("strided")) <= 1
