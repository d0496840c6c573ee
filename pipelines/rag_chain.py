"""The RAG chain: question (+ user id) → top-k chunks of a pinned index version → the user's
features and on-demand prices → a prompt that quotes every retrieved text as data → the LLM
(infra/llm.py) → an answer that cites source ids. Also the training pairs of `genai-rag`, the
chain's default answering model, written by a rule teacher from the docstring corpus.

The prompt is the fine-tuning stage's Alpaca template. Retrieved text and the question are
quoted with ``infra.llm.quote_block``: nothing inside a block can close it, so a document that
says "ignore previous instructions" stays a quoted document.
"""
from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.llm import LLM, GenerationParams, quote_block
from pipelines.synth import END_MARKER, prompt_of

log = logging.getLogger(__name__)

ANSWER_TASK = ("Answer the question using only the quoted sources. After each fact, cite its "
               "source id in square brackets. If the sources do not answer the question, say "
               "so.")
NO_ANSWER = "The sources do not answer this question."
HOTEL_SHARE = 0.3  # of genai-rag's training pairs: travel questions with user features
CITATION = re.compile(r"\[([^\[\]\n]{1,300})\]")
RETRIEVER = Literal["vector", "fts", "hybrid"]


class RagInputError(ValueError):
    """A request the chain refuses: names the field and what was expected."""


class AnswerConfig(BaseModel):
    """How a question is answered."""

    model_config = ConfigDict(extra="forbid")

    model: str | dict = "models:/genai-rag@champion"  # any models:/ URI, HF dir or endpoint
    retriever: RETRIEVER = "hybrid"  # vector, full-text, or both fused by reciprocal rank
    k: int = Field(4, ge=1, le=20)  # chunks quoted in the prompt
    max_question_chars: int = Field(1000, ge=1)  # longer questions are refused, not cut
    max_source_chars: int = Field(1200, ge=100)  # each quoted chunk, at most (a chunk is
    # already within the embedder's 256 tokens; this bounds the prompt for any chunking)
    max_new_tokens: int = Field(96, ge=1)  # answer length, at most
    nights: int = Field(3, ge=1, le=60)  # the price function's default stay, when not asked
    season: Literal["low", "shoulder", "high"] = "shoulder"  # likewise


# ---------------------------------------------------------------------------------------------
# Prompt and citations
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One quoted source: a retrieved chunk (or a hotel's facts) and the id it is cited by."""

    source_id: str
    text: str


def source_label(source_id: str) -> str:
    # a label sits on the block's opening line: no line breaks, no marker runs
    return "source " + re.sub(r"[\s<>]+", " ", source_id).strip()


@dataclass
class ContextFit:
    """The answering model's tokenizer (a copy of its own, so the chain may use it from any
    thread under its lock) and context length: sources are shortened until the prompt and
    the answer fit, rather than the model reading past its positions."""

    tokenizer: object
    context_tokens: int
    min_source_chars: int = 40  # below this a source says too little to be worth quoting

    @classmethod
    def for_model(cls, model: str | dict) -> ContextFit | None:
        """For a models:/ URI or HF dir; None for an endpoint (its server enforces limits)."""
        if isinstance(model, dict) or str(model).startswith(("http://", "https://")):
            return None
        from transformers import AutoConfig

        from infra.registry import model_dir
        from pipelines.finetune import load_hf_tokenizer

        path = model_dir(model)
        positions = getattr(AutoConfig.from_pretrained(str(path), local_files_only=True),
                            "max_position_embeddings", None)
        return cls(load_hf_tokenizer(path), positions) if positions else None

    def tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])


def answer_instruction(question: str, sources: Sequence[Source], features: dict | None = None,
                       max_source_chars: int = 1200) -> str:
    """The instruction the answering model reads: the task, the question, each source and the
    user's features, all quoted as data."""
    parts = [ANSWER_TASK, quote_block(question, "question")]
    parts += [quote_block(s.text[:max_source_chars], source_label(s.source_id)) for s in sources]
    if features:
        parts.append(quote_block(features_text(features), "user features"))
    return "\n\n".join(parts)


