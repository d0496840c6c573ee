"""Documents cut into chunks whose sizes are counted in the embedder's own tokens, special
tokens included, so a chunk of ``size`` tokens is exactly what the model reads. Three
strategies: ``token`` (exact token windows, boundaries anywhere, found with the fast
tokenizer's offset mapping), ``fixed`` (character windows of ``size`` tokens' average width,
ended at whitespace, shortened when over budget) and ``recursive`` (headings, then paragraphs,
lines, sentences, token windows, small neighbours merged up to the budget). ``overlap`` tokens
repeat between neighbours. Each chunk keeps its source id and offsets
(``document.text[start:end] == chunk.text``) and an id stable across runs; every chunk is
re-tokenized at the end and one over budget raises :class:`ChunkTooLongError`, never truncated.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.rag.documents import Document
from pipelines.shared.embedder import MAX_MODEL_TOKENS, InputTooLongError, model_input_limit


class ChunkTooLongError(InputTooLongError):
    """A chunk over the configured token budget (never truncated to fit)."""


class ChunkingConfig(BaseModel):
    """How documents are cut into chunks; sizes in the embedder's tokens."""

    model_config = ConfigDict(extra="forbid")

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
            raise ValueError(
                f"chunking size {self.size} tokens exceeds the embedder's maximum "
                f"input of {max_tokens} tokens; choose size <= {max_tokens}"
            )


class Chunk(NamedTuple):
    """A piece of one document; ``document.text[start:end] == text``."""

    chunk_id: str  # <source_id>#<start>-<end>.<hash>: stable across runs
    source_id: str
    start: int  # character offset into the document's text
    end: int  # exclusive
    text: str


Span = tuple[int, int]


