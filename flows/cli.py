"""The `genai` command: demo, stage runs, local services.

The workspace environment is applied before Prefect or MLflow is imported (they read it at
import), and a Prefect server already running on 127.0.0.1:4200 (`make up`) is used when
present, so runs made here show up in its UI; otherwise Prefect's temporary local server
runs on the same SQLite database under the workspace.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from infra.settings import apply_environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genai", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the whole lifecycle at demo scale")
    demo.add_argument("--preset", default="demo_minhash_cpu", help="prepare_corpus preset")
    demo.add_argument("--pretrain-preset", default="demo_cpu", help="pretrain preset")
    demo.add_argument("--finetune-preset", default="demo_lora_cpu", help="finetune_sweep preset")
    demo.add_argument("--reviews-preset", default="demo_lora_cpu",
                      help="review_summaries preset")
    demo.add_argument("--rag-preset", default="demo_lora_cpu", help="rag preset")
    run = commands.add_parser("prepare-corpus", help="run the prepare-corpus flow")
    run.add_argument("--preset", default="demo_minhash_cpu")
    train = commands.add_parser("pretrain", help="run the pretrain flow on the current mix")
    train.add_argument("--preset", default="demo_cpu", help="configs/pretrain/<preset>.yaml")
    sweep = commands.add_parser("finetune-sweep", help="run the LoRA sweep flow")
    sweep.add_argument("--preset", default="demo_lora_cpu",
                       help="configs/finetune_sweep/<preset>.yaml")
    sweep.add_argument("--base", default=None, help="base model: models:/… URI or HF dir")
    summarise = commands.add_parser("review-summaries",
                                    help="run the review-summaries flow (incremental)")
    summarise.add_argument("--preset", default="demo_lora_cpu",
                           help="configs/review_summaries/<preset>.yaml")
    summarise.add_argument("--base", default=None,
                           help="base of genai-reviews when it must be made")
    rate = commands.add_parser("pairwise-eval", help="double-blind rating sheets: prepare, score")
    rate.add_argument("action", choices=("prepare", "score"))
    rate.add_argument("sheets", nargs="*", help="filled sheets (score)")
    rate.add_argument("--key", help="the sheet's key.json (score)")
    rate.add_argument("--a", default="models:/genai-tabledoc@champion", help="model A")
    rate.add_argument("--b", default="models:/genai-base@champion", help="model B")
    rate.add_argument("--items", type=int, default=62, help="unseen tables to rate")
    serve = commands.add_parser("serve", help="serve a model over OpenAI's HTTP API "
                                "(foreground, no Prefect run; Ctrl-C stops it)")
    serve.add_argument("--model", default="models:/genai-tabledoc@champion",
                       help="models:/… URI or local HF dir")
    serve.add_argument("--name", default=None,
                       help="model name clients send (default: the URI minus models:/)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=int, help="requests per model call, at most")
    serve.add_argument("--batch-window-ms", type=float,
                       help="how long a batch's first request waits for others")
    serve.add_argument("--api-key-env", default=None,
                       help="env var holding a bearer token that clients must send")
    serve.add_argument("--rag-preset", default=None,
                       help="also serve POST /answer over this configs/rag/<preset>.yaml's "
                            "index (the served model answers)")
    index = commands.add_parser("build-index", help="run the build-index flow (incremental)")
    index.add_argument("--preset", default="demo_cpu", help="configs/build_index/<preset>.yaml")
    grid = commands.add_parser("evaluate-retrieval",
                               help="run the retriever grid: chunk size x retriever x k")
    grid.add_argument("--preset", default="demo_cpu",
                      help="configs/evaluate_retrieval/<preset>.yaml")
    grid.add_argument("--questions", action="append", default=[],
                      help="a CSV (question, expected_source_ids) or JSONL of your own; repeat")
    sync = commands.add_parser("sync-features", help="run the sync-online-features flow")
    sync.add_argument("--preset", default="demo_cpu",
                      help="configs/sync_online_features/<preset>.yaml")
    rag = commands.add_parser("rag", help="run the RAG stage's flow (features, index, "
                              "genai-rag, a few answers)")
    rag.add_argument("--preset", default="demo_lora_cpu", help="configs/rag/<preset>.yaml")
    rag.add_argument("--base", default=None, help="base of genai-rag when it must be made")
    ask = commands.add_parser("ask", help="answer a question with the RAG chain "
                              "(no Prefect run; the index must have been built)")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--user-id", default=None, help="answer with this user's features")
    ask.add_argument("--nights", type=int, default=None, help="stay length for prices")
    ask.add_argument("--season", choices=("low", "shoulder", "high"), default=None)
    ask.add_argument("--preset", default="demo_lora_cpu",
                     help="configs/rag/<preset>.yaml: which index and answering model")
    ask.add_argument("--model", default=None,
                     help="answering model: models:/… URI, HF dir or http(s)://…/v1#name")
    commands.add_parser("up", help="start Prefect server + worker + MLflow UI, deploy flows")
    commands.add_parser("down", help="stop what `up` started")
    args = parser.parse_args(argv)

    apply_environment()
    if args.command == "serve":  # no Prefect: a server in the foreground
        return run_serve(args)
    if args.command == "ask":  # no Prefect: one question, answered here
        return run_ask(args)
    from infra.prefect import services

    if args.command == "up":
        return services.up()
    if args.command == "down":
        return services.down()
    services.use_running_server()
    if args.command == "demo":
        return run_demo(args.preset, args.pretrain_preset, args.finetune_preset,
                        args.reviews_preset, args.rag_preset)
    if args.command == "pretrain":
        return run_pretrain(args.preset)
    if args.command == "finetune-sweep":
        return run_finetune_sweep(args.preset, args.base)
    if args.command == "pairwise-eval":
        return run_pairwise(args)
    if args.command == "review-summaries":
        return run_review_summaries(args.preset, args.base)
    if args.command in ("build-index", "evaluate-retrieval", "sync-features", "rag"):
        return run_rag_flow(args)
    return run_prepare_corpus(args.preset)


def run_demo(preset: str, pretrain_preset: str, finetune_preset: str,
             reviews_preset: str, rag_preset: str) -> int:
    from flows.lifecycle import STAGE_BUDGETS_S, TOTAL_BUDGET_S, LifecycleConfig, lifecycle
    from flows.prepare_corpus import PrepareCorpusConfig
    from flows.finetune_sweep import SweepConfig
    from flows.pretrain import PretrainFlowConfig
    from flows.rag import RagConfig
    from flows.review_summaries import ReviewSummariesConfig
    from pipelines.config import load_preset

    config = LifecycleConfig(
        prepare_corpus=load_preset(PrepareCorpusConfig, "prepare_corpus", preset),
        pretrain=load_preset(PretrainFlowConfig, "pretrain", pretrain_preset),
        finetune=load_preset(SweepConfig, "finetune_sweep", finetune_preset),
        review_summaries=load_preset(ReviewSummariesConfig, "review_summaries",
                                     reviews_preset),
        rag=load_preset(RagConfig, "rag", rag_preset))
    started = time.perf_counter()
    result = lifecycle(config)
    total = time.perf_counter() - started
    print_pretrain_result(result["outputs"]["pretraining"])
    print_sweep_result(result["outputs"]["fine-tuning"])
    print_review_result(result["outputs"]["review summaries"])
    print_rag_result(result["outputs"]["RAG"])
    print("\nstage                     seconds   budget")
    over = []
    for stage, seconds in result["stages"].items():
        budget = STAGE_BUDGETS_S.get(stage)
        print(f"{stage:<24} {seconds:8.1f} {budget:8.0f}")
        if budget and seconds > budget:
            over.append(f"{stage} took {seconds:.0f} s, budget {budget} s")
    print(f"{'total (incl. start-up)':<24} {total:8.1f} {TOTAL_BUDGET_S:8.0f}")
    if total > TOTAL_BUDGET_S:
        over.append(f"the lifecycle took {total:.0f} s, budget {TOTAL_BUDGET_S} s")
    for line in over:
        print(f"OVER BUDGET: {line}", file=sys.stderr)
    return 1 if total > TOTAL_BUDGET_S else 0


def print_pretrain_result(result: dict) -> None:
    """Where the base model and its MLflow runs are, and how it compares with a unigram model."""
    from infra import tracking

    trained, registered = result["trained"], result.get("registered", {})
    print("\nbase model")
    print(f"  model dir         {trained['final_model_dir']}")
    if registered:
        role = "champion" if registered["champion"] else "challenger (champion kept)"
        print(f"  registered        {registered['uri']} ({role})")
    print(f"  MLflow run        {tracking.run_url(trained['mlflow_run_id'])}")
    if trained.get("val_loss") is not None:
        print(f"  validation loss   {trained['val_loss']:.3f} nats/token "
              f"(add-one unigram {trained['unigram_val_loss']:.3f}), "
              f"{trained['val_bpb']:.3f} bits/byte (unigram {trained['unigram_val_bpb']:.3f})")


def print_sweep_result(result: dict) -> None:
    """The sweep's cells, the references, and where the registered task model is."""
    print("\ntable-documentation model (held-out families)")
    print(f"  {'model':<28} {'format':>7} {'coverage':>9} {'ROUGE-L':>8}")
    rows = [(c["cell"], c) for c in result["cells"]] + list(result["reference"].items())
    for name, q in rows:
        print(f"  {name:<28} {q['format_validity']:7.3f} {q['column_coverage']:9.3f} "
              f"{q['rouge_l']:8.3f}")
    registered = result["registered"]
    role = "champion" if registered["champion"] else "challenger (champion kept)"
    print(f"  registered        {registered['uri']} ({role})")
    print(f"  model dir         {registered['model_dir']}")


