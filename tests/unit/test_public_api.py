"""A capped corpus keeps the package's public API first, read from its source (never
imported): exports by __all__, re-exports found where they are defined, class members."""

from __future__ import annotations

from pathlib import Path

from pipelines.rag.public_api import exported_names, ranked_api_ids


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_exports_lead_then_members_and_subpackages_take_turns(tmp_path, monkeypatch):
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
    write(tmp_path / "toypkg" / "core" / "__init__.py", "")
    write(tmp_path / "toypkg" / "core" / "client.py", "class Client:\n  def get(self): 'G.'\n")
    write(tmp_path / "toypkg" / "sub" / "__init__.py", "from .reader import Reader\n")
    write(tmp_path / "toypkg" / "sub" / "reader.py", "class Reader:\n  def json(self): 'J.'\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert exported_names(tmp_path / "toypkg" / "__init__.py") == {
        "Client": "toypkg.core.client",
        "log_value": "toypkg.fluent",
        "sub": None,
        "missing_name": None,
    }
    ids = [
        "py:toypkg.core.client.Client",
        "py:toypkg.core.client.Client.get",
        "py:toypkg.core.client.Client._private",
        "py:toypkg.fluent.log_value",
        "py:toypkg.internal.log_value",  # the same name elsewhere: not the exported one
        "py:toypkg.sub",
        "py:toypkg.sub.reader.Reader",
        "py:toypkg.sub.reader.Reader.json",
        "py:toypkg.unrelated.helper",
    ]
    assert ranked_api_ids(ids, ["toypkg"]) == [
        "py:toypkg.core.client.Client",
        "py:toypkg.fluent.log_value",
        "py:toypkg.sub",
        "py:toypkg.core.client.Client.get",  # members of the exports, turn about with
        "py:toypkg.sub.reader.Reader",  # the subpackages' exports
        "py:toypkg.sub.reader.Reader.json",
    ]
