"""pipelines/corpus/dedup.py: shingles, MinHash, exact Jaccard and the Spark job's decisions."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipelines.corpus.dedup import CORPUS_DEDUP_SCHEMA_EXTRA, DUPLICATES_SCHEMA
from pipelines.corpus.minhash import (
    DedupConfig,
    choose_representatives,
    exact_jaccard,
    minhash_signatures,
    shingles,
)

CONFIG = DedupConfig()


def py_shingles(text: str, k: int = 5) -> set[int]:
    """Reference: byte k-grams as big-endian integers, the whole text when shorter than k."""
    data = text.encode("utf-8")
    if len(data) < k:
        return {int.from_bytes(data, "big")}
    return {int.from_bytes(data[i : i + k], "big") for i in range(len(data) - k + 1)}


def py_jaccard(a: str, b: str, k: int = 5) -> float:
    x, y = py_shingles(a, k), py_shingles(b, k)
    return len(x & y) / len(x | y)


def random_words(rng: random.Random, n: int) -> list[str]:
    return [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 8)))
        for _ in range(n)
    ]


def edited(text: str, rng: random.Random, vocabulary: list[str], rate: float) -> str:
    """Seeded word substitutions, deletions and insertions; at least one edit."""
    words = text.split(" ")
    out: list[str] = []
    for word in words:
        roll = rng.random()
        if roll < rate / 3:
            out.append(rng.choice(vocabulary))
        elif roll < 2 * rate / 3:
            continue
        else:
            out.append(word)
            if roll < rate:
                out.append(rng.choice(vocabulary))
    if out == words:
        out[rng.randrange(len(out))] = rng.choice(vocabulary)
    return " ".join(out)


def chain_texts() -> tuple[str, str, str]:
    """A~B and B~C above 0.8, A~C below: 100 words, 5 replaced A->B, 5 others B->C."""
    rng = random.Random(5)
    a = random_words(rng, 100)
    b = list(a)
    for i in range(0, 100, 20):
        b[i] = random_words(rng, 1)[0]
    c = list(b)
    for i in range(10, 100, 20):
        c[i] = random_words(rng, 1)[0]
    return " ".join(a), " ".join(b), " ".join(c)


# ------------------------------------------------------------------------------ numpy core


@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_shingles_are_the_unique_byte_kgrams(k):
    for text in [
        "",
        "a",
        "abcd",
        "abcde",
        "to be or not to be, to be",
        "héllo wörld ✓✓ ✓✓",
        "x" * 50,
    ]:
        got = shingles(text, k)
        assert got.dtype == np.uint64
        assert got.tolist() == sorted(py_shingles(text, k)), (text, k)


def test_exact_jaccard_matches_python_sets():
    rng = random.Random(1)
    vocabulary = random_words(rng, 300)
    texts_a = [" ".join(rng.choices(vocabulary, k=rng.randint(1, 80))) for _ in range(50)]
    texts_b = [edited(t, rng, vocabulary, 0.2) for t in texts_a]
    texts_a += ["", "abc", "same"]
    texts_b += ["", "abd", "same"]
    got = exact_jaccard(texts_a, texts_b)
    want = [py_jaccard(a, b) for a, b in zip(texts_a, texts_b, strict=False)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_identical_texts_have_identical_signatures():
    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Something else entirely here.",
        "The quick brown fox jumps over the lazy dog.",
    ]
    signatures = minhash_signatures(texts, CONFIG)
    assert signatures.shape == (3, CONFIG.num_perm) and signatures.dtype == np.uint32
    assert (signatures[0] == signatures[2]).all()
    assert (signatures[0] == signatures[1]).mean() < 0.2
    # one text alone, or in another batch, gets the same signature: no batch-dependent state
    assert (minhash_signatures(texts[:1], CONFIG)[0] == signatures[0]).all()


def test_signature_estimate_is_close_to_exact_jaccard():
    rng = random.Random(2)
    vocabulary = random_words(rng, 2000)
    originals = [" ".join(rng.choices(vocabulary, k=120)) for _ in range(200)]
    copies = [edited(t, rng, vocabulary, rng.uniform(0.02, 0.3)) for t in originals]
    exact = exact_jaccard(originals, copies)
    signatures_a = minhash_signatures(originals, CONFIG)
    signatures_b = minhash_signatures(copies, CONFIG)
    estimate = (signatures_a == signatures_b).mean(axis=1)
    error = estimate - exact
    # the estimator is unbiased with std sqrt(J(1-J)/128) <= 0.044: the mean error over 200
    # pairs must be ~0, the worst within ~4.5 std
    assert abs(error.mean()) < 0.01
    assert np.sqrt((error**2).mean()) < 0.045
    assert np.abs(error).max() < 0.2
    assert exact.min() < 0.6 < 0.9 < exact.max()  # the pairs span the interesting range


def test_config_defaults_give_recall_at_threshold_and_validate_bands():
    assert CONFIG.bands * CONFIG.rows == CONFIG.num_perm
    assert CONFIG.candidate_probability(CONFIG.threshold) >= 0.95
    assert DedupConfig(bands=16, rows=8).candidate_probability(0.8) < 0.95  # why not 16 x 8
    with pytest.raises(ValueError, match="bands \\* rows"):
        DedupConfig(bands=16, rows=4)


def test_greedy_keeps_the_end_of_a_chain():
    a, b, c = chain_texts()
    j_ab, j_bc, j_ac = exact_jaccard([a, b, a], [b, c, c])
    assert j_ab >= 0.8 and j_bc >= 0.8 and j_ac < 0.8  # the chain really is one
    representative, jaccard = choose_representatives([a, b, c], CONFIG)
    assert representative.tolist() == [-1, 0, -1]  # B removed for A; C is not similar to A
    assert jaccard[1] == pytest.approx(j_ab)


# ------------------------------------------------------------------------------ the Spark job


def corpus(seed: int = 7) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """~300 (id, text, source) rows: random-word originals, seeded edited copies (some edited
    below the threshold), three exact copies, and a chain A~B~C plus an exact copy of B.
    Returns the rows and the injected (original id, copy id) pairs."""
    rng = random.Random(seed)
    vocabulary = random_words(rng, 3000)
    originals = [" ".join(rng.choices(vocabulary, k=rng.randint(40, 120))) for _ in range(230)]
    labels = rng.sample(range(1000), 290)
    rows = [(f"doc-{labels[i]:03d}", text, "original") for i, text in enumerate(originals)]
    pairs = []
    for j in range(60):
        source = rng.randrange(len(originals))
        copy_id = f"doc-{labels[230 + j]:03d}"
        rows.append(
            (copy_id, edited(originals[source], rng, vocabulary, rng.uniform(0.0, 0.12)), "copy")
        )
        pairs.append((rows[source][0], copy_id))
    exact = " ".join(rng.choices(vocabulary, k=50))
    rows += [("exact-3", exact, "exact"), ("exact-1", exact, "exact"), ("exact-2", exact, "exact")]
    a, b, c = chain_texts()
    rows += [
        ("chain-a", a, "chain"),
        ("chain-b", b, "chain"),
        ("chain-c", c, "chain"),
        ("chain-b2", b, "chain"),
    ]
    return rows, pairs


@pytest.fixture(scope="module")
def rows_and_pairs():
    return corpus()


def run(spark, rows, partitions: int | None = None):
    from pipelines.corpus.dedup import deduplicate

    df = spark.createDataFrame(rows, "id STRING, text STRING, source STRING")
    if partitions:
        df = df.repartition(partitions)
    result = deduplicate(df, CONFIG)
    kept = {r.id: r.asDict() for r in result.kept.collect()}
    duplicates = {r.id: r.asDict() for r in result.duplicates.collect()}
    return result, kept, duplicates


@pytest.fixture(scope="module")
def first_run(spark, rows_and_pairs):
    rows, _ = rows_and_pairs
    return run(spark, rows)


@pytest.mark.spark
def test_nothing_lost_and_schemas(first_run, rows_and_pairs):
    rows, _ = rows_and_pairs
    result, kept, duplicates = first_run
    assert set(kept) | set(duplicates) == {r[0] for r in rows}
    assert not set(kept) & set(duplicates)
    extra = [f.split()[0] for f in CORPUS_DEDUP_SCHEMA_EXTRA.split(",")]
    assert result.kept.columns == ["id", "text", "source", *extra]
    assert (
        result.kept.schema.simpleString()
        == "struct<id:string,text:string,source:string,cluster_id:string,cluster_size:int>"
    )
    from pyspark.sql.types import _parse_datatype_string

    assert result.duplicates.schema == _parse_datatype_string(DUPLICATES_SCHEMA)
    assert all(kept[d["representative_id"]] for d in duplicates.values())  # reps are kept docs


@pytest.mark.spark
def test_exact_duplicates_keep_the_smallest_id(first_run):
    _, kept, duplicates = first_run
    assert kept["exact-1"]["cluster_id"] == "exact-1" and kept["exact-1"]["cluster_size"] == 3
    for copy in ("exact-2", "exact-3"):
        assert duplicates[copy] == {
            "id": copy,
            "cluster_id": "exact-1",
            "representative_id": "exact-1",
            "kind": "exact",
            "jaccard": 1.0,
        }


@pytest.mark.spark
def test_injected_near_duplicates_found_precisely(first_run, rows_and_pairs):
    rows, pairs = rows_and_pairs
    _, kept, duplicates = first_run
    text = {r[0]: r[1] for r in rows}
    truth = [(a, b) for a, b in pairs if py_jaccard(text[a], text[b]) >= CONFIG.threshold]
    assert 30 <= len(truth) < len(pairs)  # some copies were edited below the threshold
    recall = sum(a in duplicates or b in duplicates for a, b in truth) / len(truth)
    similar = [
        py_jaccard(text[d], text[v["representative_id"]]) >= CONFIG.threshold
        for d, v in duplicates.items()
    ]
    assert recall >= 0.95
    assert sum(similar) / len(similar) >= 0.95
    assert all(similar)  # stronger: every removal is checked with the exact Jaccard
    for d, v in duplicates.items():
        assert v["jaccard"] == pytest.approx(py_jaccard(text[d], text[v["representative_id"]]))
        assert kept[v["representative_id"]]["cluster_id"] == v["cluster_id"]


@pytest.mark.spark
def test_chain_end_is_kept_and_copies_follow_their_survivor(first_run, rows_and_pairs):
    rows, _ = rows_and_pairs
    _, kept, duplicates = first_run
    text = {r[0]: r[1] for r in rows}
    assert "chain-a" in kept and "chain-c" in kept  # J(A, C) < threshold: C stays
    assert duplicates["chain-b"]["representative_id"] == "chain-a"
    assert duplicates["chain-b"]["kind"] == "near"
    # B's exact copy: removed as exact, represented by the KEPT doc its survivor B points at
    assert duplicates["chain-b2"]["kind"] == "exact"
    assert duplicates["chain-b2"]["representative_id"] == "chain-a"
    assert duplicates["chain-b2"]["jaccard"] == pytest.approx(
        py_jaccard(text["chain-b"], text["chain-a"])
    )
    assert {kept["chain-a"]["cluster_id"], kept["chain-c"]["cluster_id"]} == {"chain-a"}
    assert kept["chain-c"]["cluster_size"] == 4


@pytest.mark.spark
def test_stats_agree_with_the_outputs(first_run, rows_and_pairs):
    rows, _ = rows_and_pairs
    result, kept, duplicates = first_run
    stats = result.stats()
    kinds = [d["kind"] for d in duplicates.values()]
    assert stats["docs_in"] == len(rows)
    assert stats["exact_duplicates_removed"] == kinds.count("exact") == 3
    assert stats["near_duplicates_removed"] == kinds.count("near")
    assert stats["docs_kept"] == len(kept)
    sizes = {}
    for doc in list(kept.values()) + list(duplicates.values()):
        sizes[doc["cluster_id"]] = sizes.get(doc["cluster_id"], 0) + 1
    clustered = [n for n in sizes.values() if n >= 2]
    assert stats["clusters"] == len(clustered) == sum(stats["cluster_size_histogram"].values())
    assert stats["largest_cluster"] == max(clustered)
    assert all(v["cluster_size"] == sizes[v["cluster_id"]] for v in kept.values())


@pytest.mark.spark
def test_decisions_stable_across_runs_order_and_partitioning(spark, first_run, rows_and_pairs):
    rows, _ = rows_and_pairs
    _, kept, duplicates = first_run
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    _, kept_again, duplicates_again = run(spark, shuffled, partitions=3)
    assert kept_again == kept
    assert duplicates_again == duplicates


@pytest.mark.spark
def test_connected_components_of_a_long_path_and_a_triangle(spark):
    from pipelines.corpus.dedup import connected_components

    rng = random.Random(4)
    path = rng.sample(range(10, 1000), 40)  # a 40-node path, node ids in random order
    edges = list(zip(path, path[1:], strict=False)) + [(1, 2), (2, 3), (3, 1)]
    components = connected_components(spark.createDataFrame(edges, "src LONG, dst LONG"))
    got = {r.node: r.component for r in components.collect()}
    assert got == {**{n: min(path) for n in path}, 1: 1, 2: 1, 3: 1}