def features_text(features: dict) -> str:
    """The features as the model reads them: for the default travel spec one short line for
    the user and one per hotel (every number an answer quotes, nothing else); any other
    spec's output as JSON."""
    user, hotels = features.get("user_preferences"), features.get("hotels")
    if not isinstance(user, dict) or not isinstance(hotels, list) or \
            any("price" not in h for h in hotels):
        return json.dumps(features, sort_keys=True, default=str)
    lines = [f"user {user['user_id']}: budget {user['avg_budget']:.0f} EUR per night; prefers "
             f"{user['hotel_preference']} hotels in {user['preferred_city']}; party of "
             f"{user['party_size']}"]
    for hotel in hotels:
        price = hotel["price"]
        verdict = "within budget" if price["within_budget"] else "over budget"
        lines.append(f"hotel:{hotel['hotel_id']} {hotel['name']}, {hotel['neighbourhood']}, "
                     f"{hotel['city']}: {price['price_per_night']:.2f} EUR per night, "
                     f"{price['total_price']:.2f} EUR for {price['nights']} nights, {verdict}")
    return "\n".join(lines)


def answer_prompt(question: str, sources: Sequence[Source], features: dict | None = None,
                  max_source_chars: int = 1200) -> str:
    return prompt_of(answer_instruction(question, sources, features, max_source_chars))


def fitted_instruction(question: str, sources: Sequence[Source], features: dict | None,
                       max_source_chars: int, fit: ContextFit | None, reserve: int) -> str:
    """The instruction with each source cut shorter (by a quarter at a time) until its prompt
    and ``reserve`` answer tokens fit ``fit``'s context; every source stays quoted. The chain
    and genai-rag's training pairs both use it, so the model learns the prompts it gets."""
    chars = max_source_chars
    instruction = answer_instruction(question, sources, features, chars)
    if fit is None:
        return instruction
    while fit.tokens(prompt_of(instruction)) > fit.context_tokens - reserve:
        if chars <= fit.min_source_chars:
            raise RagInputError(
                f"question: with {len(sources)} sources the prompt does not fit the answering "
                f"model's {fit.context_tokens} positions ({reserve} kept for the answer); ask "
                "a shorter question or lower k")
        chars = max(fit.min_source_chars, chars * 3 // 4)
        instruction = answer_instruction(question, sources, features, chars)
    return instruction


def cited_ids(answer: str, sources: Sequence[str]) -> list[str]:
    """Source ids the answer cites in [brackets], in order, once each; only ids that were
    retrieved count (a model inventing an id cites nothing)."""
    allowed, cited = set(sources), []
    for match in CITATION.finditer(answer):
        for part in match.group(1).split(","):
            candidate = part.strip()
            if candidate in allowed and candidate not in cited:
                cited.append(candidate)
    return cited


def check_question(question: str, limit: int) -> str:
    question = (question or "").strip()
    if not question:
        raise RagInputError("question: empty; ask something")
    if len(question) > limit:
        raise RagInputError(f"question: {len(question)} characters, more than the limit of "
                            f"{limit}; shorten it")
    return question


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A question made ready for the model: its prompt and what it was built from."""

    question: str
    prompt: str
    sources: list[str]  # retrieved source ids in rank order, once each
    features: dict | None
    timings_ms: dict[str, float] = field(default_factory=dict)


class RagChain:
    """Answers questions over one pinned version of one chunk table.

    ``store`` is an ``infra.vectors.ChunkStore``, ``embedder`` a ``pipelines.rag.Embedder``,
    ``features`` a callable (user_id, source ids) -> dict (``pipelines.features``), or None.
    ``fit`` (a ContextFit) keeps prompts within the answering model's context. The embedder
    and tokenizer are not thread-safe: one lock serialises them (servers call ``prepare``
    from a thread pool)."""

    def __init__(self, store, embedder, llm: LLM | None, config: AnswerConfig,
                 version: int | None = None,
                 features: Callable[[str, list[str], dict], dict] | None = None,
                 model_id: str = "", fit: ContextFit | None = None):
        self.store, self.embedder, self.llm, self.config = store, embedder, llm, config
        self.model_id = model_id  # what answers are attributed to
        self.fit = fit
        self.version = store.version if version is None else version
        self.features = features
        self._lock = threading.Lock()

    def retrieve(self, question: str, k: int | None = None) -> list:
        """The top-k hits of the pinned version (several chunks may share a source)."""
        with self._lock:
            vector = self.embedder.embed_query(question)
            return self.store.search(question, vector, k or self.config.k,
                                     self.config.retriever, version=self.version)

    def prepare(self, question: str, user_id: str | None = None,
                request: dict | None = None) -> Prepared:
        question = check_question(question, self.config.max_question_chars)
        started = time.perf_counter()
        hits = self.retrieve(question)
        retrieved = time.perf_counter()
        sources = list(dict.fromkeys(hit.source_id for hit in hits))
        features = None
        if user_id is not None:
            if self.features is None:
                raise RagInputError("user_id: this chain has no feature store configured")
            features = self.features(user_id, sources, {"nights": self.config.nights,
                                                        "season": self.config.season,
                                                        **(request or {})})
        looked_up = time.perf_counter()
        quoted = [Source(hit.source_id, hit.text) for hit in hits]
        prompt = self.fitted_prompt(question, quoted, features)
        return Prepared(question, prompt, sources, features,
                        {"retrieve_ms": 1000 * (retrieved - started),
                         "features_ms": 1000 * (looked_up - retrieved)})

    def fitted_prompt(self, question: str, sources: list[Source], features: dict | None) -> str:
        """The prompt within the answering model's context (``fitted_instruction``)."""
        with self._lock:  # the fit's tokenizer is not thread-safe
            return prompt_of(fitted_instruction(question, sources, features,
                                                self.config.max_source_chars, self.fit,
                                                self.config.max_new_tokens))

    def generation_params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=self.config.max_new_tokens, temperature=0.0,
                                stop=[END_MARKER, "\n\n###"])

    def finish(self, prepared: Prepared, text: str, generate_ms: float) -> dict:
        answer = text.strip()
        timings = {**prepared.timings_ms, "generate_ms": generate_ms}
        timings["total_ms"] = sum(timings.values())
        log.info("answered in %.0f ms (retrieve %.0f, features %.0f, generate %.0f)",
                 timings["total_ms"], timings["retrieve_ms"], timings["features_ms"],
                 generate_ms)
        return {"answer": answer, "sources": prepared.sources, "model": self.model_id,
                "cited": cited_ids(answer, prepared.sources), "features": prepared.features,
                "table_version": self.version, "latency_ms": timings}

    def answer(self, question: str, user_id: str | None = None,
               request: dict | None = None) -> dict:
        if self.llm is None:
            raise RagInputError("this chain has no answering model configured")
        prepared = self.prepare(question, user_id, request)
        started = time.perf_counter()
        text = self.llm.generate([prepared.prompt], self.generation_params())[0]
        return self.finish(prepared, text, 1000 * (time.perf_counter() - started))


