"""Text cleaning, PII redaction and quality filters of the pretraining corpus
(pipelines/corpus/quality.py, pipelines/corpus/pii.py)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from pipelines.corpus.pii import redact_pii
from pipelines.corpus.quality import (
    CORPUS_CLEAN_SCHEMA,
    CORPUS_REJECTED_SCHEMA,
    FILTER_NAMES,
    QualityConfig,
    check_quality,
    clean_corpus,
    clean_one,
    normalise_text,
    quality_stats,
)

NORMAL_DOCSTRING = """Compute the weighted mean of an array along the given axis.

Parameters
----------
values : ndarray
    The input values; NaN entries are ignored.
weights : ndarray, optional
    One weight per value. When omitted every value weighs the same.

Returns
-------
float
    The weighted mean.

Examples
--------
>>> weighted_mean(np.array([1.0, 2.0, 3.0]), np.array([3, 1, 1]))
1.6
"""


# ----------------------------------------------------------------------------- normalisation


def test_normalise_keeps_code_indentation_and_collapses_blank_lines():
    text = (
        "Summary  line\twith   blanks.   \r\n\r\n\r\n\r\n"
        "Example::\n\n"
        "    def f(x):\n"
        "        if x:\n"
        "            return  x   # aligned\n"
        "\n\n\n"
        "    >>> for i in range(2):\n"
        "    ...     print(i)\n"
        "Tail.   "
    )
    assert normalise_text(text) == (
        "Summary line with blanks.\n\n"
        "Example::\n\n"
        "    def f(x):\n"
        "        if x:\n"
        "            return x # aligned\n"
        "\n"
        "    >>> for i in range(2):\n"
        "    ...     print(i)\n"
        "Tail."
    )


def test_normalise_controls_newlines_and_unicode():
    text = "\ufeffCafe\u0301 x\u00b2\x00\x07 end\rnext\u2028last\x0cpage"
    # NFC composes e + combining acute; NFKC would also have turned x² into x2.
    assert normalise_text(text) == "Caf\u00e9 x\u00b2 end\nnext\nlast\npage"


def test_normalise_strips_common_indentation_and_blank_edges():
    assert normalise_text("\n\n    first\n      second\n\n  \n") == "first\n  second"
    assert normalise_text(" \t \n \n") == ""


# ----------------------------------------------------------------------------- PII

RANDOM_KEY = "kjasBS523KdkAILD2k78NdcJSk2k3KHG6xQ"  # 34 chars, mixed classes, random-looking


@pytest.mark.parametrize(
    "text, redacted, kind",
    [
        ("Write to jane.doe+lists@example.co.uk today.", "Write to <EMAIL> today.", "email"),
        ("Server at 127.0.0.1:8080 and 10.0.0.255.", "Server at <IP>:8080 and <IP>.", "ip"),
        ("Bind 2001:db8::ff00:42:8329 or fe80::1%eth0 now", "Bind <IP> or <IP> now", "ip"),
        ("Mapped ::ffff:192.168.0.1 host", "Mapped <IP> host", "ip"),
        ("key=sk-proj-AbCdEfGhIjKlMnOpQrStUvWx12", "key=<SECRET>", "secret"),
        ("aws AKIAIOSFODNN7EXAMPLE id", "aws <SECRET> id", "secret"),
        ("gh ghp_" + "aB3" * 12 + " token", "gh <SECRET> token", "secret"),
        ("pat github_pat_11ABCDEFG0123456789_abcdefghij", "pat <SECRET>", "secret"),
        ("slack xoxb-123456789012-abcdefghijkl", "slack <SECRET>", "secret"),
        (
            "google AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY" + ".",
            "google <SECRET>.",
            "secret",
        ),
        (f"token={RANDOM_KEY} end", "token=<SECRET> end", "secret"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
            "<SECRET>",
            "secret",
        ),
    ],
)
def test_each_pii_kind_is_redacted_and_counted(text, redacted, kind):
    out, counts = redact_pii(text)
    assert out == redacted
    expected = {"email": 0, "ip": 0, "secret": 0}
    expected[kind] = redacted.count({"email": "<EMAIL>", "ip": "<IP>", "secret": "<SECRET>"}[kind])
    assert counts == expected


@pytest.mark.parametrize(
    "text",
    [
        "Requires version 1.2.3 or later.",
        "Tested on v3.11.7 and v3.11.7.1.",
        "Python 3.11.7.1 and pkg==1.2.3.4 and section 3.4.1.2",
        "The dotted path 1.2.3.4.5 and 1.02.3.4 and 256.1.1.1 are no addresses.",
        "The AKIA prefix alone is not a key, nor is AKIAshort.",
        "Commit 0123456789abcdef0123456789abcdef01234567 fixed it (sha1 hex).",
        "Slices x[::2], a[2::2], std::vector, dead::beef and 12:30:45 stay.",
        "Class HintSignPep484585GenericUnsubbedAndMore is a name, not a key.",
        "See https://example.com/Kilo59/82f227d9dba4e5cce62bc22b245b2638/Paper2003 for it.",
        "Use the @property decorator and a @ b for matmul.",
    ],
)
def test_pii_near_misses_are_left_alone(text):
    assert redact_pii(text) == (text, {"email": 0, "ip": 0, "secret": 0})


# ----------------------------------------------------------------------------- filters

SENTENCE = "the quick brown fox jumps over the lazy dog near river banks today"


@pytest.mark.parametrize(
    "name, text",
    [
        ("empty", None),
        ("empty", " \n\t \n"),
        ("min_chars", "Return the name."),
        ("max_chars", "word " * 25_000),
        (
            "min_words",
            "Supercalifragilistic antidisestablishmentarianism floccinaucinihilipilification",
        ),
        ("mean_word_length", " ".join(["abcdefghijklmnopqrstuvwxyz0123"] * 10)),
        ("mean_word_length", " ".join("abcdefghijklmnopqrstuvwxyz")),
        (
            "symbol_ratio",
            "x = {'a': [1, 2]} ;; ## ** -> <= >= != == ${}  ((()))  [[[]]] ||| &&& ~~~ @@@ "
            "!!! %%%",
        ),
        (
            "alpha_words",
            "Values 1024 2048 4096 8192 16384 32768 65536 131072 262144 524288 and more",
        ),
        ("bullet_lines", "\n".join(f"- item number {i} of the shopping list" for i in range(10))),
        (
            "ellipsis_lines",
            "\n".join(f"Read the full story number {i} on our site..." for i in range(10)),
        ),
        (
            "repeated_lines",
            "\n".join(["Click here to subscribe now"] * 6 + ["A real line", "Another one"]),
        ),
        ("top_ngram", " ".join(["buy now"] * 30 + ["the best offer of the year is here"])),
        ("duplicate_ngram", " ".join([SENTENCE] * 3)),
    ],
)
def test_each_filter_rejects_its_bad_text(name, text):
    _, _, rejected_by, detail = clean_one(text)
    assert rejected_by == name, detail
    assert detail


def test_normal_docstring_is_kept():
    text, counts, rejected_by, detail = clean_one(NORMAL_DOCSTRING)
    assert (rejected_by, detail) == (None, None)
    assert counts == {"email": 0, "ip": 0, "secret": 0}
    assert "    The input values; NaN entries are ignored." in text  # indentation kept


def test_first_failing_filter_in_fixed_order_wins_and_detail_names_threshold():
    # Both too short and symbol-heavy: min_chars comes first in FILTER_NAMES.
    assert clean_one("{[(<>)]} ;; ##")[2] == "min_chars"
    assert FILTER_NAMES.index("min_chars") < FILTER_NAMES.index("symbol_ratio")
    cfg = QualityConfig(max_symbol_ratio=0.2)
    text = "Pass pairs = [(b, c), {d: e}] # f; g -> h: i, j to the mapper."
    rejected_by, detail = check_quality(text, cfg)
    assert (
        rejected_by == "symbol_ratio" and detail.startswith("symbol_ratio=") and "> 0.2" in detail
    )


def test_config_switches_filters_off_and_rejects_unknown_fields():
    relaxed = QualityConfig(min_chars=None, min_words=None)
    assert clean_one("Return the name.", relaxed)[2] is None
    with pytest.raises(ValueError):
        QualityConfig(min_char=10)  # typo fails fast


def test_repetition_filters_spare_short_docstrings():
    # "session context" covers > 30 % of this short text; n-gram statistics are noise here.
    text = (
        "Update session context.\n\nArgs:\n    context: Context data to merge into session context"
    )
    assert clean_one(text)[2] is None


def _package_docstrings(package: str, sub: str = "") -> list[str]:
    """Docstrings of an installed package, read with ast (never imported)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    root = Path(next(iter(spec.submodule_search_locations))) / sub
    docs = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if doc := ast.get_docstring(node):
                    docs.append(doc)
    return docs


