"""The `genai` command's arguments: one subcommand per flow or service, each with its preset."""

from __future__ import annotations

import argparse


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genai", description=description)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="full logs, and tracebacks with errors"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the whole lifecycle at demo scale")
    demo.add_argument("--preset", default="demo_minhash_cpu", help="prepare_corpus preset")
    demo.add_argument("--pretrain-preset", default="demo_cpu", help="pretrain preset")
    demo.add_argument("--finetune-preset", default="demo_lora_cpu", help="finetune_sweep preset")
    demo.add_argument("--reviews-preset", default="demo_lora_cpu", help="review_summaries preset")
    demo.add_argument("--rag-preset", default="demo_lora_cpu", help="rag preset")
    demo.add_argument(
        "--stages",
        default=None,
        help="comma-separated subset of corpus,pretrain,finetune,reviews,rag (the stages they "
        "build on run too, from cache when unchanged)",
    )
    run = commands.add_parser("prepare-corpus", help="run the prepare-corpus flow")
    run.add_argument("--preset", default="demo_minhash_cpu")
    train = commands.add_parser("pretrain", help="run the pretrain flow on the current mix")
    train.add_argument("--preset", default="demo_cpu", help="configs/pretrain/<preset>.yaml")
    sweep = commands.add_parser("finetune-sweep", help="run the LoRA sweep flow")
    sweep.add_argument(
        "--preset", default="demo_lora_cpu", help="configs/finetune_sweep/<preset>.yaml"
    )
    sweep.add_argument("--base", default=None, help="base model: models:/… URI or HF dir")
    summarise = commands.add_parser(
        "review-summaries", help="run the review-summaries flow (incremental)"
    )
    summarise.add_argument(
        "--preset", default="demo_lora_cpu", help="configs/review_summaries/<preset>.yaml"
    )
    summarise.add_argument(
        "--base", default=None, help="base of genai-reviews when it must be made"
    )
    rate = commands.add_parser("pairwise-eval", help="double-blind rating sheets: prepare, score")
    rate.add_argument("action", choices=("prepare", "score"))
    rate.add_argument("sheets", nargs="*", help="filled sheets (score)")
    rate.add_argument("--key", help="the sheet's key.json (score)")
    rate.add_argument("--a", default="models:/genai-tabledoc@champion", help="model A")
    rate.add_argument("--b", default="models:/genai-base@champion", help="model B")
    rate.add_argument("--items", type=int, default=62, help="unseen tables to rate")
    serve = commands.add_parser(
        "serve",
        help="serve a model over OpenAI's HTTP API (foreground, no Prefect run; Ctrl-C stops it)",
    )
    serve.add_argument(
        "--model", default="models:/genai-tabledoc@champion", help="models:/… URI or local HF dir"
    )
    serve.add_argument(
        "--name", default=None, help="model name clients send (default: the URI minus models:/)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=int, help="requests per model call, at most")
    serve.add_argument(
        "--batch-window-ms", type=float, help="how long a batch's first request waits for others"
    )
    serve.add_argument(
        "--torch-threads",
        type=int,
        help="the model's CPU threads (default: all cores but one, which serves HTTP)",
    )
    serve.add_argument(
        "--api-key-env", default=None, help="env var holding a bearer token that clients must send"
    )
    serve.add_argument(
        "--allow-no-auth",
        action="store_true",
        help="serve a non-loopback --host without --api-key-env (anyone who reaches it can use "
        "the model)",
    )
    serve.add_argument(
        "--rag-preset",
        default=None,
        help="also serve POST /answer over this configs/rag/<preset>.yaml's "
        "index (the served model answers)",
    )
    index = commands.add_parser("build-index", help="run the build-index flow (incremental)")
    index.add_argument("--preset", default="demo_cpu", help="configs/build_index/<preset>.yaml")
    grid = commands.add_parser(
        "evaluate-retrieval", help="run the retriever grid: chunk size x retriever x k"
    )
    grid.add_argument(
        "--preset", default="demo_cpu", help="configs/evaluate_retrieval/<preset>.yaml"
    )
    grid.add_argument(
        "--questions",
        action="append",
        default=[],
        help="a CSV (question, expected_source_ids) or JSONL of your own; repeat",
    )
    sync = commands.add_parser("sync-features", help="run the sync-online-features flow")
    sync.add_argument(
        "--preset", default="demo_cpu", help="configs/sync_online_features/<preset>.yaml"
    )
    rag = commands.add_parser(
        "rag", help="run the RAG stage's flow (features, index, genai-rag, a few answers)"
    )
    rag.add_argument("--preset", default="demo_lora_cpu", help="configs/rag/<preset>.yaml")
    rag.add_argument("--base", default=None, help="base of genai-rag when it must be made")
    ask = commands.add_parser(
        "ask",
        help="answer a question with the RAG chain "
        "(no Prefect run; the index must have been built)",
    )
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--user-id", default=None, help="answer with this user's features")
    ask.add_argument("--nights", type=int, default=None, help="stay length for prices")
    ask.add_argument("--season", choices=("low", "shoulder", "high"), default=None)
    ask.add_argument(
        "--preset",
        default="demo_lora_cpu",
        help="configs/rag/<preset>.yaml: which index and answering model",
    )
    ask.add_argument(
        "--model",
        default=None,
        help="answering model: models:/… URI, HF dir or http(s)://…/v1#name",
    )
    ask.add_argument(
        "--index",
        default=None,
        help="answer from configs/build_index/<preset>.yaml's index instead of the rag "
        "preset's (docs_cpu: every API document, after `genai build-index --preset docs_cpu`)",
    )
    ask.add_argument("--k", type=int, default=None, help="chunks quoted in the prompt")
    ask.add_argument("--sources", type=int, default=None, help="documents listed as sources")
    gc = commands.add_parser(
        "gc", help="remove old checkpoints, unreferenced shards and results, Delta history"
    )
    gc.add_argument("--preset", default="weekly", help="configs/gc/<preset>.yaml")
    gc.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    commands.add_parser("up", help="start Prefect server + worker + MLflow UI, deploy flows")
    commands.add_parser("down", help="stop what `up` started")
    return parser