# ---------------------------------------------------------------------------------------------
# genai-rag's training pairs: a rule teacher over the docstring corpus
# ---------------------------------------------------------------------------------------------


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


def answer_training_pairs(questions: Sequence[tuple[str, str]], chunks_by_source: dict,
                          k: int = 4, unanswerable: float = 0.15, seed: int = 0,
                          max_source_chars: int = 1200, fit: ContextFit | None = None,
                          reserve: int = 0) -> list[tuple[str, str]]:
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
        return (f"{best['name']} in {best['neighbourhood']}, {best['city']}: "
                f"{price['price_per_night']:.2f} EUR per night, {price['total_price']:.2f} EUR "
                f"for {price['nights']} nights, within your budget of {budget:.0f} EUR per "
                f"night [hotel:{best['hotel_id']}].")
    cheapest = min(hotels, key=lambda h: h["price"]["price_per_night"])
    return (f"None of these hotels is within your budget of {budget:.0f} EUR per night; the "
            f"cheapest is {cheapest['name']} at {cheapest['price']['price_per_night']:.2f} EUR "
            f"per night [hotel:{cheapest['hotel_id']}].")


HOTEL_QUESTIONS = ("Which hotel suits me in {city} for {nights} nights?",
                   "Where should I stay in {city}?",
                   "Find me a {kind} hotel in {city} within my budget.",
                   "Is there a hotel in {city} I can afford for {nights} nights?",
                   "Which hotel fits my budget for a trip to {city}?")


