"""A tiny HF causal LM + tokenizer for every stage's tests, built in about a second.

``build_tiny_model_and_tokenizer(tmp_dir)`` trains a byte-level BPE tokenizer on a few hundred
seeded sentences and saves a ``tiny`` preset model (random init, safetensors) and the
tokenizer together as one HF dir, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer``.
"""

from __future__ import annotations

import random
from pathlib import Path

TINY_VOCAB = 512  # 256 byte symbols + 2 specials + ~250 merges: enough for the sentences below
SENTENCE_SEED = 0  # the sentences, hence the tokenizer, hence the model dir, are fixed

_SUBJECTS = (
    "the pipeline",
    "a table",
    "the model",
    "our tokenizer",
    "the café",
    "a naïve test",
    "the flow",
    "each shard",
    "the lakehouse",
    "a rüdiger",
)
_VERBS = ("reads", "writes", "packs", "tokenizes", "checks", "trains on", "merges", "loads")
_OBJECTS = (
    "delta rows",
    "token shards",
    "the mix",
    "validation documents",
    "日本語 text",
    "a checkpoint",
    "bytes per token",
    "the ☕ corpus",
    "parquet files",
    "an index",
)


def tiny_sentences(n: int = 400, seed: int = SENTENCE_SEED) -> list[str]:
    """Seeded sentences with some non-ASCII text, so byte-level round trips are exercised."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} "
        f"{rng.choice(_OBJECTS)} {rng.randint(0, 99)} times."
        for _ in range(n)
    ]


def build_tiny_model_and_tokenizer(tmp_dir: Path | str) -> Path:
    """Save a tiny model and its tokenizer under ``tmp_dir/tiny-model``; returns that dir."""
    from pipelines.pretrain.tokenizer import (
        TokenizerConfig,
        check_vocab,
        save_tokenizer,
        special_token_ids,
        train_tokenizer,
    )
    from pipelines.training.models import build_model, model_config

    model_dir = Path(tmp_dir) / "tiny-model"
    tokenizer = train_tokenizer(tiny_sentences(), TokenizerConfig(vocab_size=TINY_VOCAB))
    config = model_config("tiny", vocab_size=TINY_VOCAB, **special_token_ids(tokenizer))
    check_vocab(tokenizer, config)
    model = build_model(config, seed=0)
    model.save_pretrained(str(model_dir), safe_serialization=True)
    save_tokenizer(tokenizer, model_dir)
    return model_dir


def write_tiny_shards(root: Path, seq_len: int = 32) -> Path:
    """A complete shard dir with a ``tokenizer/`` inside, in pipelines.pretrain.tokens' documented
    format, straight from the tiny sentences (no Spark: seconds, not a JVM start)."""
    import json

    import numpy as np

    from pipelines.pretrain.tokenizer import (
        TokenizerConfig,
        save_tokenizer,
        tokenizer_hash,
        train_tokenizer,
    )
    from pipelines.pretrain.tokens import (
        COMPLETE_MARKER,
        INDEX_FILE,
        SHARD_FORMAT,
        pack_documents,
        shard_dtype,
    )

    root.mkdir(parents=True)
    tokenizer = train_tokenizer(tiny_sentences(), TokenizerConfig(vocab_size=512))
    save_tokenizer(tokenizer, root / "tokenizer")
    texts = tiny_sentences(600, seed=1)
    dtype = shard_dtype(len(tokenizer))
    splits = {}
    for split, docs in (("train", texts[:540]), ("validation", texts[540:])):
        ids = [tokenizer.encode(t, add_special_tokens=False) for t in docs]
        rows = pack_documents(ids, seq_len, tokenizer.eos_token_id).astype(dtype)
        np.save(root / f"{split}-00000.npy", rows)
        tokens = sum(len(i) + 1 for i in ids)
        splits[split] = {
            "documents": len(docs),
            "text_bytes": sum(len(t.encode()) for t in docs),
            "tokens": tokens,
            "sequences": len(rows),
            "shards": [{"file": f"{split}-00000.npy", "sequences": len(rows)}],
        }
    index = {
        "format": SHARD_FORMAT,
        "seq_len": seq_len,
        "dtype": dtype.name,
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "table": {"table": "test"},
        "seed": 0,
        "splits": splits,
    }
    (root / INDEX_FILE).write_text(json.dumps(index))
    (root / COMPLETE_MARKER).write_text("{}")
    return root


def tiny_mix_rows(n_docs: int = 120) -> list[tuple]:
    """gold/pretrain_mix rows whose text starts with their document id; every 10th document
    is repeated in a 2nd pass (as the mix repeats small sources)."""
    sentences = tiny_sentences(3 * n_docs, seed=11)
    rows = []
    for i in range(n_docs):
        doc_id = f"doc-{i:03d}"
        text = f"{doc_id}: " + " ".join(sentences[3 * i : 3 * i + 1 + i % 3])
        for repeat in range(2 if i % 10 == 0 else 1):
            rows.append(
                (
                    f"{doc_id}@{repeat}",
                    doc_id,
                    "docstring",
                    "pkg",
                    None,
                    text,
                    len(text.encode()),
                    repeat,
                )
            )
    return rows


def write_tiny_mix(spark, lake, rows) -> dict:
    """Write rows as a gold/pretrain_mix table under ``lake``; returns its manifest."""
    from infra.lake import write_table
    from pipelines.corpus.mix import PRETRAIN_MIX

    df = spark.createDataFrame(rows, PRETRAIN_MIX.schema)
    return write_table(spark, PRETRAIN_MIX, df, txn_id="mix-1", mode="overwrite", root=lake)


def scramble_weights(model, seed: int = 1, scale: float = 0.3) -> None:
    """Large random matrices: at init scale a tiny model repeats its last token, which would
    hide padding or position bugs; these make every output depend on every prompt token."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
