"""The RAG corpus as documents: by default the API documentation of the installed mlflow,
prefect and pyspark packages, read through :mod:`pipelines.shared.documents` (docstrings with
``ast``, never by importing; ids ``py:<module>.<qualname>`` and ``pkg:<dist>:METADATA``), or
the user's folders of Markdown, HTML and plain text (ids ``file:<path relative to the root>``;
symlinks and paths leading out of the root refused, HTML turned into text with ``#`` heading
lines). A document that cannot be read cleanly (undecodable, blank, oversize) is quarantined
with its reason; a corpus with no documents left is an error.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.rag.public_api import ranked_api_ids
from pipelines.shared.documents import MAX_DOC_CHARS, CorpusConfig, iter_records
from pipelines.shared.input_files import InputFileError, decode_utf8, walk_refusing_symlinks

DEFAULT_PACKAGES = ("mlflow", "prefect", "pyspark")  # the default corpus: their API docs
PACKAGE_SOURCES = ["metadata", "docstring"]  # READMEs and docstrings; licences are not API docs
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
TEXT_SUFFIXES = {".txt"}
DOCUMENT_SUFFIXES = MARKDOWN_SUFFIXES | HTML_SUFFIXES | TEXT_SUFFIXES


class RagInputError(InputFileError):
    """A RAG corpus input that cannot be used: names the path or id and what was expected."""


class Document(NamedTuple):
    """One document: the unit that is re-chunked and replaced when it changes."""

    source_id: str  # py:<module>.<qualname> | pkg:<dist>:METADATA | file:<relative path>
    text: str  # what chunks' offsets index into
    origin: str  # where it was read: site-packages/<file>:<line> or the file's path


class RagCorpusConfig(BaseModel):
    """Which documents the index is built from. Empty ``paths`` = the packages' API docs."""

    model_config = ConfigDict(extra="forbid")

    # Installed distributions whose METADATA description and docstrings are read.
    packages: list[str] = Field(default_factory=lambda: list(DEFAULT_PACKAGES))
    # Folders (or single files) of .md/.markdown/.html/.htm/.txt, read instead of packages when
    # given; folders are walked recursively, symlinks below them refused.
    paths: list[str] = Field(default_factory=list)
    # Corpus root: when set, every entry of `paths` must lie inside it (relative entries are
    # read from it), no symlink may lie on the way, and ids are relative to it. None: each
    # entry is its own root.
    root: str | None = None
    # Demo-size cap: keep this many documents (the same ones every run, chosen by cap_order);
    # None = all.
    max_documents: int | None = Field(default=None, ge=1)
    # What the cap keeps after include_ids: "public_api" = each package's public API, the
    # names its own docstrings call most first (public_api.py), then evenly strided;
    # "strided" = evenly strided over the sorted ids only (the baseline it is measured against).
    cap_order: Literal["public_api", "strided"] = "public_api"
    # Ids kept first by the cap (e.g. an eval set's targets); ids not in the corpus are counted
    # in stats["include_ids_missing"], not fatal.
    include_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something_to_read(self) -> RagCorpusConfig:
        if not self.paths and not self.packages:
            raise ValueError("RAG corpus: give `paths` (folders) or `packages` to read")
        return self


@dataclass
class DocumentSet:
    """Documents sorted by source id, what was quarantined (origin, reason) and counts."""

    documents: list[Document]
    quarantined: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def load_documents(config: RagCorpusConfig) -> DocumentSet:
    """The corpus as documents; unreadable ones quarantined with their reason. An empty corpus
    (nothing readable left) raises :class:`RagInputError`."""
    started = time.perf_counter()
    if config.paths:
        documents, quarantined, stats = _folder_documents(config)
    else:
        documents, quarantined, stats = _package_documents(config.packages)
    documents.sort(key=lambda d: d.source_id)
    stats["read"] = len(documents)
    stats["quarantined"] = len(quarantined)
    if not documents:
        where = ", ".join(config.paths) if config.paths else f"packages {config.packages}"
        raise RagInputError(
            f"RAG corpus is empty: no readable document in {where} "
            f"({len(quarantined)} quarantined, {stats.get('skipped_files', 0)}"
            f" files of other types skipped; expected "
            f"{', '.join(sorted(DOCUMENT_SUFFIXES))} with text)"
        )
    if config.max_documents is not None and len(documents) > config.max_documents:
        documents, missing = _capped(
            documents, config.max_documents, config.include_ids, config.cap_order
        )
        stats["include_ids_missing"] = missing
    stats["documents"] = len(documents)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return DocumentSet(documents, quarantined, stats)