def hotel_training_pairs(config, n: int, k: int, seed: int = 0,
                         max_source_chars: int = 1200, fit: ContextFit | None = None,
                         reserve: int = 0) -> list[tuple[str, str]]:
    """(instruction, response) pairs for the travel assistant: a user asks about a city;
    the sources are k generated hotel descriptions (mostly of that city, as retrieval finds
    them); the features are what the chain's lookups return for them (the generator's rows
    in an in-memory online store); the teacher picks a hotel within budget."""
    from pipelines import features as feature_store

    rng = random.Random(seed)
    store = generated_feature_store(config)
    users = feature_store.generate_user_preferences(config)
    hotels = feature_store.generate_hotels(config)
    texts = dict(feature_store.hotel_descriptions(config))
    pairs = []
    for _ in range(n):
        user, nights = rng.choice(users), rng.randint(1, 7)
        city = user["preferred_city"] if rng.random() < 0.7 else rng.choice(config.cities)
        local = [h for h in hotels if h["city"] == city]
        picked = rng.sample(local, min(len(local), k))
        others = [h for h in hotels if h not in picked]
        picked += rng.sample(others, k - len(picked))
        request = {"nights": nights, "season": rng.choice(["low", "shoulder", "high"])}
        features = feature_store.request_features(store, user["user_id"],
                                                  [h["hotel_id"] for h in picked], request)
        question = rng.choice(HOTEL_QUESTIONS).format(city=city, nights=nights,
                                                      kind=user["hotel_preference"])
        sources = [Source(f"hotel:{h['hotel_id']}", texts[f"hotel:{h['hotel_id']}"])
                   for h in picked]
        instruction = _fitted_or_none(question, sources, features, max_source_chars, fit,
                                      reserve)
        if instruction is not None:
            pairs.append((instruction, teacher_hotel_answer(features)))
    return pairs


def generated_feature_store(config):
    """The generator's users and hotels in an in-memory online store: training pairs see
    features exactly as the chain's lookups return them."""
    from pipelines import features as feature_store

    store = feature_store.OnlineStore(":memory:")
    for spec, rows in ((feature_store.USER_PREFERENCES,
                        feature_store.generate_user_preferences(config)),
                       (feature_store.HOTELS, feature_store.generate_hotels(config))):
        store.apply(spec, [feature_store.Change(row) for row in rows], source="generator",
                    table_id="generated", version=0, full=True)
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


def _distractors(target_id: str, by_module: dict, all_ids: list[str], n: int,
                 rng: random.Random, exclude: Sequence[str] = ()) -> list[str]:
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


# ---------------------------------------------------------------------------------------------
# Opening a chain, training pairs for an index, reports
# ---------------------------------------------------------------------------------------------


def open_chain(index, answer: AnswerConfig, db_dir, version: int | None = None,
               llm: LLM | None = None, with_features: bool = True,
               load_model: bool = True) -> RagChain:
    """The chain over an index config's table (at ``version``, else its latest), with the
    answering model of ``answer.model`` (unless ``llm`` is given; ``load_model=False``: a
    server generates through its own batcher, and ``answer.model`` names the served model,
    whose tokenizer fits prompts to its context) and, when the index holds hotels, the travel
    features from the online store."""
    from infra.llm import load_llm
    from pipelines import rag_index

    embedder = rag_index.load_embedder(index)
    store = rag_index.open_store(db_dir, index, embedder, must_exist=True)
    model_id = str(answer.model) if llm is None else getattr(llm, "model_dir", repr(llm))
    if llm is None and load_model:
        llm = load_llm(answer.model)
    features = travel_features() if with_features and index.hotels else None
    return RagChain(store, embedder, llm, answer, version=version, features=features,
                    model_id=model_id, fit=ContextFit.for_model(answer.model))


def travel_features(store_path=None) -> Callable[[str, list[str], dict], dict]:
    """(user id, retrieved source ids, request) -> the user's preferences, and for each
    retrieved hotel its facts and the on-demand price (pipelines.features, read from the
    online store the sync flow keeps fresh)."""
    from pipelines import features

    spec, store = features.default_feature_spec(), features.OnlineStore(store_path)

    def lookup(user_id: str, sources: list[str], request: dict) -> dict:
        # a hotel the index still describes but the feature tables no longer hold (deleted
        # since the last build) gets no features; an unknown user is still an error
        wanted = features.hotel_ids_from_sources(sources)
        held = store.get_many(features.HOTELS.name, wanted) if wanted else {}
        return features.request_features(store, user_id, [h for h in wanted if h in held],
                                         request, spec)

    return lookup