def print_review_result(result: dict) -> None:
    """Where the summaries are, how many groups and how many parsed; the task model's
    held-out negative-point quality beside its base and the keyword baseline."""
    summary, report = result["summary"], result["report"]
    print("\nreview summaries")
    if summary.get("up_to_date"):
        print("  no new reviews since the last run: nothing recomputed")
    else:
        print(f"  groups            {summary['groups']} ({summary['cached_groups']} from cache), "
              f"parse rate {summary['parse_rate']:.3f}")
        print(f"  table             {summary['summaries']['table']}")
    print(f"  model, prompt     {summary.get('model')}, {summary.get('prompt_uri')}")
    print(f"  report            {report['html']}")
    quality = result.get("task_model_quality")
    if quality:
        print("  negative points on held-out products (precision / recall):")
        for who in ("task_model", "base", "keyword_baseline"):
            q = quality[who]
            print(f"    {who:<18} {q['precision']:.3f} / {q['recall']:.3f}")


def run_rag_flow(args) -> int:
    """build-index, evaluate-retrieval, sync-features or the whole RAG stage; prints the
    flow's result."""
    if args.command == "build-index":
        from flows.build_index import build_index

        result = build_index(preset=args.preset)
    elif args.command == "evaluate-retrieval":
        from flows.evaluate_retrieval import evaluate_retrieval

        result = evaluate_retrieval(preset=args.preset, question_files=args.questions)
    elif args.command == "sync-features":
        from flows.sync_online_features import sync_online_features

        result = sync_online_features(preset=args.preset)
    else:
        from flows.rag import rag

        result = rag(preset=args.preset, base=args.base)
        print_rag_result(result)
        return 0
    print(json.dumps(result, indent=2, default=str))
    return 0


