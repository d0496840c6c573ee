"""Structured output and quoting for every LLM client: a template filled field by field, so the
output parses by construction whatever the model says (each field's prefix is written by us,
the model writes only the value, up to the field's stop), and data quoted into prompts so that
it can neither close its own block nor open a fake one."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from infra.llm import LLM, GenerationParams, cut_at_stop


@dataclasses.dataclass(frozen=True)
class Field:
    """One template field: ``prefix`` is written, then the model's value up to ``stop``.
    ``stop[0]`` is the terminator written after the value, so the text parses back."""

    name: str
    prefix: str  # e.g. "Sentiment:"
    stop: list[str] = dataclasses.field(default_factory=lambda: ["\n"])
    max_new_tokens: int = 64  # tokens for this field's value, at most
    joiner: str = ""  # written between prefix and value, never generated: with prefix "Name:"
    # and joiner " ", the model continues "Name:" itself, as its training text did (a prompt
    # ending in a bare space splits the " word" token it learned)

    def __post_init__(self):
        if not self.stop or not all(self.stop):
            raise ValueError(f"field {self.name!r}: stop needs at least one non-empty string")


def _clean_value(value: str, field: Field) -> str:
    """Strip ``value`` and cut it until its terminator is the first stop that parsing
    finds (a value ending in "a" before a stop "aa" would otherwise parse shorter)."""
    value = value.strip()
    while True:
        cut = cut_at_stop(value + field.stop[0], field.stop).strip()
        if cut == value:
            return value
        value = cut


def render_fields(fields: Sequence[Field], values: dict[str, str]) -> str:
    """The filled template as text: each field's prefix, value and terminator."""
    return "".join(f"{f.prefix}{f.joiner}{values.get(f.name, '')}{f.stop[0]}" for f in fields)


def parse_fields(fields: Sequence[Field], text: str) -> dict[str, str]:
    """The values in ``text`` written as ``render_fields`` writes them (a missing last
    terminator is tolerated); raises ValueError naming the field whose prefix is missing."""
    values, pos = {}, 0
    for f in fields:
        if not text.startswith(f.prefix, pos):
            raise ValueError(
                f"field {f.name!r}: expected {f.prefix!r} at character {pos}, "
                f"found {text[pos : pos + 40]!r}"
            )
        pos += len(f.prefix)
        end = pos + len(cut_at_stop(text[pos:], f.stop))
        values[f.name] = text[pos:end].strip()
        # Prefer the terminator render_fields writes; else whichever stop matched here.
        matched = [s for s in f.stop if text.startswith(s, end)]
        pos = end + (len(f.stop[0]) if f.stop[0] in matched else max(map(len, matched), default=0))
    return values


def generate_fields(
    llm: LLM, prompts: list[str], fields: list[Field], params: GenerationParams | None = None
) -> list[dict[str, str]]:
    """Fill ``fields`` for every prompt, one field at a time, batched across prompts.
    ``params`` sets sampling (temperature, top_p, seed); each field sets its own stop and
    max_new_tokens. Every field is present in every result (possibly empty)."""
    return generate_templates(llm, prompts, [fields] * len(prompts), params)


def generate_templates(
    llm: LLM,
    prompts: list[str],
    templates: list[list[Field]],
    params: GenerationParams | None = None,
) -> list[dict[str, str]]:
    """``generate_fields`` with a template per prompt (say, one field per column of each
    table): step i fills the i-th field of every template that has one, in one model call
    per distinct (stop, max_new_tokens)."""
    if len(templates) != len(prompts):
        raise ValueError(f"{len(templates)} templates for {len(prompts)} prompts")
    params = params or GenerationParams()
    results: list[dict[str, str]] = [{} for _ in prompts]
    for i in range(max(map(len, templates), default=0)):
        groups: dict[tuple, list[int]] = {}
        for j, fields in enumerate(templates):
            if i < len(fields):
                groups.setdefault((tuple(fields[i].stop), fields[i].max_new_tokens), []).append(j)
        for (stop, max_new_tokens), members in groups.items():
            field_params = params.model_copy(
                update={"max_new_tokens": max_new_tokens, "stop": list(stop)}
            )
            texts = {
                j: prompts[j]
                + render_fields(templates[j][:i], results[j])
                + templates[j][i].prefix
                for j in members
            }
            # A template that has grown to the model's positions stops there: its remaining
            # fields stay unfilled rather than generated past what the model was trained on.
            members = [j for j in members if fits_context(llm, texts[j])]
            if not members:
                continue
            completions = llm.generate([texts[j] for j in members], field_params)
            for j, completion in zip(members, completions, strict=False):
                field = templates[j][i]
                results[j][field.name] = _clean_value(cut_at_stop(completion, field.stop), field)
    return results


def fits_context(llm: LLM, prompt: str) -> bool:
    """Whether the prompt leaves the model a position to answer in (always, for a model that
    does not say how many positions it has or how it counts them, like an endpoint)."""
    limit, count = getattr(llm, "context_length", None), getattr(llm, "count_tokens", None)
    return limit is None or count is None or count(prompt) < limit


# ------------------------------------------------------------------- quoting data in prompts

QUOTE_OPEN, QUOTE_CLOSE = "<<<", ">>>"


def quote_block(text: str, label: str) -> str:
    """``text`` quoted as data: ``<<<label`` … ``>>>``. Every run of three or more ``<`` or
    ``>`` inside the text is spaced out first (``>>>>`` -> ``> > > >``), so quoted text can
    neither close its block nor open a fake one, whatever it says."""
    safe = _MARKER_RUN.sub(lambda m: " ".join(m.group()), text)
    return f"{QUOTE_OPEN}{label}\n{safe}\n{QUOTE_CLOSE}"


_MARKER_RUN = re.compile(r"<{3,}|>{3,}")