def test_defaults_keep_most_docstring_characters_of_a_real_package():
    docs = _package_docstrings("mlflow", "tracking")
    assert len(docs) > 100
    results = [clean_one(doc) for doc in docs]
    total = sum(len(text) for text, *_ in results)
    kept = sum(len(text) for text, _, rejected_by, _ in results if rejected_by is None)
    assert kept / total >= 0.5, f"defaults keep only {kept / total:.1%} of docstring characters"
    assert any(rejected_by for *_, rejected_by, _ in results)  # the filters do bite somewhere


# ----------------------------------------------------------------------------- Spark

BAD_TEXTS = {
    "min_chars": "Return the name.",
    "symbol_ratio": "x = {'a': [1, 2]} ;; ## ** -> <= >= != == ${}  ((()))  [[[]]] ||| &&& "
    "~~~ @@@",
    "bullet_lines": "\n".join(f"- item number {i} of the list" for i in range(10)),
    "duplicate_ngram": " ".join([SENTENCE] * 3),
}


def _corpus_rows(n: int = 200) -> list[tuple]:
    rows = []
    for i in range(n):
        kind = i % 7
        if kind == 0:
            text = None
        elif kind in (1, 2, 3, 4):
            name = list(BAD_TEXTS)[kind - 1]
            text = BAD_TEXTS[name] + ("" if name == "min_chars" else f" {i}")
        elif kind == 5:
            text = NORMAL_DOCSTRING + f"\nContact dev{i}@example.org or 192.168.0.{i % 250}.\n"
        else:
            text = NORMAL_DOCSTRING.replace("weighted", f"weighted-{i}")
        rows.append(
            (
                f"doc-{i}",
                "docstring" if i % 2 else "metadata",
                f"pkg{i % 5}",
                "MIT",
                text,
                f"site-packages/pkg{i % 5}/mod.py",
                None,
            )
        )
    return rows


