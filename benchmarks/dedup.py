"""Near-duplicate detection: the project's Spark job vs datasketch, same parameters, one process.

Corpus: installed packages' documentation (``pipelines.shared.documents.iter_records``,
docstrings read with ``ast``), deduplicated by text, plus edited copies of random documents
(seeded word substitutions, deletions and insertions) so the true near-duplicate pairs are known.

    python benchmarks/dedup.py --docs 200000
    python benchmarks/dedup.py --docs 20000 \
        --mrpc /work/shared/data/mrpc_paraphrase_pairs/msr_paraphrase_train.txt \
        --data /work/shared/data/amazon_reviews_2018_5core_small

precision = share of (removed doc, its representative) pairs whose exact Jaccard >= threshold;
recall = share of injected pairs with exact Jaccard >= threshold where one of the two was
removed. Exact Jaccard here is computed with plain Python sets of byte k-grams, independent of
the numpy code under test. Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

THRESHOLD_NOTE = (
    "datasketch removes a document when a kept candidate's estimated Jaccard "
    ">= threshold (its bare LSH candidates at 32x4 bands include most J~0.5 pairs)"
)


def log(message: str) -> None:
    print(f"[dedup-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- corpus + truth


def corpus_texts(limit: int, min_chars: int = 50) -> list[str]:
    """The first `limit` distinct texts of >= min_chars from installed packages' docs."""
    from pipelines.shared.documents import CorpusConfig, iter_records

    # private modules and tests included: the benchmark wants as many real texts as exist
    config = CorpusConfig(exclude_private=False, exclude_tests=False)
    seen: dict[str, None] = {}
    for record in iter_records(config):
        text = record.get("text")
        if text and len(text) >= min_chars and text not in seen:
            seen[text] = None
            if len(seen) >= limit:
                break
    return list(seen)


