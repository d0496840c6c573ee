"""The table-documentation examples: silver/tabledoc_examples (its schema and quality gate),
the config that makes it, and the step that generates, documents, splits by family and writes
the rows; each row re-checks its own response format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infra.lake import TableSpec, expect
from infra.llm import LLMSpec
from pipelines.finetune.tables import SynthTable, generate_tables, split_by_family
from pipelines.finetune.teachers import TableDoc, Teacher, teacher_from_config
from pipelines.shared.tabledoc_format import (
    column_coverage,
    format_valid,
    tabledoc_instruction,
)
from pipelines.shared.templates import format_example

SYNTH_TABLEDOC = TableSpec(
    layer="silver",
    name="tabledoc_examples",
    schema=(
        "example_id STRING, family STRING, industry_code STRING, industry_title STRING, "
        "sector STRING, archetype STRING, table_name STRING, ddl STRING, "
        "instruction STRING, response STRING, text STRING, split STRING, teacher STRING, "
        "n_columns INT, columns_documented INT, format_ok BOOLEAN, fallback_columns INT"
    ),
    key=("example_id",),
    # Lean on purpose (each expectation is a Spark pass): format_ok already implies a
    # description and a non-empty comment for every column, in table order.
    expectations=(
        expect("column_values_to_not_be_null", column="text"),
        expect("column_value_lengths_to_be_between", column="instruction", min_value=1),
        expect("column_value_lengths_to_be_between", column="response", min_value=1),
        expect("column_values_to_be_in_set", column="split", value_set=["train", "test"]),
        expect("column_values_to_be_in_set", column="format_ok", value_set=[True]),
        expect(
            "column_pair_values_to_be_equal", column_A="columns_documented", column_B="n_columns"
        ),
    ),
    # a rule teacher never fails; an LLM teacher's gaps are filled by it, so failures are rare
    max_quarantine_fraction=0.05,
    description="Fine-tuning examples: CREATE TABLE -> description + column comments (Alpaca).",
)


class SynthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_examples: int = Field(3600, gt=0, description="tables to generate; the seed used ~3,600")
    test_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of tables held out, as whole families"
    )
    seed: int = 0  # same seed -> byte-identical examples; also orders the family split
    # "rule" (deterministic, offline) or an OpenAI-compatible endpoint as infra.llm.load_llm
    # takes it: "http://host:8000/v1#model-name" or {"base_url": …, "model": …, "mode": …}
    teacher: LLMSpec = "rule"

    @field_validator("teacher")
    @classmethod
    def _known_teacher(cls, value: str | dict) -> str | dict:
        if isinstance(value, dict) and not (value.get("base_url") and value.get("model")):
            raise ValueError("an endpoint teacher needs 'base_url' and 'model'")
        if (
            isinstance(value, str)
            and value != "rule"
            and not (value.startswith(("http://", "https://")) and "#" in value)
        ):
            raise ValueError(
                f"teacher {value!r}: expected 'rule' or an endpoint 'http(s)://host/v1#model-name'"
            )
        return value


def build_examples(
    tables: Sequence[SynthTable],
    docs: Sequence[TableDoc],
    test_families: set[str],
    teacher: str,
    seed: int,
) -> list[dict]:
    """One row of SYNTH_TABLEDOC per table; each row re-checks its own response."""
    rows = []
    for table, doc in zip(tables, docs, strict=True):
        instruction, response = tabledoc_instruction(table.ddl), doc.response(table)
        names = table.column_names
        rows.append(
            {
                "example_id": f"tabledoc-{seed}-{table.index:06d}",
                "family": table.family,
                "industry_code": table.industry_code,
                "industry_title": table.industry_title,
                "sector": table.sector,
                "archetype": table.archetype,
                "table_name": table.table_name,
                "ddl": table.ddl,
                "instruction": instruction,
                "response": response,
                "text": format_example(instruction, response),
                "split": "test" if table.family in test_families else "train",
                "teacher": teacher,
                "n_columns": len(names),
                "columns_documented": round(column_coverage(response, names) * len(names)),
                "format_ok": format_valid(response, names),
                "fallback_columns": doc.fallback_columns,
            }
        )
    return rows


def example_stats(rows: Sequence[dict]) -> dict:
    by_split = Counter(r["split"] for r in rows)
    families = {s: len({r["family"] for r in rows if r["split"] == s}) for s in by_split}
    return {
        "rows": dict(by_split),
        "families": families,
        "archetypes": len({r["archetype"] for r in rows}),
        "industries": len({r["industry_code"] for r in rows}),
        "fallback_columns": sum(r["fallback_columns"] for r in rows),
    }


def tabledoc_rows(config: SynthConfig, teacher: Teacher | None = None) -> list[dict]:
    """Generate, document and split the examples in memory: the rows of SYNTH_TABLEDOC."""
    tables = generate_tables(config.n_examples, config.seed)
    teacher = teacher or teacher_from_config(config.teacher)
    docs = teacher.document(tables)
    _, test = split_by_family(tables, config.test_fraction, config.seed)
    return build_examples(tables, docs, {t.family for t in test}, teacher.name, config.seed)


def write_tabledoc_examples(
    spark,
    config: SynthConfig,
    txn_id: str,
    root: Path | None = None,
    *,
    teacher: Teacher | None = None,
) -> dict:
    """Step: generate, document, split and write silver/tabledoc_examples; returns its manifest.

    ``teacher`` overrides ``config.teacher`` (tests and callers that already hold an LLM)."""
    from infra.lake import write_table

    rows = tabledoc_rows(config, teacher)
    columns = [f.split()[0] for f in SYNTH_TABLEDOC.schema.split(", ")]
    df = spark.createDataFrame([tuple(r[c] for c in columns) for r in rows], SYNTH_TABLEDOC.schema)
    manifest = write_table(spark, SYNTH_TABLEDOC, df, txn_id=txn_id, mode="overwrite", root=root)
    manifest["stats"] = example_stats(rows)
    return manifest
