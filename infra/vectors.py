"""LanceDB chunk tables and the three retrievers over them: vector, full-text, hybrid.

One table per (corpus, chunking, embedder), named by ``table_name``, with one row per chunk:
``chunk_id, source_id, start, end, text, vector`` (fixed-size float32 list). ``ChunkStore``
keeps it up to date source by source and answers queries:

- **Incremental.** ``replace_sources`` swaps every chunk of the given source ids for the new
  ones in ONE commit (a merge on ``chunk_id`` that also deletes the sources' rows missing
  from the new set), so a reader sees either the old or the new document, never half of
  each; ``delete_sources`` removes sources. Filters are built as LanceDB expressions, never
  by pasting ids into SQL, so quotes in an id are just characters.
- **Always current.** Rows written after an index was built are still searched (LanceDB
  scans unindexed rows and merges them with the index's answer; deleted rows are masked), so
  all three retrievers see a change at once; ``ensure_indexes`` folds new rows into the
  indexes (``optimize``) to keep that scan small, and builds the vector index once the
  table crosses the size threshold.
- **Pinned reads.** Every write makes a new table version; ``search(..., version=v)`` reads
  exactly version ``v`` through a separate read-only handle (the live handle is never
  checked out, so concurrent writers and unpinned readers are undisturbed).
- **Retrievers.** ``vector``: cosine kNN — exact (flat) scan below
  ``VectorIndexConfig.min_rows``, an IVF index above it, tuned for recall@10 >= 0.95
  (benchmarks/retrieval.py); ``fts``: LanceDB's native BM25 index on ``text``, queried with a
  match query (never parsed, so quotes, colons, brackets or an empty question cannot break
  it); ``hybrid``: reciprocal-rank fusion (LanceDB's ``RRFReranker``, k = 60) of the other
  two top-k lists, run exactly as those retrievers run (so one pinned version, one set of
  probes); a question without words makes it the vector list.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Retriever = Literal["vector", "fts", "hybrid"]
RETRIEVERS = ("vector", "fts", "hybrid")

TEXT_COLUMN = "text"
VECTOR_COLUMN = "vector"
ROW_COLUMNS = ("chunk_id", "source_id", "start", "end", TEXT_COLUMN)
HIT_COLUMNS = ["chunk_id", "source_id", TEXT_COLUMN]
FTS_INDEX = "text_fts"  # the one full-text index, on `text`
VECTOR_INDEX_PREFIX = "vector__"  # + the index's parameters: a changed config is a new name
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009; LanceDB's default too)
MAX_QUERY_CHARS = 4000  # a full-text query is cut here: longer text is a document, not a question
PINNED_HANDLES = 8  # open read-only handles kept for pinned versions (one per version)
NAME_PART = re.compile(r"[^a-z0-9.-]+")  # table names: lower-case letters, digits, '.', '-'
MAX_TABLE_NAME = 200  # chars; longer names are cut and suffixed with a hash of the full name


class VectorIndexConfig(BaseModel):
    """When a table gets an ANN index, which one, and how queries probe it.

    Measured with benchmarks/retrieval.py on 100k x 384 clustered unit vectors as hard as
    ../shared/MEASURED.md's (2 shared cores, all types probing 30 lists of ~400 rows):
    IVF_FLAT builds in 5-8 s and finds 0.97-0.98 of the exact top 10 in 3.4-5 ms a query
    (flat scan: 100-160 ms); IVF_SQ and IVF_RQ (+ refine 10) 0.96-0.97 at the same speed
    with slower builds, IVF_PQ 256/48 (+ refine 10) 0.97 after a 71-87 s build, IVF_HNSW_SQ
    with 64 lists 0.90 at 9 ms. Fewer, larger lists do far worse at the same share scanned
    (64 lists, 12 probed: 0.70). IVF_FLAT keeps full vectors in its lists, so its distances
    are exact and recall depends on nprobes alone (the price: a second copy of the vectors).

    List sizes are given as a target (``rows_per_partition``), never as a count: LanceDB
    0.40's ``optimize()`` splits and joins IVF lists toward the index's target size (8192
    rows by default, 1M for HNSW), so an index built with a fixed count of small lists is
    silently merged into a few big ones on the next optimize.
    """

    model_config = ConfigDict(extra="forbid")

    # Below this many rows: exact flat scans, no ANN index (x 384 measured: 20k rows 8.5 ms a
    # query, 50k 48 ms, 100k 100-160 ms); an index trades a little recall for speed above it.
    min_rows: int = Field(50_000, ge=1)
    index_type: Literal["IVF_FLAT", "IVF_SQ", "IVF_PQ", "IVF_RQ", "IVF_HNSW_SQ"] = "IVF_FLAT"
    rows_per_partition: int = Field(400, ge=16)  # IVF list target size: 250 lists at 100k rows
    num_sub_vectors: int | None = Field(None, ge=1)  # IVF_PQ only; None: dim / 8 (48 at 384)
    # Lists searched per query: 20 -> 0.95, 30 -> 0.97 recall@10 at 100k rows; the share of
    # the table this covers shrinks as the table grows, so raise it for much larger tables.
    nprobes: int = Field(30, ge=1)
    # Re-rank k x this candidates on the full vectors. None: 10 for the quantised types
    # (SQ/PQ/RQ/HNSW_SQ lose half the top 10 without it), off for IVF_FLAT (already exact).
    refine_factor: int | None = Field(None, ge=1)
    ef: int | None = Field(None, ge=1)  # HNSW candidate list (IVF_HNSW_SQ); None: LanceDB's 1.5k
    keep_versions_days: float = Field(7.0, gt=0)  # optimize() deletes older versions: pins expire

    @property
    def refine(self) -> int | None:
        if self.refine_factor is not None:
            return self.refine_factor
        return None if self.index_type == "IVF_FLAT" else 10

    def index_name(self, dim: int) -> str:
        """The index's name says how it was built: a config that builds differently is a
        different name, which ensure_indexes() rebuilds."""
        parts = [self.index_type.lower(), f"t{self.rows_per_partition}"]
        if self.index_type == "IVF_PQ":
            parts.append(f"s{self.sub_vectors(dim)}")
        return VECTOR_INDEX_PREFIX + "_".join(parts)

    def sub_vectors(self, dim: int) -> int:
        wanted = self.num_sub_vectors or max(1, dim // 8)
        if dim % wanted:
            raise ValueError(f"num_sub_vectors={wanted} must divide the vector dimension {dim}")
        return wanted

    def lancedb_config(self, dim: int):
        from lancedb.index import HnswSq, IvfFlat, IvfPq, IvfRq, IvfSq

        common = {"distance_type": "cosine", "target_partition_size": self.rows_per_partition}
        if self.index_type == "IVF_PQ":
            return IvfPq(num_sub_vectors=self.sub_vectors(dim), **common)
        return {"IVF_FLAT": IvfFlat, "IVF_SQ": IvfSq, "IVF_RQ": IvfRq, "IVF_HNSW_SQ": HnswSq}[
            self.index_type
        ](**common)


class Hit(NamedTuple):
    chunk_id: str
    source_id: str
    text: str
    score: float  # vector: cosine similarity; fts: BM25; hybrid: RRF sum of 1/(60 + rank)
    rank: int  # 1 = best


class StoredChunk(NamedTuple):
    """A chunk as the table holds it (vector left out): duck-types pipelines.rag.chunking.Chunk."""

    chunk_id: str
    source_id: str
    start: int
    end: int
    text: str


def table_name(corpus: str, chunking: str, embedder: str) -> str:
    """``docs__recursive-128-16__all-minilm-l6-v2``: lower case, [a-z0-9.-] within a part,
    parts joined by '__' (so a part can never fake a separator)."""
    parts = []
    for label, value in (("corpus", corpus), ("chunking", chunking), ("embedder", embedder)):
        part = NAME_PART.sub("-", str(value).lower()).strip(".-")
        if not part:
            raise ValueError(f"table_name: {label} {value!r} has no letters or digits")
        parts.append(part)
    name = "__".join(parts)
    if len(name) > MAX_TABLE_NAME:
        name = f"{name[: MAX_TABLE_NAME - 17]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return name


def check_table_name(name: str) -> str:
    if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise ValueError(
            f"table name {name!r}: use letters, digits, '_', '-', '.' "
            "(infra.vectors.table_name makes one)"
        )
    return name


def chunk_schema(dim: int):
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("source_id", pa.string(), nullable=False),
            pa.field("start", pa.int64(), nullable=False),  # char offsets into the source's text
            pa.field("end", pa.int64(), nullable=False),
            pa.field(TEXT_COLUMN, pa.string(), nullable=False),
            pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


def fts_query_text(text: str) -> str | None:
    """The words of a question as a full-text query, or None when it has none.

    The text becomes a LanceDB match query (tokenised like the indexed text, never parsed as
    query syntax), so quotes, colons, brackets or AND/OR are plain characters; control
    characters are dropped and the length capped."""
    if not isinstance(text, str):
        raise TypeError(f"query_text must be a str, got {type(text).__name__}")
    cleaned = "".join(
        " " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text[:MAX_QUERY_CHARS]
    )
    cleaned = " ".join(cleaned.split())
    return cleaned if any(ch.isalnum() for ch in cleaned) else None


def rrf_fuse(vector_rows, text_rows, k: int):
    """Reciprocal-rank fusion of two result tables (each with ``_rowid``), best first."""
    from lancedb.rerankers import RRFReranker

    fused = RRFReranker(K=RRF_K).rerank_hybrid("", vector_rows, text_rows)
    return fused.slice(0, k)


class ChunkStore:
    """One chunk table: incremental writes, indexes, and the three retrievers.

    Writes go through LanceDB's sync API. Reads go through its async API on LanceDB's own
    background loop: one round trip per query instead of the sync wrapper's six (~0.5 ms a
    query, 15 %, measured). The live read handle follows the table's latest version, also
    when another process wrote it; pinned reads use cached read-only handles."""

    def __init__(self, table, reader_db, reader, name: str, dim: int, index: VectorIndexConfig):
        self._table = table  # sync handle: writes and index maintenance
        self._reader_db, self._reader = reader_db, reader  # async handles: every read
        self.name, self.dim = name, dim
        self.index_config = index
        self._pinned: OrderedDict[int, object] = OrderedDict()
        self._pinned_lock = threading.Lock()
        self._write_lock = threading.Lock()

    @classmethod
    def open(
        cls, db_dir: Path | str, table: str, dim: int, index: VectorIndexConfig | None = None
    ) -> ChunkStore:
        """Open (or create, empty) table ``table`` under ``db_dir`` for ``dim``-d vectors.

        ``index`` sets how vector queries probe an index (nprobes, refine) and what
        ``ensure_indexes()`` builds; default VectorIndexConfig()."""
        import lancedb

        check_table_name(table)
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        Path(db_dir).mkdir(parents=True, exist_ok=True)
        # interval 0: every read checks for a newer version, so a long-lived reader (the
        # server) sees what a build in another process committed.
        db = lancedb.connect(str(db_dir), read_consistency_interval=timedelta(0))
        try:
            handle = db.open_table(table)
        except ValueError:  # not there yet; exist_ok: another process may create it first
            try:
                handle = db.create_table(table, schema=chunk_schema(dim), exist_ok=True)
            except ValueError:  # it did, with another schema: reported below
                handle = db.open_table(table)
        missing = [c for c in (*ROW_COLUMNS, VECTOR_COLUMN) if c not in handle.schema.names]
        if missing:
            raise ValueError(
                f"table {table} in {db_dir} is not a chunk table: no column(s) "
                f"{', '.join(missing)}"
            )
        stored = handle.schema.field(VECTOR_COLUMN).type
        stored_dim = getattr(stored, "list_size", None)
        if stored_dim != dim:
            raise ValueError(
                f"table {table} in {db_dir} holds {stored_dim}-d vectors, not "
                f"{dim}-d: another embedder made it (table_name names the embedder)"
            )
        reader_db = run(lancedb.connect_async(str(db_dir), read_consistency_interval=timedelta(0)))
        reader = run(reader_db.open_table(table))
        return cls(handle, reader_db, reader, table, dim, index or VectorIndexConfig())

    # ---- what the table holds -------------------------------------------------------------

    @property
    def version(self) -> int:
        """The table's latest version: what a reader should pin."""
        return self._table.version

    def count(self, version: int | None = None) -> int:
        return run(self._handle(version).count_rows())

    def chunks(self, version: int | None = None) -> list[StoredChunk]:
        """Every stored chunk (without vectors), ordered by source id and offset."""
        rows = run(self._handle(version).query().select(list(ROW_COLUMNS)).to_arrow())
        rows = rows.sort_by(
            [("source_id", "ascending"), ("start", "ascending"), ("chunk_id", "ascending")]
        )
        return [
            StoredChunk(*values)
            for values in zip(*(rows[column].to_pylist() for column in ROW_COLUMNS), strict=False)
        ]

    def source_ids(self, version: int | None = None) -> set[str]:
        rows = run(self._handle(version).query().select(["source_id"]).to_arrow())
        return set(rows["source_id"].to_pylist())

    def indexes(self) -> dict[str, dict]:
        """Index name -> {type, indexed rows, unindexed rows} on the latest version."""
        return {
            index.name: {
                "type": index.index_type,
                "indexed": index.num_indexed_rows,
                "unindexed": index.num_unindexed_rows,
            }
            for index in self._table.list_indices()
        }

    # ---- writes ---------------------------------------------------------------------------

    def replace_sources(self, chunks: Sequence, vectors) -> int:
        """Make the table hold exactly ``chunks`` for every source id they name; one commit.

        ``chunks``: objects with chunk_id, source_id, start, end, text (a RAG chunk);
        ``vectors``: one ``dim``-d row per chunk. Rows of those sources not among the new
        chunk ids are deleted, the rest upserted by chunk_id. Returns the new version."""
        rows = chunk_rows(chunks, vectors, self.dim)
        if rows is None:
            return self.version
        from lancedb.expr import col

        sources = sorted(set(rows["source_id"].to_pylist()))
        with self._write_lock:
            if self._table.count_rows() == 0:
                self._table.add(rows)
            else:
                (
                    self._table.merge_insert("chunk_id")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(col("source_id").isin(sources))
                    .execute(rows)
                )
        return self.version

    def delete_sources(self, source_ids: Iterable[str]) -> int:
        """Delete every chunk of these sources (ids are values, never SQL); returns rows gone."""
        from lancedb.expr import col

        ids = sorted({str(source_id) for source_id in source_ids})
        if not ids:
            return 0
        with self._write_lock:
            return self._table.delete(col("source_id").isin(ids)).num_deleted_rows

    def ensure_indexes(self, config: VectorIndexConfig | None = None) -> dict:
        """Bring the indexes up to date with the table; returns what was done and how long
        each step took (seconds).

        Full-text index on ``text``: created once, then new rows folded in by ``optimize``.
        Vector index: built at ``min_rows`` rows and above (rebuilt when the config asks
        for another one), kept current by ``optimize`` (new rows assigned to lists, lists
        split or joined toward their target size); dropped below ``min_rows`` (exact scan)."""
        config = config or self.index_config
        self.index_config = config
        with self._write_lock:
            table = self._table
            rows = table.count_rows()
            existing = {index.name for index in table.list_indices()}
            done: dict = {
                "rows": rows,
                "fts_index": None,
                "vector_index": None,
                "fts_built": False,
                "vector_built": False,
                "dropped": [],
            }
            if rows == 0:
                return {**done, "version": self.version}
            started = time.perf_counter()
            if FTS_INDEX not in existing:
                from lancedb.index import FTS

                table.create_index(TEXT_COLUMN, config=FTS(), name=FTS_INDEX, replace=True)
                done["fts_built"] = True
            done["fts_index"] = FTS_INDEX
            done["fts_s"] = round(time.perf_counter() - started, 3)
            started = time.perf_counter()
            wanted = config.index_name(self.dim) if rows >= config.min_rows else None
            for stale in sorted(
                n for n in existing if n.startswith(VECTOR_INDEX_PREFIX) and n != wanted
            ):
                table.drop_index(stale)
                done["dropped"].append(stale)
            if wanted and wanted not in existing:
                table.create_index(
                    VECTOR_COLUMN,
                    config=config.lancedb_config(self.dim),
                    name=wanted,
                    replace=True,
                )
                done["vector_built"] = True
            done["vector_index"] = wanted
            done["vector_s"] = round(time.perf_counter() - started, 3)
            # Compacts small fragments and folds unindexed rows into both indexes. Versions
            # older than keep_versions_days are deleted here: pins older than that expire.
            started = time.perf_counter()
            table.optimize(cleanup_older_than=timedelta(days=config.keep_versions_days))
            done["optimize_s"] = round(time.perf_counter() - started, 3)
        return {**done, "version": self.version}

    # ---- reads ----------------------------------------------------------------------------

    def search(
        self,
        query_text: str,
        query_vector,
        k: int,
        retriever: Retriever = "hybrid",
        version: int | None = None,
    ) -> list[Hit]:
        """Top-``k`` chunks for a question by one retriever, reading ``version`` (None: the
        latest). ``query_vector`` is the question's embedding (used by vector and hybrid),
        ``query_text`` its words (fts and hybrid)."""
        if retriever not in RETRIEVERS:
            raise ValueError(f"retriever {retriever!r} is not one of {RETRIEVERS}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        table = self._handle(version)
        if retriever == "vector":
            return vector_hits(run(self._vector_query(table, query_vector, k).to_arrow()))
        if retriever == "fts":
            return fts_hits(run(fts_rows(table, query_text, k)))
        vector_query = self._vector_query(table, query_vector, k).with_row_id()
        vector_rows, text_rows = run(
            gather(vector_query.to_arrow(), fts_rows(table, query_text, k, with_row_id=True))
        )
        fused = rrf_fuse(vector_rows, text_rows, k)
        return to_hits(fused, fused["_relevance_score"].to_pylist())

    def _vector_query(self, table, query_vector, k: int):
        vector = query_array(query_vector, self.dim)
        config = self.index_config
        # nprobes/refine/ef only matter where an index exists; a table without one (below
        # min_rows) is scanned exactly whatever they say.
        query = (
            table.vector_search(vector)
            .column(VECTOR_COLUMN)
            .distance_type("cosine")
            .nprobes(config.nprobes)
            .select(HIT_COLUMNS + ["_distance"])
            .limit(k)
        )
        if config.refine:
            query = query.refine_factor(config.refine)
        if config.ef:
            query = query.ef(config.ef)
        return query

    def _handle(self, version: int | None):
        """The live read handle, or a cached read-only handle opened at ``version``."""
        if version is None:
            return self._reader
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"version must be a positive integer, got {version!r}")
        with self._pinned_lock:
            handle = self._pinned.get(version)
            if handle is not None:
                self._pinned.move_to_end(version)
                return handle
        try:
            handle = run(self._reader_db.open_table(self.name, version=version))
        except ValueError as error:
            raise ValueError(
                f"table {self.name} has no version {version} (latest "
                f"{self.version}; versions older than "
                f"{self.index_config.keep_versions_days} days are cleaned up by "
                f"ensure_indexes): {error}"
            ) from error
        with self._pinned_lock:
            self._pinned[version] = handle
            while len(self._pinned) > PINNED_HANDLES:
                self._pinned.popitem(last=False)
        return handle