def print_rag_result(result: dict) -> None:
    """The index version answered from, and each demo answer with its sources."""
    index, answers = result["index"], result["answers"]
    print("\nRAG")
    print(f"  index             {index['table']} v{index['version']} ({index['chunks']} chunks "
          f"of {index['documents']} documents, {index['chunks_embedded']} embedded this run)")
    print(f"  answering model   {answers['model']}")
    for a in answers["answers"]:
        print(f"  Q: {a['question']}" + (f"  (user {a['user_id']})" if a["user_id"] else ""))
        print(f"     A: {a['answer']}")
        print(f"     sources {', '.join(a['sources'])}; cited {', '.join(a['cited']) or '-'}; "
              f"{a['latency_ms']['total_ms']:.0f} ms")


def run_ask(args) -> int:
    """`genai ask`: the chain over the preset's index (latest version) and model."""
    from flows.rag import RagConfig, index_config
    from pipelines.config import load_preset
    from pipelines.rag_chain import open_chain
    from tasks.rag import lancedb_dir

    try:
        config = load_preset(RagConfig, "rag", args.preset)
        answer = config.answer if args.model is None else \
            config.answer.model_copy(update={"model": args.model})
        chain = open_chain(index_config(config), answer, lancedb_dir())
        request = {k: v for k, v in (("nights", args.nights), ("season", args.season)) if v}
        result = chain.answer(args.question, args.user_id, request)
    except (LookupError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: result[k] for k in ("answer", "sources", "cited", "latency_ms",
                                                 "table_version", "model", "features")},
                         default=str))
    else:
        print(result["answer"])
        print(f"\nsources: {', '.join(result['sources'])}")
        print(f"cited:   {', '.join(result['cited']) or '-'}")
    return 0


