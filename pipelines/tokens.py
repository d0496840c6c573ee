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
from pydantic import BaseModel, Field

from infra.files import fsync_dir, write_json_atomic

from infra.faults import fault_point

INDEX_FILE = "index.json"
TOKENIZER_DIR = "tokenizer"  # inside a shard dir: the tokenizer the shards were built with
COMPLETE_MARKER = "_COMPLETE"  # written last; a shard dir without it is never read
SHARD_FORMAT = 2  # part of the cache key: bump it when the layout changes, old dirs are rebuilt
SPLITS = ("train", "validation")
DEFAULT_SHARD_SEQUENCES = 8192  # sequences per .npy: 8192 x 2048 x 2 B = 32 MiB at GPU scale
DOCUMENT_ORDER = ("repeat", "id")  # the token stream's order; see _tokenized_documents
TOKENS_SCHEMA = "id STRING, repeat INT, text_bytes LONG, tokens BINARY"


class TokenizerConfig(BaseModel):
    vocab_size: int = Field(4096, ge=260, le=2**32)  # tokens incl. 256 byte symbols and the
    # specials; 4096 keeps the demo (~3M params) from spending most of itself on embeddings,
    # and any vocab < 65536 lets shards store uint16
    min_frequency: int = Field(2, ge=1)  # a pair seen fewer times is never merged (1 memorises
    # one-off strings)
    eos_token: str = "<|endoftext|>"  # appended after every document; also the BOS token
    pad_token: str = "<|pad|>"  # for batched inference and fine-tuning; never in pretraining shards
    max_train_bytes: int = Field(200_000_000, ge=1)  # text the BPE trainer sees at most (the
    # driver holds it): merges stabilise long before a large corpus is exhausted


# --- tokenizer ------------------------------------------------------------------------------

