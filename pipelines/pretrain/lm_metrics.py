"""Language-model yardsticks: an add-one unigram baseline, and bits per byte that compare
models with different tokenizers on the same text.

* ``unigram_baseline``: what a model that ignores context scores — token frequencies of the
  train split with add-one smoothing, evaluated on the validation split's predicted tokens
  (the same tokens ``pipelines.training.loop.evaluate`` scores). A trained model must beat it by a
  wide margin; this is the demo's "did it learn anything" check.
* ``validation_texts``: the pinned validation documents as text (decoded from the shards, so
  they are exactly what the held-out split holds, whichever table version built it).
* ``bits_per_byte``: nats over every token of the texts, each text followed by EOS, divided
  by ln 2 and the texts' UTF-8 bytes. Per byte, not per token, so a model with a coarser
  tokenizer gains nothing: this is the number the registry's champion gate compares.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipelines.shared.promotion import one_metric

DEFAULT_MAX_BYTES = 2_000_000  # cap on the text scored per model (minutes on CPU at most)
# Bits per byte on the same pinned text is deterministic for given weights, so no noise margin
CHAMPION_RULE = one_metric("val_bpb", "lower")


def unigram_baseline(shards_dir: Path | str) -> dict:
    """Add-one unigram validation loss (nats/token) and its bits per byte."""
    from pipelines.pretrain.tokens import TokenShards

    train = TokenShards(shards_dir, "train")
    val = TokenShards(shards_dir, "validation")
    if len(val) == 0:
        raise ValueError(f"{shards_dir} has no validation sequences to score a baseline on")
    vocab = int(train.index["vocab_size"])
    counts = np.zeros(vocab, dtype=np.float64)
    for i in range(0, len(train), 1024):
        rows = train.batch(range(i, min(i + 1024, len(train))))
        counts += np.bincount(rows.ravel(), minlength=vocab)[:vocab]
    log_p = np.log(counts + 1) - np.log(counts.sum() + vocab)
    predicted = val.batch(range(len(val)))[:, 1:]  # the model never predicts a row's first token
    loss = float(-log_p[predicted].mean())
    split = val.index["splits"]["validation"]
    return {
        "unigram_val_loss": loss,
        "unigram_val_bpb": loss * split["tokens"] / split["text_bytes"] / math.log(2),
    }


def validation_texts(
    shards_dir: Path | str,
    tokenizer_dir: Path | str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[str]:
    """The validation split's documents, decoded; cut at ``max_bytes`` of text.

    The split's first and last pieces may be parts of documents (packing cut them); they are
    still held-out text, scored like the rest.
    """
    from pipelines.pretrain.tokens import TokenShards
    from pipelines.training.hf import load_tokenizer

    val = TokenShards(shards_dir, "validation")
    tokenizer = load_tokenizer(tokenizer_dir or Path(shards_dir) / "tokenizer")
    eos = tokenizer.eos_token_id
    stream = val.batch(range(len(val))).ravel() if len(val) else np.empty(0, dtype=np.int64)
    cuts = np.flatnonzero(stream == eos)
    texts, used, start = [], 0, 0
    for end in [*cuts.tolist(), len(stream)]:
        if end > start:
            text = tokenizer.decode(stream[start:end].tolist())
            texts.append(text)
            used += len(text.encode())
            if used >= max_bytes:
                break
        start = end + 1
    if not texts:
        raise ValueError(f"the validation split of {shards_dir} holds no text")
    return texts


def bits_per_byte(
    model_dir: Path | str, texts: list[str], window: int = 256, batch_size: int = 8
) -> float:
    """Bits per UTF-8 byte of ``texts`` under the HF model in ``model_dir`` (its own tokenizer).

    The texts are tokenized, joined with EOS after each, and scored in windows of ``window``
    tokens; each window starts with EOS as its BOS, so every text token is predicted.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from pipelines.training.hf import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text, add_special_tokens=False) + [eos]
    total_bytes = sum(len(t.encode()) for t in texts)
    if not total_bytes:
        raise ValueError("bits_per_byte needs non-empty texts")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = (
        AutoModelForCausalLM.from_pretrained(
            str(model_dir), local_files_only=True, dtype=torch.float32
        )
        .to(device)
        .eval()
    )
    step = window - 1
    windows = [[eos] + ids[i : i + step] for i in range(0, len(ids), step)]
    nats = 0.0
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            nats += _window_nats(model, windows[i : i + batch_size], eos, device)
    return nats / math.log(2) / total_bytes


def _window_nats(model, windows: list[list[int]], pad: int, device) -> float:
    """Summed next-token nats of a batch of windows (right-padded; padding is not scored)."""
    import torch
    import torch.nn.functional as F

    width = max(len(w) for w in windows)
    ids = torch.full((len(windows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    for row, w in enumerate(windows):
        ids[row, : len(w)] = torch.tensor(w)
        mask[row, : len(w)] = 1
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    targets = ids[:, 1:]
    nats = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return float((nats * mask[:, 1:]).sum())