@pytest.mark.spark
def test_clean_corpus_splits_every_row_once_with_schemas_and_stats(spark):
    from pyspark.sql.types import StructType

    rows = _corpus_rows()
    df = spark.createDataFrame(
        rows,
        "id STRING, source STRING, package STRING, licence STRING, text STRING, "
        "origin STRING, ingest_error STRING",
    ).repartition(3)
    kept, rejected = clean_corpus(df, QualityConfig())

    def names_types(schema):
        return [(f.name, f.dataType) for f in schema.fields]

    assert names_types(kept.schema) == names_types(StructType.fromDDL(CORPUS_CLEAN_SCHEMA))
    assert names_types(rejected.schema) == names_types(StructType.fromDDL(CORPUS_REJECTED_SCHEMA))
    # Both halves read the persisted annotation: the Python work runs once.
    assert "InMemoryRelation" in kept._jdf.queryExecution().optimizedPlan().toString()

    kept_rows = {r["id"]: r for r in kept.collect()}
    rejected_rows = {r["id"]: r for r in rejected.collect()}
    assert len(kept_rows) + len(rejected_rows) == len(rows)
    assert set(kept_rows) | set(rejected_rows) == {r[0] for r in rows}

    expected_filters = {}
    for row_id, _, _, _, text, _, _ in rows:
        cleaned, counts, rejected_by, detail = clean_one(text)
        if rejected_by is None:
            got = kept_rows[row_id]
            assert got["text"] == cleaned and got["n_chars"] == len(cleaned)
            assert (got["pii_email"], got["pii_ip"], got["pii_secret"]) == (
                counts["email"],
                counts["ip"],
                counts["secret"],
            )
        else:
            got = rejected_rows[row_id]
            assert (got["filter"], got["detail"]) == (rejected_by, detail)
            expected_filters[rejected_by] = expected_filters.get(rejected_by, 0) + 1
    assert set(expected_filters) == {"empty", *BAD_TEXTS}
    assert {r["text"] is None for r in kept_rows.values()} == {False}

    stats = quality_stats(kept, rejected)
    assert stats["rows_in"] == len(rows)
    assert stats["rows_kept"] == len(kept_rows)
    assert stats["rejected_by_filter"] == dict(sorted(expected_filters.items()))
    assert stats["pii"] == {
        "email": sum(1 for r in rows if "@example.org" in (r[4] or "")),
        "ip": sum(1 for r in rows if "192.168.0." in (r[4] or "")),
        "secret": 0,
    }
    assert set(stats["by_source"]) == {"docstring", "metadata"}
    assert stats["chars_kept"] == sum(r["n_chars"] for r in kept_rows.values())
    spark.catalog.clearCache()
