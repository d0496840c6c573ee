"""The training pairs of `genai-rag`, the RAG chain's default answering model, written by a
rule teacher: for docstring questions, the target's summary sentence with its cited id among
distractor chunks (or that the sources do not answer); for travel questions, the best-ranked
hotel within the user's budget from the features the chain's lookups would return. Prompts are
fitted to the base's context exactly as the chain fits them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence

from infra.online_store import Change, OnlineStore
from pipelines.rag import index as rag_index
from pipelines.rag.chain import NO_ANSWER, ContextFit, RagInputError, Source, fitted_instruction
from pipelines.rag.chunking import chunk_documents
from pipelines.rag.feature_spec import request_features
from pipelines.rag.feature_tables import HOTELS, USER_PREFERENCES
from pipelines.rag.travel_data import (
    generate_hotels,
    generate_user_preferences,
    hotel_descriptions,
)

HOTEL_SHARE = 0.3  # of genai-rag's training pairs: travel questions with user features


def first_sentence(text: str, limit: int = 240) -> str:
    """A docstring's summary: its first paragraph's first sentence, on one line."""
    paragraph = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    paragraph = " ".join(paragraph.split())
    sentence = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
    return sentence[:limit].rstrip()


def teacher_answer(target: Source | None) -> str:
    """What the rule teacher answers: the target's summary sentence and its id, or that the
    sources do not answer."""
    if target is None:
        return NO_ANSWER
    return f"{first_sentence(target.text)} [{target.source_id}]"


def answer_training_pairs(
    questions: Sequence[tuple[str, str]],
    chunks_by_source: dict,
    k: int = 4,
    unanswerable: float = 0.15,
    seed: int = 0,
    max_source_chars: int = 1200,
    fit: ContextFit | None = None,
    reserve: int = 0,
) -> list[tuple[str, str]]:
    """(instruction, response) pairs: each (question, target source id) with the target's
    first chunk among ``k - 1`` distractor chunks in random order — or, for a share
    ``unanswerable`` of them, distractors only, answered with ``NO_ANSWER``. Distractors come
    first from the target's own module (hard: similar words), then from anywhere."""
    rng = random.Random(seed)
    all_ids = sorted(chunks_by_source)
    by_module: dict[str, list[str]] = {}
    for source_id in all_ids:
        by_module.setdefault(_module_of(source_id), []).append(source_id)
    pairs = []
    for question, target_id in questions:
        if target_id not in chunks_by_source:
            continue
        target = Source(target_id, chunks_by_source[target_id][0].text)
        distractors = _distractors(target_id, by_module, all_ids, k - 1, rng)
        sources = [Source(d, chunks_by_source[d][0].text) for d in distractors]
        answered = rng.random() >= unanswerable
        if answered:
            sources.insert(rng.randrange(len(sources) + 1), target)
        else:  # one more distractor keeps the block count at k
            extra = _distractors(target_id, by_module, all_ids, 1, rng, exclude=distractors)
            sources += [Source(d, chunks_by_source[d][0].text) for d in extra]
        instruction = _fitted_or_none(question, sources, None, max_source_chars, fit, reserve)
        if instruction is not None:
            pairs.append((instruction, teacher_answer(target if answered else None)))
    return pairs


def teacher_hotel_answer(features: dict) -> str:
    """The rule teacher for the travel assistant: the best-ranked retrieved hotel within the
    user's budget, with its price, or else the cheapest one and that none fits."""
    hotels, budget = features["hotels"], features["user_preferences"]["avg_budget"]
    if not hotels:
        return NO_ANSWER
    within = [h for h in hotels if h["price"]["within_budget"]]
    if within:
        best, price = within[0], within[0]["price"]
        return (
            f"{best['name']} in {best['neighbourhood']}, {best['city']}: "
            f"{price['price_per_night']:.2f} EUR per night, {price['total_price']:.2f} EUR "
            f"for {price['nights']} nights, within your budget of {budget:.0f} EUR per "
            f"night [hotel:{best['hotel_id']}]."
        )
    cheapest = min(hotels, key=lambda h: h["price"]["price_per_night"])
    return (
        f"None of these hotels is within your budget of {budget:.0f} EUR per night; the "
        f"cheapest is {cheapest['name']} at {cheapest['price']['price_per_night']:.2f} EUR "
        f"per night [hotel:{cheapest['hotel_id']}]."
    )


HOTEL_QUESTIONS = (
    "Which hotel suits me in {city} for {nights} nights?",
    "Where should I stay in {city}?",
    "Find me a {kind} hotel in {city} within my budget.",
    "Is there a hotel in {city} I can afford for {nights} nights?",
    "Which hotel fits my budget for a trip to {city}?",
)