def _package_documents(packages: list[str]) -> tuple[list[Document], list[dict], dict]:
    counts: dict = {}
    documents, quarantined = [], []
    try:
        records = list(
            iter_records(CorpusConfig(packages=packages, sources=PACKAGE_SOURCES), counts)
        )
    except InputFileError as exc:
        raise RagInputError(f"RAG corpus: {exc}") from exc
    for record in records:
        problem = record["ingest_error"] or _text_problem(record["text"])
        if problem:
            quarantined.append(
                {"origin": record["origin"], "source_id": record["id"], "reason": problem}
            )
        else:
            documents.append(
                Document(record["id"], _normalise_newlines(record["text"]), record["origin"])
            )
    return documents, quarantined, {"mode": "packages", "files": counts.get("files", 0)}


def _text_problem(text: str | None) -> str | None:
    if text is None or not text.strip():
        return "no text"
    if len(text) > MAX_DOC_CHARS:  # the corpus table's own limit: a data dump, not prose
        return f"oversize: {len(text)} characters (at most {MAX_DOC_CHARS})"
    return None


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _folder_documents(config: RagCorpusConfig) -> tuple[list[Document], list[dict], dict]:
    documents, quarantined = [], []
    first_origin: dict[str, str] = {}
    skipped = 0
    for id_root, path in _user_files(config):
        if path.suffix.lower() not in DOCUMENT_SUFFIXES:
            skipped += 1  # images, .DS_Store, ...: not corpus
            continue
        source_id = "file:" + path.relative_to(id_root).as_posix()
        if source_id in first_origin:
            raise RagInputError(
                f"RAG corpus: {path} and {first_origin[source_id]} both get id "
                f"{source_id}; set `root` to a folder above both"
            )
        first_origin[source_id] = str(path)
        text, problem = read_document_text(path)
        if problem:
            quarantined.append({"origin": str(path), "source_id": source_id, "reason": problem})
        else:
            documents.append(Document(source_id, text, str(path)))
    return documents, quarantined, {"mode": "paths", "skipped_files": skipped}


def _user_files(config: RagCorpusConfig) -> Iterable[tuple[Path, Path]]:
    """(id root, file) for every file named or found below the configured paths, every path
    checked before the first file is read."""
    base = Path(config.root).absolute() if config.root else None
    if base is not None and not base.is_dir():
        raise RagInputError(f"RAG corpus root {config.root} is not a folder")
    targets = [_checked_path(given, base) for given in config.paths]
    found = []
    for id_root, target in targets:
        if target.is_file():
            if target.suffix.lower() not in DOCUMENT_SUFFIXES:
                raise RagInputError(
                    f"RAG corpus file {target}: unsupported type (expected one "
                    f"of {', '.join(sorted(DOCUMENT_SUFFIXES))})"
                )
            found.append((id_root, target))
            continue
        try:
            found.extend((id_root, path) for path in walk_refusing_symlinks(target))
        except InputFileError as exc:
            raise RagInputError(f"RAG corpus: {exc}") from exc
    return found


def _checked_path(given: str, base: Path | None) -> tuple[Path, Path]:
    """(id root, resolved path) of one configured path; outside the root or through a symlink
    under it: refused."""
    if base is None:  # the path the user named is trusted, even a symlink; nothing below it is
        path = Path(given).absolute()
        if not path.exists():
            raise RagInputError(f"RAG corpus path {given} does not exist")
        resolved = path.resolve()
        return (resolved.parent if resolved.is_file() else resolved), resolved
    # Lexically first, so `../x` is refused for what it says, whatever is on the disk.
    candidate = Path(os.path.normpath(base / given))
    if not candidate.is_relative_to(base):
        raise RagInputError(f"RAG corpus path {given} leads outside the corpus root {base}")
    step = base
    for part in candidate.relative_to(base).parts:
        step = step / part
        if step.is_symlink():
            raise RagInputError(
                f"RAG corpus path {given}: {step} is a symlink to "
                f"{step.resolve()}; symlinks are refused, not followed"
            )
    if not candidate.exists():
        raise RagInputError(f"RAG corpus path {given} does not exist under the root {base}")
    resolved, resolved_base = candidate.resolve(), base.resolve()
    if not resolved.is_relative_to(resolved_base):  # the root itself sits behind a symlink
        raise RagInputError(
            f"RAG corpus path {given} resolves to {resolved}, outside the "
            f"corpus root {resolved_base}"
        )
    return resolved_base, resolved


