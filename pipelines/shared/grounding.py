"""Grounding: does a model's output state only figures and ids that its input holds?

A cheap check that runs on every output that quotes its input (RAG answers, review
summaries): every number in the output — a price, a count, a size, a year — must occur in
the given text, compared as values (``1,250.00 EUR`` = ``€1250`` = ``1 250``), with the
currency or unit agreeing where both name one; every id cited in [brackets] must be one of
the ids the output was allowed to cite. A figure the input does not hold (a sum the model
did itself, a price from its training data) is ungrounded: the check does not do
arithmetic, so a derived figure is grounded only when the code that built the input
computed it and put it there. What is ungrounded is returned as the spans the output wrote.

Statements that paraphrase their input (a summary's points) are checked in embedding space:
each statement's most similar input sentence, against a similarity threshold fitted on
statements known to be supported or not (:func:`fit_threshold`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR"}
CURRENCY_CODES = ("EUR", "USD", "GBP", "JPY", "CHF", "INR", "CAD", "AUD")
_SYMBOL = "|".join(re.escape(s) for s in CURRENCY_SYMBOLS)
_CODE = "|".join(CURRENCY_CODES)
# 1,234,567.89 | 1 234 (no-break space) | 1.234.567,89 | 12.5 | 1,5 | 3.9.1 (a version,
# compared as written)
_NUMBER = (
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?"
    r"|\d{1,3}(?:\.\d{3}){2,}(?:,\d+)?"
    r"|\d{1,3}(?:[\u00a0\u2009\u202f]\d{3})+(?:[.,]\d+)?"  # no-break and thin spaces
    r"|\d+(?:\.\d+){2,}"
    r"|\d+(?:[.,]\d+)?"
)
FIGURE = re.compile(
    rf"(?P<pre>(?:{_SYMBOL})\s?|\b(?:{_CODE})\s)?"
    # not part of a word or an identifier: h12, log_2, py:a.3, gpt-4
    rf"(?<![A-Za-z_:.\d])(?<![A-Za-z]-)(?P<number>{_NUMBER})"
    rf"(?!\d)(?!(?!(?:{_CODE})\b)[A-Za-z_]\w)"  # nor the start of one: 3rd, 10am (not 5EUR)
    rf"(?P<post>\s?%|\s?(?:{_SYMBOL})(?!\s?\d)|\s?(?:{_CODE})\b)?"
)
URL = re.compile(r"\bhttps?://\S+")  # a link's digits are not figures
LIST_MARKER = re.compile(r"^\s*\d{1,2}[.)]\s", re.M)  # "1. " at a line's start: not a figure
BRACKETED = re.compile(r"\[([^\[\]\n]{1,300})\](?!\()")  # [id] or [a, b]; not [text](link)


@dataclass(frozen=True)
class Figure:
    span: str  # as written
    value: str  # normalised: 1,250.00 -> 1250
    unit: str | None  # EUR, USD, %, ... when written beside it


@dataclass(frozen=True)
class Grounding:
    grounded: bool
    ungrounded_spans: list[str] = field(default_factory=list)
    figures_checked: int = 0
    ids_checked: int = 0

    def as_dict(self) -> dict:
        return {
            "grounded": self.grounded,
            "ungrounded_spans": list(self.ungrounded_spans),
            "figures_checked": self.figures_checked,
            "ids_checked": self.ids_checked,
        }


def figures(text: str) -> list[Figure]:
    """Every figure in ``text`` outside [bracketed ids], links and list markers, in order."""
    text = LIST_MARKER.sub(" ", BRACKETED.sub(" ", URL.sub(" ", text)))
    found = []
    for match in FIGURE.finditer(text):
        value = normalised(match.group("number"))
        if value is not None:
            unit = _unit(match.group("pre")) or _unit(match.group("post"))
            found.append(Figure(match.group(0).strip(), value, unit))
    return found


def normalised(number: str) -> str | None:
    """The number as a canonical decimal string; a version (two dots or more) as written."""
    compact = re.sub(r"[\u00a0\u2009\u202f]", "", number)
    if re.fullmatch(r"\d+(?:\.\d+){2,}", compact):
        return compact  # 3.9.1
    if re.fullmatch(r"\d{1,3}(?:\.\d{3}){2,}(?:,\d+)?", compact):  # 1.234.567,89
        compact = compact.replace(".", "").replace(",", ".")
    elif re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", compact):  # 1,234.5
        compact = compact.replace(",", "")
    else:  # 12,5: a decimal comma
        compact = compact.replace(",", ".")
    try:
        value = Decimal(compact)
    except InvalidOperation:
        return None
    return format(value.normalize(), "f") if value else "0"


def _unit(text: str | None) -> str | None:
    text = (text or "").strip()
    if not text:
        return None
    return CURRENCY_SYMBOLS.get(text, text.upper())


def bracketed_ids(text: str) -> list[str]:
    """Every id the text cites in [brackets] ([a] and [a, b]), in order, repeats kept."""
    return [
        part.strip()
        for match in BRACKETED.finditer(text)
        for part in match.group(1).split(",")
        if part.strip()
    ]


def ungrounded_figures(output: str, given: Iterable[str]) -> tuple[list[str], int]:
    """(the output's figures that the given texts do not hold, how many were checked)."""
    held: dict[str, set[str | None]] = {}
    for text in given:
        for figure in figures(text):
            held.setdefault(figure.value, set()).add(figure.unit)
    checked = figures(output)
    missing = [f.span for f in checked if not _held(f, held)]
    return missing, len(checked)


def _held(figure: Figure, held: dict[str, set[str | None]]) -> bool:
    units = held.get(figure.value)
    if units is None:
        return False
    # units agree where both name one: 120 EUR is not grounded by "120 USD"
    return figure.unit is None or None in units or figure.unit in units


def check_grounding(
    output: str, given: Sequence[str], citable: Collection[str] | None = None
) -> Grounding:
    """Figures of ``output`` against ``given``; with ``citable``, every [bracketed] id of
    ``output`` against it as well."""
    missing, figures_checked = ungrounded_figures(output, given)
    cited = bracketed_ids(output) if citable is not None else []
    allowed = set(citable or ())
    missing += [f"[{c}]" for c in dict.fromkeys(cited) if c not in allowed]
    return Grounding(not missing, missing, figures_checked, len(cited))


# --- statements supported by sentences (embeddings) -------------------------------------------

SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+|\s*\n+\s*")
# a vector per text, unit length (pipelines.shared.embedder.Embedder.embed)
Embed = Callable[[Sequence[str]], "np.ndarray"]


def sentences(text: str) -> list[str]:
    """``text`` cut at sentence ends and line breaks, each piece stripped, empties dropped."""
    return [s.strip() for s in SENTENCE_BREAK.split(text or "") if s and s.strip()]


def best_support(
    statements: Sequence[str], candidates: Sequence[str], embed: Embed
) -> list[tuple[float, str | None]]:
    """For each statement, (cosine, sentence) of the candidate sentence most like it in
    embedding space; (0.0, None) when there are no candidates."""
    if not statements:
        return []
    if not candidates:
        return [(0.0, None)] * len(statements)
    vectors = embed([*statements, *candidates])
    similarity = vectors[: len(statements)] @ vectors[len(statements) :].T
    best = similarity.argmax(axis=1)
    return [(float(similarity[i, j]), candidates[j]) for i, j in enumerate(best)]


def fit_threshold(supported: Sequence[float], unsupported: Sequence[float]) -> dict:
    """The similarity cut that best separates statements known to be supported from ones
    known not to be (highest balanced accuracy, the lower cut on ties): ``threshold``,
    ``balanced_accuracy`` and the counts it was fitted on."""
    if not supported or not unsupported:
        raise ValueError("fit_threshold needs supported and unsupported examples")
    best = (-1.0, 0.0)
    for cut in sorted({*supported, *unsupported}):
        hit = sum(s >= cut for s in supported) / len(supported)
        reject = sum(u < cut for u in unsupported) / len(unsupported)
        accuracy = (hit + reject) / 2
        if accuracy > best[0]:
            best = (accuracy, cut)
    return {
        "threshold": round(best[1], 4),
        "balanced_accuracy": round(best[0], 4),
        "supported": len(supported),
        "unsupported": len(unsupported),
    }
