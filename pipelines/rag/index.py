"""Building and keeping up to date one LanceDB chunk table per (corpus, chunking, embedder).

A build reads the corpus, chunks and compares it with the table source by source: a source
whose chunks (ids and text) are unchanged is left alone, a changed one has its chunks deleted
and re-inserted, a removed one is deleted — so only what changed is embedded again, and all
three retrievers (vector, full-text, hybrid) see the change once the indexes are refreshed.
The manifest names the table version written; readers pin it, and retrievers over pinned
versions serve the evaluation grid.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from infra.settings import load_settings
from infra.vectors import ChunkStore, VectorIndexConfig, table_name
from pipelines.rag.chunking import ChunkingConfig, chunk_documents
from pipelines.rag.documents import RagCorpusConfig, load_documents
from pipelines.rag.travel_data import FeaturesConfig, hotel_documents
from pipelines.shared.embedder import Embedder


class IndexConfig(BaseModel):
    """What one chunk table holds and how it is indexed."""

    model_config = ConfigDict(extra="forbid")

    corpus_name: str = "docs"  # the table's corpus part, with a digest of the selection
    corpus: RagCorpusConfig = Field(default_factory=RagCorpusConfig)
    # the travel assistant's hotel descriptions, generated as the features stage generates
    # its hotels table (the same config -> the same hotels); None: documents only
    hotels: FeaturesConfig | None = Field(default_factory=FeaturesConfig)
    chunking: ChunkingConfig = Field(
        default_factory=lambda: ChunkingConfig(strategy="recursive", size=128, overlap=16)
    )
    # on: a capped corpus (corpus.max_documents) also keeps the documents that the
    # repository's hand-written questions ask about (question_targets). Off by default: an
    # index chosen for our own questions scores them well and users' questions badly
    keep_question_targets: bool = False
    embedder: str | None = None  # an HF encoder dir; None = all-MiniLM-L6-v2 from its wheel
    embed_batch: int = Field(64, ge=1)  # texts per encoder call
    index: VectorIndexConfig = Field(default_factory=VectorIndexConfig)


def lancedb_dir() -> Path:
    """The workspace's LanceDB folder, where every chunk table lives."""
    return load_settings().home / "lancedb"


def load_embedder(config: IndexConfig) -> Embedder:
    return Embedder(config.embedder, batch_size=config.embed_batch)


def index_table_name(config: IndexConfig, embedder: Embedder) -> str:
    return table_name(corpus_key(config), config.chunking.key, embedder.name)


def corpus_key(config: IndexConfig) -> str:
    """``docs-1a2b3c4d``: the corpus name and a digest of what it selects (packages or
    folders, the cap, the hotels). Two selections never share a table — a build of one would
    prune the other's documents — while a document that changes under the same selection is
    updated in place."""
    selection = {
        "corpus": config.corpus.model_dump(mode="json"),
        "hotels": config.hotels.model_dump(mode="json") if config.hotels else None,
        "keep_question_targets": config.keep_question_targets,
    }
    digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()
    return f"{config.corpus_name}-{digest[:8]}"


def index_documents(config: IndexConfig, question_targets: Sequence[str] | None = None):
    """The corpus's documents (+ hotel descriptions) and what could not be read.
    ``question_targets``: the source ids the hand-written questions expect, kept first by a
    capped corpus when ``keep_question_targets`` is on (needed then: the cap would otherwise
    pick other documents than the table was built from)."""
    corpus = config.corpus
    if config.keep_question_targets and corpus.max_documents and not corpus.paths:
        if question_targets is None:
            raise ValueError(
                "a capped corpus with keep_question_targets needs the questions' "
                "target ids (question_targets); pass them or turn it off"
            )
        corpus = corpus.model_copy(
            update={"include_ids": [*corpus.include_ids, *question_targets]}
        )
    loaded = load_documents(corpus)
    documents = list(loaded.documents)
    if config.hotels is not None:
        documents += hotel_documents(config.hotels)
    return documents, list(loaded.quarantined)


class IndexMissingError(LookupError):
    """The chunk table a reader asked for has not been built."""


def open_store(
    db_dir: Path | str, config: IndexConfig, embedder: Embedder, must_exist: bool = False
) -> ChunkStore:
    """The config's chunk table; ``must_exist``: a reader's error, not a new empty table."""
    name = index_table_name(config, embedder)
    if must_exist and not (Path(db_dir) / f"{name}.lance").is_dir():
        raise IndexMissingError(
            f"no chunk table {name} under {db_dir}: build it first "
            "(`genai build-index` or the build-index flow)"
        )
    return ChunkStore.open(Path(db_dir), name, embedder.dim, config.index)