def chunk_documents(
    documents: Iterable[Document], config: ChunkingConfig, tokenizer, max_tokens: int | None = None
) -> list[Chunk]:
    """Chunks of every document, in order. ``tokenizer`` is the embedder's (fast) tokenizer;
    ``max_tokens`` defaults to its ``model_max_length`` (the :class:`Embedder` sets that to
    the model's input limit). A config larger than the limit is refused up front, and every
    chunk is re-tokenized at the end: one over ``config.size`` raises ChunkTooLongError."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("chunking needs a fast (Rust) tokenizer for its offset mapping")
    config.check_fits(max_tokens or model_input_limit(tokenizer))
    budget = config.size - tokenizer.num_special_tokens_to_add(pair=False)
    overlap = min(config.overlap, budget // 2)
    split = {"token": _token_spans, "fixed": _fixed_spans, "recursive": _recursive_spans}[
        config.strategy
    ]
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for document, tokens in _tokenized(documents, tokenizer):
        if document.source_id in seen:
            raise ValueError(
                f"document id {document.source_id} appears twice; ids must be "
                f"unique (chunk ids are made from them)"
            )
        seen.add(document.source_id)
        for start, end in split(tokens, budget, overlap):
            chunks.append(_make_chunk(document, start, end, config))
    check_chunk_sizes(chunks, tokenizer, config.size)
    return chunks


def _tokenized(
    documents: Iterable[Document], tokenizer, batch: int = 256
) -> Iterator[tuple[Document, _DocTokens]]:
    """Documents with their tokens, tokenized a batch at a time (the Rust tokenizer spreads a
    batch over the cores)."""
    pending: list[Document] = []
    for document in [*documents, None]:
        if document is not None:
            pending.append(document)
        if pending and (document is None or len(pending) == batch):
            encoded = tokenizer(
                [d.text for d in pending],
                add_special_tokens=False,
                return_offsets_mapping=True,
                truncation=False,
                verbose=False,
            )
            for doc, offsets in zip(pending, encoded["offset_mapping"], strict=False):
                yield doc, _DocTokens(doc.text, tokenizer, offsets)
            pending = []


def _make_chunk(document: Document, start: int, end: int, config: ChunkingConfig) -> Chunk:
    text = document.text[start:end]
    digest = hashlib.sha256(f"{config.key}\0{text}".encode()).hexdigest()[:10]
    return Chunk(
        f"{document.source_id}#{start}-{end}.{digest}", document.source_id, start, end, text
    )


def count_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens the model reads for each text, special tokens included."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
    return [len(ids) for ids in encoded["input_ids"]]


def check_chunk_sizes(chunks: Sequence[Chunk], tokenizer, limit: int, batch: int = 1024) -> None:
    """Re-tokenize every chunk as the embedder will; one over ``limit`` raises."""
    for first in range(0, len(chunks), batch):
        part = chunks[first : first + batch]
        for chunk, n in zip(part, count_tokens(tokenizer, [c.text for c in part]), strict=False):
            if n > limit:
                raise ChunkTooLongError(
                    f"chunk {chunk.chunk_id} has {n} tokens, more than the "
                    f"limit of {limit}; refused rather than truncated"
                )


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
            encoded = self.tokenizer(
                self.text[start:end],
                add_special_tokens=False,
                return_offsets_mapping=True,
                truncation=False,
                verbose=False,
            )
            offsets = [(s, e) for s, e in encoded["offset_mapping"] if e > s]
            if len(offsets) <= budget:
                return end
            shorter = start + offsets[budget - 1][1]  # a prefix cut: tokenizes as the document
            if shorter >= end:  # tokens sharing characters: drop the whole last one
                shorter = start + offsets[budget - 1][0]
            if shorter <= start:
                raise ChunkTooLongError(f"text at {start}-{end} cannot be cut to {budget} tokens")
            end = shorter

    def _at_word_edge(self, pos: int) -> bool:
        return (
            pos <= 0
            or pos >= len(self.text)
            or self.text[pos - 1].isspace()
            or self.text[pos].isspace()
        )


def _trimmed(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _token_spans(tokens: _DocTokens, budget: int, overlap: int) -> list[Span]:
    """Exact windows of ``budget`` tokens, ``overlap`` tokens shared by neighbours."""
    return _token_windows(tokens, 0, tokens.n, budget, overlap)


def _token_windows(
    tokens: _DocTokens, first: int, stop: int, budget: int, overlap: int
) -> list[Span]:
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


def _pieces(
    tokens: _DocTokens, start: int, end: int, level: int, boundary: int, budget: int, overlap: int
) -> Iterator[_Piece]:
    start, end = _trimmed(tokens.text, start, end)
    if start >= end:
        return
    if tokens.count(start, end) <= budget:
        yield _Piece(start, end, boundary)
        return
    if level == WINDOW:  # one sentence longer than the budget: token windows
        windows = _token_windows(
            tokens, tokens.first_at(start), tokens.first_ending_after(end), budget, overlap
        )
        for k, (s, e) in enumerate(windows):
            yield _Piece(s, e, boundary if k == 0 else WINDOW)
        return
    for k, (s, e) in enumerate(_split(tokens.text, start, end, *_LEVELS[level])):
        yield from _pieces(tokens, s, e, level + 1, boundary if k == 0 else level, budget, overlap)


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


def _merge(tokens: _DocTokens, pieces: Iterable[_Piece], budget: int, overlap: int) -> list[Span]:
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
        elif (
            run
            and piece.boundary == SECTION
            and 2 * tokens.count(run[0].start, run[-1].end) >= budget
        ):
            spans.append((run[0].start, run[-1].end))
            run = []
        run.append(piece)
    if run:
        spans.append((run[0].start, run[-1].end))
    return spans


def _carried(
    tokens: _DocTokens, run: list[_Piece], following: _Piece, budget: int, overlap: int
) -> tuple[list[_Piece], bool]:
    """(pieces, moved): what of ``run`` starts the next chunk — a heading left last (moved out
    of this chunk), else the last pieces worth at most ``overlap`` tokens (repeated) — as far
    as ``following`` still fits."""
    last = run[-1]
    if (
        last.boundary == SECTION
        and len(run) > 1
        and tokens.count(last.start, following.end) <= budget
    ):
        return [last], True
    tail: list[_Piece] = []
    for piece in reversed(run):
        if (
            tokens.count(piece.start, last.end) > overlap
            or tokens.count(piece.start, following.end) > budget
        ):
            break
        tail.insert(0, piece)
    return tail, False
