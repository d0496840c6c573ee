"""infra/vectors.py: incremental chunk tables and the vector, full-text and hybrid retrievers.

Random normalised vectors and a handful of texts stand in for an embedder: a chunk's own
vector is its nearest neighbour, and the texts use words no other document has."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from infra.vectors import RRF_K, ChunkStore, VectorIndexConfig, fts_query_text, table_name

DIM = 16
FLAT = VectorIndexConfig(min_rows=1_000_000)  # never an ANN index: exact scans
QUOTED = "file:it's \"quoted\" ') OR 1=1 --.md"


class Chunk(NamedTuple):  # like pipelines.rag.chunking.Chunk; the store only duck-types it
    chunk_id: str
    source_id: str
    start: int
    end: int
    text: str


DOCS = {
    "doc:alpha": ["alpha kettles boil water quickly", "kettles whistle when the water boils"],
    "doc:beta": ["bicycles need oiled chains", "gears on bicycles shift smoothly"],
    "doc:gamma": ["orchids bloom in humid greenhouses", "greenhouses keep orchids warm"],
    QUOTED: ["lighthouses guide ships at night"],
}


def chunks_of(source: str, texts: list[str], tag: str = "") -> list[Chunk]:
    out, start = [], 0
    for text in texts:
        out.append(
            Chunk(
                f"{source}#{start}-{start + len(text)}{tag}",
                source,
                start,
                start + len(text),
                text,
            )
        )
        start += len(text) + 1
    return out


def unit_vectors(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def store(tmp_path):
    """A flat-scan store holding DOCS, with its full-text index built; .vectors: chunk id ->
    vector."""
    store = ChunkStore.open(tmp_path / "db", "docs__recursive-8-0__test", DIM, index=FLAT)
    chunks = [c for source, texts in DOCS.items() for c in chunks_of(source, texts)]
    vectors = unit_vectors(len(chunks), seed=0)
    store.replace_sources(chunks, vectors)
    store.ensure_indexes()
    store.vectors = {c.chunk_id: v for c, v in zip(chunks, vectors, strict=False)}
    return store


def ids(hits) -> list[str]:
    return [hit.chunk_id for hit in hits]


def sources(hits) -> set[str]:
    return {hit.source_id for hit in hits}


def all_three(store, text, vector, k=3, version=None) -> dict[str, list]:
    return {
        r: store.search(text, vector, k, r, version=version) for r in ("vector", "fts", "hybrid")
    }


def test_replacing_a_document_changes_only_its_chunks_in_all_three_retrievers(store):
    old_alpha = [c for c in store.chunks() if c.source_id == "doc:alpha"]
    others_before = [c for c in store.chunks() if c.source_id != "doc:alpha"]
    beta_vector = store.vectors[others_before[0].chunk_id]
    beta_before = all_three(store, "bicycles chains", beta_vector)

    new_alpha = chunks_of("doc:alpha", ["alpha teapots steep leaves slowly"], tag="v2")
    new_vector = unit_vectors(1, seed=1)
    version = store.replace_sources(new_alpha, new_vector)
    assert version == store.version

    for state in ("unindexed", "optimised"):  # new rows not yet in the indexes, then folded in
        assert [c for c in store.chunks() if c.source_id != "doc:alpha"] == others_before
        assert [c for c in store.chunks() if c.source_id == "doc:alpha"] == new_alpha
        # The new chunk is found by its words and its vector, by every retriever ...
        for retriever, hits in all_three(store, "teapots", new_vector[0]).items():
            assert hits[0].chunk_id == new_alpha[0].chunk_id, (state, retriever)
        # ... the old ones by nothing, even when asked with their own words and vector ...
        gone = {c.chunk_id for c in old_alpha}
        for retriever, hits in all_three(
            store, "kettles whistle", store.vectors[old_alpha[0].chunk_id], k=7
        ).items():
            assert not gone & set(ids(hits)), (state, retriever)
        # ... and another document's results are what they were.
        beta_after = all_three(store, "bicycles chains", beta_vector)
        for retriever in beta_before:
            assert [(h.chunk_id, h.rank) for h in beta_after[retriever]] == [
                (h.chunk_id, h.rank) for h in beta_before[retriever]
            ], (state, retriever)
        store.ensure_indexes()
    assert all(info["unindexed"] == 0 for info in store.indexes().values())


def test_deleted_document_disappears_from_all_three_retrievers(store):
    gamma = [c for c in store.chunks() if c.source_id == "doc:gamma"]
    vector = store.vectors[gamma[0].chunk_id]
    assert all("doc:gamma" in sources(h) for h in all_three(store, "orchids", vector).values())

    assert store.delete_sources(["doc:gamma", "doc:never-stored"]) == len(gamma)
    for _ in ("before optimise", "after"):
        assert "doc:gamma" not in {c.source_id for c in store.chunks()}
        for retriever, hits in all_three(store, "orchids greenhouses", vector, k=7).items():
            assert "doc:gamma" not in sources(hits), retriever
            assert hits or retriever == "fts"  # the rest of the table is still there
        store.ensure_indexes()
    assert store.count() == sum(len(t) for s, t in DOCS.items() if s != "doc:gamma")


def test_pinned_version_reads_the_table_as_it_was(store, tmp_path):
    pinned = store.version
    alpha = [c for c in store.chunks() if c.source_id == "doc:alpha"]
    alpha_vector = store.vectors[alpha[0].chunk_id]
    reader = ChunkStore.open(tmp_path / "db", store.name, DIM, index=FLAT)  # another process
    assert reader.version == pinned

    store.replace_sources(
        chunks_of("doc:alpha", ["alpha teapots"], tag="v2"), unit_vectors(1, seed=5)
    )
    store.delete_sources(["doc:beta"])
    store.ensure_indexes()

    for who in (store, reader):
        assert who.version > pinned  # the other handle sees the writes too
        old = all_three(who, "kettles bicycles", alpha_vector, k=4, version=pinned)
        for retriever, hits in old.items():
            assert alpha[0].chunk_id in ids(hits), retriever
        assert "doc:beta" in sources(old["fts"])
        assert who.chunks(version=pinned) == sorted(
            [c for s, t in DOCS.items() for c in chunks_of(s, t)],
            key=lambda c: (c.source_id, c.start, c.chunk_id),
        )
        # The pinned read left the live handle on the latest version.
        live = all_three(who, "kettles bicycles", alpha_vector, k=4)
        for retriever, hits in live.items():
            assert not {"doc:beta"} & sources(hits), retriever
            assert alpha[0].chunk_id not in ids(hits), retriever
    with pytest.raises(ValueError, match="has no version 999"):
        store.search("kettles", alpha_vector, 3, "fts", version=999)


def test_hybrid_fuses_the_vector_and_full_text_lists_by_reciprocal_rank(store):
    beta = [c for c in store.chunks() if c.source_id == "doc:beta"]
    vector = store.vectors[beta[0].chunk_id]  # the vector points at beta ...
    text = "orchids"  # ... the words at gamma
    by_vector = store.search(text, vector, 3, "vector")
    by_words = store.search(text, vector, 3, "fts")
    assert by_vector[0].source_id == "doc:beta" and "doc:gamma" not in sources(by_vector[:1])
    assert sources(by_words) == {"doc:gamma"}

    hybrid = store.search(text, vector, 3, "hybrid")
    assert {"doc:beta", "doc:gamma"} <= sources(hybrid)
    expected: dict[str, float] = {}
    for ranked in (by_vector, by_words):
        for hit in ranked:
            expected[hit.chunk_id] = expected.get(hit.chunk_id, 0.0) + 1 / (RRF_K + hit.rank)
    best = sorted(expected.items(), key=lambda item: -item[1])[:3]
    assert [h.score for h in hybrid] == pytest.approx([score for _, score in best], rel=1e-6)
    assert set(ids(hybrid)) <= set(expected) and [h.rank for h in hybrid] == [1, 2, 3]

    # No words at all: hybrid is the vector list's order, and nothing crashes.
    assert ids(store.search("", vector, 3, "hybrid")) == ids(by_vector)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        '"',
        '"kettles',
        '"kettles whistle"',
        "a:b AND (c",
        "kettles\x00\u200b OR * ~ ^ [x] {y} \\",
        "+-&&||!(){}[]^~*?:/",
        "x" * 10_000,
    ],
)
def test_full_text_queries_never_break_on_syntax(store, text):
    hits = store.search(text, unit_vectors(1, seed=9)[0], 3, "fts")
    if "kettles" in text:
        assert "doc:alpha" in sources(hits)
    assert fts_query_text(text) is None or "\x00" not in fts_query_text(text)
    assert store.search(text, unit_vectors(1, seed=9)[0], 3, "hybrid")


def test_quotes_in_source_ids_are_values_not_sql(store):
    quoted = [c for c in store.chunks() if c.source_id == QUOTED]
    assert len(quoted) == 1
    replacement = chunks_of(QUOTED, ["lighthouses and foghorns"], tag="v2")
    store.replace_sources(replacement, unit_vectors(1, seed=3))
    assert [c for c in store.chunks() if c.source_id == QUOTED] == replacement
    assert store.count() == sum(len(t) for t in DOCS.values())  # nothing else touched

    assert store.delete_sources([QUOTED]) == 1
    assert store.source_ids() == {"doc:alpha", "doc:beta", "doc:gamma"}
    assert store.delete_sources(["') OR 1=1 --", "doc:alpha' OR '1'='1"]) == 0


def test_vector_index_above_threshold_keeps_recall(tmp_path):
    rng = np.random.default_rng(0)
    dim, n, queries = 32, 4000, 30
    centres = rng.standard_normal((100, dim)).astype(np.float32)

    def sample(count):
        points = centres[rng.integers(0, len(centres), count)]
        points = points + 0.5 * rng.standard_normal((count, dim)).astype(np.float32)
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    data, query = sample(n), sample(queries)
    config = VectorIndexConfig(min_rows=3000, index_type="IVF_SQ", nprobes=4)
    store = ChunkStore.open(tmp_path / "db", "synthetic", dim, index=config)
    chunks = [Chunk(f"c{i}", f"s{i // 10}", 0, 1, f"row {i}") for i in range(n)]
    store.replace_sources(chunks[:2000], data[:2000])
    assert store.ensure_indexes()["vector_index"] is None  # below min_rows: exact scans
    store.replace_sources(chunks[2000:], data[2000:])
    done = store.ensure_indexes()
    assert done["vector_index"] == "vector__ivf_sq_t400" and done["vector_built"]

    exact = np.argsort(-(query @ data.T), axis=1)[:, :10]
    found = [store.search("", q, 10, "vector") for q in query]
    recall = np.mean(
        [
            len({int(h.chunk_id[1:]) for h in hits} & set(truth)) / 10
            for hits, truth in zip(found, exact, strict=False)
        ]
    )
    assert recall >= 0.95

    # Rows written after the index was built are searched too, before and after optimize.
    late = Chunk("late", "s-late", 0, 1, "late row")
    store.replace_sources([late], query[:1])
    assert store.search("", query[0], 1, "vector")[0].chunk_id == "late"
    store.ensure_indexes()
    assert store.indexes()["vector__ivf_sq_t400"]["unindexed"] == 0
    assert store.search("", query[0], 1, "vector")[0].chunk_id == "late"

    # Another index type is a rebuild; shrinking below min_rows drops the index (exact scans).
    done = store.ensure_indexes(config.model_copy(update={"index_type": "IVF_FLAT"}))
    assert done["dropped"] == ["vector__ivf_sq_t400"]
    assert done["vector_index"] == "vector__ivf_flat_t400"
    store.delete_sources([f"s{i}" for i in range(150)])  # rows 0-1499
    done = store.ensure_indexes()
    assert done["vector_index"] is None and done["dropped"] == ["vector__ivf_flat_t400"]
    assert set(store.indexes()) == {"text_fts"}
    hits = store.search("", data[2500], 10, "vector")
    assert [h.chunk_id for h in hits] == [
        f"c{i}" for i in np.argsort(-(data[1500:] @ data[2500]))[:10] + 1500
    ]


def test_table_names_are_safe_and_distinct():
    assert (
        table_name("docs", "recursive-128-16", "all-MiniLM-L6-v2")
        == "docs__recursive-128-16__all-minilm-l6-v2"
    )
    assert table_name("my docs/..", "a__b", "/models/e5 base") == "my-docs__a-b__models-e5-base"
    assert len(table_name("x" * 500, "y", "z")) <= 200
    with pytest.raises(ValueError, match="embedder"):
        table_name("docs", "fixed-64-0", "//")
    with pytest.raises(ValueError, match="table name"):
        ChunkStore.open("/tmp/unused", "../escape", DIM)


def test_bad_input_gets_clear_errors(store, tmp_path):
    one = chunks_of("doc:new", ["text"])
    with pytest.raises(ValueError, match="expected \\(1, 16\\)"):
        store.replace_sources(one, unit_vectors(2, seed=0))
    with pytest.raises(ValueError, match="appears twice"):
        store.replace_sources(one + one, unit_vectors(2, seed=0))
    with pytest.raises(ValueError, match="NaN"):
        store.replace_sources(one, np.full((1, DIM), np.nan))
    with pytest.raises(ValueError, match="chunk 0 \\(dict\\) has no 'chunk_id'"):
        store.replace_sources([{"chunk_id": "x"}], unit_vectors(1, seed=0))
    with pytest.raises(ValueError, match="retriever"):
        store.search("q", unit_vectors(1, seed=0)[0], 3, "bm25")
    with pytest.raises(ValueError, match="k must be"):
        store.search("q", unit_vectors(1, seed=0)[0], 0, "fts")
    with pytest.raises(ValueError, match="has 8 values"):
        store.search("q", np.zeros(8), 3, "vector")
    with pytest.raises(ValueError, match="16-d vectors, not 8-d"):
        ChunkStore.open(tmp_path / "db", store.name, 8)


def test_pinned_reads_from_threads_are_stable_while_a_writer_commits(store):
    from concurrent.futures import ThreadPoolExecutor

    pinned = store.version
    vector = store.vectors[store.chunks()[0].chunk_id]
    expected = {r: ids(h) for r, h in all_three(store, "kettles orchids", vector).items()}

    def read(_):
        return {
            r: ids(h)
            for r, h in all_three(store, "kettles orchids", vector, version=pinned).items()
        }

    with ThreadPoolExecutor(4) as pool:
        reads = [pool.submit(read, i) for i in range(12)]
        for round_ in range(4):  # the writer keeps committing meanwhile
            store.replace_sources(
                chunks_of("doc:alpha", [f"alpha kettles round {round_}"], tag=f"r{round_}"),
                unit_vectors(1, seed=round_),
            )
        assert all(future.result() == expected for future in reads)
    assert store.version > pinned


def test_an_empty_table_answers_nothing(tmp_path):
    store = ChunkStore.open(tmp_path / "db", "empty", DIM)
    assert store.chunks() == [] and store.ensure_indexes()["fts_index"] is None
    for retriever in ("vector", "fts", "hybrid"):
        assert store.search("anything", unit_vectors(1, seed=0)[0], 5, retriever) == []
    assert store.replace_sources([], np.zeros((0, DIM))) == store.version
    assert store.delete_sources([]) == 0
