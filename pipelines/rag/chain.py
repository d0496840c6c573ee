"""The RAG chain: question (+ user id) → top-k chunks of a pinned index version → the user's
features and on-demand prices → a prompt that quotes every retrieved text as data → the LLM
(infra/llm.py) → an answer that cites source ids. The prompt is the fine-tuning stage's Alpaca
template; retrieved text and the question are quoted (``infra.llm_fields.quote_block``), so nothing
inside a block can close it and a document that says "ignore previous instructions" stays a
quoted document.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.llm import LLM, GenerationParams, LLMSpec
from infra.llm_fields import quote_block
from infra.online_store import OnlineStore
from pipelines.rag.feature_spec import default_feature_spec, request_features
from pipelines.rag.feature_tables import HOTELS
from pipelines.rag.travel_data import HOTEL_SOURCE_PREFIX, hotel_ids_from_sources
from pipelines.shared.grounding import bracketed_ids, check_grounding
from pipelines.shared.markdown import md_table
from pipelines.shared.templates import END_MARKER, prompt_of

log = logging.getLogger(__name__)

ANSWER_TASK = (
    "Answer the question using only the quoted sources. After each fact, cite its "
    "source id in square brackets. If the sources do not answer the question, say "
    "so."
)
NO_ANSWER = "The sources do not answer this question."
RETRIEVER = Literal["vector", "fts", "hybrid"]
CHUNKS_PER_LISTED_SOURCE = 3  # chunks searched per listed document (several share one)


class RagInputError(ValueError):
    """A request the chain refuses: names the field and what was expected."""


class AnswerConfig(BaseModel):
    """How a question is answered."""

    model_config = ConfigDict(extra="forbid")

    model: LLMSpec = "models:/genai-rag@champion"  # any models:/ URI, HF dir or endpoint
    retriever: RETRIEVER = "hybrid"  # vector, full-text, or both fused by reciprocal rank
    k: int = Field(4, ge=1, le=20)  # chunks quoted in the prompt
    # distinct documents listed as the answer's sources, in retrieval order: the quoted
    # chunks' documents first, then the next ones retrieved (what a reader checks)
    listed_sources: int = Field(5, ge=1, le=20)
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
        from pipelines.training.hf import load_hf_tokenizer

        path = model_dir(model)
        positions = getattr(
            AutoConfig.from_pretrained(str(path), local_files_only=True),
            "max_position_embeddings",
            None,
        )
        return cls(load_hf_tokenizer(path), positions) if positions else None

    def tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])


def answer_instruction(
    question: str,
    sources: Sequence[Source],
    features: dict | None = None,
    max_source_chars: int = 1200,
) -> str:
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
    if (
        not isinstance(user, dict)
        or not isinstance(hotels, list)
        or any("price" not in h for h in hotels)
    ):
        return json.dumps(features, sort_keys=True, default=str)
    lines = [
        f"user {user['user_id']}: budget {user['avg_budget']:.0f} EUR per night; prefers "
        f"{user['hotel_preference']} hotels in {user['preferred_city']}; party of "
        f"{user['party_size']}"
    ]
    for hotel in hotels:
        price = hotel["price"]
        verdict = "within budget" if price["within_budget"] else "over budget"
        lines.append(
            f"hotel:{hotel['hotel_id']} {hotel['name']}, {hotel['neighbourhood']}, "
            f"{hotel['city']}: {price['price_per_night']:.2f} EUR per night, "
            f"{price['total_price']:.2f} EUR for {price['nights']} nights, {verdict}"
        )
    return "\n".join(lines)


def answer_prompt(
    question: str,
    sources: Sequence[Source],
    features: dict | None = None,
    max_source_chars: int = 1200,
) -> str:
    return prompt_of(answer_instruction(question, sources, features, max_source_chars))


def fitted_instruction(
    question: str,
    sources: Sequence[Source],
    features: dict | None,
    max_source_chars: int,
    fit: ContextFit | None,
    reserve: int,
) -> str:
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
                "a shorter question or lower k"
            )
        chars = max(fit.min_source_chars, chars * 3 // 4)
        instruction = answer_instruction(question, sources, features, chars)
    return instruction


def cited_ids(answer: str, sources: Sequence[str]) -> list[str]:
    """Source ids the answer cites in [brackets], in order, once each; only ids that were
    retrieved count (a model inventing an id cites nothing)."""
    allowed = set(sources)
    return [c for c in dict.fromkeys(bracketed_ids(answer)) if c in allowed]


def citable_ids(sources: Sequence[str], features: dict | None) -> list[str]:
    """What an answer may cite: the retrieved sources and the hotels its features priced."""
    hotels = (features or {}).get("hotels")
    priced = [f"{HOTEL_SOURCE_PREFIX}{h['hotel_id']}" for h in hotels or () if "hotel_id" in h]
    return list(dict.fromkeys([*sources, *priced]))


def answer_grounding(answer: str, prompt: str, sources: Sequence[str], features) -> dict:
    """Every figure of the answer against what its prompt quoted (the sources, the features
    the pricing function computed, the question), every cited id against the citable ones:
    ``grounded`` and ``ungrounded_spans``."""
    checked = check_grounding(answer, [prompt], citable_ids(sources, features))
    return {"grounded": checked.grounded, "ungrounded_spans": checked.ungrounded_spans}


def check_question(question: str, limit: int) -> str:
    question = (question or "").strip()
    if not question:
        raise RagInputError("question: empty; ask something")
    if len(question) > limit:
        raise RagInputError(
            f"question: {len(question)} characters, more than the limit of {limit}; shorten it"
        )
    return question


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A question made ready for the model: its prompt and what it was built from."""

    question: str
    prompt: str
    sources: list[str]  # retrieved source ids in rank order, once each (listed_sources)
    quoted: list[str]  # the quoted chunks' source ids, once each: what the answer may cite
    features: dict | None
    timings_ms: dict[str, float] = field(default_factory=dict)