def run(coroutine):
    """Run one LanceDB coroutine on LanceDB's background event loop (what its sync API
    does), from any thread."""
    from lancedb.background_loop import LOOP

    return LOOP.run(coroutine)


async def gather(*coroutines):
    import asyncio

    return await asyncio.gather(*coroutines)


async def fts_rows(table, query_text: str, k: int, with_row_id: bool = False):
    """BM25 top-k of a match query on ``text`` (an Arrow table, empty when no words)."""
    from lancedb.query import MatchQuery

    words = fts_query_text(query_text)
    if words is None:
        return empty_rows(with_row_id, "_score")
    query = (
        table.query()
        .nearest_to_text(MatchQuery(words, TEXT_COLUMN))
        .select(HIT_COLUMNS + ["_score"])
        .limit(k)
    )
    if with_row_id:
        query = query.with_row_id()
    return await query.to_arrow()


def chunk_rows(chunks: Sequence, vectors, dim: int):
    """The Arrow rows for ``chunks`` + ``vectors``, checked; None when there are none."""
    import pyarrow as pa

    chunks = list(chunks)
    matrix = np.asarray(vectors, dtype=np.float32)
    if not chunks:
        if matrix.size:
            raise ValueError(f"{len(matrix)} vectors for 0 chunks")
        return None
    if matrix.ndim != 2 or matrix.shape != (len(chunks), dim):
        raise ValueError(
            f"vectors have shape {matrix.shape}; expected ({len(chunks)}, {dim}): "
            "one row per chunk, the table's dimension"
        )
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        raise ValueError(
            f"vector {bad[0]} (chunk {getattr(chunks[bad[0]], 'chunk_id', '?')}) "
            f"has NaN or infinite values ({bad.size} such rows)"
        )
    columns: dict[str, list] = {name: [] for name in ROW_COLUMNS}
    for position, chunk in enumerate(chunks):
        for name in ROW_COLUMNS:
            value = getattr(chunk, name, None)
            if value is None:
                raise ValueError(
                    f"chunk {position} ({type(chunk).__name__}) has no {name!r}: "
                    "expected chunk_id, source_id, start, end, text"
                )
            columns[name].append(value)
    seen: set[str] = set()
    for position, chunk_id in enumerate(columns["chunk_id"]):
        if chunk_id in seen:
            raise ValueError(f"chunk {position}: chunk_id {chunk_id!r} appears twice")
        seen.add(chunk_id)
    schema = chunk_schema(dim)
    arrays = [pa.array(columns[name], type=schema.field(name).type) for name in ROW_COLUMNS]
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), dim))
    return pa.Table.from_arrays(arrays, schema=schema)


