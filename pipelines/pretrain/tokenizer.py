"""The project's tokenizer: byte-level BPE (HF ``tokenizers``; ByteLevel pre-tokenizer and
decoder, so any Unicode text round-trips exactly and nothing is ever unknown), wrapped as a
``PreTrainedTokenizerFast`` whose EOS doubles as BOS (GPT-2 style) plus a PAD token; trained
on the mix table's training documents and cached by (table, version, config, holdout)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from infra.files import write_json_atomic
from pipelines.pretrain.holdout import is_validation
from pipelines.training.hf import load_tokenizer


class TokenizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(4096, ge=260, le=2**32)  # tokens incl. 256 byte symbols and the
    # specials; 4096 keeps the demo (~3M params) from spending most of itself on embeddings,
    # and any vocab < 65536 lets shards store uint16
    min_frequency: int = Field(2, ge=1)  # a pair seen fewer times is never merged (1 memorises
    # one-off strings)
    eos_token: str = "<|endoftext|>"  # appended after every document; also the BOS token
    pad_token: str = (
        "<|pad|>"  # for batched inference and fine-tuning; never in pretraining shards
    )
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
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=[config.eos_token, config.pad_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return _wrap(tokenizer, config)


def _wrap(tokenizer, config: TokenizerConfig):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=config.eos_token,
        bos_token=config.eos_token,
        pad_token=config.pad_token,
        clean_up_tokenization_spaces=False,
    )  # True would alter " ," on decode: no round trip


def save_tokenizer(tokenizer, directory: Path | str) -> Path:
    """Write an HF tokenizer dir (tokenizer.json + tokenizer_config.json); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def _as_tokenizer(tokenizer_or_dir):
    return (
        load_tokenizer(tokenizer_or_dir)
        if isinstance(tokenizer_or_dir, (str, Path))
        else tokenizer_or_dir
    )


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """EOS/BOS/PAD ids, named as model configs name them (pass them to models.model_config)."""
    return {
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def tokenizer_hash(tokenizer_or_dir) -> str:
    """SHA-256 of the tokenizer's JSON (vocab, merges, normaliser, …) and its special tokens.

    Canonical JSON (sorted keys), without the mutable padding/truncation settings, so a
    tokenizer object and the dir it was saved to hash the same.
    """
    tokenizer = _as_tokenizer(tokenizer_or_dir)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("padding", None)
    spec.pop("truncation", None)
    spec["special_tokens"] = {
        "eos": tokenizer.eos_token,
        "bos": tokenizer.bos_token,
        "pad": tokenizer.pad_token,
    }
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_vocab(tokenizer_or_dir, model_config) -> None:
    """Refuse a tokenizer that does not fit a model: ids past the embedding, or other specials.

    A model's vocab may be larger than the tokenizer's (padded for speed); never smaller.
    """
    tokenizer = _as_tokenizer(tokenizer_or_dir)
    problems = []
    if len(tokenizer) > model_config.vocab_size:
        problems.append(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding "
            f"has {model_config.vocab_size} rows (ids >= {model_config.vocab_size} "
            "would index out of range)"
        )
    for name, token_id in special_token_ids(tokenizer).items():
        model_id = getattr(model_config, name, None)
        if model_id is not None and token_id is not None and model_id != token_id:
            problems.append(f"{name} is {token_id} in the tokenizer but {model_id} in the model")
    if problems:
        raise ValueError("tokenizer and model config do not match: " + "; ".join(problems))


def tokenizer_from_table(
    spark,
    mix_manifest: dict,
    config: TokenizerConfig,
    out_root: Path,
    val_fraction: float,
    seed: int,
) -> dict:
    """Step: train the tokenizer on the mix table's TRAIN documents (each once, in id order,
    up to ``max_train_bytes``) into ``out_root/<key>``; returns a JSON summary.

    Validation documents are left out, so the held-out split is unseen even by the tokenizer.
    The dir is keyed by (table id, version, config, split) and reused when complete.
    """
    from pyspark.sql import functions as F

    from infra.lake import read_table

    is_validation("", val_fraction, seed)
    table = {k: mix_manifest[k] for k in ("table", "table_id", "version")}
    payload = {
        "table_id": table["table_id"],
        "version": int(table["version"]),
        "config": config.model_dump(),
        "val_fraction": val_fraction,
        "seed": seed,
    }
    key = (
        "tokenizer-"
        + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    )
    out_dir = Path(out_root) / key
    if (out_dir / "tokenizer.json").is_file():
        return _tokenizer_summary(out_dir, table, reused=True)
    keep = F.udf(lambda doc_id: not is_validation(doc_id, val_fraction, seed), "boolean")
    docs = (
        read_table(spark, mix_manifest)
        .where("repeat = 0")
        .where(keep("id"))
        .select("id", "text")
        .orderBy("id")
    )
    texts, used = [], 0
    for row in docs.toLocalIterator(prefetchPartitions=True):
        texts.append(row.text)
        used += len(row.text.encode())
        if used >= config.max_train_bytes:
            break
    if not texts:
        raise ValueError(
            f"mix table {table['table']} (version {table['version']}) has no "
            "training documents to train a tokenizer on: is it empty?"
        )
    tmp = out_dir.with_name(f".{key}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        save_tokenizer(train_tokenizer(texts, config), tmp)
        write_json_atomic(
            tmp / "training_data.json",
            {"table": table, "documents": len(texts), "text_bytes": used},
        )
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
    return {
        "dir": str(directory),
        "hash": tokenizer_hash(tokenizer),
        "vocab_size": len(tokenizer),
        "table": table,
        "documents": trained_on["documents"],
        "text_bytes": trained_on["text_bytes"],
        "reused": reused,
    }
