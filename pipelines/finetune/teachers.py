"""Teachers write the documentation a model learns from: RuleTeacher (deterministic
templates over column semantics: keys, dates, amounts, status codes, units, …) or LLMTeacher
(any object with ``generate(prompts, params)``; columns its reply misses are filled by the
rule teacher and counted). Targets only use what the DDL shows, so a model can learn them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipelines.finetune.tables import Column, SynthTable
from pipelines.shared.tabledoc_format import (
    one_line,
    parse_response,
    render_response,
    tabledoc_instruction,
)


@dataclass(frozen=True)
class TableDoc:
    description: str
    comments: dict[str, str]  # column -> comment, in table order
    fallback_columns: int = 0  # columns the rule teacher had to fill in
    fallback_description: bool = False

    def response(self, table: SynthTable) -> str:
        return render_response(
            self.description, [(name, self.comments[name]) for name in table.column_names]
        )


class Teacher(Protocol):
    name: str

    def document(self, tables: Sequence[SynthTable]) -> list[TableDoc]: ...


_ABBREVIATIONS = {
    "qty": "quantity",
    "amt": "amount",
    "pct": "percent",
    "num": "number",
    "ref": "reference",
    "spo2": "blood oxygen saturation",
    "cdl": "CDL",
}
# Longest first: "_mm_s" must win over "_s"; "_kwh" over "_kw"
_UNITS = {
    "_mm_s": "millimetres per second",
    "_km_h": "kilometres per hour",
    "_kwh": "kilowatt-hours",
    "_kw": "kilowatts",
    "_kpa": "kilopascals",
    "_kg": "kilograms",
    "_pct": "percent",
    "_bpm": "beats per minute",
    "_m2": "square metres",
    "_c": "degrees Celsius",
    "_v": "volts",
    "_days": "days",
    "_minutes": "minutes",
    "_hours": "hours",
}
_TIME_UNITS = frozenset({"_days", "_minutes", "_hours"})
_MONEY_WORDS = frozenset("amount price cost total fee balance limit salary rate paid".split())
_GLOSSARY = {
    "email": "E-mail address of the {entity}.",
    "contact_email": "E-mail address to contact the {entity}.",
    "phone": "Telephone number of the {entity}.",
    "full_name": "Full name of the {entity}.",
    "first_name": "Given name of the {entity}.",
    "last_name": "Family name of the {entity}.",
    "description": "Free-text description of the {entity}.",
    "notes": "Free-text notes about the {entity}.",
    "latitude": "Latitude of the {entity} in decimal degrees.",
    "longitude": "Longitude of the {entity} in decimal degrees.",
    "country_code": "Country of the {entity} as a country code.",
    "currency_code": "Currency of the {entity}'s amounts as a currency code.",
    "date_of_birth": "Date of birth of the {entity}.",
    "due_date": "Date by which the {entity} must be paid.",
    "unit_of_measure": "Unit in which quantities of the {entity} are counted.",
    "postal_code": "Postal code of the {entity}'s address.",
}


def humanise(name: str) -> str:
    return " ".join(_ABBREVIATIONS.get(w, w) for w in name.split("_") if w)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _either(values: Sequence[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _decimal_scale(sql_type: str) -> int | None:
    match = re.match(r"(?:DECIMAL|NUMERIC)\(\s*\d+\s*,\s*(\d+)\s*\)", sql_type, re.IGNORECASE)
    return int(match.group(1)) if match else None


class RuleTeacher:
    """Deterministic documentation from column semantics; the default teacher."""

    name = "rule"

    def document(self, tables: Sequence[SynthTable]) -> list[TableDoc]:
        return [self.document_table(t) for t in tables]

    def document_table(self, table: SynthTable) -> TableDoc:
        return TableDoc(
            self.describe_table(table),
            {c.name: self.describe_column(c, table) for c in table.columns},
        )

    def describe_table(self, table: SynthTable) -> str:
        where = (
            f" in the {table.industry_title} industry (NAICS {table.industry_code})"
            if table.industry_in_ddl
            else ""
        )
        sentences = [f"The {table.table_name} table holds {table.purpose}{where}."]
        targets = list(dict.fromkeys(c.references[0] for c in table.columns if c.references))
        if targets:
            sentences.append(f"It links to {_and(targets)} through foreign keys.")
        tracked = [
            label
            for label, present in (
                (
                    "a status",
                    any(c.name == "status" or c.name.endswith("_status") for c in table.columns),
                ),
                ("monetary amounts", any(self._is_money(c) for c in table.columns)),
                (
                    "measurements with their units",
                    any(
                        self._unit(c.name) and self._unit(c.name)[0] not in _TIME_UNITS
                        for c in table.columns
                    ),
                ),
                ("timestamps", any(c.sql_type == "TIMESTAMP" for c in table.columns)),
            )
            if present
        ]
        if tracked:
            sentences.append(f"Each {table.entity} carries {_and(tracked)}.")
        return " ".join(sentences)

    def describe_column(self, column: Column, table: SynthTable) -> str:
        text = self._meaning(column, table)
        if column.nullable and not column.primary_key:
            text += " Optional."
        return text

    def _meaning(self, c: Column, table: SynthTable) -> str:
        entity, words = table.entity, humanise(c.name)
        keys = [k.name for k in table.columns if k.primary_key]
        if c.primary_key and len(keys) == 1:
            return f"Primary key: unique identifier of the {entity}."
        key_part = f"Part of the primary key ({', '.join(keys)}). " if c.primary_key else ""
        if c.references:
            ref_table, ref_column = c.references
            return (
                f"{key_part}Foreign key to {ref_table}.{ref_column}: the "
                f"{humanise(c.name.removesuffix('_id'))} of this {entity}."
            )
        if c.comment:
            return f"{key_part}{_cap(c.comment.rstrip('.'))}."
        if c.allowed_values:
            return f"{key_part}{_cap(words)} of the {entity}; one of {_either(c.allowed_values)}."
        return key_part + self._by_name(c, table, entity, words)

    def _by_name(self, c: Column, table: SynthTable, entity: str, words: str) -> str:
        if c.name in _GLOSSARY:
            return _GLOSSARY[c.name].format(entity=entity)
        if c.sql_type == "BOOLEAN":
            if c.name.startswith(("is_", "has_")):
                verb, what = c.name.split("_", 1)
                return f"True when the {entity} {verb} {humanise(what)}."
            return f"Flag: {words} (true or false)."
        if unit := self._unit(c.name):
            suffix, label = unit
            return f"{_cap(humanise(c.name[: -len(suffix)]))}, in {label}."
        if self._is_money(c):
            currency = (
                ", in the currency given by currency_code"
                if "currency_code" in table.column_names
                else ""
            )
            return (
                f"{_cap(words)}: a monetary value with {_decimal_scale(c.sql_type)} "
                f"decimal places{currency}."
            )
        if c.sql_type == "TIMESTAMP":
            if c.name.endswith("_at"):
                event = humanise(c.name[:-3])
                return (
                    f"When the {entity} was {event} (date and time)."
                    if event.split()[-1].endswith("ed")
                    else f"Date and time of {event}."
                )
            return f"{_cap(words)}, as a date and time."
        if c.sql_type == "DATE":
            if c.name.endswith("_on"):
                return f"Date the {entity} was {humanise(c.name[:-3])}."
            return f"{_cap(self._of(words, entity))}, as a calendar date."
        if c.name == "status" or c.name.endswith("_status"):
            return f"Current status code of the {entity}."
        if c.name.endswith("_id"):
            return f"Identifier of the {humanise(c.name[:-3])} (no foreign key is declared)."
        if c.name.endswith("_postal_code"):
            return f"{_cap(words)} of the {entity}."
        if c.name.endswith("_code"):
            return f"Code of the {humanise(c.name[:-5])} for the {entity}."
        if c.name.endswith("_name"):
            return f"Name of the {humanise(c.name[:-5])}."
        if c.name.endswith("_number"):
            return (
                f"{_cap(words)}: the reference people use for the {entity}."
                if words.split()[0] in entity
                else f"{_cap(words)} of the {entity}."
            )
        if c.name.startswith(("quantity", "qty")) or c.name.endswith(("_count", "_point")):
            return f"{_cap(words)} for the {entity}, as a quantity."
        return f"{_cap(words)} of the {entity}."

    @staticmethod
    def _of(words: str, entity: str) -> str:
        """Say "hire date of the employee", but not "invoice date of the invoice"."""
        return words if entity.split()[-1] in words.split() else f"{words} of the {entity}"

    @staticmethod
    def _unit(name: str) -> tuple[str, str] | None:
        return next(((s, label) for s, label in _UNITS.items() if name.endswith(s)), None)

    @staticmethod
    def _is_money(c: Column) -> bool:
        return _decimal_scale(c.sql_type) is not None and bool(
            _MONEY_WORDS & set(c.name.split("_"))
        )


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


class LLMTeacher:
    """Documentation from an LLM (``generate(prompts, params) -> list[str]``, infra/llm.py's
    contract). Its reply is parsed leniently; a missing description or column comment is
    filled in by the rule teacher and counted, so every example stays complete."""

    name = "llm"

    def __init__(
        self,
        llm: Any,
        params: Any = None,
        batch_size: int = 16,
        fallback: RuleTeacher | None = None,
    ) -> None:
        self.llm = llm
        self.params = params  # None: greedy GenerationParams, built on first use
        self.batch_size = batch_size  # prompts per generate() call
        self.fallback = fallback or RuleTeacher()
        self.fallback_columns = 0  # totals over every document() call
        self.fallback_descriptions = 0

    def prompt(self, table: SynthTable) -> str:
        names = ", ".join(table.column_names)
        return (
            f"{tabledoc_instruction(table.ddl)}\n\nReply in exactly this format and nothing "
            f"else:\nDescription: <one to three sentences>\n- <column name>: <comment>\n"
            f"with one line for each of these columns, in this order: {names}\n"
        )

    def document(self, tables: Sequence[SynthTable]) -> list[TableDoc]:
        docs: list[TableDoc] = []
        for start in range(0, len(tables), self.batch_size):
            batch = tables[start : start + self.batch_size]
            replies = self.llm.generate([self.prompt(t) for t in batch], self._params())
            if len(replies) != len(batch):
                raise RuntimeError(
                    f"teacher LLM returned {len(replies)} replies for {len(batch)} prompts"
                )
            docs += [
                self.from_reply(reply, table) for reply, table in zip(replies, batch, strict=False)
            ]
        return docs

    def from_reply(self, reply: str, table: SynthTable) -> TableDoc:
        description, found = parse_response(reply or "", table.column_names)
        found = {k: one_line(v) for k, v in found.items() if v.strip()}
        missing = [c for c in table.columns if c.name not in found]
        for column in missing:
            found[column.name] = self.fallback.describe_column(column, table)
        no_description = not description
        if no_description:
            description = self.fallback.describe_table(table)
        self.fallback_columns += len(missing)
        self.fallback_descriptions += no_description
        return TableDoc(
            description,
            {n: found[n] for n in table.column_names},
            fallback_columns=len(missing),
            fallback_description=no_description,
        )

    def _params(self) -> Any:
        if self.params is None:
            from infra.llm import (
                GenerationParams,  # lazy: infra.llm pulls in model clients
            )

            self.params = GenerationParams(max_new_tokens=512, temperature=0.0)
        return self.params


def teacher_from_config(spec: str | dict) -> Teacher:
    if spec == "rule":
        return RuleTeacher()
    from infra.llm import load_llm  # lazy: only endpoint teachers need the LLM clients

    return LLMTeacher(load_llm(spec))
