"""The validation holdout, chosen BY DOCUMENT id from a hash of (seed, id): every repeat of a
document lands on the same side, the split does not depend on table order, and the tokenizer
never sees a validation document."""

from __future__ import annotations

import hashlib


def is_validation(doc_id: str, fraction: float, seed: int) -> bool:
    """Whether a document belongs to the validation split: a pure function of (seed, id)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if doc_id is None:
        raise ValueError("a document without an id cannot be assigned to a split")
    digest = hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64
