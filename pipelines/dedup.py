"""Exact and near-duplicate detection for the pretraining corpus, on Spark.

Steps (each a small function below):

1. exact: group documents by the SHA-256 of their text; the smallest id (string order) of each
   group survives. A null text counts as the empty text.
2. MinHash: byte k-gram shingles packed in uint64, hashed with ``num_perm`` multiply-add-shift
   functions and reduced per document with ``np.minimum.reduceat`` — all numpy, no per-shingle
   Python (~50k docs/s per core), run inside ``mapInArrow`` (rather than mapInPandas) so the
   texts reach numpy as Arrow's UTF-8 buffer, with no per-row Python object at all.
3. LSH banding: each band's rows hash to one 64-bit bucket key; a bucket with several documents
   emits star edges (member -> the bucket's hub), never all pairs.
4. verification: every candidate edge gets the EXACT Jaccard of the two shingle sets; edges under
   the threshold are dropped, so a false LSH collision can never remove a document.
5. connected components of the verified edges (large-star / small-star rounds as DataFrame
   operations on 64-bit integer keys); the cluster id is the smallest document id in it.
6. representatives: inside each cluster, members in id order; a member is removed only when it
   is exactly similar (J >= threshold) to a member already kept, which becomes its representative.
   A chain A~B~C with J(A,C) < threshold therefore keeps C.

The pure-numpy functions (``shingles``, ``minhash_signatures``, ``exact_jaccard``) are the same
code the Spark job runs, so tests and benchmarks exercise the real thing.

Input ids must be unique. The input DataFrame is read twice (signatures, then the final
``kept`` join): persist it first when it is expensive to recompute.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

CORPUS_DEDUP_SCHEMA_EXTRA = "cluster_id STRING, cluster_size INT"
DUPLICATES_SCHEMA = (
    "id STRING, cluster_id STRING, representative_id STRING, kind STRING, jaccard DOUBLE"
)
LOG = logging.getLogger(__name__)
HISTOGRAM_BUCKETS = ((2, 2, "2"), (3, 5, "3-5"), (6, 10, "6-10"), (11, None, "11+"))


class DedupConfig(BaseModel):
    """Near-duplicate parameters. Band choice, from the LSH S-curve P(s) = 1 - (1 - s^r)^b
    (probability that two documents of Jaccard s share at least one bucket), with b*r = 128:

        b x r    P(0.5)   P(0.7)   P(0.8)    P(0.9)
        16 x 8   0.061    0.613    0.947     0.9999   <- misses 5.3 % of pairs at J = 0.8
        32 x 4   0.873    0.9998   1 - 5e-8  1        <- default
        64 x 2   1.0      1.0      1.0       1.0      <- every J >= 0.3 pair is a candidate

    32 x 4 is the only split of 128 with recall >= 0.95 at J = 0.8 that does not make nearly every
    pair a candidate. Its false candidates (P(0.5) = 0.87) cost only verification time: step 4
    checks every candidate with the exact Jaccard, so precision does not depend on the bands.
    """

    shingle_size: int = Field(5, ge=1, le=8)  # bytes per shingle: UTF-8 byte 5-grams, packed
    # exactly into one uint64 (hence <= 8); 5 bytes ~ one short word, robust to small edits
    num_perm: int = Field(128, ge=1)  # hash functions per signature: std of the estimate at
    # J = 0.8 is sqrt(0.8*0.2/128) = 0.035
    bands: int = Field(32, ge=1)  # LSH bands: recall 1 - 5e-8 at J = 0.8 (see the table above)
    rows: int = Field(4, ge=1)  # signature rows per band; bands * rows == num_perm
    threshold: float = Field(0.8, gt=0.0, le=1.0)  # exact Jaccard at or above which a document
    # is a near duplicate of its representative
    seed: int = 42  # seeds the hash functions: same seed, same signatures and clusters
    estimate_margin: float = Field(0.2, ge=0.0, le=1.0)  # step 6 checks exactly only members
    # whose signature estimate is >= threshold - margin: 0.2 is ~6 standard deviations
    max_component_iterations: int = Field(64, ge=1)  # connected-component rounds before giving
    # up: O(log^2 n) needed, 5-6 seen on 200k documents

    @model_validator(mode="after")
    def _bands_cover_signature(self) -> DedupConfig:
        if self.bands * self.rows != self.num_perm:
            raise ValueError(
                f"bands * rows must equal num_perm: {self.bands} * {self.rows} != {self.num_perm}"
            )
        return self

    def candidate_probability(self, jaccard: float) -> float:
        """The S-curve: chance that a pair with this Jaccard shares at least one LSH bucket."""
        return 1.0 - (1.0 - jaccard**self.rows) ** self.bands


# --------------------------------------------------------------------------------------------
# numpy core: shingles, signatures, band keys, exact Jaccard
# --------------------------------------------------------------------------------------------

_U64 = np.uint64
_MIX_MUL1 = _U64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser constants
_MIX_MUL2 = _U64(0x94D049BB133111EB)
_CHUNK_BYTES = 1 << 16  # text bytes per numpy pass: the hashing buffer stays in cache (2x vs 1 MiB)


@dataclass(frozen=True)
class ShingleBatch:
    """Unique shingles of several documents: ``values[offsets[i]:offsets[i + 1]]`` is document
    i's sorted shingle set. Every document has at least one shingle."""

    values: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len = documents + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def of(self, i: int) -> np.ndarray:
        """Document i's shingles."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads packed bytes over all 64 bits (a new array)."""
    x = x ^ (x >> _U64(30))
    x *= _MIX_MUL1
    x ^= x >> _U64(27)
    x *= _MIX_MUL2
    x ^= x >> _U64(31)
    return x


