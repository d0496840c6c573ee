"""Seeded synthetic tables: an industry, an archetype that fits it and a subset of its column
pool, rendered as a CREATE TABLE statement in one of a few house styles. Table ``i`` depends
only on ``(seed, i)``, so the same seed gives byte-identical output and a smaller ``n`` is a
prefix. Also the family split that holds out whole (archetype, NAICS sector) families.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.finetune.archetypes import (
    ARCHETYPE_BY_NAME,
    ARCHETYPES,
    ColumnSpec,
    fits,
    parse_column_spec,
)
from pipelines.finetune.industries import (
    industries_by_sector,
    industry_prefix,
    vocabulary,
)
from pipelines.shared.tabledoc_format import render_response

OPTIONAL_RATE = 0.6  # share of optional pool columns a table gets: tables of ~6-14 columns
DDL_COMMENT_RATE = 0.3  # a column with a known meaning carries COMMENT '…' this often
CHECK_RATE = 0.5  # a column with allowed values declares them in a CHECK this often
PREFIX_RATE = 0.5  # tables named with the industry prefix (dentist_claims) this often
HEADER_RATE = 0.5  # DDL opens with a "-- Industry: …" line this often


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    nullable: bool
    primary_key: bool = False
    references: tuple[str, str] | None = None  # (table, column)
    comment: str | None = None  # only what the DDL shows
    allowed_values: tuple[str, ...] = ()  # only when the DDL declares them in a CHECK


@dataclass(frozen=True)
class SynthTable:
    index: int
    industry_code: str
    industry_title: str
    sector: str
    archetype: str
    entity: str  # what one row is, in the industry's words ("medical claim")
    purpose: str
    table_name: str
    columns: tuple[Column, ...]
    ddl: str
    industry_in_ddl: bool  # the DDL's header names the industry

    @property
    def family(self) -> str:
        """(archetype, NAICS sector): the unit train and test never share."""
        return f"{self.archetype}:{self.sector}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def generate_tables(n: int, seed: int = 0) -> list[SynthTable]:
    """n tables; table i is a pure function of (seed, i), so output is byte-identical per seed."""
    return [generate_table(i, seed) for i in range(n)]


def generate_table(index: int, seed: int) -> SynthTable:
    rng = random.Random(f"tabledoc:{seed}:{index}")  # str seeds hash with SHA-512: stable
    by_sector = industries_by_sector()
    industry = rng.choice(by_sector[rng.choice(sorted(by_sector))])  # sector first: all 20 seen
    archetype = rng.choice([a for a in ARCHETYPES if fits(industry, a.sectors)])
    words = vocabulary(industry)
    prose = {k: v.replace("_", " ") for k, v in words.items()}  # "menu item" in sentences
    prefix = industry_prefix(industry.title) if rng.random() < PREFIX_RATE else ""
    prefix = f"{prefix}_" if prefix else ""
    columns = tuple(
        _draw_column(spec, rng, words, prefix)
        for spec in map(parse_column_spec, archetype.columns)
        if fits(industry, spec.sectors)
        and (spec.pk or spec.required or rng.random() < OPTIONAL_RATE)
    )
    table_name = prefix + archetype.table.format(**words)
    header = rng.random() < HEADER_RATE
    ddl = render_ddl(
        table_name, columns, rng, f"{industry.title} (NAICS {industry.code})" if header else None
    )
    return SynthTable(
        index,
        industry.code,
        industry.title,
        industry.sector,
        archetype.name,
        archetype.entity.format(**prose),
        archetype.purpose.format(**prose),
        table_name,
        columns,
        ddl,
        header,
    )


def _draw_column(
    spec: ColumnSpec, rng: random.Random, words: dict[str, str], prefix: str
) -> Column:
    sql_type = rng.choice(spec.types)
    references = None
    if spec.fk:
        target = ARCHETYPE_BY_NAME[spec.fk]
        target_pk = next(parse_column_spec(c) for c in target.columns if "pk" in c.split())
        references = (prefix + target.table.format(**words), target_pk.name.format(**words))
    comment = spec.note.format(**words) if spec.note and rng.random() < DDL_COMMENT_RATE else None
    values = spec.values if spec.values and rng.random() < CHECK_RATE else ()
    return Column(
        spec.name.format(**words),
        sql_type,
        nullable=spec.nullable and not spec.pk,
        primary_key=spec.pk,
        references=references,
        comment=comment,
        allowed_values=values,
    )


def render_ddl(
    table_name: str, columns: Sequence[Column], rng: random.Random, header: str | None = None
) -> str:
    """CREATE TABLE in one of a few common house styles (inline or table-level constraints)."""
    keys = [c.name for c in columns if c.primary_key]
    inline_pk = len(keys) == 1 and rng.random() < 0.5
    inline_fk = rng.random() < 0.5
    indent = rng.choice(("    ", "  "))
    lines = []
    for c in columns:
        parts = [c.name, c.sql_type]
        if not c.nullable:
            parts.append("NOT NULL")
        if c.primary_key and inline_pk:
            parts.append("PRIMARY KEY")
        if c.allowed_values:
            values = ", ".join(_sql_str(v) for v in c.allowed_values)
            parts.append(f"CHECK ({c.name} IN ({values}))")
        if c.references and inline_fk:
            parts.append(f"REFERENCES {c.references[0]} ({c.references[1]})")
        if c.comment:
            parts.append(f"COMMENT {_sql_str(c.comment)}")
        lines.append(" ".join(parts))
    if not inline_pk:
        named = f"CONSTRAINT pk_{table_name} " if rng.random() < 0.5 else ""
        lines.append(f"{named}PRIMARY KEY ({', '.join(keys)})")
    if not inline_fk:
        lines += [
            f"CONSTRAINT fk_{table_name}_{c.name} FOREIGN KEY ({c.name}) "
            f"REFERENCES {c.references[0]} ({c.references[1]})"
            for c in columns
            if c.references
        ]
    create = "CREATE TABLE IF NOT EXISTS" if rng.random() < 0.3 else "CREATE TABLE"
    body = ",\n".join(indent + line for line in lines)
    top = f"-- Industry: {header}\n" if header else ""
    return f"{top}{create} {table_name} (\n{body}\n);"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def copy_column_names_baseline(table: SynthTable) -> str:
    """The floor a model must beat: restate each column's name as its comment."""
    return render_response(
        f"Table {table.table_name}.", [(c.name, c.name.replace("_", " ")) for c in table.columns]
    )


# ---------------------------------------------------------------------------------------------
# Train/test split by family
# ---------------------------------------------------------------------------------------------


def split_by_family(
    tables: Sequence[SynthTable], test_fraction: float, seed: int = 0
) -> tuple[list[SynthTable], list[SynthTable]]:
    """(train, test): whole families go to test, in a seeded hash order, until test holds
    about ``test_fraction`` of the tables. Independent of the tables' order."""
    sizes = Counter(t.family for t in tables)
    order = sorted(sizes, key=lambda f: hashlib.sha256(f"{seed}:{f}".encode()).hexdigest())
    target = test_fraction * len(tables)
    test_families: set[str] = set()
    held = 0
    for family in order[:-1] if len(order) > 1 else []:  # train always keeps a family
        if held >= target:
            break
        test_families.add(family)
        held += sizes[family]
    train = [t for t in tables if t.family not in test_families]
    test = [t for t in tables if t.family in test_families]
    return train, test
