"""The table-doc examples (pipelines.finetune: industries, archetypes, tables, teachers,
examples; pipelines.shared: tabledoc_format, instructions): seeded CREATE TABLE generation,
teachers, Alpaca format, family split, the gated Delta table and the instruction-data loader."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipelines.finetune.archetypes import ARCHETYPES
from pipelines.finetune.examples import SynthConfig, write_tabledoc_examples
from pipelines.finetune.industries import naics_titles
from pipelines.finetune.tables import (
    copy_column_names_baseline,
    generate_tables,
    split_by_family,
)
from pipelines.finetune.teachers import LLMTeacher, RuleTeacher, teacher_from_config
from pipelines.shared.instructions import (
    InstructionDatasetError,
    load_instruction_dataset,
)
from pipelines.shared.tabledoc_format import (
    column_coverage,
    ddl_columns,
    format_valid,
    parse_response,
    response_template,
    tabledoc_instruction,
)
from pipelines.shared.templates import (
    END_MARKER,
    RESPONSE_MARKER,
    format_example,
    prompt_of,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tables():
    return generate_tables(3600, seed=0)


@pytest.fixture(scope="module")
def docs(tables):
    return RuleTeacher().document(tables)


def examples_digest(n: int, seed: int) -> str:
    tables = generate_tables(n, seed)
    texts = [
        format_example(t.ddl, d.response(t))
        for t, d in zip(tables, RuleTeacher().document(tables), strict=False)
    ]
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()


# --- generation ------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_examples_and_another_seed_does_not():
    first = examples_digest(300, seed=0)
    assert examples_digest(300, seed=0) == first
    assert examples_digest(300, seed=1) != first
    # not an accident of this process: another interpreter with another hash seed agrees
    code = "from tests.unit.test_synth import examples_digest; print(examples_digest(300, seed=0))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    assert out == first


def test_table_i_depends_only_on_seed_and_i(tables):
    assert generate_tables(50, seed=0) == tables[:50]


def test_tables_cover_archetypes_industries_and_sectors(tables):
    archetypes = Counter(t.archetype for t in tables)
    assert len(archetypes) >= 12 and len(ARCHETYPES) >= 12
    assert min(archetypes.values()) >= 30  # every archetype is well represented
    assert len({t.sector for t in tables}) == 20  # all NAICS sectors
    assert len({t.industry_code for t in tables}) >= 500
    assert all(naics_titles()[t.industry_code] == t.industry_title for t in tables)


def test_industry_flavours_the_columns(tables):
    claims = [t for t in tables if t.archetype == "claims"]
    hospital = [t for t in claims if t.industry_code.startswith(("621", "622"))]
    insurer = [t for t in claims if t.industry_code.startswith("524")]
    assert hospital and insurer
    assert all(
        "patient_id" in t.column_names and "policy_number" not in t.column_names for t in hospital
    )
    assert all(
        "policyholder_id" in t.column_names and "policy_number" in t.column_names for t in insurer
    )
    assert any("diagnosis_code" in t.column_names for t in hospital)
    # a farm's customers are buyers, a school's are students
    assert {
        t.table_name.split("_")[-1]
        for t in tables
        if t.archetype == "customers" and t.sector == "61"
    } == {"students"}
    assert {
        t.table_name.split("_")[-1]
        for t in tables
        if t.archetype == "customers" and t.sector == "11"
    } == {"buyers"}


def test_ddl_is_syntactically_plausible(tables):
    for t in tables:
        ddl = t.ddl
        body = ddl.split("\n", 1)[1] if ddl.startswith("-- ") else ddl  # the header: a comment
        assert body.count("'") % 2 == 0, ddl
        depth = 0
        for ch in re.sub(r"'(?:[^']|'')*'", "''", body):  # parentheses outside string literals
            depth += {"(": 1, ")": -1}.get(ch, 0)
            assert depth >= 0, ddl
        assert depth == 0, ddl
        assert re.match(rf"CREATE TABLE (IF NOT EXISTS )?{t.table_name} \(\n", body), ddl
        assert body.endswith("\n);")
        definitions = [line.strip() for line in body.splitlines()[1:-1]]
        column_lines = [d for d in definitions if not d.startswith(("PRIMARY KEY", "CONSTRAINT"))]
        assert [d.split()[0] for d in column_lines] == t.column_names, ddl
        assert all(d.endswith(",") for d in definitions[:-1]) and not definitions[-1].endswith(",")
        assert ddl.count("PRIMARY KEY") == 1, ddl
        assert len(set(t.column_names)) == len(t.column_names)
        for column in t.columns:
            if column.references:
                assert f"REFERENCES {column.references[0]} ({column.references[1]})" in ddl


# --- the family split ------------------------------------------------------------------------


def test_split_by_family_shares_no_family_and_is_deterministic(tables):
    train, test = split_by_family(tables, 0.1, seed=0)
    assert len(train) + len(test) == len(tables)
    assert not {t.family for t in train} & {t.family for t in test}
    assert 0.08 <= len(test) / len(tables) <= 0.15
    shuffled = list(tables)
    random.Random(3).shuffle(shuffled)
    again = split_by_family(shuffled, 0.1, seed=0)[1]
    assert sorted(t.index for t in again) == sorted(t.index for t in test)
    other = split_by_family(tables, 0.1, seed=1)[1]
    assert {t.family for t in other} != {t.family for t in test}
    assert split_by_family(tables, 0.0, seed=0)[1] == []


# --- teachers and the response format --------------------------------------------------------


def test_rule_teacher_documents_every_column(tables, docs):
    for t, d in zip(tables, docs, strict=False):
        response = d.response(t)
        assert format_valid(response, t.column_names), response
        assert column_coverage(response, t.column_names) == 1.0
        sentences = re.findall(r"[.!?](?:\s|$)", d.description)
        assert 1 <= len(sentences) <= 3, d.description
    # semantics, not just presence: keys, foreign keys, units, amounts, allowed values
    by_name = {
        c: d.comments[c] for t, d in zip(tables, docs, strict=False) for c in t.column_names
    }
    assert any("Primary key" in v for v in by_name.values())
    first_fk = next((t, c) for t in tables for c in t.columns if c.references)
    table, column = first_fk
    comment = docs[tables.index(table)].comments[column.name]
    assert f"{column.references[0]}.{column.references[1]}" in comment
    assert "degrees Celsius" in by_name["temperature_c"]
    assert "kilograms" in by_name["weight_kg"]
    checked = next((t, c) for t in tables for c in t.columns if c.allowed_values)
    comment = docs[tables.index(checked[0])].comments[checked[1].name]
    assert all(f"'{v}'" in comment for v in checked[1].allowed_values)


def test_the_alpaca_template_is_the_seeds():
    text = format_example("Do X.", "Done.")
    assert text == (
        "Below is an instruction that describes a task. Write a response that "
        "appropriately completes the request.\n\n### Instruction:\nDo X.\n\n"
        "### Response:\nDone.\n\n### End"
    )
    assert text.startswith(prompt_of("Do X.")) and prompt_of("Do X.").endswith("### Response:\n")
    assert RESPONSE_MARKER == "### Response:" and END_MARKER == "### End"


def test_parse_response_round_trips(tables, docs):
    for t, d in list(zip(tables, docs, strict=False))[:200]:
        response = d.response(t)
        assert parse_response(response, t.column_names) == (d.description, d.comments)
        # a whole Alpaca example parses to the same
        text = format_example(t.ddl, response)
        assert parse_response(text, t.column_names) == (d.description, d.comments)


def test_format_checks_catch_what_is_wrong(tables, docs):
    t, d = tables[0], docs[0]
    names = t.column_names
    lines = d.response(t).splitlines()
    assert not format_valid("\n".join(lines[:-1]), names)  # a column missing
    assert column_coverage("\n".join(lines[:-1]), names) == pytest.approx(1 - 1 / len(names))
    assert not format_valid("\n".join([lines[0], lines[2], lines[1], *lines[3:]]), names)
    assert not format_valid("\n".join(lines[1:]), names)  # no description
    assert not format_valid("\n".join([*lines, "Hope this helps!"]), names)
    assert not format_valid(f"- {names[0]}:\n" + "\n".join(lines), names)
    assert column_coverage("", names) == 0.0
    # lenient parsing: other bullets, back-quoted names, unknown columns ignored
    loose = f"Sure!\n**Description:** A table.\n* `{names[0]}`: the key\n- nope: x"
    assert parse_response(loose, names) == ("A table.", {names[0]: "the key"})


def test_copy_names_baseline_is_well_formed_but_uninformative(tables, docs):
    t = tables[0]
    baseline = copy_column_names_baseline(t)
    assert format_valid(baseline, t.column_names)
    assert column_coverage(baseline, t.column_names) == 1.0
    comments = parse_response(baseline, t.column_names)[1]
    assert comments == {c: c.replace("_", " ") for c in t.column_names}
    assert baseline != docs[0].response(t)


class FakeLLM:
    """Answers like a teacher that forgets the last column and chats a little first."""

    def __init__(self):
        self.calls: list[tuple[list[str], object]] = []

    def generate(self, prompts, params):
        self.calls.append((prompts, params))
        replies = []
        for prompt in prompts:
            names = re.findall(r"^\s+(\w+) [A-Z]", prompt, re.MULTILINE)
            names = [n for n in names if n not in ("PRIMARY", "CONSTRAINT")]
            lines = ["Here is the documentation.", "Description: An LLM description."]
            lines += [f"* `{n}`: LLM comment on {n}" for n in names[:-1]]
            replies.append("\n".join(lines))
        return replies


def test_llm_teacher_parses_replies_and_falls_back_for_missing_columns(tables):
    llm, batch = FakeLLM(), tables[:5]
    teacher = LLMTeacher(llm, params={"max_new_tokens": 256}, batch_size=2)
    docs = teacher.document(batch)
    assert [len(p) for p, _ in llm.calls] == [2, 2, 1]
    assert all(params == {"max_new_tokens": 256} for _, params in llm.calls)
    rule = RuleTeacher()
    for t, d in zip(batch, docs, strict=False):
        *known, last = t.columns
        assert d.description == "An LLM description."
        assert all(d.comments[c.name] == f"LLM comment on {c.name}" for c in known)
        assert d.comments[last.name] == rule.describe_column(last, t)
        assert d.fallback_columns == 1 and not d.fallback_description
        assert format_valid(d.response(t), t.column_names)
    assert teacher.fallback_columns == 5 and teacher.fallback_descriptions == 0

    class Silent:
        def generate(self, prompts, params):
            return ["" for _ in prompts]

    quiet = LLMTeacher(Silent(), params={})
    doc = quiet.document(batch[:1])[0]
    assert doc.fallback_description and doc.fallback_columns == len(batch[0].columns)
    ruled = rule.document_table(batch[0])
    assert (doc.description, doc.comments) == (ruled.description, ruled.comments)


def test_llm_teacher_defaults_to_greedy_generation_params(tables):
    from infra import llm as llm_module

    llm = FakeLLM()
    LLMTeacher(llm).document(tables[:1])
    params = llm.calls[0][1]
    assert isinstance(params, llm_module.GenerationParams) and params.temperature == 0.0


def test_config_validates_the_teacher():
    assert SynthConfig().teacher == "rule" and SynthConfig().n_examples == 3600
    endpoint = "http://localhost:8000/v1#teacher-model"
    assert SynthConfig(teacher=endpoint).teacher == endpoint
    for bad in ("gpt", "http://localhost:8000/v1"):
        with pytest.raises(ValueError, match="teacher"):
            SynthConfig(teacher=bad)
    with pytest.raises(ValueError, match="base_url"):
        SynthConfig(teacher={"model": "x"})
    assert isinstance(teacher_from_config("rule"), RuleTeacher)
    teacher = teacher_from_config({"base_url": "http://localhost:1/v1", "model": "m"})
    assert isinstance(teacher, LLMTeacher) and teacher.llm.model == "m"  # no request sent


# --- loading any instruction data set --------------------------------------------------------

ROWS = [
    {"instruction": "Describe the lamp.", "context": "brass, 40 cm", "response": "A lamp."},
    {"instruction": "Describe the chair.", "context": "", "response": "A chair."},
]


def test_loader_reads_jsonl_parquet_and_a_datasets_directory(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "products.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "products.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    expected = None
    for path in (jsonl, tmp_path / "products.parquet", tmp_path / "ds"):
        loaded = load_instruction_dataset(path, input_field="context")
        assert [e["response"] for e in loaded] == ["A lamp.", "A chair."]
        assert loaded[0]["instruction"] == "Describe the lamp.\n\nInput:\nbrass, 40 cm"
        assert loaded[1]["instruction"] == "Describe the chair."
        assert loaded[0]["text"] == format_example(loaded[0]["instruction"], "A lamp.")
        assert expected in (None, loaded)
        expected = loaded
    renamed = [{"prompt": r["instruction"], "output": r["response"]} for r in ROWS]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(renamed)}).save_to_disk(
        str(tmp_path / "dd")
    )
    loaded = load_instruction_dataset(tmp_path / "dd", "prompt", "output")
    assert [e["instruction"] for e in loaded] == ["Describe the lamp.", "Describe the chair."]


def test_loader_names_file_and_row_of_a_bad_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(
        json.dumps(ROWS[0])
        + "\n{not json\n"
        + json.dumps({"instruction": "x", "response": "  "})
        + "\n"
        + json.dumps({"instruction": "y"})
        + "\n"
        + json.dumps(ROWS[1])
        + "\n"
    )
    with pytest.raises(
        InstructionDatasetError,
        match=rf"{re.escape(str(jsonl))}: line 2: "
        r"not valid JSON",
    ):
        load_instruction_dataset(jsonl)
    stats: dict = {}
    loaded = load_instruction_dataset(jsonl, on_error="skip", stats=stats)
    assert [e["response"] for e in loaded] == ["A lamp.", "A chair."]
    assert stats["rows"] == 5 and stats["skipped"] == 3
    assert "line 3: field 'response' is empty" in stats["errors"][1]
    assert "line 4: field 'response' is missing" in stats["errors"][2]

    parquet = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([ROWS[0], {**ROWS[1], "response": None}]), parquet)
    with pytest.raises(
        InstructionDatasetError,
        match=rf"{re.escape(str(parquet))}: row 2: field 'response' is missing",
    ):
        load_instruction_dataset(parquet)
    with pytest.raises(InstructionDatasetError, match="row 1: field 'answer' is missing"):
        load_instruction_dataset(parquet, response_field="answer")
    with pytest.raises(InstructionDatasetError, match=r"\.jsonl or \.parquet"):
        (tmp_path / "x.csv").write_text("a,b\n")
        load_instruction_dataset(tmp_path / "x.csv")


# --- the gated Delta table -------------------------------------------------------------------


@pytest.mark.spark
def test_write_tabledoc_examples_writes_through_the_gate(spark, lake_dir):
    from infra.lake import read_table

    config = SynthConfig(n_examples=200, test_fraction=0.2, seed=3)
    manifest = write_tabledoc_examples(spark, config, txn_id="synth-test", root=lake_dir)
    assert manifest["rows"] == 200 and manifest["quarantined"] == 0
    assert Path(manifest["table"]) == lake_dir / "silver" / "tabledoc_examples"
    rows = (
        read_table(spark, manifest)
        .select(
            "example_id",
            "family",
            "split",
            "text",
            "response",
            "n_columns",
            "columns_documented",
            "format_ok",
        )
        .collect()
    )
    assert len(rows) == len({r.example_id for r in rows}) == 200
    families = {s: {r.family for r in rows if r.split == s} for s in ("train", "test")}
    assert families["train"] and families["test"]
    assert not families["train"] & families["test"]
    assert all(r.format_ok and r.columns_documented == r.n_columns for r in rows)
    assert all(r.text.endswith(r.response + "\n\n### End") for r in rows)
    assert manifest["stats"]["rows"]["train"] + manifest["stats"]["rows"]["test"] == 200
    # the table is a function of the config: same rows, same bytes
    expected = generate_tables(200, seed=3)
    by_id = {r.example_id: r for r in rows}
    assert by_id["tabledoc-3-000007"].text == format_example(
        tabledoc_instruction(expected[7].ddl),
        RuleTeacher().document_table(expected[7]).response(expected[7]),
    )


def test_ddl_columns_reads_every_generated_table_and_common_house_styles(tables):
    for table in tables[:500]:
        assert ddl_columns(prompt_of(tabledoc_instruction(table.ddl))) == table.column_names
    ddl = (
        '-- staging\ncreate temporary table "s"."t" (\n  `order id` INT, -- key, first\n'
        "  [note] VARCHAR(10) DEFAULT 'a,b)', amount NUMERIC(10, 2) CHECK (amount > 0),\n"
        "  PRIMARY KEY (`order id`), CONSTRAINT fk FOREIGN KEY (amount) REFERENCES x(y),\n"
        "  UNIQUE (note));"
    )
    assert ddl_columns(ddl) == ["order id", "note", "amount"]
    for bad in ("SELECT 1", "CREATE TABLE t (PRIMARY KEY (a))"):
        with pytest.raises(ValueError):
            ddl_columns(bad)


def test_response_template_renders_the_teachers_layout(tables):
    from infra.llm_fields import parse_fields, render_fields

    table = tables[0]
    response = RuleTeacher().document([table])[0].response(table)
    fields = response_template(table.column_names)
    values = parse_fields(fields, response + "\n")
    assert render_fields(fields, values) == response + "\n"
    assert format_valid(render_fields(fields, values), table.column_names)