def edit_copy(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """Word-level edits at a random rate, at least one: most copies stay above J = 0.8 (a word
    edit touches ~k + word length byte k-grams), short or heavily edited ones fall below."""
    rate = rng.uniform(0.0, 0.1)
    words = text.split(" ")
    out: list[str] = []
    for word in words:
        roll = rng.random()
        if roll < rate / 3:
            out.append(rng.choice(vocabulary))  # substitution
        elif roll < 2 * rate / 3:
            continue  # deletion
        else:
            out.append(word)
            if roll < rate:
                out.append(rng.choice(vocabulary))  # insertion
    if out == words:
        out.insert(rng.randrange(len(out) + 1), rng.choice(vocabulary))
    return " ".join(out)


def build_docs(
    n_docs: int, dup_fraction: float, seed: int
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(ids, texts, injected (original id, copy id) pairs). Ids are a seeded shuffle, so the
    copy is as likely as the original to hold the smaller id."""
    wanted_originals = n_docs - int(round(n_docs * dup_fraction))
    originals = corpus_texts(wanted_originals)
    n_copies = n_docs - len(originals)
    log(f"corpus: {len(originals)} real documents, {n_copies} injected copies")
    rng = random.Random(seed)
    vocabulary = sorted({w for t in originals[:2000] for w in t.split() if w.isalpha()})[:5000]
    sources = [rng.randrange(len(originals)) for _ in range(n_copies)]
    texts = originals + [edit_copy(originals[i], rng, vocabulary) for i in sources]
    labels = list(range(n_docs))
    rng.shuffle(labels)
    ids = [f"doc-{label:07d}" for label in labels]
    pairs = [(ids[src], ids[len(originals) + j]) for j, src in enumerate(sources)]
    return ids, texts, pairs


def py_shingles(text: str, k: int) -> set[bytes]:
    data = text.encode("utf-8")
    if len(data) < k:
        return {data}
    return {data[i : i + k] for i in range(len(data) - k + 1)}


def py_jaccard(a: str, b: str, k: int) -> float:
    x, y = py_shingles(a, k), py_shingles(b, k)
    return len(x & y) / len(x | y)


# ---------------------------------------------------------------------------- the two methods


def spark_session():
    os.environ["GENAI_HOME"] = tempfile.mkdtemp(prefix="genai-bench-dedup-")
    os.environ.setdefault(
        "GENAI_JARS_DIR", str(Path(__file__).resolve().parents[1] / ".genai" / "jars")
    )
    from infra.spark import get_spark

    spark = get_spark(
        master="local[2]", app_name="bench-dedup", extra_conf={"spark.ui.enabled": "false"}
    )
    # Start-up, not timed: the JVM, then the Python workers (one per core) with the project
    # imported, as datasketch is imported before its clock starts. ~3-5 s on 2 cores.
    spark.range(0, 2, 1, 2).mapInArrow(_import_dedup, "id LONG").count()
    return spark


def _import_dedup(batches):
    import pipelines.corpus.dedup  # noqa: F401

    yield from batches


def run_spark(spark, ids: list[str], texts: list[str], config) -> dict:
    """The project's job on a Parquet input, timed from the call to the collected results."""
    import pandas as pd

    from pipelines.corpus.dedup import deduplicate

    path = str(Path(os.environ["GENAI_HOME"]) / f"input-{len(ids)}-{time.time_ns()}")
    spark.createDataFrame(pd.DataFrame({"id": ids, "text": texts})).write.parquet(path)
    df = spark.read.parquet(path)
    start = time.perf_counter()
    result = deduplicate(df, config)
    kept = result.kept.count()
    duplicates = result.duplicates.toPandas()
    seconds = time.perf_counter() - start
    stats = result.stats()
    result.unpersist()
    log(f"spark: {seconds:.1f} s, kept {kept}, removed {len(duplicates)}, stats {stats}")
    return {
        "seconds": seconds,
        "kept": kept,
        "stats": stats,
        "representative": dict(
            zip(duplicates["id"], duplicates["representative_id"], strict=False)
        ),
    }


def run_datasketch(ids: list[str], texts: list[str], config) -> dict:
    """datasketch MinHash + MinHashLSH with the same shingles, permutations and bands. Documents
    in id order; a document is removed when it finds a kept one with estimated J >= threshold."""
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(
        threshold=config.threshold, num_perm=config.num_perm, params=(config.bands, config.rows)
    )
    kept_signatures: dict[str, MinHash] = {}
    representative: dict[str, str] = {}
    for doc_id, text in sorted(zip(ids, texts, strict=False)):
        signature = MinHash(num_perm=config.num_perm, seed=config.seed)
        signature.update_batch(list(py_shingles(text, config.shingle_size)))
        best, best_estimate = None, -1.0
        for candidate in lsh.query(signature):
            estimate = signature.jaccard(kept_signatures[candidate])
            if estimate > best_estimate:
                best, best_estimate = candidate, estimate
        if best is not None and best_estimate >= config.threshold:
            representative[doc_id] = best
        else:
            lsh.insert(doc_id, signature)
            kept_signatures[doc_id] = signature
    seconds = time.perf_counter() - start
    log(f"datasketch: {seconds:.1f} s, removed {len(representative)}")
    return {"seconds": seconds, "representative": representative}


# ---------------------------------------------------------------------------- scoring


def precision(representative: dict[str, str], text_of: dict[str, str], config) -> float:
    if not representative:
        return 1.0
    similar = sum(
        py_jaccard(text_of[doc], text_of[rep], config.shingle_size) >= config.threshold
        for doc, rep in representative.items()
    )
    return similar / len(representative)


def caught(pairs: list[tuple[str, str]], removed: dict[str, str]) -> int:
    return sum(a in removed or b in removed for a, b in pairs)


def similar_pairs(
    pairs: list[tuple[str, str]], text_of: dict[str, str], config
) -> list[tuple[str, str]]:
    return [
        (a, b)
        for a, b in pairs
        if py_jaccard(text_of[a], text_of[b], config.shingle_size) >= config.threshold
    ]


def compare(spark, ids: list[str], texts: list[str], config, skip_datasketch: bool) -> dict:
    spark_run = run_spark(spark, ids, texts, config)
    sketch_run = None if skip_datasketch else run_datasketch(ids, texts, config)
    text_of = dict(zip(ids, texts, strict=False))
    out = {
        "docs": len(ids),
        "spark_seconds": round(spark_run["seconds"], 2),
        "spark_docs_per_s": round(len(ids) / spark_run["seconds"], 1),
        "spark_removed": len(spark_run["representative"]),
        "precision": precision(spark_run["representative"], text_of, config),
        "spark_stats": spark_run["stats"],
    }
    if sketch_run is not None:
        out.update(
            {
                "datasketch_seconds": round(sketch_run["seconds"], 2),
                "datasketch_docs_per_s": round(len(ids) / sketch_run["seconds"], 1),
                "ratio": round(sketch_run["seconds"] / spark_run["seconds"], 3),
                "datasketch_removed": len(sketch_run["representative"]),
                "datasketch_precision": precision(sketch_run["representative"], text_of, config),
            }
        )
    return out | {
        "_removed": spark_run["representative"],
        "_sketch_removed": sketch_run["representative"] if sketch_run else {},
    }


# ---------------------------------------------------------------------------- real data sets


def read_mrpc(paths: list[str]) -> tuple[list[str], list[str], list[tuple[str, str, int]]]:
    """Sentences and labelled pairs from MRPC pair files (TSV with BOM, quoting disabled)."""
    import pandas as pd

    text_of: dict[str, str] = {}
    pairs: list[tuple[str, str, int]] = []
    for path in paths:
        frame = pd.read_csv(
            path,
            sep="\t",
            quoting=csv.QUOTE_NONE,
            encoding="utf-8-sig",
            dtype=str,
            keep_default_na=False,
        )
        if "Quality" not in frame.columns:
            raise SystemExit(
                f"{path}: not an MRPC pairs file (columns {list(frame.columns)}); "
                "give msr_paraphrase_train.txt or msr_paraphrase_test.txt"
            )
        for row in frame.itertuples(index=False):
            quality, id1, id2, s1, s2 = row[:5]
            text_of.setdefault(f"mrpc-{id1}", s1)
            text_of.setdefault(f"mrpc-{id2}", s2)
            pairs.append((f"mrpc-{id1}", f"mrpc-{id2}", int(quality)))
    return list(text_of), list(text_of.values()), pairs


def read_json_lines(
    path: str, fields: tuple[str, ...] = ("text", "reviewText")
) -> tuple[list[str], list[str]]:
    """Texts from .json/.jsonl(.gz) files (a folder: every such file in it, sorted)."""
    root = Path(path)
    files = sorted(p for p in root.iterdir() if ".json" in p.name) if root.is_dir() else [root]
    ids, texts = [], []
    for file in files:
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                record = json.loads(line)
                text = next((record[f] for f in fields if isinstance(record.get(f), str)), None)
                if text:
                    ids.append(f"{file.name.split('.')[0]}:{line_no:07d}")
                    texts.append(text)
    return ids, texts


def mrpc_report(spark, paths: list[str], config, skip_datasketch: bool) -> dict:
    ids, texts, labelled = read_mrpc(paths)
    log(f"MRPC: {len(ids)} sentences, {len(labelled)} labelled pairs")
    out = compare(spark, ids, texts, config, skip_datasketch)
    text_of = dict(zip(ids, texts, strict=False))
    for label, name in ((1, "paraphrase"), (0, "non_paraphrase")):
        pairs = [(a, b) for a, b, q in labelled if q == label]
        above = similar_pairs(pairs, text_of, config)
        out[f"{name}_pairs"] = len(pairs)
        out[f"{name}_pairs_above_threshold"] = len(above)
        out[f"{name}_pairs_above_threshold_caught"] = caught(above, out["_removed"])
        if not skip_datasketch:
            out[f"{name}_pairs_above_threshold_caught_datasketch"] = caught(
                above, out["_sketch_removed"]
            )
    return out


def data_report(spark, path: str, config, skip_datasketch: bool) -> dict:
    ids, texts = read_json_lines(path)
    log(f"{path}: {len(ids)} texts, {len(set(texts))} distinct")
    out = compare(spark, ids, texts, config, skip_datasketch)
    out["distinct_texts"] = len(set(texts))
    if not skip_datasketch:
        spark_removed, sketch_removed = set(out["_removed"]), set(out["_sketch_removed"])
        out["removed_by_both"] = len(spark_removed & sketch_removed)
        out["removed_by_spark_only"] = len(spark_removed - sketch_removed)
        out["removed_by_datasketch_only"] = len(sketch_removed - spark_removed)
    return out


HEADLINE = (
    "docs",
    "spark_docs_per_s",
    "datasketch_docs_per_s",
    "ratio",
    "precision",
    "recall",
    "datasketch_precision",
    "datasketch_recall",
)


def headline(report: dict) -> dict:
    """The agreed fields first, then the rest."""
    return {k: report[k] for k in HEADLINE if k in report} | report


def public(report: dict) -> dict:
    return {k: v for k, v in report.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200_000, help="documents in the main run")
    parser.add_argument(
        "--dup-fraction",
        type=float,
        default=0.2,
        help="share of injected copies (more when real documents run out)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the copies and their edits")
    parser.add_argument(
        "--mrpc",
        action="append",
        default=[],
        help="MRPC pairs file (msr_paraphrase_train.txt / _test.txt); repeatable",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        help="JSON-lines file or folder (text or reviewText field); repeatable",
    )
    parser.add_argument("--skip-datasketch", action="store_true")
    args = parser.parse_args(argv)

    from pipelines.corpus.minhash import DedupConfig

    config = DedupConfig()
    ids, texts, pairs = build_docs(args.docs, args.dup_fraction, args.seed)
    spark = spark_session()
    log(f"main run: {len(ids)} documents")
    report = compare(spark, ids, texts, config, args.skip_datasketch)
    text_of = dict(zip(ids, texts, strict=False))
    truth = similar_pairs(pairs, text_of, config)
    report["injected_pairs"] = len(pairs)
    report["injected_pairs_above_threshold"] = len(truth)
    report["recall"] = caught(truth, report["_removed"]) / max(len(truth), 1)
    if not args.skip_datasketch:
        report["datasketch_recall"] = caught(truth, report["_sketch_removed"]) / max(len(truth), 1)
    report = headline(public(report))
    report["params"] = config.model_dump() | {
        "master": "local[2]",
        "cpus": os.cpu_count(),
        "dup_fraction": args.dup_fraction,
        "seed_copies": args.seed,
        "datasketch_rule": THRESHOLD_NOTE,
    }
    if args.mrpc:
        report["mrpc"] = public(mrpc_report(spark, args.mrpc, config, args.skip_datasketch))
    for path in args.data:
        report.setdefault("data", {})[Path(path).name] = public(
            data_report(spark, path, config, args.skip_datasketch)
        )
    spark.stop()
    shutil.rmtree(os.environ["GENAI_HOME"], ignore_errors=True)  # the Parquet inputs: ~100 MB
    print(json.dumps(report, sort_keys=False))
    return report


if __name__ == "__main__":
    main()