def query_array(query_vector, dim: int) -> np.ndarray:
    vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    if vector.shape != (dim,):
        raise ValueError(f"query vector has {vector.size} values; the table's vectors have {dim}")
    if not np.isfinite(vector).all():
        raise ValueError("query vector has NaN or infinite values")
    return vector


def empty_rows(with_row_id: bool, score_column: str):
    import pyarrow as pa

    fields = [pa.field(name, pa.string()) for name in HIT_COLUMNS]
    fields.append(pa.field(score_column, pa.float32()))
    if with_row_id:
        fields.append(pa.field("_rowid", pa.uint64()))
    return pa.schema(fields).empty_table()


def to_hits(rows, scores: list[float]) -> list[Hit]:
    return [
        Hit(chunk_id, source_id, text, float(score), rank)
        for rank, (chunk_id, source_id, text, score) in enumerate(
            zip(
                rows["chunk_id"].to_pylist(),
                rows["source_id"].to_pylist(),
                rows[TEXT_COLUMN].to_pylist(),
                scores,
                strict=False,
            ),
            start=1,
        )
    ]


def vector_hits(rows) -> list[Hit]:
    return to_hits(rows, [1.0 - d for d in rows["_distance"].to_pylist()])  # cosine similarity


def fts_hits(rows) -> list[Hit]:
    return to_hits(rows, rows["_score"].to_pylist())
