"""How well a summary model names what reviewers criticise, on generated products it never
saw: held-out groups from the generator under another seed, the precision and recall of
named criticised aspects (through the catalogue's phrase → aspect matcher), the keyword
baseline a model must beat, and the comparison of the task model, its base and the baseline.
The averaging and comparison come in as ``compare`` (``pipelines.evaluation.reviews``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from infra.llm import PromptTooLongError
from infra.tracking import PromptRef
from pipelines.prompts.catalogue import ASPECTS
from pipelines.prompts.generator import generate_reviews
from pipelines.prompts.lexicon import (
    TOP_POINTS,
    aspect_of_phrase,
    aspect_pattern,
    most_common_aspects,
    normalise_phrase,
)
from pipelines.prompts.schema import ReviewsConfig
from pipelines.prompts.summariser import Summariser, SummaryConfig
from pipelines.prompts.summary_prompt import (
    NONE,
    PROMPT_NAME,
    PROMPT_TEMPLATE,
    Group,
    groups_in_memory,
)

HELDOUT_SEED_OFFSET = 1000  # held-out products: the training config's seed plus this
HELDOUT_GROUP_REVIEWS = 3  # reviews per held-out group: enough for a top-three answer, and
# the same groups whatever a task model's prompts hold (the summariser chunks them)

log = logging.getLogger(__name__)


def heldout_groups(
    config, window: str = "week", max_reviews: int = HELDOUT_GROUP_REVIEWS
) -> tuple[list[Group], list[dict]]:
    """(groups, aspect records) of generated products the task model never saw: the
    generator with another seed, each group's first ``max_reviews`` reviews."""
    reviews, aspects = generate_reviews(config)
    groups = [
        Group(g.product_id, g.band, g.window_start, window, g.reviews[:max_reviews])
        for g in groups_in_memory(reviews, window)
    ]
    return groups, aspects


def group_aspect_records(groups: Sequence[Group], aspects: Iterable[dict]) -> list[list[dict]]:
    """Each group's aspect records: those of its reviews, in review order."""
    by_review: dict[str, list[dict]] = {}
    for record in aspects:
        by_review.setdefault(record["review_id"], []).append(record)
    return [
        [a for r in group.reviews for a in by_review.get(r["review_id"], [])] for group in groups
    ]


def negative_point_scores(
    predicted_points: Sequence[str], aspect_records_of_group: Iterable[dict], k: int = TOP_POINTS
) -> tuple[float, float]:
    """(precision, recall) of predicted negative points against the aspects the group's
    reviews criticise. Precision: the share of points that name a criticised aspect, each
    aspect credited once (a repeat dilutes). Recall: criticised aspects named, over
    min(criticised aspects, k) — a summary of k points can at best name k. Nothing predicted
    and nothing criticised scores (1, 1); "none" counts as nothing predicted."""
    truth = {a["aspect"] for a in aspect_records_of_group if a["polarity"] < 0}
    points = [p for p in predicted_points if normalise_phrase(p) not in ("", NONE)]
    if not points:
        return (1.0, 1.0) if not truth else (0.0, 0.0)
    named = {aspect_of_phrase(p) for p in points} & truth
    precision = len(named) / len(points)
    recall = len(named) / min(len(truth), k) if truth else 1.0
    return precision, recall


def keyword_baseline(reviews: Sequence[dict], k: int = TOP_POINTS) -> list[str]:
    """Negative points without a model: the aspects whose keywords the most low-rated
    reviews mention (1-2 stars; a group without any uses its lowest-rated reviews), named
    as the catalogue names them. Blind to polarity — which is what a model must beat."""
    if not reviews:
        return []
    cutoff = max(2, min(r["rating"] for r in reviews))
    mentions: Counter = Counter()
    for review in reviews:
        if review["rating"] <= cutoff:
            text = normalise_phrase(f"{review.get('title') or ''} {review['text'] or ''}")
            mentions.update(name for name in ASPECTS if aspect_pattern(name).search(text))
    return most_common_aspects(mentions)[:k]


def model_negative_points(summariser: Summariser, groups: Sequence[Group]) -> list[list[str]]:
    """Each group's negative points as the model answers (none when its answer fails to
    parse, or when its positions cannot hold the prompt: wrong answers, scored as such)."""
    try:
        answers = summariser.summarise(groups)
    except PromptTooLongError as err:
        log.info("a model answers no group: %s", err)
        return [[] for _ in groups]
    return [a["negative_points"] or [] for a in answers]


def extractive_negative_points(groups: Sequence[Group]) -> list[list[str]]:
    """Each group's negative points as the extractive summariser (no LLM) quotes them."""
    from pipelines.prompts.extractive import ExtractiveSummariser
    from pipelines.shared.embedder import Embedder

    summariser = ExtractiveSummariser(Embedder().embed_clipped)
    return [a["negative_points"] for a in summariser.summarise(groups)]


def score_review_models(
    config: ReviewsConfig,
    summary: SummaryConfig,
    models: Mapping[str, str],
    load_llm: Callable[[str], object],
    compare: Callable[..., dict],
    max_groups: int = 64,
) -> dict:
    """Negative points of each model (name -> reference ``load_llm`` opens) on the first
    ``max_groups`` held-out groups, beside the keyword baseline and the extractive
    summariser, through ``compare`` (summarisers, groups, records per group, per-group score
    -> scores by name). Returns ``scores`` (keyword_baseline, extractive, then the models in
    order), ``heldout_seed`` and ``groups``."""
    heldout = config.model_copy(update={"seed": config.seed + HELDOUT_SEED_OFFSET})
    groups, aspects = heldout_groups(heldout, summary.window)
    groups = groups[:max_groups]
    template = PromptRef(PROMPT_NAME, 0, PROMPT_TEMPLATE).format

    def model_points(ref: str) -> Callable[[Sequence[Group]], list[list[str]]]:
        def points(of_groups: Sequence[Group]) -> list[list[str]]:
            llm = load_llm(ref)
            return model_negative_points(
                Summariser(llm, template, summary, llm.tokenizer), of_groups
            )

        return points

    summarisers = {
        "keyword_baseline": lambda gs: [keyword_baseline(g.reviews) for g in gs],
        "extractive": extractive_negative_points,
    }
    summarisers |= {name: model_points(ref) for name, ref in models.items()}
    scores = compare(
        summarisers, groups, group_aspect_records(groups, aspects), negative_point_scores
    )
    return {"scores": scores, "heldout_seed": heldout.seed, "groups": len(groups)}