def training_pairs_for_index(index, questions: int, k: int, max_source_chars: int = 1200,
                             seed: int = 0, fit: ContextFit | None = None,
                             reserve: int = 0) -> list[tuple[str, str]]:
    """genai-rag's pairs over the index config's own documents: template questions of the
    evaluation module (a question never names its target), each target's first chunk among
    distractors, the rule teacher's cited answer; plus, when the index holds hotels, travel
    questions with the user's features (a share ``HOTEL_SHARE``), shuffled together. With
    ``fit`` (the base's tokenizer and the training length), sources are shortened exactly as
    the chain will shorten them, ``reserve`` tokens kept for the answer."""
    from pipelines import rag_eval, rag_index
    from pipelines.rag import chunk_documents

    documents, _ = rag_index.index_documents(index)
    embedder = rag_index.load_embedder(index)
    chunks = chunk_documents(documents, index.chunking, embedder.tokenizer)
    by_source: dict[str, list] = {}
    for chunk in chunks:
        by_source.setdefault(chunk.source_id, []).append(chunk)
    travel = round(questions * HOTEL_SHARE) if index.hotels is not None else 0
    generated = rag_eval.template_questions(documents, n=questions - travel, seed=seed)
    targets = [(q.question, q.expected_source_ids[0]) for q in generated]
    pairs = answer_training_pairs(targets, by_source, k=k, seed=seed,
                                  max_source_chars=max_source_chars, fit=fit, reserve=reserve)
    if travel:
        pairs += hotel_training_pairs(index.hotels, travel, k, seed, max_source_chars, fit,
                                      reserve)
    if not pairs:
        raise RagInputError(f"genai-rag: no training prompt with {k} sources fits "
                            f"{fit.context_tokens if fit else '?'} tokens; raise the "
                            "fine-tuning max_len or lower answer.k")
    return random.Random(seed).sample(pairs, len(pairs))


def latency_summary(answers: list[dict]) -> dict:
    """Median per-step latency (ms) over answers, for MLflow metrics."""
    import statistics

    steps = answers[0]["latency_ms"] if answers else {}
    return {f"{step}_p50": statistics.median(a["latency_ms"][step] for a in answers)
            for step in steps}


def answers_markdown(answers: list[dict]) -> str:
    lines = ["# RAG answers", "", "| question | answer | sources | cited | ms |",
             "|---|---|---|---|---|"]
    for a in answers:
        cells = [a["question"], a["answer"], ", ".join(a["sources"]), ", ".join(a["cited"]),
                 f"{a['latency_ms']['total_ms']:.0f}"]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells)
                     + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Retriever evaluation over an index: eval sets and source-id retrievers
# ---------------------------------------------------------------------------------------------


class EvalQuestionsConfig(BaseModel):
    """Which questions a retriever is scored on."""

    model_config = ConfigDict(extra="forbid")

    hand_written: bool = True  # the repository's questions about the default corpus
    template: int = Field(200, ge=0)  # questions generated from the corpus's docstrings
    template_seed: int = 0  # which ones
    files: list[str] = Field(default_factory=list)  # CSV/JSONL question files of your own


def eval_set_for(index, questions: EvalQuestionsConfig):
    """The eval set of ``questions`` over the index config's documents. Hand-written
    questions whose expected documents are not in this corpus are left out (counted in the
    set's name) and expected ids outside it dropped, as a capped demo corpus holds only part
    of the packages."""
    from pipelines import rag_eval, rag_index

    documents, _ = rag_index.index_documents(index)
    known = {d.source_id for d in documents}
    sets = []
    if questions.hand_written:
        hand = rag_eval.hand_written_questions()
        kept = tuple(q._replace(expected_source_ids=tuple(i for i in q.expected_source_ids
                                                          if i in known))
                     for q in hand if known.intersection(q.expected_source_ids))
        sets.append(rag_eval.EvalSet(f"hand-written ({len(kept)} of {len(hand)})", kept))
    if questions.template:
        sets.append(rag_eval.template_questions(documents, n=questions.template,
                                                seed=questions.template_seed))
    sets += [rag_eval.load_eval_set(path) for path in questions.files]
    if not sets:
        raise RagInputError("questions: no eval set (hand_written off, template 0, no files)")
    return rag_eval.EvalSet.combine(" + ".join(s.name for s in sets), *sets)


def with_chunk_size(index, size: int):
    """The index config at another chunk size (overlap an eighth of it)."""
    chunking = index.chunking.model_copy(update={"size": size, "overlap": size // 8})
    return index.model_copy(update={"chunking": chunking})


def source_retriever(store, embedder, retriever: str, version: int,
                     chunks_per_source: int = 3) -> Callable[[str, int], list[str]]:
    """``retrieve(question, k)``: the first k distinct source ids of the pinned version.
    Several chunks can share a source, so more chunks than k are fetched."""
    def retrieve(question: str, k: int) -> list[str]:
        hits = store.search(question, embedder.embed_query(question), k * chunks_per_source,
                            retriever, version=version)
        return list(dict.fromkeys(hit.source_id for hit in hits))[:k]

    return retrieve
