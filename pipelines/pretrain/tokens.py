"""Tokens for pretraining: the project's tokenizer, the validation holdout, packing, shards.

1. ``train_tokenizer``: byte-level BPE (HF ``tokenizers``; ByteLevel pre-tokenizer and decoder,
   so any Unicode text round-trips exactly and nothing is ever unknown), wrapped as a
   ``PreTrainedTokenizerFast`` whose EOS doubles as BOS (GPT-2 style) plus a PAD token.
2. ``is_validation``: the holdout is chosen BY DOCUMENT id from a hash of (seed, id), so every
   repeat of a document lands on the same side and the split does not depend on table order.
3. ``pack_documents`` / ``SequencePacker``: documents are concatenated, each followed by EOS,
   and cut into fixed-length sequences; the last partial sequence is dropped and counted.
4. ``build_token_shards``: mix table (pinned version) -> ``train-*.npy`` / ``validation-*.npy``
   shards of shape (sequences, seq_len) plus ``index.json`` and the ``tokenizer/`` they were
   built with, in ``out_root/<cache key>``.
   The build writes a temp dir, renames it into place, then writes the ``_COMPLETE`` marker
   last: a reader trusts a dir only with the marker, so a crash anywhere never leaves a dir
   that looks complete, and a second call with the same inputs finds it and does no work.
5. ``TokenShards``: memory-mapped reader of one split, indexed by global sequence number.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infra.faults import fault_point
from infra.files import fsync_dir, write_json_atomic
from pipelines.pretrain.holdout import is_validation
from pipelines.pretrain.tokenizer import save_tokenizer, tokenizer_hash
from pipelines.training.hf import load_tokenizer

INDEX_FILE = "index.json"
TOKENIZER_DIR = "tokenizer"  # inside a shard dir: the tokenizer the shards were built with
COMPLETE_MARKER = "_COMPLETE"  # written last; a shard dir without it is never read
SHARD_FORMAT = 2  # part of the cache key: bump it when the layout changes, old dirs are rebuilt
SPLITS = ("train", "validation")
DEFAULT_SHARD_SEQUENCES = 8192  # sequences per .npy: 8192 x 2048 x 2 B = 32 MiB at GPU scale
DOCUMENT_ORDER = ("repeat", "id")  # the token stream's order; see _tokenized_documents
TOKENS_SCHEMA = "id STRING, repeat INT, text_bytes LONG, tokens BINARY"


# --- packing --------------------------------------------------------------------------------


def shard_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab < 65536), else uint32: half the disk and page cache."""
    return np.dtype(np.uint16 if vocab_size < 2**16 else np.uint32)


class SequencePacker:
    """Streams documents into fixed-length sequences: each document then EOS, concatenated.

    ``add`` returns the sequences completed by a document (maybe none); ``dropped_tokens`` is
    what is left over at the end (the last partial sequence, never padded, never emitted).
    """

    def __init__(self, seq_len: int, eos_id: int, dtype=np.int64):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.seq_len, self.eos_id, self.dtype = seq_len, eos_id, np.dtype(dtype)
        self.documents = 0  # documents added
        self.tokens = 0  # tokens added, EOS included
        self.sequences = 0  # full sequences emitted
        self._pending: list[np.ndarray] = []
        self._pending_tokens = 0

    def add(self, tokens) -> np.ndarray:
        doc = np.empty(len(tokens) + 1, dtype=self.dtype)
        doc[:-1] = tokens
        doc[-1] = self.eos_id
        self._pending.append(doc)
        self._pending_tokens += len(doc)
        self.documents += 1
        self.tokens += len(doc)
        if self._pending_tokens < self.seq_len:
            return np.empty((0, self.seq_len), dtype=self.dtype)
        flat = np.concatenate(self._pending)
        n = len(flat) // self.seq_len
        rest = flat[n * self.seq_len :]
        self._pending, self._pending_tokens = [rest], len(rest)
        self.sequences += n
        return flat[: n * self.seq_len].reshape(n, self.seq_len)

    @property
    def dropped_tokens(self) -> int:
        return self._pending_tokens


