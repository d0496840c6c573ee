"""NAICS 2022 industries and their domain words: the industry a synthetic table belongs to,
what its customers, items and sites are called there, and a table-name prefix from its title.

pipelines/finetune/data/naics_2022.csv is the U.S. Census Bureau's "2-6 digit_2022_Codes.xlsx"
(public domain), reduced to code,title for all 2,125 codes; it is read lazily, once.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

NAICS_FILE = Path(__file__).resolve().parent / "data" / "naics_2022.csv"

# NAICS sectors that span several 2-digit codes: a family is keyed by the sector, not the digits
_SECTOR_OF_DIGITS = {
    "31": "31-33",
    "32": "31-33",
    "33": "31-33",
    "44": "44-45",
    "45": "44-45",
    "48": "48-49",
    "49": "48-49",
}


@dataclass(frozen=True)
class Industry:
    code: str  # 6-digit NAICS code
    title: str
    sector: str  # "62", "31-33", …


def sector_of(code: str) -> str:
    return _SECTOR_OF_DIGITS.get(code[:2], code[:2])


@lru_cache(maxsize=1)
def naics_titles() -> dict[str, str]:
    """code -> title for every NAICS 2022 code (2 to 6 digits; sectors like "31-33" kept)."""
    with NAICS_FILE.open(newline="", encoding="utf-8") as f:
        return {row["code"]: row["title"] for row in csv.DictReader(f)}


@lru_cache(maxsize=1)
def industries_by_sector() -> dict[str, tuple[Industry, ...]]:
    by_sector: dict[str, list[Industry]] = {}
    for code, title in naics_titles().items():
        if len(code) == 6 and code.isdigit():
            by_sector.setdefault(sector_of(code), []).append(
                Industry(code, title, sector_of(code))
            )
    return {s: tuple(v) for s, v in sorted(by_sector.items())}


# What "customer", "item" and "site" are called in each sector (a 3-digit subsector may refine
# it): the column and table names a real schema in that industry would use.
_VOCAB_DEFAULT = {"customer": "customer", "item": "product", "site": "site", "claim": "claim"}
_VOCAB = {
    "11": {"customer": "buyer", "item": "crop", "site": "farm"},
    "21": {"customer": "buyer", "item": "commodity", "site": "mine"},
    "22": {"customer": "ratepayer", "item": "tariff", "site": "substation"},
    "23": {"customer": "client", "item": "material", "site": "jobsite"},
    "31-33": {"item": "part", "site": "plant", "claim": "warranty claim"},
    "42": {"customer": "reseller", "site": "warehouse"},
    "44-45": {"site": "store", "claim": "return claim"},
    "48-49": {
        "customer": "shipper",
        "item": "service_level",
        "site": "terminal",
        "claim": "freight claim",
    },
    "51": {"customer": "subscriber", "item": "plan", "site": "data_center"},
    "52": {"customer": "client", "item": "account_type", "site": "branch"},
    "522": {"customer": "borrower", "item": "loan_product"},
    "523": {"customer": "investor", "item": "security"},
    "524": {"customer": "policyholder", "item": "policy_type", "claim": "insurance claim"},
    "53": {"customer": "tenant", "item": "unit", "site": "property"},
    "54": {"customer": "client", "item": "service", "site": "office"},
    "55": {"customer": "subsidiary", "item": "service", "site": "office"},
    "56": {"customer": "client", "item": "service", "site": "facility"},
    "61": {"customer": "student", "item": "course", "site": "campus"},
    "62": {"customer": "patient", "item": "procedure", "site": "clinic", "claim": "medical claim"},
    "622": {"site": "ward"},
    "623": {"customer": "resident", "site": "facility"},
    "624": {"customer": "client", "item": "program", "site": "center"},
    "71": {"customer": "member", "item": "ticket_type", "site": "venue"},
    "72": {"customer": "guest", "item": "menu_item", "site": "restaurant"},
    "721": {"item": "room_type", "site": "property"},
    "81": {"customer": "client", "item": "service", "site": "shop"},
    "92": {
        "customer": "resident",
        "item": "permit_type",
        "site": "office",
        "claim": "benefit claim",
    },
}


def plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def vocabulary(industry: Industry) -> dict[str, str]:
    words = {
        **_VOCAB_DEFAULT,
        **_VOCAB.get(industry.sector, {}),
        **_VOCAB.get(industry.code[:3], {}),
    }
    words.update({f"{k}s": plural(v) for k, v in list(words.items())})
    return words


# Title words that say nothing about the domain ("Other", "Manufacturing") or only qualify the
# next word ("Crude Petroleum"): skipped or joined so the prefix reads like a real schema's.
_TITLE_STOPWORDS = frozenset(
    """and of the for in on except other all miscellaneous general new
    used related support activities services service industries industry establishments
    operations manufacturing farming stores retailers offices merchant wholesalers wholesale
    product products dealers specialty specialized commercial contractors combination similar
    mills mill providers agencies including primary direct administration""".split()
)
_QUALIFIER_ENDINGS = ("ed", "ic", "al", "ary", "ous", "ive", "ial")
_QUALIFIERS = frozenset(
    {
        "dry",
        "crude",
        "home",
        "motor",
        "basic",
        "commuter",
        "fresh",
        "frozen",
        "performing",
        "child",
        "family",
    }
)


def industry_prefix(title: str) -> str:
    """A table-name prefix from a NAICS title: "Offices of Dentists" -> "dentist"."""
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", re.sub(r"\([^)]*\)", "", title))]
    words = [w for w in words if w not in _TITLE_STOPWORDS and len(w) > 2]
    if not words:
        return ""  # "All Other Miscellaneous Retailers": nothing worth a prefix
    first = words[0]
    if (first in _QUALIFIERS or first.endswith(_QUALIFIER_ENDINGS)) and len(words) > 1:
        first = f"{first}_{words[1]}" if len(first) + len(words[1]) < 24 else first
    if first.endswith(("ists", "ers", "ors", "ians", "als", "ools", "eges")):
        first = first[:-1]  # dentists -> dentist: prefixes are singular
    return first