def read_document_text(path: Path) -> tuple[str, str | None]:
    """(text, problem) of one Markdown/HTML/text file; problem (undecodable, blank, oversize)
    means quarantine."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return "", f"cannot be read: {exc.strerror}"
    text, error = decode_utf8(data)
    if error:
        return "", error
    text = _normalise_newlines(text.removeprefix("\ufeff"))
    if path.suffix.lower() in HTML_SUFFIXES:
        text = html_to_text(text)
    return text, _text_problem(text)


class _HtmlText(HTMLParser):
    """Visible text of an HTML page; block elements become line breaks, headings `#` lines."""

    SKIP = {"script", "style", "noscript", "template", "svg"}
    HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
    BLOCKS = {
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "table",
        "tr",
        "blockquote",
        "pre",
        "figure",
        "figcaption",
        "form",
        "hr",
        "title",
        "body",
        "html",
    }
    LINE_BREAKS = {"br", "li", "td", "th"}

    def __init__(self):
        super().__init__(convert_charrefs=True)  # &amp; and friends arrive decoded
        self.parts: list[str] = []
        self.skipping = 0  # depth inside script/style
        self.in_pre = 0  # depth inside <pre>: whitespace kept as written

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.HEADINGS:
            self._break("\n\n" + "#" * self.HEADINGS[tag] + " ")
        elif tag in self.LINE_BREAKS:
            self._break("\n- " if tag == "li" else "\n")
        elif tag in self.BLOCKS:
            self._break("\n\n")
        if tag == "pre":
            self.in_pre += 1

    def handle_startendtag(self, tag, attrs):
        if tag in ("br", "hr"):
            self._break("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.HEADINGS or tag in self.BLOCKS:
            self._break("\n\n")
        if tag == "pre":
            self.in_pre = max(0, self.in_pre - 1)

    def handle_data(self, data):
        if self.skipping:
            return
        if not self.in_pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith(("\n", "# ", "- ")):
                data = data.lstrip()
        if data:
            self.parts.append(data)

    def _break(self, text: str):
        if not self.skipping:
            self.parts.append(text)

    def text(self) -> str:
        joined = re.sub(r"[ \t]+\n", "\n", "".join(self.parts))
        joined = re.sub(r"\n(?:#{1,6}|-) \n", "\n", joined)  # headings/items with no text
        return re.sub(r"\n{3,}", "\n\n", joined).strip()


def html_to_text(html: str) -> str:
    """Readable text of an HTML document (standard library parser; script/style dropped)."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return parser.text()


def _capped(
    documents: list[Document], limit: int, include_ids: Sequence[str], order: str = "public_api"
) -> tuple[list[Document], int]:
    """``limit`` documents, the same every run: the included ids, then the packages' public
    API (``public_api.ranked_api_ids``: what users call, most called first), then evenly
    strided over the rest (sorted by id, so every package keeps its share)."""
    wanted = set(include_ids)
    kept = [d for d in documents if d.source_id in wanted][:limit]
    by_id = {d.source_id: d for d in documents}
    api = []
    if order == "public_api":
        texts = {i: d.text for i, d in by_id.items()}
        api = [i for i in ranked_api_ids(texts, top_level_packages(by_id)) if i not in wanted]
    kept += [by_id[i] for i in api[: limit - len(kept)]]
    taken = {d.source_id for d in kept}
    rest = [d for d in documents if d.source_id not in taken]
    slots = limit - len(kept)
    if slots > 0:
        kept += [rest[k * len(rest) // slots] for k in range(slots)]
    missing = len(wanted - set(by_id))
    return sorted(kept, key=lambda d: d.source_id), missing


def top_level_packages(source_ids) -> list[str]:
    """The import names the docstring documents come from (``py:<package>.…``), in order."""
    return list(dict.fromkeys(i[3:].split(".")[0] for i in source_ids if i.startswith("py:")))
