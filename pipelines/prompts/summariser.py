"""The summariser: answers groups of reviews with one model — clip long reviews, chunk each
group to the context budget, fill the answer fields of every chunk's prompt in one batch,
parse, and merge a group's chunks — and the answer cache that keeps finished groups from
being asked again after a failure."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.files import write_text_atomic
from infra.llm import GenerationParams, LLMSpec, PromptTooLongError
from infra.llm_fields import generate_fields, render_fields
from pipelines.prompts.summary_prompt import (
    SUMMARY_FIELDS,
    Group,
    SummaryParseError,
    group_prompt,
    merge_partials,
    parse_summary,
    quote_reviews,
)
from pipelines.prompts.windows import WINDOW_PATTERN


class SummaryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: LLMSpec = "models:/genai-reviews@champion"  # models:/ URI, HF dir, or endpoint
    # ("http://host/v1#model" or {"base_url", "model", …}) as infra.llm.load_llm takes it
    prompt: str | None = None  # prompts:/<name>/<version|@alias>; None: the code's template,
    # registered as PROMPT_NAME (a new version only when the text changed)
    method: Literal["extractive", "llm"] = "extractive"  # extractive: the reviews' own
    # sentences, no model (pipelines.prompts.extractive; better grounded on real reviews,
    # docs/BENCHMARKS.md); llm: ``model`` answers the prompt
    window: str = Field("90d", pattern=WINDOW_PATTERN)  # all | day | week | month | <N>d
    # (rolling, back from the newest review): pipelines.prompts.windows
    min_group_reviews: int = Field(3, ge=1)  # fewer reviews in a group: counts only, no summary
    support_threshold: float | None = Field(None, ge=0, le=1)  # cosine a summary statement
    # needs to a review sentence; None: the fitted one (data/support_threshold.json)
    trace_first_groups: int = Field(20, ge=0)  # every model call of the first N groups traced
    trace_sample: float = Field(0.05, ge=0, le=1)  # and this share of the others (by group key)
    context_tokens: int = Field(1536, ge=64)  # prompt tokens per model call at most;
    # a group's reviews beyond it are map-reduced
    max_reviews_per_chunk: int | None = Field(None, ge=1)  # reviews per model call at
    # most (None: as many as context_tokens holds); match the task model's training prompts
    review_tokens: int = Field(384, ge=16)  # one review's text at most, in tokens
    # positions kept for the answer after the prompt; None = the fields' worst case (every
    # field at its max_new_tokens). A model with few positions keeps less (its answers are
    # short): an answer that runs longer stops at the last position, its later fields empty.
    answer_tokens: int | None = Field(None, ge=16)
    groups_per_batch: int = Field(16, ge=1)  # groups answered (and cached) together
    tokens_per_batch: int = Field(16384, ge=256)  # padded tokens per forward pass
    temperature: float = Field(0.0, ge=0.0)  # 0: greedy, reproducible
    seed: int = 0
    partitions: int | None = Field(None, ge=1)  # None: Spark's default parallelism


MIN_REVIEW_BUDGET = 32  # prompt tokens for reviews, at least: below it no review says enough


def chunk_reviews(
    reviews: Sequence[dict],
    budget: int,
    count_tokens: Callable[[str], int],
    max_reviews: int | None = None,
) -> list[list[dict]]:
    """Consecutive reviews packed greedily so each chunk's quoted text fits ``budget``
    tokens (a lone review over the budget still gets a chunk of its own) and holds at most
    ``max_reviews`` reviews."""
    chunks: list[list[dict]] = [[]]
    used = 0
    for review in reviews:
        cost = count_tokens(quote_reviews([review])) + 1
        if chunks[-1] and (used + cost > budget or len(chunks[-1]) == max_reviews):
            chunks.append([])
            used = 0
        chunks[-1].append(review)
        used += cost
    return [c for c in chunks if c]


def clip_review(review: dict, max_tokens: int, tokenizer) -> dict:
    """A review whose text exceeds ``max_tokens`` is cut there and marked as cut, so one
    essay cannot crowd out a group's other reviews."""
    ids = tokenizer.encode(review["text"], add_special_tokens=False)
    if len(ids) <= max_tokens:
        return review
    return {**review, "text": tokenizer.decode(ids[:max_tokens]).rstrip() + " [cut]"}