def utf8_buffer(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Texts as one UTF-8 byte buffer plus int64 offsets (the layout Arrow strings have)."""
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _pack_kgrams(data: np.ndarray, k: int) -> np.ndarray:
    """Every k-byte window of ``data`` packed big-endian into a uint64 (exact for k <= 8)."""
    m = max(len(data) - k + 1, 0)
    packed = data[:m].astype(_U64)
    for j in range(1, k):
        packed <<= _U64(8)
        packed |= data[j : j + m]
    return packed


def _pack_short_docs(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Documents shorter than k: one shingle holding all their bytes (0 for an empty text)."""
    packed = np.zeros(len(starts), dtype=_U64)
    last = max(len(data) - 1, 0)
    padded = data if len(data) else np.zeros(1, dtype=np.uint8)
    for j in range(int(lengths.max(initial=0))):
        has_byte = j < lengths
        byte = padded[np.minimum(starts + j, last)].astype(_U64)
        packed = np.where(has_byte, (packed << _U64(8)) | byte, packed)
    return packed


def _sort_by_doc_then_value(values: np.ndarray, docs: np.ndarray, n_docs: int,
                            sides: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """(values, docs[, sides]) ordered by doc, then value[, then side (0/1)]. One int64 sort of
    packed keys when everything fits in 63 bits (5-byte shingles: batches of millions of
    documents), else a lexsort."""
    value_bits = max(int(values.max(initial=0)).bit_length(), 1)
    side_bits = 0 if sides is None else 1
    if value_bits + side_bits + max(int(n_docs - 1).bit_length(), 1) > 63:
        order = np.lexsort((values, docs) if sides is None else (sides, values, docs))
        return (values[order], docs[order]) + (() if sides is None else (sides[order],))
    low_bits = value_bits + side_bits
    keys = (docs.astype(np.int64) << np.int64(low_bits)) | (values.astype(np.int64) << side_bits)
    if sides is not None:
        keys |= sides
    keys.sort()
    sorted_values = ((keys & np.int64((1 << low_bits) - 1)) >> side_bits).astype(_U64)
    ordered = (sorted_values, keys >> np.int64(low_bits))
    return ordered + (() if sides is None else (keys & 1,))


def _repeats(values: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """For sorted (doc, value) pairs: True where an element equals its predecessor."""
    return (values[1:] == values[:-1]) & (docs[1:] == docs[:-1])


def _all_kgrams(data: np.ndarray, offsets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every byte k-gram of each document in a UTF-8 buffer (repeats included) and its
    document's index; a document shorter than k is one shingle of its whole text."""
    n_docs = len(offsets) - 1
    base = int(offsets[0])
    data = data[base : int(offsets[-1])]
    starts = offsets[:-1] - base
    lengths = np.diff(offsets)
    packed = _pack_kgrams(data, k)
    counts = np.maximum(lengths - k + 1, 0)
    short = counts == 0
    counts[short] = 1
    out_starts = np.zeros(n_docs, dtype=np.int64)
    np.cumsum(counts[:-1], out=out_starts[1:])
    window = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - out_starts, counts)
    values = packed[np.minimum(window, max(len(packed) - 1, 0))] if len(packed) else \
        np.zeros(len(window), dtype=_U64)
    if short.any():
        values[out_starts[short]] = _pack_short_docs(data, starts[short], lengths[short])
    return values, np.repeat(np.arange(n_docs, dtype=np.int64), counts)


def shingle_utf8(data: np.ndarray, offsets: np.ndarray, k: int) -> ShingleBatch:
    """Unique byte k-gram shingles of each document in a UTF-8 buffer, in cache-sized chunks."""
    chunks = [_unique_shingles(data, offsets[start : stop + 1], k)
              for start, stop in _doc_chunks(offsets, _CHUNK_BYTES)]
    if len(chunks) == 1:
        return chunks[0]
    sizes = [np.diff(c.offsets) for c in chunks]
    offsets_out = np.zeros(sum(map(len, sizes)) + 1, dtype=np.int64)
    np.cumsum(np.concatenate([np.zeros(0, dtype=np.int64), *sizes]), out=offsets_out[1:])
    values = np.concatenate([np.zeros(0, dtype=_U64), *(c.values for c in chunks)])
    return ShingleBatch(values=values, offsets=offsets_out)


def _unique_shingles(data: np.ndarray, offsets: np.ndarray, k: int) -> ShingleBatch:
    n_docs = len(offsets) - 1
    values, docs = _sort_by_doc_then_value(*_all_kgrams(data, offsets, k), n_docs)
    first = np.ones(len(values), dtype=bool)
    first[1:] = ~_repeats(values, docs)
    sizes = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(np.bincount(docs[first], minlength=n_docs), out=sizes[1:])
    return ShingleBatch(values=values[first], offsets=sizes)


def jaccard_utf8(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int
                 ) -> np.ndarray:
    """Exact Jaccard of the k-gram sets of document i of buffer a and document i of buffer b
    ((data, offsets) pairs), for every i, in cache-sized chunks: a 10k-pair batch sorted at once
    runs 4x slower (cache misses)."""
    (data_a, offsets_a), (data_b, offsets_b) = a, b
    both = (offsets_a - offsets_a[0]) + (offsets_b - offsets_b[0])
    out = np.empty(len(offsets_a) - 1)
    for start, stop in _doc_chunks(both, 2 * _CHUNK_BYTES):
        out[start:stop] = _jaccard_chunk((data_a, offsets_a[start : stop + 1]),
                                         (data_b, offsets_b[start : stop + 1]), k)
    return out


def _jaccard_chunk(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int
                   ) -> np.ndarray:
    """jaccard_utf8 with ONE sort: all k-grams of both sides keyed by (i, value, side). In each
    run of equal (i, value) the first element is side 0 if a has the value, the last is side 1
    if b has it."""
    n = len(a[1]) - 1
    values_a, pairs_a = _all_kgrams(*a, k)
    values_b, pairs_b = _all_kgrams(*b, k)
    sides = np.concatenate([np.zeros(len(values_a), np.int64), np.ones(len(values_b), np.int64)])
    values, pairs, sides = _sort_by_doc_then_value(
        np.concatenate([values_a, values_b]), np.concatenate([pairs_a, pairs_b]), n, sides)
    run_start = np.ones(len(values), dtype=bool)
    run_start[1:] = ~_repeats(values, pairs)
    run_end = np.ones(len(values), dtype=bool)
    run_end[:-1] = run_start[1:]
    in_a, in_b = sides[run_start] == 0, sides[run_end] == 1
    owner = pairs[run_start]
    size_a = np.bincount(owner[in_a], minlength=n)
    size_b = np.bincount(owner[in_b], minlength=n)
    intersection = np.bincount(owner[in_a & in_b], minlength=n)
    return intersection / np.maximum(size_a + size_b - intersection, 1)


def shingle_batch(texts: Sequence[str], k: int) -> ShingleBatch:
    """Unique byte k-gram shingles of each text."""
    return shingle_utf8(*utf8_buffer(texts), k)


def shingles(text: str, k: int = 5) -> np.ndarray:
    """The sorted unique byte k-gram shingles of one text, packed in uint64."""
    return shingle_batch([text], k).values


def _hash_functions(config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    return _hash_functions_for(config.num_perm, config.seed)


@functools.lru_cache(maxsize=8)
def _hash_functions_for(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """num_perm multiply-add-shift hash functions h(x) = ((a*x + b) mod 2^64) >> 32, a odd."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(np.uint64).max
    a = rng.integers(0, top, size=num_perm, dtype=np.uint64, endpoint=True) | _U64(1)
    b = rng.integers(0, top, size=num_perm, dtype=np.uint64, endpoint=True)
    a.flags.writeable = b.flags.writeable = False  # shared by every call through the cache
    return a, b


def _signatures_of_shingles(batch: ShingleBatch, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(documents, num_perm) uint32 minima. The >> 32 is applied after the minimum: the shift is
    monotone, so min(h >> 32) == min(h) >> 32, and one pass over the shingles is saved."""
    keys = _mix64(batch.values)
    scratch = np.empty(len(keys), dtype=np.uint64)
    minima = np.empty((len(a), len(batch)), dtype=np.uint64)
    starts = batch.offsets[:-1]
    for p in range(len(a)):  # one permutation at a time: the scratch buffer stays in cache
        np.multiply(keys, a[p], out=scratch)
        scratch += b[p]
        np.minimum.reduceat(scratch, starts, out=minima[p])
    return np.ascontiguousarray((minima >> _U64(32)).astype(np.uint32).T)


def _doc_chunks(offsets: np.ndarray, max_bytes: int) -> Iterator[tuple[int, int]]:
    """[start, stop) document ranges of about max_bytes of text each (at least one document)."""
    n = len(offsets) - 1
    start = 0
    while start < n:
        stop = int(np.searchsorted(offsets, offsets[start] + max_bytes, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def signatures_utf8(data: np.ndarray, offsets: np.ndarray, config: DedupConfig) -> np.ndarray:
    """MinHash signatures of the documents in a UTF-8 buffer, in cache-sized chunks."""
    a, b = _hash_functions(config)
    out = np.empty((len(offsets) - 1, config.num_perm), dtype=np.uint32)
    for start, stop in _doc_chunks(offsets, _CHUNK_BYTES):
        batch = _unique_shingles(data, offsets[start : stop + 1], config.shingle_size)
        out[start:stop] = _signatures_of_shingles(batch, a, b)
    return out


def minhash_signatures(texts: Sequence[str], config: DedupConfig) -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures; identical texts, identical rows."""
    return signatures_utf8(*utf8_buffer(texts), config)


def estimated_jaccard(signature_a: np.ndarray, signatures_b: np.ndarray) -> np.ndarray:
    """Share of equal signature positions: an unbiased estimate of the Jaccard."""
    return (np.atleast_2d(signatures_b) == signature_a).mean(axis=-1)


def band_keys(signatures: np.ndarray, config: DedupConfig) -> np.ndarray:
    """(documents, bands) int64: each band's rows hashed to one key, the band index mixed in, so
    keys from different bands never meet in one bucket (a 64-bit collision would only add a
    candidate, which verification then rejects)."""
    n = len(signatures)
    rows = signatures.reshape(n, config.bands, config.rows).astype(np.uint64)
    band_ids = np.arange(config.bands, dtype=np.uint64) + _U64(config.seed & 0xFFFFFFFF) * _U64(
        config.bands)
    keys = np.broadcast_to(_mix64(band_ids), (n, config.bands)).copy()
    for r in range(config.rows):
        keys = _mix64(keys ^ rows[:, :, r])
    return keys.view(np.int64)


def exact_jaccard(texts_a: Sequence[str], texts_b: Sequence[str], k: int = 5) -> np.ndarray:
    """Exact Jaccard of the byte k-gram sets of texts_a[i] and texts_b[i]."""
    return jaccard_utf8(utf8_buffer(texts_a), utf8_buffer(texts_b), k)


def _jaccard_sorted(x: np.ndarray, y: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique arrays."""
    hits = np.searchsorted(y, x)
    hits[hits == len(y)] = 0
    intersection = int(np.count_nonzero(y[hits] == x))
    return intersection / (len(x) + len(y) - intersection)


def choose_representatives(texts: Sequence[str], config: DedupConfig
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy selection inside one cluster whose members are in priority order (smallest id
    first). Returns, per member, the position of its representative (-1: kept) and the exact
    Jaccard to it (NaN: kept)."""
    data, offsets = utf8_buffer(texts)
    batch = shingle_utf8(data, offsets, config.shingle_size)
    return _greedy_in_cluster(batch, signatures_utf8(data, offsets, config), 0, len(texts), config)


def _greedy_in_cluster(batch: ShingleBatch, signatures: np.ndarray, start: int, stop: int,
                       config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """choose_representatives for members start..stop-1 of precomputed shingles and signatures.
    A member is removed only when its exact Jaccard with an already KEPT member is >= threshold,
    so every removed document is similar to its representative (a chain A~B~C with J(A,C) below
    the threshold keeps C). Signature estimates pick which kept members deserve an exact check,
    most similar first; positions returned are relative to start."""
    size = stop - start
    representative = np.full(size, -1, dtype=np.int64)
    jaccard = np.full(size, np.nan)
    kept: list[int] = [0] if size else []
    floor = config.threshold - config.estimate_margin
    for i in range(1, size):
        estimates = estimated_jaccard(signatures[start + i], signatures[[start + j for j in kept]])
        for j in np.argsort(-estimates, kind="stable"):
            if estimates[j] < floor:
                break
            exact = _jaccard_sorted(batch.of(start + i), batch.of(start + kept[j]))
            if exact >= config.threshold:
                representative[i], jaccard[i] = kept[j], exact
                break
        if representative[i] < 0:
            kept.append(i)
    return representative, jaccard


# --------------------------------------------------------------------------------------------
# Spark job
# --------------------------------------------------------------------------------------------


@dataclass
class DedupResult:
    """kept: input columns + cluster_id, cluster_size (documents of its cluster in the input,
    exact copies included; 1 when unique). duplicates: one row per removed document
    (DUPLICATES_SCHEMA); representative_id is always a kept document and jaccard is the exact
    Jaccard to it. kept ids + duplicates ids == input ids."""

    kept: DataFrame
    duplicates: DataFrame
    docs_in: int
    _decisions: DataFrame = field(repr=False)  # persisted: the rows of every non-singleton cluster
    _stats: dict | None = field(default=None, repr=False)

    def stats(self) -> dict:
        if self._stats is None:
            self._stats = _summarise(self._decisions, self.docs_in)
        return self._stats

    def unpersist(self) -> None:
        """Free the cached decisions (kept/duplicates recompute them if used afterwards)."""
        self._decisions.unpersist()


def deduplicate(df: DataFrame, config: DedupConfig | None = None) -> DedupResult:
    """Remove exact and near duplicates from ``df`` (columns ``id``, ``text`` + any others;
    ids unique and not null)."""
    config = config or DedupConfig()
    _require_columns(df, ("id", "text"))
    unique_docs = _unique_texts(df).persist(StorageLevel.MEMORY_AND_DISK)
    cached = [unique_docs]
    try:
        docs_in = _count_inputs(unique_docs)
        edges = _candidate_edges(unique_docs, config)
        verified = _verified_edges(edges, unique_docs, config).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(verified)
        components = connected_components(verified, config.max_component_iterations)
        members = _cluster_members(components, unique_docs, config)
        decisions = _decisions(unique_docs, members).persist(StorageLevel.MEMORY_AND_DISK)
        LOG.info("dedup: %d documents in, %d in clusters of several", docs_in, decisions.count())
    finally:
        for frame in cached:
            frame.unpersist()
    return DedupResult(kept=_kept(df, decisions), duplicates=_duplicates(decisions),
                       docs_in=docs_in, _decisions=decisions)


def _require_columns(df: DataFrame, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(
            f"deduplicate: input DataFrame lacks column(s) {missing}; it has {df.columns}")


def _unique_texts(df: DataFrame) -> DataFrame:
    """One row per distinct text: the smallest id holding it, the text, every id holding it, and
    ``doc_key`` = xxhash64(id), the integer the graph steps work on. doc_key is a function of the
    id alone, so everything downstream is independent of input order and partitioning. (Two ids
    with one key — odds ~n^2/2^65 — would only add candidate pairs: every removal is decided on
    ids and exact Jaccard.)"""
    text = F.coalesce(F.col("text"), F.lit(""))
    return (
        df.select(F.col("id").cast("string").alias("id"), text.alias("text"))
        .groupBy(F.sha2("text", 256).alias("content_hash"))
        .agg(F.min("id").alias("id"), F.min_by("text", "id").alias("text"),
             F.collect_list("id").alias("copy_ids"), F.count("*").alias("n_rows"))
        .select(F.xxhash64("id").alias("doc_key"), "id", "text", "copy_ids",
                F.size("copy_ids").alias("n_copies"), "n_rows")
    )


def _count_inputs(unique_docs: DataFrame) -> int:
    """Input rows; refuses null ids, which collect_list would silently drop."""
    rows, with_id = unique_docs.agg(F.sum("n_rows"), F.sum("n_copies")).first()
    if (rows or 0) != (with_id or 0):
        raise ValueError(f"deduplicate: {rows - with_id} input row(s) have a null id; "
                         "every document needs an id")
    return int(rows or 0)


def _band_rows_udf(config: DedupConfig) -> Callable:
    """mapInArrow function: (doc_key, text) batches -> one (band_key, doc_key, rank) row per band.
    rank orders a bucket's members differently in every band (see _candidate_edges)."""

    def band_rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            data, offsets = _arrow_utf8(batch.column("text"))
            keys = band_keys(signatures_utf8(data, offsets, config), config).ravel()
            doc_keys = np.repeat(batch.column("doc_key").to_numpy(), config.bands)
            ranks = _mix64(keys.view(np.uint64) ^ doc_keys.view(np.uint64)).view(np.int64)
            yield pa.RecordBatch.from_arrays([pa.array(keys), pa.array(doc_keys),
                                              pa.array(ranks)],
                                             names=["band_key", "doc_key", "rank"])

    return band_rows


def _arrow_utf8(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow (large_)string array's UTF-8 bytes and int64 offsets, without copying the text."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:  # an empty array may come without buffers
        return np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64)
    offset_type = np.int64 if pa.types.is_large_string(column.type) else np.int32
    _, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[
        column.offset : column.offset + len(column) + 1].astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else \
        np.zeros(0, dtype=np.uint8)
    return data, offsets


def _candidate_edges(unique_docs: DataFrame, config: DedupConfig) -> DataFrame:
    """Star edges (src < dst) from every LSH bucket with several documents: each member points at
    the bucket's hub, n - 1 edges per bucket instead of n^2 / 2. The hub is the member of
    smallest rank, a hash of (band, doc): a different hub in every band, so two similar documents
    sharing a bucket full of unrelated ones (templated short docstrings) still meet as hub and
    member in some band; a fixed hub (the smallest doc) would link them only through itself.
    A window over the bucket, not groupBy + collect_list: 2x faster, no arrays."""
    rows = unique_docs.select("doc_key", "text").mapInArrow(
        _band_rows_udf(config), "band_key LONG, doc_key LONG, rank LONG")
    hub = F.min(F.struct("rank", "doc_key")).over(Window.partitionBy("band_key"))["doc_key"]
    return (rows.select("doc_key", hub.alias("hub"))
            .where(F.col("doc_key") != F.col("hub"))  # singleton buckets: the doc is its own hub
            .select(F.least("doc_key", "hub").alias("src"), F.greatest("doc_key", "hub").alias("dst"))
            .distinct())


def _verify_udf(config: DedupConfig) -> Callable:
    """mapInArrow function: candidate edges with both texts -> edges whose exact J >= threshold."""

    def verify(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            jaccard = jaccard_utf8(_arrow_utf8(batch.column("src_text")),
                                   _arrow_utf8(batch.column("dst_text")), config.shingle_size)
            similar = jaccard >= config.threshold
            yield pa.RecordBatch.from_arrays(
                [pa.array(batch.column("src").to_numpy()[similar]),
                 pa.array(batch.column("dst").to_numpy()[similar])],
                names=["src", "dst"])

    return verify


def _verified_edges(edges: DataFrame, unique_docs: DataFrame, config: DedupConfig
                    ) -> DataFrame:
    """The candidate edges whose two texts have exact Jaccard >= threshold."""
    texts = unique_docs.select("doc_key", "text")
    return (
        edges.join(texts.withColumnsRenamed({"doc_key": "src", "text": "src_text"}), "src")
        .join(texts.withColumnsRenamed({"doc_key": "dst", "text": "dst_text"}), "dst")
        .select("src", "dst", "src_text", "dst_text")
        .mapInArrow(_verify_udf(config), "src LONG, dst LONG")
    )


def connected_components(edges: DataFrame, max_iterations: int = 64) -> DataFrame:
    """(node, component) for every node of an undirected edge list (src, dst LONG); component is
    the smallest node of its component. Alternating large-star / small-star (Kiveris et al.,
    "Connected Components in MapReduce and Beyond", 2014): O(log^2 n) rounds in theory, 5-6 on
    the benchmark's 150k edges, where min-label propagation with pointer jumping took 16.
    Both steps keep connectivity and only ever link a node to a smaller one, so once the edges
    form stars (every node one parent, every parent a root) each star is a component."""
    current = (edges.select(F.greatest("src", "dst").alias("node"),
                            F.least("src", "dst").alias("parent"))
               .where(F.col("node") != F.col("parent")).distinct().localCheckpoint())
    for round_ in range(max_iterations + 1):
        if _is_star_forest(current):
            LOG.info("connected components: converged after %d rounds", round_)
            roots = current.select(F.col("parent").alias("node")).distinct() \
                .withColumn("component", F.col("node"))
            return current.select("node", F.col("parent").alias("component")).unionByName(roots)
        current = _small_star(_large_star(current)).localCheckpoint()
    raise RuntimeError(f"connected components did not converge in {max_iterations} rounds")


def _is_star_forest(edges: DataFrame) -> bool:
    """True when every node has one parent and no parent has a parent of its own."""
    several_parents = edges.groupBy("node").count().where(F.col("count") > 1).select("node")
    grandchildren = edges.join(edges.select(F.col("node").alias("parent")), "parent", "left_semi")
    return several_parents.unionByName(grandchildren.select("node")).isEmpty()


def _large_star(edges: DataFrame) -> DataFrame:
    """Each node links every LARGER neighbour to the smallest node of its neighbourhood."""
    both = edges.unionByName(edges.select(F.col("parent").alias("node"),
                                          F.col("node").alias("parent")))
    smallest = F.least(F.min("parent").over(Window.partitionBy("node")), F.col("node"))
    return (both.withColumn("smallest", smallest).where(F.col("parent") > F.col("node"))
            .select(F.col("parent").alias("node"), F.col("smallest").alias("parent")))


def _small_star(edges: DataFrame) -> DataFrame:
    """Each node links itself and its SMALLER neighbours (every edge points from the larger
    node to the smaller) to the smallest of them."""
    linked = edges.withColumn("smallest", F.min("parent").over(Window.partitionBy("node")))
    neighbours = linked.select(F.col("parent").alias("node"), F.col("smallest").alias("parent"))
    itself = linked.select("node", F.col("smallest").alias("parent"))
    return neighbours.unionByName(itself).where(F.col("node") != F.col("parent")).distinct()


_MEMBER_SCHEMA = "id STRING, cluster_id STRING, representative_id STRING, jaccard DOUBLE"


def _representatives_udf(config: DedupConfig) -> Callable:
    """mapInArrow function over rows sorted by (component, id): each component's decisions.
    A component cut by a batch boundary is carried into the next batch (same partition)."""

    def decide(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        pending = None
        for batch in batches:
            if pending is not None:
                batch = pa.Table.from_batches([pending, batch]).combine_chunks().to_batches()[0]
            if len(batch) == 0:
                continue
            components = batch.column("component").to_numpy()
            cut = int(np.searchsorted(components, components[-1], side="left"))
            pending = batch.slice(cut)
            if cut:
                yield _decide_components(batch.slice(0, cut), config)
        if pending is not None and len(pending):
            yield _decide_components(pending, config)

    return decide


def _decide_components(batch: pa.RecordBatch, config: DedupConfig) -> pa.RecordBatch:
    """Shingles and signatures for the whole batch at once, then the greedy per component."""
    data, offsets = _arrow_utf8(batch.column("text"))
    shingled = shingle_utf8(data, offsets, config.shingle_size)
    signatures = signatures_utf8(data, offsets, config)
    components = batch.column("component").to_numpy()
    bounds = np.concatenate([[0], np.flatnonzero(components[1:] != components[:-1]) + 1,
                             [len(components)]])
    ids = np.asarray(batch.column("id").to_pylist(), dtype=object)
    cluster_ids = np.repeat(ids[bounds[:-1]], np.diff(bounds))  # sorted by id: first is smallest
    representative_ids = np.full(len(ids), None, dtype=object)
    jaccard = np.full(len(ids), np.nan)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        rep, sim = _greedy_in_cluster(shingled, signatures, start, stop, config)
        removed = np.flatnonzero(rep >= 0)
        representative_ids[start + removed] = ids[start + rep[removed]]
        jaccard[start:stop] = sim
    return pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.string()), pa.array(cluster_ids, pa.string()),
         pa.array(representative_ids, pa.string()), pa.array(jaccard, from_pandas=True)],
        names=["id", "cluster_id", "representative_id", "jaccard"])


def _cluster_members(components: DataFrame, unique_docs: DataFrame, config: DedupConfig
                     ) -> DataFrame:
    """Decision for every document in a component: kept (representative null) or removed."""
    return (components.join(unique_docs.select("doc_key", "id", "text"),
                            components["node"] == unique_docs["doc_key"])
            .select("component", "id", "text")
            .repartition("component")
            .sortWithinPartitions("component", "id")
            .mapInArrow(_representatives_udf(config), _MEMBER_SCHEMA))


def _decisions(unique_docs: DataFrame, members: DataFrame) -> DataFrame:
    """Every document of a cluster with >= 2 input documents (exact copies included):
    id, cluster_id, cluster_size, representative_id, kind, jaccard, removed.
    An exact copy follows its text's survivor: same cluster, and the survivor's representative
    when the survivor itself was removed as a near duplicate."""
    survivors = (unique_docs.select("id", "copy_ids", "n_copies")
                 .join(members, "id", "left")
                 .where(F.col("cluster_id").isNotNull() | (F.col("n_copies") > 1))
                 .select("id", "copy_ids",
                         F.coalesce("cluster_id", "id").alias("cluster_id"),
                         "representative_id", "jaccard"))
    near = survivors.select(
        "id", "cluster_id", "representative_id",
        F.when(F.col("representative_id").isNotNull(), F.lit("near")).alias("kind"), "jaccard",
        F.col("representative_id").isNotNull().alias("removed"))
    copies = (survivors.select(F.explode("copy_ids").alias("copy_id"), "*")
              .where(F.col("copy_id") != F.col("id"))
              .select(F.col("copy_id").alias("id"), "cluster_id",
                      F.coalesce("representative_id", "id").alias("representative_id"),
                      F.lit("exact").alias("kind"),
                      F.coalesce("jaccard", F.lit(1.0)).alias("jaccard"),
                      F.lit(True).alias("removed")))
    return (near.unionByName(copies)
            .withColumn("cluster_size",
                        F.count("*").over(Window.partitionBy("cluster_id")).cast("int")))


def _kept(df: DataFrame, decisions: DataFrame) -> DataFrame:
    """The input rows not removed, with their cluster (their own id and size 1 when unique).
    Cluster columns already in the input (an earlier dedup) are replaced."""
    clusters = decisions.select(*[F.col(c).alias(f"_dedup_{c}")
                                  for c in ("id", "cluster_id", "cluster_size", "removed")])
    columns = [c for c in df.columns if c not in ("cluster_id", "cluster_size")]
    own_id = df["id"].cast("string")
    return (df.join(clusters, own_id == F.col("_dedup_id"), "left")
            .where(F.col("_dedup_removed").isNull() | ~F.col("_dedup_removed"))
            .select(*[df[c] for c in columns],
                    F.coalesce("_dedup_cluster_id", own_id).alias("cluster_id"),
                    F.coalesce("_dedup_cluster_size", F.lit(1)).alias("cluster_size")))


def _duplicates(decisions: DataFrame) -> DataFrame:
    return decisions.where("removed").select(
        "id", "cluster_id", "representative_id", "kind", "jaccard")


def _summarise(decisions: DataFrame, docs_in: int) -> dict:
    sizes = decisions.groupBy("cluster_id").agg(F.count("*").alias("size")).groupBy("size") \
        .count().collect()
    removed = {row["kind"]: row["count"]
               for row in decisions.where("removed").groupBy("kind").count().collect()}
    histogram = {label: 0 for _, _, label in HISTOGRAM_BUCKETS}
    for row in sizes:
        for low, high, label in HISTOGRAM_BUCKETS:
            if row["size"] >= low and (high is None or row["size"] <= high):
                histogram[label] += row["count"]
    return {
        "docs_in": docs_in,
        "exact_duplicates_removed": removed.get("exact", 0),
        "near_duplicates_removed": removed.get("near", 0),
        "docs_kept": docs_in - sum(removed.values()),
        "clusters": sum(row["count"] for row in sizes),
        "cluster_size_histogram": histogram,
        "largest_cluster": max((row["size"] for row in sizes), default=1 if docs_in else 0),
    }


# --------------------------------------------------------------------------------------------
# tables and the step
# --------------------------------------------------------------------------------------------
from infra.lake import TableSpec, expect  # noqa: E402  (tables sit next to the schemas above)
from pipelines.quality import CORPUS_CLEAN_SCHEMA  # noqa: E402

CORPUS_DEDUP = TableSpec(
    layer="silver", name="corpus_dedup", schema=f"{CORPUS_CLEAN_SCHEMA}, {CORPUS_DEDUP_SCHEMA_EXTRA}",
    key=("id",),
    expectations=(
        expect("column_values_to_not_be_null", column="cluster_id"),
        expect("column_values_to_be_between", column="cluster_size", min_value=1),
    ),
    description="One document per near-duplicate cluster (plus every unique document).",
)
CORPUS_DUPLICATES = TableSpec(
    layer="silver", name="corpus_duplicates", schema=DUPLICATES_SCHEMA, key=("id",),
    expectations=(
        expect("column_values_to_not_be_null", column="representative_id"),
        expect("column_values_to_be_in_set", column="kind", value_set=["exact", "near"]),
        expect("column_values_to_be_between", column="jaccard", min_value=0.0, max_value=1.0),
    ),
    description="Documents removed as duplicates, with their cluster and kept representative.",
)


def dedup_corpus_table(spark, clean: dict, config: DedupConfig, txn_id: str,
                       progress=None) -> dict:
    """Step: silver/corpus_clean (manifest) → silver/corpus_dedup + silver/corpus_duplicates."""
    from infra.faults import fault_point
    from infra.lake import read_table, write_table

    progress = progress or (lambda fraction, message: None)
    fault_point("dedup.start")
    result = deduplicate(read_table(spark, clean), config)
    progress(0.6, f"clusters found among {result.docs_in} distinct texts")
    try:
        duplicates = write_table(spark, CORPUS_DUPLICATES, result.duplicates, txn_id=txn_id,
                                 mode="overwrite")
        manifest = write_table(spark, CORPUS_DEDUP, result.kept, txn_id=txn_id, mode="overwrite")
        progress(1.0, f"silver/corpus_dedup: {manifest['rows']} kept, "
                      f"{duplicates['rows']} duplicates removed")
        manifest["stats"] = result.stats()
    finally:
        result.unpersist()
    manifest["inputs"] = [clean]
    manifest["outputs"] = {"duplicates": duplicates}
    return manifest
