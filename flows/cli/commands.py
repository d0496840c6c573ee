"""Each `genai` subcommand: run its flow (or server), print what it made; known failures end in
one `error:` line and exit code 2."""

from __future__ import annotations

import json
import sys

from flows.cli.printing import (
    grounding_mark,
    print_pretrain_result,
    print_rag_result,
    print_review_result,
    print_sweep_result,
)


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


def run_ask(args) -> int:
    """`genai ask`: the chain over the preset's index (latest version) and model."""
    from flows.rag import RagConfig
    from pipelines.rag.chain import AnswerConfig, check_question, open_chain
    from pipelines.rag.config import index_config
    from pipelines.rag.index import IndexConfig, lancedb_dir
    from pipelines.shared.presets import load_preset

    config = load_preset(RagConfig, "rag", args.preset)
    given = {"model": args.model, "k": args.k, "listed_sources": args.sources}
    answer = AnswerConfig.model_validate(
        {**config.answer.model_dump(), **{k: v for k, v in given.items() if v is not None}}
    )
    check_question(args.question, answer.max_question_chars)  # before the embedder loads
    index = index_config(config)
    if args.index is not None:
        index = load_preset(IndexConfig, "build_index", args.index)
    chain = open_chain(index, answer, lancedb_dir())
    request = {k: v for k, v in (("nights", args.nights), ("season", args.season)) if v}
    result = chain.answer(args.question, args.user_id, request)
    if args.json:
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in (
                        "answer",
                        "grounded",
                        "ungrounded_spans",
                        "sources",
                        "cited",
                        "latency_ms",
                        "index",
                        "table_version",
                        "model",
                        "features",
                    )
                },
                default=str,
            )
        )
    else:
        print(result["answer"])
        print(f"\nsources: {', '.join(result['sources'])}")
        print(f"cited:   {', '.join(result['cited']) or '-'}")
        print(f"grounded: {grounding_mark(result)}")
        print(f"index:   {result['index']['table']} v{result['index']['version']}")
    return 0


def run_review_summaries(args) -> int:
    from flows.review_summaries import review_summaries

    print_review_result(review_summaries(preset=args.preset, base=args.base))
    return 0


def run_finetune_sweep(args) -> int:
    from flows.finetune_sweep import SweepConfig, finetune_sweep
    from pipelines.shared.presets import load_preset

    print_sweep_result(
        finetune_sweep(load_preset(SweepConfig, "finetune_sweep", args.preset), base=args.base)
    )
    return 0


def run_pairwise(args) -> int:
    from flows.pairwise_eval import PairwiseConfig, pairwise_eval

    config = PairwiseConfig(model_a=args.a, model_b=args.b, items=args.items)
    if args.action == "score":
        if not args.sheets or not args.key:
            print("error: score needs the filled sheets and --key key.json", file=sys.stderr)
            return 2
        summary = pairwise_eval(config, sheets=args.sheets, key=args.key)
        print(
            json.dumps({k: summary[k] for k in ("a_win_rate", "b_win_rate", "tie_rate")}, indent=2)
        )
        return 0
    sheet = pairwise_eval(config)
    print(f"send raters {sheet['sheet_html']} and {sheet['sheet_csv']}; keep {sheet['key']}")
    return 0


def run_pretrain(args) -> int:
    from flows.pretrain import PretrainFlowConfig, pretrain
    from pipelines.shared.presets import load_preset

    result = pretrain(load_preset(PretrainFlowConfig, "pretrain", args.preset))
    print_pretrain_result(result)
    return 0


def run_prepare_corpus(args) -> int:
    from flows.prepare_corpus import PrepareCorpusConfig, prepare_corpus
    from pipelines.shared.presets import load_preset

    manifest = prepare_corpus(load_preset(PrepareCorpusConfig, "prepare_corpus", args.preset))
    print(json.dumps(manifest, indent=2, default=str))
    return 0


def run_gc(args) -> int:
    """`genai gc`: the clean-up flow; prints each path (or candidate) and bytes per category."""
    from flows.gc import GcConfig, gc
    from pipelines.shared.gc import format_report
    from pipelines.shared.presets import load_preset

    config = load_preset(GcConfig, "gc", args.preset)
    if args.dry_run:
        config = config.model_copy(update={"dry_run": True})
    print("\n".join(format_report(gc(config))))
    return 0


def run_serve(args) -> int:
    from flows.serve import serve_project_model

    batching = {
        "max_batch": args.max_batch,
        "batch_window_ms": args.batch_window_ms,
        "torch_threads": args.torch_threads,
    }
    serve_project_model(  # options left out take the server's defaults (infra.serving)
        args.model,
        args.host,
        args.port,
        rag_preset=args.rag_preset,
        model_name=args.name,
        api_key_env=args.api_key_env,
        allow_no_auth=args.allow_no_auth,
        log_level="debug" if args.verbose else "info",
        **{k: v for k, v in batching.items() if v is not None},
    )
    return 0


def run_up(args) -> int:
    from infra.prefect import services

    return services.up()


def run_down(args) -> int:
    from infra.prefect import services

    return services.down()