def run_review_summaries(preset: str, base: str | None) -> int:
    from flows.review_summaries import review_summaries

    print_review_result(review_summaries(preset=preset, base=base))
    return 0


def run_finetune_sweep(preset: str, base: str | None) -> int:
    from flows.finetune_sweep import SweepConfig, finetune_sweep
    from pipelines.config import load_preset

    print_sweep_result(finetune_sweep(load_preset(SweepConfig, "finetune_sweep", preset),
                                      base=base))
    return 0


def run_pairwise(args) -> int:
    from flows.pairwise_eval import PairwiseConfig, pairwise_eval

    config = PairwiseConfig(model_a=args.a, model_b=args.b, items=args.items)
    if args.action == "score":
        if not args.sheets or not args.key:
            print("error: score needs the filled sheets and --key key.json", file=sys.stderr)
            return 2
        summary = pairwise_eval(config, sheets=args.sheets, key=args.key)
        print(json.dumps({k: summary[k] for k in ("a_win_rate", "b_win_rate", "tie_rate")},
                         indent=2))
        return 0
    sheet = pairwise_eval(config)
    print(f"send raters {sheet['sheet_html']} and {sheet['sheet_csv']}; keep {sheet['key']}")
    return 0


def run_pretrain(preset: str) -> int:
    from flows.pretrain import PretrainFlowConfig, pretrain
    from pipelines.config import load_preset

    result = pretrain(load_preset(PretrainFlowConfig, "pretrain", preset))
    print_pretrain_result(result)
    return 0


def run_prepare_corpus(preset: str) -> int:
    from flows.prepare_corpus import PrepareCorpusConfig, prepare_corpus
    from pipelines.config import load_preset

    manifest = prepare_corpus(load_preset(PrepareCorpusConfig, "prepare_corpus", preset))
    print(json.dumps(manifest, indent=2, default=str))
    return 0


def run_serve(args) -> int:
    import logging

    from flows.rag import answer_routers
    from infra.serving import serve

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    batching = {"max_batch": args.max_batch, "batch_window_ms": args.batch_window_ms}
    try:  # options left out take the server's defaults (infra.serving)
        serve(args.model, args.host, args.port, model_name=args.name,
              api_key_env=args.api_key_env, routers=answer_routers(args.rag_preset, args.model),
              **{k: v for k, v in batching.items() if v is not None})
    except (OSError, LookupError, ValueError) as err:  # bad --model, key variable or port
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
