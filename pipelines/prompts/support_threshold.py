"""Fits the similarity threshold of the summaries' grounding check and records it in
``data/support_threshold.json``: ``python -m pipelines.prompts.support_threshold``.

Examples come from the generator, whose aspect records say what each review is about: a
summary phrase naming an aspect a review praises or criticises (the catalogue's "liked" or
"complaint" phrase — what a task model writes) is supported by that review; the phrase of an
aspect of the same category that the review never mentions is not. The threshold is the
cosine (statement, closest review sentence) that separates the two best."""

from __future__ import annotations

import json
import random
from datetime import date

from pipelines.prompts.catalogue import ASPECTS, CATEGORIES
from pipelines.prompts.generator import generate_reviews
from pipelines.prompts.schema import ReviewsConfig
from pipelines.prompts.summary_grounding import THRESHOLD_FILE
from pipelines.shared.grounding import Embed, best_support, fit_threshold, sentences

FIT_SEED = 7  # generated products of their own: not the training nor the held-out ones


def support_examples(
    embed: Embed, reviews_limit: int = 600, seed: int = FIT_SEED
) -> tuple[list[float], list[float]]:
    """(similarities of supported phrases, of unsupported ones) over generated reviews."""
    reviews, aspects = generate_reviews(ReviewsConfig(seed=seed))
    by_review: dict[str, list[dict]] = {}
    for record in aspects:
        by_review.setdefault(record["review_id"], []).append(record)
    category_aspects = {c.name: [a.name for a in c.aspects] for c in CATEGORIES}
    rng = random.Random(seed)
    supported, unsupported = [], []
    for review in [r for r in reviews if r["review_id"] in by_review][:reviews_limit]:
        records = by_review[review["review_id"]]
        named = {a["aspect"] for a in records}
        phrases = [_phrase(a["aspect"], a["polarity"]) for a in records]
        others = [a for a in category_aspects.get(review["category"], []) if a not in named]
        if not others:
            continue
        absent = [_phrase(rng.choice(others), rng.choice((-1, 1)))]
        scores = best_support([*phrases, *absent], sentences(review["text"]), embed)
        supported += [s for s, _ in scores[: len(phrases)]]
        unsupported += [s for s, _ in scores[len(phrases) :]]
    return supported, unsupported


def _phrase(aspect: str, polarity: int) -> str:
    return ASPECTS[aspect].complaint if polarity < 0 else ASPECTS[aspect].liked


def main() -> None:
    from pipelines.shared.embedder import Embedder

    embedder = Embedder()
    fitted = fit_threshold(*support_examples(embedder.embed))
    record = {
        **fitted,
        "embedder": embedder.name,
        "fitted_on": "generated reviews (seed 7): catalogue phrases of aspects each review "
        "names (supported) or never mentions (unsupported)",
        "date": date.today().isoformat(),
        "command": "python -m pipelines.prompts.support_threshold",
    }
    THRESHOLD_FILE.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