def chunk_digest(chunks) -> str:
    """What a source's chunks say, ids and text: equal digests = nothing to re-embed."""
    digest = hashlib.sha256()
    for chunk in sorted(chunks, key=lambda c: (c.start, c.end, c.chunk_id)):
        digest.update(f"{chunk.chunk_id}\x1f{chunk.text}\x1e".encode())
    return digest.hexdigest()


def by_source(chunks) -> dict[str, list]:
    grouped: dict[str, list] = defaultdict(list)
    for chunk in chunks:
        grouped[chunk.source_id].append(chunk)
    return dict(grouped)


def plan_changes(new: dict[str, list], stored: dict[str, list]) -> tuple[list[str], list[str]]:
    """(source ids to (re)write, source ids to delete)."""
    write = [
        s
        for s, chunks in new.items()
        if s not in stored or chunk_digest(chunks) != chunk_digest(stored[s])
    ]
    delete = sorted(set(stored) - set(new))
    return sorted(write), delete


def build_index(
    config: IndexConfig,
    db_dir: Path | str,
    progress: bool = False,
    embedder: Embedder | None = None,
    question_targets: Sequence[str] | None = None,
) -> dict:
    """Sync the chunk table with the corpus; returns its manifest (table, version, counts).
    ``question_targets``: as for :func:`index_documents`."""
    started = time.perf_counter()
    embedder = embedder or load_embedder(config)
    documents, quarantined = index_documents(config, question_targets)
    chunks = chunk_documents(documents, config.chunking, embedder.tokenizer)
    store = open_store(db_dir, config, embedder)
    new, stored = by_source(chunks), by_source(store.chunks())
    write, delete = plan_changes(new, stored)
    if delete:
        store.delete_sources(delete)
    changed = [c for source in write for c in new[source]]
    if changed:
        store.replace_sources(
            changed, embedder.embed([c.text for c in changed], progress=progress)
        )
    store.ensure_indexes(config.index)
    return {
        "db": str(db_dir),
        "table": store.name,
        "version": store.version,
        "documents": len(documents),
        "quarantined": len(quarantined),
        "quarantine_reasons": quarantined[:20],
        "chunks": len(chunks),
        "sources_written": len(write),
        "sources_deleted": len(delete),
        "chunks_embedded": len(changed),
        "embedder": embedder.name,
        "seconds": round(time.perf_counter() - started, 1),
    }


def index_markdown(manifest: dict) -> str:
    """A build's manifest as a two-column markdown table (the build-index flow's artifact)."""
    rows = [
        ("table", manifest["table"]),
        ("version", manifest["version"]),
        ("documents", manifest["documents"]),
        ("quarantined", manifest["quarantined"]),
        ("chunks", manifest["chunks"]),
        ("sources (re)written", manifest["sources_written"]),
        ("sources deleted", manifest["sources_deleted"]),
        ("chunks embedded", manifest["chunks_embedded"]),
        ("seconds", manifest["seconds"]),
    ]
    return "# RAG index\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


# ---------------------------------------------------------------------------------------------
# Retrievers over pinned table versions (what the evaluation grid scores)
# ---------------------------------------------------------------------------------------------


def with_chunk_size(index: IndexConfig, size: int) -> IndexConfig:
    """The index config at another chunk size (overlap an eighth of it)."""
    chunking = index.chunking.model_copy(update={"size": size, "overlap": size // 8})
    return index.model_copy(update={"chunking": chunking})


def source_retriever(
    store, embedder, retriever: str, version: int, chunks_per_source: int = 3
) -> Callable[[str, int], list[str]]:
    """``retrieve(question, k)``: the first k distinct source ids of the pinned version.
    Several chunks can share a source, so more chunks than k are fetched."""

    def retrieve(question: str, k: int) -> list[str]:
        hits = store.search(
            question,
            embedder.embed_query(question),
            k * chunks_per_source,
            retriever,
            version=version,
        )
        return list(dict.fromkeys(hit.source_id for hit in hits))[:k]

    return retrieve


class SizedRetrievers:
    """One built chunk table per chunk size, each pinned at the version its build left
    (``versions``: chunk size -> table version); :meth:`for_cell` gives a grid cell (anything
    with ``chunk_size`` and ``retriever``) its ``retrieve(question, k)``."""

    def __init__(self, db_dir: Path | str, index: IndexConfig, versions: Mapping[int, int]):
        self.embedder = load_embedder(index)
        self.versions = dict(versions)
        self.stores = {
            size: open_store(db_dir, with_chunk_size(index, size), self.embedder, must_exist=True)
            for size in self.versions
        }

    def for_cell(self, cell) -> Callable[[str, int], list[str]]:
        return source_retriever(
            self.stores[cell.chunk_size],
            self.embedder,
            cell.retriever,
            self.versions[cell.chunk_size],
        )
