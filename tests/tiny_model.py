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

_SUBJECTS = ("the pipeline", "a table", "the model", "our tokenizer", "the café", "a naïve test",
             "the flow", "each shard", "the lakehouse", "a rüdiger")
_VERBS = ("reads", "writes", "packs", "tokenizes", "checks", "trains on", "merges", "loads")
_OBJECTS = ("delta rows", "token shards", "the mix", "validation documents", "日本語 text",
            "a checkpoint", "bytes per token", "the ☕ corpus", "parquet files", "an index")


def tiny_sentences(n: int = 400, seed: int = SENTENCE_SEED) -> list[str]:
    """Seeded sentences with some non-ASCII text, so byte-level round trips are exercised."""
    rng = random.Random(seed)
    return [f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} "
            f"{rng.choice(_OBJECTS)} {rng.randint(0, 99)} times." for _ in range(n)]


def build_tiny_model_and_tokenizer(tmp_dir: Path | str) -> Path:
    """Save a tiny model and its tokenizer under ``tmp_dir/tiny-model``; returns that dir."""
    from pipelines.models import build_model, model_config
    from pipelines.tokens import (
        TokenizerConfig,
        check_vocab,
        save_tokenizer,
        special_token_ids,
        train_tokenizer,
    )

    model_dir = Path(tmp_dir) / "tiny-model"
    tokenizer = train_tokenizer(tiny_sentences(), TokenizerConfig(vocab_size=TINY_VOCAB))
    config = model_config("tiny", vocab_size=TINY_VOCAB, **special_token_ids(tokenizer))
    check_vocab(tokenizer, config)
    model = build_model(config, seed=0)
    model.save_pretrained(str(model_dir), safe_serialization=True)
    save_tokenizer(tokenizer, model_dir)
    return model_dir
