"""Review text against the catalogue: the coarse-language rule (a lexicon beside the LLM's
flag), the phrase → aspect matcher that reads which aspect a free-text point names, and the
ranking of counted aspects that summaries and baselines share."""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import cache, lru_cache
from pathlib import Path

from pipelines.prompts.catalogue import ASPECTS

COARSE_WORDS_FILE = Path(__file__).resolve().parent / "data" / "coarse_words.txt"
TOP_POINTS = 3  # a summary names its top three points
# a sentence about price or value, in any product's reviews
MENTIONS_VALUE = re.compile(
    r"\b(?:price[sd]?|pricey|value|worth|money|cost(?:s|ly)?|cheap(?:er)?|expensive|"
    r"overpriced|bargain|deal|paid|pay)\b|[$€£]\s?\d",
    re.IGNORECASE,
)

_TAG = re.compile(r"<[^<>]{0,2000}>")


def readable_text(text: str | None) -> str:
    """Review text as a reader sees it: HTML tags dropped, entities decoded (real reviews
    carry links and &nbsp;), whitespace collapsed."""
    from html import unescape

    return " ".join(unescape(_TAG.sub(" ", text or "")).split())


# ---------------------------------------------------------------------------------------------
# Coarse language: a lexicon rule beside the LLM flag
# ---------------------------------------------------------------------------------------------
# A lexicon word matches only as a whole word (letters or digits on neither side: Scunthorpe
# and class pass), with a common ending (-s, -ed, -ing, -er, -y, -ic, -hole, -head, ...). Each
# letter may repeat (shiiit) or be a look-alike (sh1t, a$$, @ss); letters after the first may
# be masked with * # % (f*ck, f**k, f***ing). Not caught: spaced or dotted spellings
# (f u c k), coarse meaning in innocent words; names like Dick are false positives.

_LOOK_ALIKES = {"a": "@4", "e": "3", "i": "1!", "l": "1", "o": "0", "s": "$5", "t": "7"}
_MASKS = "*#%"
_ENDINGS = (
    "s",
    "es",
    "ed",
    "er",
    "ers",
    "ing",
    "in",
    "y",
    "ies",
    "ic",
    "hole",
    "holes",
    "head",
    "heads",
    "face",
    "bag",
)


def _letter_class(letter: str, maskable: bool) -> str:
    chars = letter + _LOOK_ALIKES.get(letter, "") + (_MASKS if maskable else "")
    return f"[{re.escape(chars)}]+"


def _word_pattern(word: str) -> str:
    return "".join(_letter_class(c, i > 0) for i, c in enumerate(word))


@lru_cache(maxsize=1)
def coarse_pattern() -> re.Pattern:
    words = [
        line.split("#")[0].strip().lower()
        for line in COARSE_WORDS_FILE.read_text(encoding="utf-8").splitlines()
    ]
    words = sorted({w for w in words if w}, key=len, reverse=True)
    endings = "|".join(sorted(_ENDINGS, key=len, reverse=True))
    body = "|".join(_word_pattern(w) for w in words)
    return re.compile(rf"(?<![a-z0-9])(?:{body})(?:{endings})?(?![a-z0-9])", re.IGNORECASE)


def coarse_language_flag(text: str | None) -> bool:
    """True when the text uses a word of the coarse-language lexicon (see above)."""
    return bool(text) and coarse_pattern().search(text) is not None


# ---------------------------------------------------------------------------------------------
# Which aspect a phrase names
# ---------------------------------------------------------------------------------------------


@cache
def aspect_pattern(name: str) -> re.Pattern:
    """The aspect's name or any of its keywords, at the start of a word."""
    aspect = ASPECTS[name]
    starts = sorted({*aspect.keywords, name}, key=len, reverse=True)
    return re.compile(r"(?<![a-z])(?:" + "|".join(map(re.escape, starts)) + ")")


def normalise_phrase(text: str) -> str:
    """Lower case, punctuation to spaces, one space between words."""
    return " ".join(re.sub(r"[^a-z0-9$]+", " ", text.lower()).split())


def aspect_of_phrase(phrase: str) -> str | None:
    """The catalogue aspect a free-text point names: the one whose name and keywords it hits
    most (catalogue order breaks ties); None when it names none."""
    text = normalise_phrase(phrase)
    best, best_hits = None, 0
    for name in ASPECTS:
        hits = len(set(aspect_pattern(name).findall(text)))
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def most_common_aspects(counts: Counter, first_seen: dict[str, tuple] | None = None) -> list[str]:
    """The TOP_POINTS most counted; ties in the order the reviews first mention them
    (``first_seen``), then in catalogue order."""
    order = list(ASPECTS)
    rank = {name: order.index(name) if name in ASPECTS else len(order) for name in counts}
    seen = first_seen or {}
    never = (math.inf, math.inf)
    return sorted(counts, key=lambda a: (-counts[a], seen.get(a, never), rank[a], a))[:TOP_POINTS]
