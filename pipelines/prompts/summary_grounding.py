"""Is a review summary supported by the group's reviews? Every statement it makes is checked:
figures (prices, counts, sizes) must occur in the reviews (the same figure check as the RAG
answers, ``pipelines.shared.grounding``); each negative point, liked feature and value
sentence must be like one of the reviews' sentences in MiniLM space (the fitted threshold in
``data/support_threshold.json``); "not mentioned" about price must be true; flagged reviews
must be reviews of the group. Unsupported statements are taken out of the answer's fields and
listed, with the share of statements supported as ``grounded``."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from pipelines.prompts.lexicon import MENTIONS_VALUE, readable_text
from pipelines.prompts.summary_prompt import NONE, Group
from pipelines.shared.grounding import Embed, best_support, sentences, ungrounded_figures

THRESHOLD_FILE = Path(__file__).resolve().parent / "data" / "support_threshold.json"
LISTED = ("negative_points", "liked_features")
NOT_MENTIONED = ("not mentioned", "no reviewer comments on the price")


@cache
def fitted_threshold() -> float:
    """The similarity a statement needs to its closest review sentence (see the file)."""
    return float(json.loads(THRESHOLD_FILE.read_text())["threshold"])


def review_texts(group: Group) -> list[str]:
    """What a statement may rest on: each review's title and text, as read."""
    return [f"{r.get('title') or ''}\n{readable_text(r['text'])}" for r in group.reviews]


def says_not_mentioned(value: str) -> bool:
    text = value.strip().lower()
    return text in ("", NONE) or any(phrase in text for phrase in NOT_MENTIONED)


def statements_of(answer: dict) -> list[tuple[str, str]]:
    """(field, statement) for every claim of a parsed answer, in field order."""
    made = [(field, point) for field in LISTED for point in answer.get(field) or []]
    value = (answer.get("value_for_money") or "").strip()
    if value and value.lower() != NONE:
        made.append(("value_for_money", value))
    made += [("flagged_review_ids", r) for r in answer.get("flagged_review_ids") or []]
    return made


def ground_answer(answer: dict, group: Group, embed: Embed, threshold: float) -> dict:
    """The answer with only its supported statements in its fields, plus ``grounded`` (share
    of statements supported; 1.0 when it makes none), ``statements``, ``unsupported_spans``
    and ``invented_figures`` (figures no review of the group holds). An unparsed answer is
    returned as it is."""
    if answer.get("parse_error"):
        return {
            **answer,
            "grounded": None,
            "statements": 0,
            "unsupported_spans": [],
            "invented_figures": 0,
        }
    texts = review_texts(group)
    review_sentences = [s for t in texts for s in sentences(t)]
    made = statements_of(answer)
    ids = {r["review_id"] for r in group.reviews}
    quoted = [s for s in made if s[0] != "flagged_review_ids"]
    scores = best_support([s for _, s in quoted], review_sentences, embed)
    support = dict(zip(quoted, scores, strict=True))
    price_talk = any(MENTIONS_VALUE.search(s) for s in review_sentences)
    unsupported, invented_figures = [], 0
    for field, statement in made:
        if field == "flagged_review_ids":
            ok = statement in ids
        elif field == "value_for_money" and says_not_mentioned(statement):
            ok = not price_talk  # true only if no review talks about price
        else:
            invented, _ = ungrounded_figures(statement, texts)
            invented_figures += len(invented)
            ok = not invented and support[(field, statement)][0] >= threshold
        if not ok:
            unsupported.append((field, statement))
    return {
        **_without(answer, unsupported),
        "grounded": 1.0 if not made else 1 - len(unsupported) / len(made),
        "statements": len(made),
        "unsupported_spans": [statement for _, statement in unsupported],
        "invented_figures": invented_figures,
    }


def _without(answer: dict, unsupported: list[tuple[str, str]]) -> dict:
    dropped = set(unsupported)
    kept = dict(answer)
    for field in (*LISTED, "flagged_review_ids"):
        kept[field] = [s for s in answer.get(field) or [] if (field, s) not in dropped]
    value = answer.get("value_for_money")
    if ("value_for_money", (value or "").strip()) in dropped:
        kept["value_for_money"] = NONE
    return kept
