"""MinHash near-duplicate detection in numpy: byte k-gram shingles packed in uint64, hashed
with ``num_perm`` multiply-add-shift functions and reduced per document with
``np.minimum.reduceat`` (no per-shingle Python), LSH band keys, exact Jaccard, and the
greedy choice of representatives inside a cluster. The Spark job (``pipelines.corpus.dedup``)
runs these same functions, so tests and benchmarks exercise the real thing."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


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

    model_config = ConfigDict(extra="forbid")

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
_CHUNK_BYTES = (
    1 << 16
)  # text bytes per numpy pass: the hashing buffer stays in cache (2x vs 1 MiB)


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


def mix64(x: np.ndarray) -> np.ndarray:
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


def _sort_by_doc_then_value(
    values: np.ndarray, docs: np.ndarray, n_docs: int, sides: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
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
    values = (
        packed[np.minimum(window, max(len(packed) - 1, 0))]
        if len(packed)
        else np.zeros(len(window), dtype=_U64)
    )
    if short.any():
        values[out_starts[short]] = _pack_short_docs(data, starts[short], lengths[short])
    return values, np.repeat(np.arange(n_docs, dtype=np.int64), counts)


def shingle_utf8(data: np.ndarray, offsets: np.ndarray, k: int) -> ShingleBatch:
    """Unique byte k-gram shingles of each document in a UTF-8 buffer, in cache-sized chunks."""
    chunks = [
        _unique_shingles(data, offsets[start : stop + 1], k)
        for start, stop in _doc_chunks(offsets, _CHUNK_BYTES)
    ]
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


def jaccard_utf8(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int
) -> np.ndarray:
    """Exact Jaccard of the k-gram sets of document i of buffer a and document i of buffer b
    ((data, offsets) pairs), for every i, in cache-sized chunks: a 10k-pair batch sorted at once
    runs 4x slower (cache misses)."""
    (data_a, offsets_a), (data_b, offsets_b) = a, b
    both = (offsets_a - offsets_a[0]) + (offsets_b - offsets_b[0])
    out = np.empty(len(offsets_a) - 1)
    for start, stop in _doc_chunks(both, 2 * _CHUNK_BYTES):
        out[start:stop] = _jaccard_chunk(
            (data_a, offsets_a[start : stop + 1]), (data_b, offsets_b[start : stop + 1]), k
        )
    return out


def _jaccard_chunk(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int
) -> np.ndarray:
    """jaccard_utf8 with ONE sort: all k-grams of both sides keyed by (i, value, side). In each
    run of equal (i, value) the first element is side 0 if a has the value, the last is side 1
    if b has it."""
    n = len(a[1]) - 1
    values_a, pairs_a = _all_kgrams(*a, k)
    values_b, pairs_b = _all_kgrams(*b, k)
    sides = np.concatenate([np.zeros(len(values_a), np.int64), np.ones(len(values_b), np.int64)])
    values, pairs, sides = _sort_by_doc_then_value(
        np.concatenate([values_a, values_b]), np.concatenate([pairs_a, pairs_b]), n, sides
    )
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
    keys = mix64(batch.values)
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
        config.bands
    )
    keys = np.broadcast_to(mix64(band_ids), (n, config.bands)).copy()
    for r in range(config.rows):
        keys = mix64(keys ^ rows[:, :, r])
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


def choose_representatives(
    texts: Sequence[str], config: DedupConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy selection inside one cluster whose members are in priority order (smallest id
    first). Returns, per member, the position of its representative (-1: kept) and the exact
    Jaccard to it (NaN: kept)."""
    data, offsets = utf8_buffer(texts)
    batch = shingle_utf8(data, offsets, config.shingle_size)
    return greedy_in_cluster(batch, signatures_utf8(data, offsets, config), 0, len(texts), config)


def greedy_in_cluster(
    batch: ShingleBatch, signatures: np.ndarray, start: int, stop: int, config: DedupConfig
) -> tuple[np.ndarray, np.ndarray]:
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