def train_tokenizer(texts: Iterable[str], config: TokenizerConfig | None = None):
    """Train byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast``.

    The special tokens come first, so EOS (= BOS) has id 0 and PAD id 1. Training is
    deterministic: the same texts give the same tokenizer (and ``tokenizer_hash``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    config = config or TokenizerConfig()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size, min_frequency=config.min_frequency,
        special_tokens=[config.eos_token, config.pad_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing unknown
        show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return _wrap(tokenizer, config)


def _wrap(tokenizer, config: TokenizerConfig):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=config.eos_token, bos_token=config.eos_token,
        pad_token=config.pad_token,
        clean_up_tokenization_spaces=False)  # True would alter " ," on decode: no round trip


def save_tokenizer(tokenizer, directory: Path | str) -> Path:
    """Write an HF tokenizer dir (tokenizer.json + tokenizer_config.json); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def load_tokenizer(directory: Path | str):
    """The tokenizer saved in an HF dir, read locally (never downloads)."""
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory}: not a saved tokenizer dir")
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def _as_tokenizer(tokenizer_or_dir):
    return load_tokenizer(tokenizer_or_dir) if isinstance(tokenizer_or_dir, (str, Path)) \
        else tokenizer_or_dir


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """EOS/BOS/PAD ids, named as model configs name them (pass them to models.model_config)."""
    return {"eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def tokenizer_hash(tokenizer_or_dir) -> str:
    """SHA-256 of the tokenizer's JSON (vocab, merges, normaliser, …) and its special tokens.

    Canonical JSON (sorted keys), without the mutable padding/truncation settings, so a
    tokenizer object and the dir it was saved to hash the same.
    """
    tokenizer = _as_tokenizer(tokenizer_or_dir)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("padding", None)
    spec.pop("truncation", None)
    spec["special_tokens"] = {"eos": tokenizer.eos_token, "bos": tokenizer.bos_token,
                              "pad": tokenizer.pad_token}
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_vocab(tokenizer_or_dir, model_config) -> None:
    """Refuse a tokenizer that does not fit a model: ids past the embedding, or other specials.

    A model's vocab may be larger than the tokenizer's (padded for speed); never smaller.
    """
    tokenizer = _as_tokenizer(tokenizer_or_dir)
    problems = []
    if len(tokenizer) > model_config.vocab_size:
        problems.append(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding "
                        f"has {model_config.vocab_size} rows (ids >= {model_config.vocab_size} "
                        "would index out of range)")
    for name, token_id in special_token_ids(tokenizer).items():
        model_id = getattr(model_config, name, None)
        if model_id is not None and token_id is not None and model_id != token_id:
            problems.append(f"{name} is {token_id} in the tokenizer but {model_id} in the model")
    if problems:
        raise ValueError("tokenizer and model config do not match: " + "; ".join(problems))


def tokenizer_from_table(spark, mix_manifest: dict, config: TokenizerConfig, out_root: Path,
                         val_fraction: float, seed: int) -> dict:
    """Step: train the tokenizer on the mix table's TRAIN documents (each once, in id order,
    up to ``max_train_bytes``) into ``out_root/<key>``; returns a JSON summary.

    Validation documents are left out, so the held-out split is unseen even by the tokenizer.
    The dir is keyed by (table id, version, config, split) and reused when complete.
    """
    from pyspark.sql import functions as F

    from infra.lake import read_table

    is_validation("", val_fraction, seed)
    table = {k: mix_manifest[k] for k in ("table", "table_id", "version")}
    payload = {"table_id": table["table_id"], "version": int(table["version"]),
               "config": config.model_dump(), "val_fraction": val_fraction, "seed": seed}
    key = "tokenizer-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()) \
        .hexdigest()[:24]
    out_dir = Path(out_root) / key
    if (out_dir / "tokenizer.json").is_file():
        return _tokenizer_summary(out_dir, table, reused=True)
    keep = F.udf(lambda doc_id: not is_validation(doc_id, val_fraction, seed), "boolean")
    docs = (read_table(spark, mix_manifest).where("repeat = 0").where(keep("id"))
            .select("id", "text").orderBy("id"))
    texts, used = [], 0
    for row in docs.toLocalIterator(prefetchPartitions=True):
        texts.append(row.text)
        used += len(row.text.encode())
        if used >= config.max_train_bytes:
            break
    if not texts:
        raise ValueError(f"mix table {table['table']} (version {table['version']}) has no "
                         "training documents to train a tokenizer on: is it empty?")
    tmp = out_dir.with_name(f".{key}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        save_tokenizer(train_tokenizer(texts, config), tmp)
        write_json_atomic(tmp / "training_data.json",
                          {"table": table, "documents": len(texts), "text_bytes": used})
        try:
            os.rename(tmp, out_dir)  # the commit: the dir appears whole or not at all
        except OSError:
            if not (out_dir / "tokenizer.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent build of the same key won
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _tokenizer_summary(out_dir, table, reused=False)


def _tokenizer_summary(directory: Path, table: dict, reused: bool) -> dict:
    tokenizer = load_tokenizer(directory)
    trained_on = json.loads((directory / "training_data.json").read_text())
    return {"dir": str(directory), "hash": tokenizer_hash(tokenizer), "vocab_size": len(tokenizer),
            "table": table, "documents": trained_on["documents"],
            "text_bytes": trained_on["text_bytes"], "reused": reused}


# --- validation holdout ---------------------------------------------------------------------

def is_validation(doc_id: str, fraction: float, seed: int) -> bool:
    """Whether a document belongs to the validation split: a pure function of (seed, id)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if doc_id is None:
        raise ValueError("a document without an id cannot be assigned to a split")
    digest = hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


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
        rest = flat[n * self.seq_len:]
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

def shard_cache_key(table: dict, tokenizer_digest: str, seq_len: int, val_fraction: float,
                    seed: int, shard_sequences: int = DEFAULT_SHARD_SEQUENCES) -> str:
    """The shard dir's name: a hash of everything its contents depend on.

    The table enters as its Delta (table id, version), not its path: moving the lake does not
    invalidate shards, rewriting the table does.
    """
    payload = {"format": SHARD_FORMAT, "table_id": table["table_id"],
               "version": int(table["version"]), "tokenizer": tokenizer_digest,
               "seq_len": int(seq_len), "val_fraction": float(val_fraction), "seed": int(seed),
               "shard_sequences": int(shard_sequences)}
    blob = json.dumps(payload, sort_keys=True).encode()
    return "tokens-" + hashlib.sha256(blob).hexdigest()[:24]


def is_complete(directory: Path) -> bool:
    return (Path(directory) / COMPLETE_MARKER).is_file()


def build_token_shards(spark, mix_manifest: dict, tokenizer_dir: Path | str, out_root: Path,
                       seq_len: int, val_fraction: float, seed: int,
                       shard_sequences: int = DEFAULT_SHARD_SEQUENCES) -> dict:
    """Step: the mix table at the manifest's version -> token shards; returns a JSON summary.

    The summary is ``index.json`` without the shard list, plus ``dir`` and ``reused`` (True
    when a complete dir for the same inputs already existed and nothing was done).
    """
    from infra.lake import read_table

    tokenizer = load_tokenizer(tokenizer_dir)
    table = {k: mix_manifest[k] for k in ("table", "table_id", "version")}
    return write_token_shards(
        lambda: _tokenized_documents(read_table(spark, mix_manifest), tokenizer), tokenizer,
        table, out_root, seq_len, val_fraction, seed, shard_sequences)


def write_token_shards(documents: Callable[[], Iterable], tokenizer, table: dict,
                       out_root: Path | str, seq_len: int, val_fraction: float, seed: int,
                       shard_sequences: int = DEFAULT_SHARD_SEQUENCES) -> dict:
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
        splits = _write_shards(documents(), tmp, table, seq_len, val_fraction, seed,
                               shard_sequences, eos_id=tokenizer.eos_token_id,
                               dtype=shard_dtype(len(tokenizer)))
        index = {
            "format": SHARD_FORMAT, "cache_key": key, "seq_len": seq_len,
            "dtype": shard_dtype(len(tokenizer)).name, "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id, "tokenizer_hash": digest,
            "table": table, "seed": seed, "val_fraction": val_fraction,
            "shard_sequences": shard_sequences, "document_order": list(DOCUMENT_ORDER),
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


def tokenize_in_process(records: Iterable[tuple[str, str]], tokenizer,
                        batch: int = 1024) -> Iterator[tuple[str, int, int, np.ndarray]]:
    """(id, text) pairs -> ``write_token_shards`` documents, without Spark: sorted by id (one
    pass, repeat 0), tokenized in batches by the Rust tokenizer's threads."""
    ordered = sorted(records, key=lambda r: r[0])
    backend = tokenizer.backend_tokenizer
    for start in range(0, len(ordered), batch):
        chunk = ordered[start:start + batch]
        encodings = backend.encode_batch_fast([t for _, t in chunk], add_special_tokens=False)
        for (doc_id, text), encoding in zip(chunk, encodings):
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
    rows = (df.select("id", "repeat", "text")
            .mapInArrow(_tokenize_partition(tokenizer.backend_tokenizer.to_str()),
                        TOKENS_SCHEMA)
            .orderBy(*DOCUMENT_ORDER))
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
                [t or "" for t in texts.to_pylist()], add_special_tokens=False)
            tokens = pa.array([np.asarray(e.ids, dtype=np.uint32).tobytes() for e in encodings],
                              type=pa.binary())
            text_bytes = pc.fill_null(pc.binary_length(texts), 0).cast(pa.int64())
            yield pa.RecordBatch.from_arrays(
                [batch.column("id"), batch.column("repeat"), text_bytes, tokens],
                names=["id", "repeat", "text_bytes", "tokens"])

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
            rest = rows[self.shard_sequences:]
            self._buffer, self._buffered = [rest], len(rest)

    def finish(self) -> dict:
        if self._buffered:
            self._write(np.concatenate(self._buffer))
        self._buffer, self._buffered = [], 0
        p = self.packer
        return {"documents": p.documents, "text_bytes": self.text_bytes,
                "document_tokens": p.tokens - p.documents,  # without the EOS after each
                "tokens": p.tokens, "sequences": p.sequences,
                "packed_tokens": p.sequences * p.seq_len, "dropped_tokens": p.dropped_tokens,
                "shards": self.shards}

    def _write(self, rows: np.ndarray) -> None:
        name = f"{self.split}-{len(self.shards):05d}.npy"
        with open(self.directory / name, "wb") as f:
            np.save(f, np.ascontiguousarray(rows))
            f.flush()
            os.fsync(f.fileno())
        self.shards.append({"file": name, "sequences": int(len(rows))})


def _write_shards(documents, directory: Path, table: dict, seq_len: int, val_fraction: float,
                  seed: int, shard_sequences: int, eos_id: int, dtype: np.dtype) -> dict:
    writers = {s: _SplitWriter(directory, s, SequencePacker(seq_len, eos_id, dtype),
                               shard_sequences) for s in SPLITS}
    limit = np.iinfo(dtype).max
    for doc_id, _repeat, text_bytes, tokens in documents:
        if doc_id is None:
            raise ValueError(f"mix table {table['table']} has a row with a null id: "
                             "the validation split is chosen by document id")
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
                f"{seq_len}; use a larger mix, a shorter seq_len or another val_fraction")


def _rename_into_place(tmp: Path, out_dir: Path) -> bool:
    """Atomic rename of the finished temp dir; False when a complete dir is already there."""
    try:
        os.rename(tmp, out_dir)
        return True
    except OSError as err:
        if is_complete(out_dir):
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise RuntimeError(f"cannot move finished token shards into {out_dir}: it exists "
                           f"without {COMPLETE_MARKER} (another build of the same inputs is "
                           "finishing, or crashed); run again") from err


def _discard_incomplete(out_dir: Path) -> None:
    """Move a dir without its marker out of the way (atomically), then delete it."""
    if not out_dir.exists():
        return
    trash = out_dir.with_name(f".{out_dir.name}.discarded-{uuid.uuid4().hex[:12]}")
    os.rename(out_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _summary(directory: Path, reused: bool) -> dict:
    index = read_index(directory)
    splits = {s: {k: v for k, v in info.items() if k != "shards"}
              for s, info in index["splits"].items()}
    return {**index, "splits": splits, "dir": str(directory), "reused": reused}


# --- reading --------------------------------------------------------------------------------

INDEX_KEYS = ("format", "seq_len", "dtype", "vocab_size", "tokenizer_hash", "table", "seed",
              "splits")
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
            "(its build crashed or is still running); rebuild it with build_token_shards")
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"token shard index {index_path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"token shard index {index_path} is not valid JSON: {err}") from None
    missing = [k for k in INDEX_KEYS if k not in index]
    missing += [f"splits.{s}.{k}" for s, info in index.get("splits", {}).items()
                for k in SPLIT_KEYS if k not in info]
    if missing:
        raise ValueError(f"token shard index {index_path} lacks {', '.join(missing)}")
    if index["format"] != SHARD_FORMAT:
        raise ValueError(f"token shard index {index_path} has format {index['format']}, this "
                         f"code reads format {SHARD_FORMAT}; rebuild the shards")
    return index


class TokenShards:
    """One split of a shard dir as a sequence of (seq_len,) arrays, memory-mapped.

    ``shards[i]`` is global sequence i across the split's shard files, in index order.
    """

    def __init__(self, directory: Path | str, split: str = "train"):
        self.dir = Path(directory)
        self.index = read_index(self.dir)
        if split not in self.index["splits"]:
            raise KeyError(f"{self.dir / INDEX_FILE} has no split {split!r}; it has "
                           f"{sorted(self.index['splits'])}")
        self.split = split
        self.seq_len = int(self.index["seq_len"])
        self.dtype = np.dtype(self.index["dtype"])
        entries = self.index["splits"][split]["shards"]
        self._arrays = [self._open(entry) for entry in entries]
        self._starts = np.cumsum([0] + [len(a) for a in self._arrays])
        declared = self.index["splits"][split]["sequences"]
        if self._starts[-1] != declared:
            raise ValueError(f"{self.dir / INDEX_FILE}: split {split!r} declares {declared} "
                             f"sequences, its shards hold {int(self._starts[-1])}")

    def _open(self, entry: dict) -> np.ndarray:
        path = self.dir / entry["file"]
        if not path.is_file():
            raise FileNotFoundError(f"token shard {path} (listed in {self.dir / INDEX_FILE}) "
                                    "is missing")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"token shard {path} is not a readable .npy file: {err}") from None
        expected = (int(entry["sequences"]), self.seq_len)
        if array.shape != expected or array.dtype != self.dtype:
            raise ValueError(f"token shard {path} holds {array.dtype}{list(array.shape)}, the "
                             f"index says {self.dtype}{list(expected)}")
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