@dataclass
class Summariser:
    """Answers groups with one model: chunk, prompt, fill the fields in batches, parse, merge."""

    llm: object  # infra.llm.LLM
    template: Callable[..., str]  # PromptRef.format
    config: SummaryConfig
    tokenizer: object | None = None  # counts tokens for chunking; None: 4 characters a token

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text) // 4 + 1
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_tokens(self) -> int:
        """Prompt tokens per model call: ``context_tokens``, within the model's positions less
        what the answer fields may generate (an endpoint's server enforces its own)."""
        limit = getattr(self.llm, "context_length", None)
        if limit is None:
            return self.config.context_tokens
        return min(self.config.context_tokens, limit - self.answer_tokens())

    def answer_tokens(self) -> int:
        """Positions kept for the answer: ``answer_tokens``, else the fields' worst case."""
        if self.config.answer_tokens is not None:
            return self.config.answer_tokens
        empty = {f.name: "" for f in SUMMARY_FIELDS}
        labels = self.count_tokens(render_fields(SUMMARY_FIELDS, empty))
        return labels + sum(f.max_new_tokens for f in SUMMARY_FIELDS)

    def review_budget(self, group: Group) -> int:
        """Tokens the group's quoted reviews may take in one prompt."""
        allowed = self.prompt_tokens()
        budget = allowed - self.count_tokens(group_prompt(self.template, group, []))
        if budget < MIN_REVIEW_BUDGET:
            raise PromptTooLongError(
                f"summary prompt: the template leaves {budget} of {allowed} prompt tokens for "
                "reviews (the model's positions less the answer's); use a model with more "
                "positions, a shorter prompt template or a smaller summary.answer_tokens"
            )
        return budget

    def fitted_reviews(self, group: Group, budget: int) -> list[dict]:
        """The group's reviews, each clipped so that, quoted alone, it fits ``budget``."""
        if self.tokenizer is None:
            return list(group.reviews)
        fitted = []
        for review in group.reviews:
            quoting = self.count_tokens(quote_reviews([{**review, "text": ""}])) + 8  # [cut]
            tokens = max(8, min(self.config.review_tokens, budget - quoting))
            fitted.append(clip_review(review, tokens, self.tokenizer))
        return fitted

    def summarise(self, groups: Sequence[Group]) -> list[dict]:
        """One answer per group (in order) with its raw text, parse error, tokens, latency."""
        started = time.perf_counter()
        jobs = []  # (group index, chunk reviews, prompt)
        for g, group in enumerate(groups):
            budget = self.review_budget(group)
            reviews = self.fitted_reviews(group, budget)
            for chunk in chunk_reviews(
                reviews, budget, self.count_tokens, self.config.max_reviews_per_chunk
            ):
                jobs.append((g, chunk, group_prompt(self.template, group, chunk)))
        params = GenerationParams(temperature=self.config.temperature, seed=self.config.seed)
        prompted = time.perf_counter()
        filled = generate_fields(
            self.llm, [prompt for _, _, prompt in jobs], SUMMARY_FIELDS, params
        )
        generated = time.perf_counter()
        answers = [
            self._answer(
                group,
                [(j, v) for j, v in zip(jobs, filled, strict=False) if j[0] == g],
                (generated - prompted) / max(len(groups), 1),
            )
            for g, group in enumerate(groups)
        ]
        share = 1000 / max(len(groups), 1)  # each group's share of the batch, in ms
        phases = {
            "prompt_ms": (prompted - started) * share,
            "generate_ms": (generated - prompted) * share,
            "parse_ms": (time.perf_counter() - generated) * share,
        }
        return [{**answer, **phases} for answer in answers]

    def _answer(self, group: Group, parts: list, seconds: float) -> dict:
        raws = [render_fields(SUMMARY_FIELDS, values) for _, values in parts]
        answer = {
            "chunks": len(parts),
            "raw": "\n".join(raws),
            "parse_error": None,
            "prompt_tokens": sum(self.count_tokens(job[2]) for job, _ in parts),
            "completion_tokens": sum(self.count_tokens(r) for r in raws),
            "latency_ms": 1000 * seconds,
            "prompt_preview": parts[0][0][2][-2000:] if parts else "",
        }
        try:
            partials = [parse_summary(values, job[1]) for job, values in parts]
        except SummaryParseError as err:
            return {
                **answer,
                "negative_points": None,
                "liked_features": None,
                "value_for_money": None,
                "flagged_review_ids": None,
                "parse_error": str(err),
            }
        return {**answer, **merge_partials(partials, [len(job[1]) for job, _ in parts])}


# --- the answer cache: finished groups are never asked again ----------------------------------


def answer_key(group: Group, model_id: str, prompt_uri: str, config: SummaryConfig) -> str:
    """Everything a group's answer depends on: model, prompt version, settings, reviews."""
    payload = {
        "model": model_id,
        "prompt": prompt_uri,
        "fields": [f.prefix for f in SUMMARY_FIELDS],
        "config": config.model_dump(
            mode="json",
            exclude={
                *("partitions", "model", "prompt", "groups_per_batch", "tokens_per_batch"),
                # applied to answers after the cache: they change no answer
                *("min_group_reviews", "support_threshold", "trace_first_groups"),
                "trace_sample",
            },
        ),
        "group": [group.key, group.window],
        "reviews": [
            (r["review_id"], r["rating"], r.get("title"), r["text"]) for r in group.reviews
        ],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class AnswerCache:
    directory: Path

    def get(self, key: str) -> dict | None:
        path = self.directory / key[:2] / f"{key}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def put(self, key: str, answer: dict) -> None:
        path = self.directory / key[:2] / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(answer))  # a reader sees a whole answer or none


def answer_groups(
    summariser: Summariser,
    groups: Sequence[Group],
    cache: AnswerCache | None,
    model_id: str,
    prompt_uri: str,
) -> Iterator[tuple[Group, dict, bool]]:
    """(group, answer, from_cache) for every group: cached answers first, the rest asked in
    mini-batches of ``groups_per_batch``, each cached as soon as it returns."""
    config = summariser.config
    todo = []
    for group in groups:
        key = answer_key(group, model_id, prompt_uri, config)
        cached = cache.get(key) if cache else None
        if cached is not None:
            yield group, cached, True
        else:
            todo.append((key, group))
    for start in range(0, len(todo), config.groups_per_batch):
        batch = todo[start : start + config.groups_per_batch]
        for (key, group), answer in zip(
            batch, summariser.summarise([g for _, g in batch]), strict=False
        ):
            if cache:
                cache.put(key, answer)
            yield group, answer, False