def pack_documents(token_lists: Iterable, seq_len: int, eos_id: int) -> np.ndarray:
    """Documents (token id lists), each followed by EOS, cut into (n_seq, seq_len) sequences.

    The last partial sequence is dropped: ``SequencePacker.dropped_tokens`` counts it (and the
    shard index records it per split).
    """
    packer = SequencePacker(seq_len, eos_id)
    parts = [packer.add(tokens) for tokens in token_lists]
    return np.concatenate(parts) if parts else np.empty((0, seq_len), dtype=np.int64)


# --- shards on disk -------------------------------------------------------------------------


def shard_cache_key(
    table: dict,
    tokenizer_digest: str,
    seq_len: int,
    val_fraction: float,
    seed: int,
    shard_sequences: int = DEFAULT_SHARD_SEQUENCES,
) -> str:
    """The shard dir's name: a hash of everything its contents depend on.

    The table enters as its Delta (table id, version), not its path: moving the lake does not
    invalidate shards, rewriting the table does.
    """
    payload = {
        "format": SHARD_FORMAT,
        "table_id": table["table_id"],
        "version": int(table["version"]),
        "tokenizer": tokenizer_digest,
        "seq_len": int(seq_len),
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "shard_sequences": int(shard_sequences),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return "tokens-" + hashlib.sha256(blob).hexdigest()[:24]


def is_complete(directory: Path) -> bool:
    return (Path(directory) / COMPLETE_MARKER).is_file()


def build_token_shards(
    spark,
    mix_manifest: dict,
    tokenizer_dir: Path | str,
    out_root: Path,
    seq_len: int,
    val_fraction: float,
    seed: int,
    shard_sequences: int = DEFAULT_SHARD_SEQUENCES,
) -> dict:
    """Step: the mix table at the manifest's version -> token shards; returns a JSON summary.

    The summary is ``index.json`` without the shard list, plus ``dir`` and ``reused`` (True
    when a complete dir for the same inputs already existed and nothing was done).
    """
    from infra.lake import read_table

    tokenizer = load_tokenizer(tokenizer_dir)
    table = {k: mix_manifest[k] for k in ("table", "table_id", "version")}
    return write_token_shards(
        lambda: _tokenized_documents(read_table(spark, mix_manifest), tokenizer),
        tokenizer,
        table,
        out_root,
        seq_len,
        val_fraction,
        seed,
        shard_sequences,
    )


def write_token_shards(
    documents: Callable[[], Iterable],
    tokenizer,
    table: dict,
    out_root: Path | str,
    seq_len: int,
    val_fraction: float,
    seed: int,
    shard_sequences: int = DEFAULT_SHARD_SEQUENCES,
) -> dict:
    """Tokenized documents -> a complete shard dir under ``out_root``, keyed by ``table``
    ({table, table_id, version}) and the settings; returns its summary (see
    ``build_token_shards``). ``documents()`` yields (id, repeat, UTF-8 bytes, token ids) in
    (repeat, id) order and is only called when the dir must be built."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (inputs and shifted labels), got {seq_len}")
    if shard_sequences < 1:
        raise ValueError(f"shard_sequences must be >= 1, got {shard_sequences}")
    is_validation("", val_fraction, seed)  # validates the fraction before any work
    digest = tokenizer_hash(tokenizer)
    key = shard_cache_key(table, digest, seq_len, val_fraction, seed, shard_sequences)
    out_root = Path(out_root)
    out_dir = out_root / key
    if is_complete(out_dir):
        return _summary(out_dir, reused=True)
    _discard_incomplete(out_dir)  # a crash between the rename and the marker left it

    out_root.mkdir(parents=True, exist_ok=True)
    tmp = out_root / f".{key}.tmp-{uuid.uuid4().hex[:12]}"  # unique: concurrent builds never mix
    tmp.mkdir()
    try:
        splits = _write_shards(
            documents(),
            tmp,
            table,
            seq_len,
            val_fraction,
            seed,
            shard_sequences,
            eos_id=tokenizer.eos_token_id,
            dtype=shard_dtype(len(tokenizer)),
        )
        index = {
            "format": SHARD_FORMAT,
            "cache_key": key,
            "seq_len": seq_len,
            "dtype": shard_dtype(len(tokenizer)).name,
            "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
            "tokenizer_hash": digest,
            "table": table,
            "seed": seed,
            "val_fraction": val_fraction,
            "shard_sequences": shard_sequences,
            "document_order": list(DOCUMENT_ORDER),
            "splits": splits,
        }
        save_tokenizer(tokenizer, tmp / TOKENIZER_DIR)  # the dir carries what decodes it
        write_json_atomic(tmp / INDEX_FILE, index, indent=1)
        fsync_dir(tmp)
        fault_point("tokens.before_rename")
        if not _rename_into_place(tmp, out_dir):
            return _summary(out_dir, reused=True)  # a concurrent build of the same key won
        fault_point("tokens.before_marker")
        # last: the commit point
        write_json_atomic(out_dir / COMPLETE_MARKER, {"cache_key": key}, indent=1)
        fsync_dir(out_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _summary(out_dir, reused=False)


def tokenize_in_process(
    records: Iterable[tuple[str, str]], tokenizer, batch: int = 1024
) -> Iterator[tuple[str, int, int, np.ndarray]]:
    """(id, text) pairs -> ``write_token_shards`` documents, without Spark: sorted by id (one
    pass, repeat 0), tokenized in batches by the Rust tokenizer's threads."""
    ordered = sorted(records, key=lambda r: r[0])
    backend = tokenizer.backend_tokenizer
    for start in range(0, len(ordered), batch):
        chunk = ordered[start : start + batch]
        encodings = backend.encode_batch_fast([t for _, t in chunk], add_special_tokens=False)
        for (doc_id, text), encoding in zip(chunk, encodings, strict=False):
            yield doc_id, 0, len(text.encode()), np.asarray(encoding.ids, dtype=np.uint32)


def _tokenized_documents(df, tokenizer) -> Iterator[tuple[str, int, int, np.ndarray]]:
    """(id, repeat, UTF-8 bytes, token ids) per document, in (repeat, id) order.

    Tokenizing runs in Spark (``mapInArrow``), so it scales with the cluster: the tokenizer
    travels as its JSON inside the function (no shared filesystem needed) and is built once per
    partition; ids come back as raw uint32 bytes (no per-token Python objects). Only packing
    runs on the driver: it is sequential by nature and numpy-fast. The sort makes the stream
    independent of Spark's partitioning; (repeat, id) rather than (id, repeat) keeps the
    passes over a repeated document apart, so no sequence holds two copies of one document.
    """
    rows = (
        df.select("id", "repeat", "text")
        .mapInArrow(_tokenize_partition(tokenizer.backend_tokenizer.to_str()), TOKENS_SCHEMA)
        .orderBy(*DOCUMENT_ORDER)
    )
    for row in rows.toLocalIterator(prefetchPartitions=True):
        yield row.id, row.repeat, row.text_bytes, np.frombuffer(row.tokens, dtype=np.uint32)


def _tokenize_partition(tokenizer_json: str) -> Callable:
    """mapInArrow function: (id, repeat, text) batches -> (id, repeat, text_bytes, tokens)."""

    def tokenize(batches):
        import pyarrow as pa
        import pyarrow.compute as pc
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(tokenizer_json)  # once per partition, not per row
        for batch in batches:
            texts = batch.column("text")
            encodings = tokenizer.encode_batch_fast(
                [t or "" for t in texts.to_pylist()], add_special_tokens=False
            )
            tokens = pa.array(
                [np.asarray(e.ids, dtype=np.uint32).tobytes() for e in encodings], type=pa.binary()
            )
            text_bytes = pc.fill_null(pc.binary_length(texts), 0).cast(pa.int64())
            yield pa.RecordBatch.from_arrays(
                [batch.column("id"), batch.column("repeat"), text_bytes, tokens],
                names=["id", "repeat", "text_bytes", "tokens"],
            )

    return tokenize


@dataclass
class _SplitWriter:
    """One split's packer and shard files."""

    directory: Path
    split: str
    packer: SequencePacker
    shard_sequences: int
    text_bytes: int = 0
    shards: list[dict] = field(default_factory=list)
    _buffer: list[np.ndarray] = field(default_factory=list)
    _buffered: int = 0

    def add(self, tokens: np.ndarray, text_bytes: int) -> None:
        self.text_bytes += text_bytes
        ready = self.packer.add(tokens)
        if len(ready):
            self._buffer.append(ready)
            self._buffered += len(ready)
        while self._buffered >= self.shard_sequences:
            rows = np.concatenate(self._buffer)
            self._write(rows[: self.shard_sequences])
            rest = rows[self.shard_sequences :]
            self._buffer, self._buffered = [rest], len(rest)

    def finish(self) -> dict:
        if self._buffered:
            self._write(np.concatenate(self._buffer))
        self._buffer, self._buffered = [], 0
        p = self.packer
        return {
            "documents": p.documents,
            "text_bytes": self.text_bytes,
            "document_tokens": p.tokens - p.documents,  # without the EOS after each
            "tokens": p.tokens,
            "sequences": p.sequences,
            "packed_tokens": p.sequences * p.seq_len,
            "dropped_tokens": p.dropped_tokens,
            "shards": self.shards,
        }

    def _write(self, rows: np.ndarray) -> None:
        name = f"{self.split}-{len(self.shards):05d}.npy"
        with open(self.directory / name, "wb") as f:
            np.save(f, np.ascontiguousarray(rows))
            f.flush()
            os.fsync(f.fileno())
        self.shards.append({"file": name, "sequences": int(len(rows))})


def _write_shards(
    documents,
    directory: Path,
    table: dict,
    seq_len: int,
    val_fraction: float,
    seed: int,
    shard_sequences: int,
    eos_id: int,
    dtype: np.dtype,
) -> dict:
    writers = {
        s: _SplitWriter(directory, s, SequencePacker(seq_len, eos_id, dtype), shard_sequences)
        for s in SPLITS
    }
    limit = np.iinfo(dtype).max
    for doc_id, _repeat, text_bytes, tokens in documents:
        if doc_id is None:
            raise ValueError(
                f"mix table {table['table']} has a row with a null id: "
                "the validation split is chosen by document id"
            )
        if len(tokens) and int(tokens.max()) > limit:
            raise ValueError(f"token id {int(tokens.max())} does not fit {dtype.name} shards")
        split = "validation" if is_validation(doc_id, val_fraction, seed) else "train"
        writers[split].add(tokens, text_bytes)
    stats = {s: w.finish() for s, w in writers.items()}
    _refuse_unusable_splits(stats, table, seq_len, val_fraction)
    return stats


def _refuse_unusable_splits(stats: dict, table: dict, seq_len: int, val_fraction: float) -> None:
    where = f"mix table {table['table']} (version {table['version']})"
    if not stats["train"]["documents"] and not stats["validation"]["documents"]:
        raise ValueError(f"{where} has no rows: nothing to tokenize")
    needed = ["train"] + (["validation"] if val_fraction > 0 else [])
    for split in needed:
        if stats[split]["sequences"] == 0:
            raise ValueError(
                f"{where}: the {split} split has {stats[split]['tokens']} tokens from "
                f"{stats[split]['documents']} documents, not one full sequence of seq_len "
                f"{seq_len}; use a larger mix, a shorter seq_len or another val_fraction"
            )


def _rename_into_place(tmp: Path, out_dir: Path) -> bool:
    """Atomic rename of the finished temp dir; False when a complete dir is already there."""
    try:
        os.rename(tmp, out_dir)
        return True
    except OSError as err:
        if is_complete(out_dir):
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise RuntimeError(
            f"cannot move finished token shards into {out_dir}: it exists "
            f"without {COMPLETE_MARKER} (another build of the same inputs is "
            "finishing, or crashed); run again"
        ) from err


def _discard_incomplete(out_dir: Path) -> None:
    """Move a dir without its marker out of the way (atomically), then delete it."""
    if not out_dir.exists():
        return
    trash = out_dir.with_name(f".{out_dir.name}.discarded-{uuid.uuid4().hex[:12]}")
    os.rename(out_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _summary(directory: Path, reused: bool) -> dict:
    index = read_index(directory)
    splits = {
        s: {k: v for k, v in info.items() if k != "shards"} for s, info in index["splits"].items()
    }
    return {**index, "splits": splits, "dir": str(directory), "reused": reused}


# --- reading --------------------------------------------------------------------------------

INDEX_KEYS = (
    "format",
    "seq_len",
    "dtype",
    "vocab_size",
    "tokenizer_hash",
    "table",
    "seed",
    "splits",
)
SPLIT_KEYS = ("sequences", "tokens", "text_bytes", "shards")


def read_index(directory: Path | str) -> dict:
    """A complete shard dir's index, validated; clear errors name the missing or bad file."""
    directory = Path(directory)
    index_path = directory / INDEX_FILE
    if not directory.is_dir():
        raise FileNotFoundError(f"no token shard dir at {directory}")
    if not is_complete(directory):
        raise FileNotFoundError(
            f"{directory} is not a complete token shard dir: no {COMPLETE_MARKER} marker "
            "(its build crashed or is still running); rebuild it with build_token_shards"
        )
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"token shard index {index_path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"token shard index {index_path} is not valid JSON: {err}") from None
    missing = [k for k in INDEX_KEYS if k not in index]
    missing += [
        f"splits.{s}.{k}"
        for s, info in index.get("splits", {}).items()
        for k in SPLIT_KEYS
        if k not in info
    ]
    if missing:
        raise ValueError(f"token shard index {index_path} lacks {', '.join(missing)}")
    if index["format"] != SHARD_FORMAT:
        raise ValueError(
            f"token shard index {index_path} has format {index['format']}, this "
            f"code reads format {SHARD_FORMAT}; rebuild the shards"
        )
    return index


class TokenShards:
    """One split of a shard dir as a sequence of (seq_len,) arrays, memory-mapped.

    ``shards[i]`` is global sequence i across the split's shard files, in index order.
    """

    def __init__(self, directory: Path | str, split: str = "train"):
        self.dir = Path(directory)
        self.index = read_index(self.dir)
        if split not in self.index["splits"]:
            raise KeyError(
                f"{self.dir / INDEX_FILE} has no split {split!r}; it has "
                f"{sorted(self.index['splits'])}"
            )
        self.split = split
        self.seq_len = int(self.index["seq_len"])
        self.dtype = np.dtype(self.index["dtype"])
        entries = self.index["splits"][split]["shards"]
        self._arrays = [self._open(entry) for entry in entries]
        self._starts = np.cumsum([0] + [len(a) for a in self._arrays])
        declared = self.index["splits"][split]["sequences"]
        if self._starts[-1] != declared:
            raise ValueError(
                f"{self.dir / INDEX_FILE}: split {split!r} declares {declared} "
                f"sequences, its shards hold {int(self._starts[-1])}"
            )

    def _open(self, entry: dict) -> np.ndarray:
        path = self.dir / entry["file"]
        if not path.is_file():
            raise FileNotFoundError(
                f"token shard {path} (listed in {self.dir / INDEX_FILE}) is missing"
            )
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"token shard {path} is not a readable .npy file: {err}") from None
        expected = (int(entry["sequences"]), self.seq_len)
        if array.shape != expected or array.dtype != self.dtype:
            raise ValueError(
                f"token shard {path} holds {array.dtype}{list(array.shape)}, the "
                f"index says {self.dtype}{list(expected)}"
            )
        return array

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence {i} out of range: {self.split} has {n}")
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._arrays[shard][i - self._starts[shard]]

    def batch(self, indices) -> np.ndarray:
        """Several sequences as one (len(indices), seq_len) array (a copy, in memory)."""
        out = np.empty((len(indices), self.seq_len), dtype=self.dtype)
        for row, i in enumerate(indices):
            out[row] = self[i]
        return out

    @property
    def tokens(self) -> int:
        return len(self) * self.seq_len