class RagChain:
    """Answers questions over one pinned version of one chunk table.

    ``store`` is an ``infra.vectors.ChunkStore``, ``embedder`` a
    ``pipelines.shared.embedder.Embedder``, ``features`` a callable (user_id, source ids) -> dict
    (:func:`travel_features`), or None.
    ``fit`` (a ContextFit) keeps prompts within the answering model's context. The embedder
    and tokenizer are not thread-safe: one lock serialises them (servers call ``prepare``
    from a thread pool)."""

    def __init__(
        self,
        store,
        embedder,
        llm: LLM | None,
        config: AnswerConfig,
        version: int | None = None,
        features: Callable[[str, list[str], dict], dict] | None = None,
        model_id: str = "",
        fit: ContextFit | None = None,
    ):
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
            return self.store.search(
                question, vector, k or self.config.k, self.config.retriever, version=self.version
            )

    def listed(self, question: str) -> tuple[list, list[str]]:
        """(the k chunks to quote, the first ``listed_sources`` distinct documents retrieved):
        one search, deep enough that chunks sharing a document still fill the list."""
        depth = max(self.config.k, CHUNKS_PER_LISTED_SOURCE * self.config.listed_sources)
        hits = self.retrieve(question, depth)
        quoted = hits[: self.config.k]
        quoted_ids = list(dict.fromkeys(h.source_id for h in quoted))
        ids = list(dict.fromkeys([*quoted_ids, *(h.source_id for h in hits)]))
        return quoted, ids[: max(self.config.listed_sources, len(quoted_ids))]

    def prepare(
        self, question: str, user_id: str | None = None, request: dict | None = None
    ) -> Prepared:
        question = check_question(question, self.config.max_question_chars)
        started = time.perf_counter()
        hits, sources = self.listed(question)
        retrieved = time.perf_counter()
        quoted_ids = list(dict.fromkeys(hit.source_id for hit in hits))
        features = None
        if user_id is not None:
            if self.features is None:
                raise RagInputError("user_id: this chain has no feature store configured")
            features = self.features(
                user_id,
                quoted_ids,
                {"nights": self.config.nights, "season": self.config.season, **(request or {})},
            )
        looked_up = time.perf_counter()
        quoted = [Source(hit.source_id, hit.text) for hit in hits]
        prompt = self.fitted_prompt(question, quoted, features)
        return Prepared(
            question,
            prompt,
            sources,
            quoted_ids,
            features,
            {
                "retrieve_ms": 1000 * (retrieved - started),
                "features_ms": 1000 * (looked_up - retrieved),
            },
        )

    def fitted_prompt(self, question: str, sources: list[Source], features: dict | None) -> str:
        """The prompt within the answering model's context (``fitted_instruction``)."""
        with self._lock:  # the fit's tokenizer is not thread-safe
            return prompt_of(
                fitted_instruction(
                    question,
                    sources,
                    features,
                    self.config.max_source_chars,
                    self.fit,
                    self.config.max_new_tokens,
                )
            )

    def generation_params(self) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.config.max_new_tokens,
            temperature=0.0,
            stop=[END_MARKER, "\n\n###"],
        )

    def finish(self, prepared: Prepared, text: str, generate_ms: float) -> dict:
        answer = text.strip()
        timings = {**prepared.timings_ms, "generate_ms": generate_ms}
        timings["total_ms"] = sum(timings.values())
        log.info(
            "answered in %.0f ms (retrieve %.0f, features %.0f, generate %.0f)",
            timings["total_ms"],
            timings["retrieve_ms"],
            timings["features_ms"],
            generate_ms,
        )
        grounding = answer_grounding(answer, prepared.prompt, prepared.quoted, prepared.features)
        if not grounding["grounded"]:
            log.info("answer quotes what it was not given: %s", grounding["ungrounded_spans"])
        return {
            "answer": answer,
            **grounding,
            "sources": prepared.sources,
            "model": self.model_id,
            "cited": cited_ids(answer, prepared.quoted),
            "features": prepared.features,
            "index": {"table": self.store.name, "version": self.version},
            "table_version": self.version,
            "latency_ms": timings,
        }

    def answer(
        self, question: str, user_id: str | None = None, request: dict | None = None
    ) -> dict:
        if self.llm is None:
            raise RagInputError("this chain has no answering model configured")
        prepared = self.prepare(question, user_id, request)
        started = time.perf_counter()
        text = self.llm.generate([prepared.prompt], self.generation_params())[0]
        return self.finish(prepared, text, 1000 * (time.perf_counter() - started))