def hotel_training_pairs(
    config,
    n: int,
    k: int,
    seed: int = 0,
    max_source_chars: int = 1200,
    fit: ContextFit | None = None,
    reserve: int = 0,
) -> list[tuple[str, str]]:
    """(instruction, response) pairs for the travel assistant: a user asks about a city;
    the sources are k generated hotel descriptions (mostly of that city, as retrieval finds
    them); the features are what the chain's lookups return for them (the generator's rows
    in an in-memory online store); the teacher picks a hotel within budget."""
    rng = random.Random(seed)
    store = generated_feature_store(config)
    users = generate_user_preferences(config)
    hotels = generate_hotels(config)
    texts = dict(hotel_descriptions(config))
    pairs = []
    for _ in range(n):
        user, nights = rng.choice(users), rng.randint(1, 7)
        city = user["preferred_city"] if rng.random() < 0.7 else rng.choice(config.cities)
        local = [h for h in hotels if h["city"] == city]
        picked = rng.sample(local, min(len(local), k))
        others = [h for h in hotels if h not in picked]
        picked += rng.sample(others, k - len(picked))
        request = {"nights": nights, "season": rng.choice(["low", "shoulder", "high"])}
        features = request_features(
            store, user["user_id"], [h["hotel_id"] for h in picked], request
        )
        question = rng.choice(HOTEL_QUESTIONS).format(
            city=city, nights=nights, kind=user["hotel_preference"]
        )
        sources = [
            Source(f"hotel:{h['hotel_id']}", texts[f"hotel:{h['hotel_id']}"]) for h in picked
        ]
        instruction = _fitted_or_none(question, sources, features, max_source_chars, fit, reserve)
        if instruction is not None:
            pairs.append((instruction, teacher_hotel_answer(features)))
    return pairs


def generated_feature_store(config):
    """The generator's users and hotels in an in-memory online store: training pairs see
    features exactly as the chain's lookups return them."""
    store = OnlineStore(":memory:")
    for spec, rows in (
        (USER_PREFERENCES, generate_user_preferences(config)),
        (HOTELS, generate_hotels(config)),
    ):
        store.apply(
            spec,
            [Change(row) for row in rows],
            source="generator",
            table_id="generated",
            version=0,
            full=True,
        )
    return store


def _fitted_or_none(question, sources, features, max_source_chars, fit, reserve) -> str | None:
    """A training instruction, or None when even short sources do not fit (left out: the
    chain would refuse that question too)."""
    try:
        return fitted_instruction(question, sources, features, max_source_chars, fit, reserve)
    except RagInputError:
        return None


def _module_of(source_id: str) -> str:
    return source_id.rsplit(".", 1)[0] if source_id.startswith("py:") else source_id


def _distractors(
    target_id: str,
    by_module: dict,
    all_ids: list[str],
    n: int,
    rng: random.Random,
    exclude: Sequence[str] = (),
) -> list[str]:
    taken = {target_id, *exclude}
    near = [s for s in by_module.get(_module_of(target_id), []) if s not in taken]
    picked = rng.sample(near, min(len(near), max(1, n // 2))) if near else []
    taken.update(picked)
    while len(picked) < n and len(taken) < len(all_ids):
        candidate = all_ids[rng.randrange(len(all_ids))]
        if candidate not in taken:
            picked.append(candidate)
            taken.add(candidate)
    return picked[:n]


def training_pairs_for_index(
    index,
    questions: int,
    k: int,
    max_source_chars: int = 1200,
    seed: int = 0,
    fit: ContextFit | None = None,
    reserve: int = 0,
    *,
    template_questions: Callable[..., Iterable],
    question_targets: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """genai-rag's pairs over the index config's own documents: ``template_questions(documents,
    n=, seed=)`` (the evaluation stage's generator: a question never names its target, each
    question has ``question`` and ``expected_source_ids``), each target's first chunk among
    distractors, the rule teacher's cited answer; plus, when the index holds hotels, travel
    questions with the user's features (a share ``HOTEL_SHARE``), shuffled together. With
    ``fit`` (the base's tokenizer and the training length), sources are shortened exactly as
    the chain will shorten them, ``reserve`` tokens kept for the answer. ``question_targets``:
    as for :func:`pipelines.rag.index.index_documents`."""
    documents, _ = rag_index.index_documents(index, question_targets)
    embedder = rag_index.load_embedder(index)
    chunks = chunk_documents(documents, index.chunking, embedder.tokenizer)
    by_source: dict[str, list] = {}
    for chunk in chunks:
        by_source.setdefault(chunk.source_id, []).append(chunk)
    travel = round(questions * HOTEL_SHARE) if index.hotels is not None else 0
    generated = template_questions(documents, n=questions - travel, seed=seed)
    targets = [(q.question, q.expected_source_ids[0]) for q in generated]
    pairs = answer_training_pairs(
        targets,
        by_source,
        k=k,
        seed=seed,
        max_source_chars=max_source_chars,
        fit=fit,
        reserve=reserve,
    )
    if travel:
        pairs += hotel_training_pairs(
            index.hotels, travel, k, seed, max_source_chars, fit, reserve
        )
    if not pairs:
        raise RagInputError(
            f"genai-rag: no training prompt with {k} sources fits "
            f"{fit.context_tokens if fit else '?'} tokens; raise the "
            "fine-tuning max_len or lower answer.k"
        )
    return random.Random(seed).sample(pairs, len(pairs))
