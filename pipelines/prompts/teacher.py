"""The rule-based teacher of the review model: the four summary answers for a group of
generated reviews, chosen by the generator's aspect records and quoted from the reviews'
own sentences, and the (instruction, response)
pairs ``finetune_task`` trains genai-reviews on — in the batch stage's own prompt and answer
layout (``pipelines.prompts.summary_prompt``)."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pipelines.prompts.catalogue import ASPECTS, VALUE
from pipelines.prompts.generator import RANT_CRITICISMS, generate_reviews
from pipelines.prompts.lexicon import (
    aspect_pattern,
    coarse_language_flag,
    most_common_aspects,
    normalise_phrase,
)
from pipelines.prompts.schema import ReviewsConfig
from pipelines.prompts.summary_prompt import answer_text, group_instruction, groups_in_memory
from pipelines.shared.grounding import sentences
from pipelines.shared.instructions import write_instruction_jsonl


def teacher_summary(reviews: Sequence[dict], aspect_records: Iterable[dict]) -> dict:
    """The four summary answers for a group of reviews, read off the generator's aspect
    records and quoted from the reviews: negative_points (for each of the most criticised
    aspects, most first, at most three, the first review sentence that criticises it),
    liked_features (the same for praise), value_for_money (the first sentence about price,
    or "Not mentioned" — a price only when a review names one), and flagged_review_ids
    (coarse language, or a 1-star review criticising three aspects or more). What a task
    model learns from these targets is to copy what its input says. Ties go to the aspect
    the reviews mention first, then to the one named first in the catalogue."""
    ids = {r["review_id"] for r in reviews}
    mine = [a for a in aspect_records if a["review_id"] in ids]
    criticised = Counter(a["aspect"] for a in mine if a["polarity"] < 0)
    praised = Counter(a["aspect"] for a in mine if a["polarity"] > 0)
    seen = _first_mentions(reviews, mine)
    criticisms_of = Counter(a["review_id"] for a in mine if a["polarity"] < 0)
    flagged = [
        r["review_id"]
        for r in reviews
        if coarse_language_flag(f"{r.get('title') or ''} {r['text']}")
        or (r["rating"] == 1 and criticisms_of[r["review_id"]] >= RANT_CRITICISMS)
    ]
    value = [a for a in mine if a["aspect"] == VALUE.name]
    return {
        "negative_points": [
            _voicing(reviews, mine, a, -1) for a in most_common_aspects(criticised, seen)
        ],
        "liked_features": [
            _voicing(reviews, mine, a, 1) for a in most_common_aspects(praised, seen)
        ],
        "value_for_money": (
            _voicing(reviews, mine, VALUE.name, value[0]["polarity"]) if value else NOT_MENTIONED
        ),
        "flagged_review_ids": flagged,
    }


NOT_MENTIONED = "Not mentioned, no reviewer comments on the price."


def _voicing(reviews: Sequence[dict], records: Sequence[dict], aspect: str, polarity: int) -> str:
    """The first sentence of the reviews that voices ``aspect`` with ``polarity`` (the
    generator writes one sentence per aspect record); the catalogue's phrase if none does."""
    voiced = {
        a["review_id"] for a in records if a["aspect"] == aspect and a["polarity"] == polarity
    }
    for review in reviews:
        if review["review_id"] not in voiced:
            continue
        for sentence in sentences(review["text"] or ""):
            if aspect in ASPECTS and aspect_pattern(aspect).search(normalise_phrase(sentence)):
                return sentence.strip().rstrip(".")  # a point, as the answers list them
    return _phrase(aspect, "complaint" if polarity < 0 else "liked")


def _first_mentions(reviews: Sequence[dict], records: Iterable[dict]) -> dict[str, tuple]:
    """aspect -> (review index, character offset) of its first mention in the reviews' text:
    a summary that lists tied points in reading order is one a small model can learn."""
    by_review: dict[str, list[str]] = {}
    for record in records:
        by_review.setdefault(record["review_id"], []).append(record["aspect"])
    first: dict[str, tuple] = {}
    for index, review in enumerate(reviews):
        text = normalise_phrase(f"{review.get('title') or ''} {review['text'] or ''}")
        for aspect in by_review.get(review["review_id"], []):
            if aspect in first or aspect not in ASPECTS:
                continue
            match = aspect_pattern(aspect).search(text)
            first[aspect] = (index, match.start() if match else math.inf)
    return first


def _phrase(aspect: str, kind: Literal["complaint", "liked"]) -> str:
    return getattr(ASPECTS[aspect], kind) if aspect in ASPECTS else aspect


def review_training_pairs(config: ReviewsConfig, window: str = "week") -> list[tuple[str, str]]:
    """(instruction, response) pairs for finetune_task, in the batch stage's own prompt and
    answer layout: every (product, band, window) group of the generated reviews, in slices of
    ``max_reviews_per_prompt``, answered by the teacher. Exact re-deliveries are left out, as
    ingestion drops them."""
    reviews, aspects = generate_reviews(config)
    seen: set[str] = set()
    unique = [r for r in reviews if not (r["review_id"] in seen or seen.add(r["review_id"]))]
    pairs = []
    for group in groups_in_memory(unique, window):
        for start in range(0, len(group.reviews), config.max_reviews_per_prompt):
            chunk = group.reviews[start : start + config.max_reviews_per_prompt]
            pairs.append(
                (
                    group_instruction(group, chunk),
                    answer_text(teacher_summary(chunk, aspects), chunk),
                )
            )
    return pairs


def write_review_training_set(config: ReviewsConfig, window: str, directory: Path) -> Path:
    """:func:`review_training_pairs` as an instruction data set in ``directory``, named by
    its content: a consumer that caches on the path must see other pairs at another path."""
    pairs = review_training_pairs(config, window)
    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]
    return write_instruction_jsonl(pairs, Path(directory) / f"reviews-{digest}.jsonl")