# ---------------------------------------------------------------------------------------------
# Opening a chain, reports
# ---------------------------------------------------------------------------------------------


def open_chain(
    index,
    answer: AnswerConfig,
    db_dir,
    version: int | None = None,
    llm: LLM | None = None,
    with_features: bool = True,
    load_model: bool = True,
) -> RagChain:
    """The chain over an index config's table (at ``version``, else its latest), with the
    answering model of ``answer.model`` (unless ``llm`` is given; ``load_model=False``: a
    server generates through its own batcher, and ``answer.model`` names the served model,
    whose tokenizer fits prompts to its context) and, when the index holds hotels, the travel
    features from the online store."""
    from infra.llm import load_llm
    from infra.redaction import redact
    from pipelines.rag import index as rag_index

    embedder = rag_index.load_embedder(index)
    store = rag_index.open_store(db_dir, index, embedder, must_exist=True)
    model_id = redact(str(answer.model)) if llm is None else getattr(llm, "model_dir", repr(llm))
    if llm is None and load_model:
        llm = load_llm(answer.model)
    features = travel_features() if with_features and index.hotels else None
    return RagChain(
        store,
        embedder,
        llm,
        answer,
        version=version,
        features=features,
        model_id=model_id,
        fit=ContextFit.for_model(answer.model),
    )


def travel_features(store_path=None) -> Callable[[str, list[str], dict], dict]:
    """(user id, retrieved source ids, request) -> the user's preferences, and for each
    retrieved hotel its facts and the on-demand price (the default feature spec, read from the
    online store the sync flow keeps fresh)."""
    spec, store = default_feature_spec(), OnlineStore(store_path)

    def lookup(user_id: str, sources: list[str], request: dict) -> dict:
        # a hotel the index still describes but the feature tables no longer hold (deleted
        # since the last build) gets no features; an unknown user is still an error
        wanted = hotel_ids_from_sources(sources)
        held = store.get_many(HOTELS.name, wanted) if wanted else {}
        return request_features(store, user_id, [h for h in wanted if h in held], request, spec)

    return lookup


def latency_summary(answers: list[dict]) -> dict:
    """Median per-step latency (ms) over answers, for MLflow metrics."""
    import statistics

    steps = answers[0]["latency_ms"] if answers else {}
    return {
        f"{step}_p50": statistics.median(a["latency_ms"][step] for a in answers) for step in steps
    }


def answers_markdown(answers: list[dict]) -> str:
    rows = [
        [
            a["question"],
            a["answer"],
            ", ".join(a["sources"]),
            ", ".join(a["cited"]),
            f"{a['latency_ms']['total_ms']:.0f}",
        ]
        for a in answers
    ]
    return (
        "\n".join(
            [
                "# RAG answers",
                "",
                *md_table(["question", "answer", "sources", "cited", "ms"], rows),
            ]
        )
        + "\n"
    )
