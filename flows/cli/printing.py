"""What the `genai` command prints after a flow: where its outputs are and how good they are."""

from __future__ import annotations


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
        print(
            f"  validation loss   {trained['val_loss']:.3f} nats/token "
            f"(add-one unigram {trained['unigram_val_loss']:.3f}), "
            f"{trained['val_bpb']:.3f} bits/byte (unigram {trained['unigram_val_bpb']:.3f})"
        )


def print_sweep_result(result: dict) -> None:
    """The sweep's cells, the references, and where the registered task model is."""
    print("\ntable-documentation model (held-out families)")
    print(f"  {'model':<28} {'format':>7} {'coverage':>9} {'ROUGE-L':>8}")
    rows = [(c["cell"], c) for c in result["cells"]] + list(result["reference"].items())
    for name, q in rows:
        print(
            f"  {name:<28} {q['format_validity']:7.3f} {q['column_coverage']:9.3f} "
            f"{q['rouge_l']:8.3f}"
        )
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
        print(
            f"  groups            {summary['groups']} ({summary['summarised_groups']} "
            f"summarised, {summary['cached_groups']} from cache), "
            f"parse rate {summary['parse_rate']:.3f}"
        )
        print(
            f"  grounded          {summary['grounded_share']:.3f} of {summary['statements']} "
            f"statements ({summary['unsupported_statements']} left out, "
            f"{summary['invented_figures']} invented figures)"
        )
        print(f"  window            {summary['window']}")
        print(f"  table             {summary['summaries']['table']}")
    print(f"  method, prompt    {summary.get('model')}, {summary.get('prompt_uri')}")
    print(f"  report            {report['html']}")
    quality = result.get("task_model_quality")
    if quality:
        print("  negative points on held-out products (precision / recall):")
        for who in ("task_model", "base", "extractive", "keyword_baseline"):
            q = quality.get(who)
            if q is None:
                continue
            print(f"    {who:<18} {q['precision']:.3f} / {q['recall']:.3f}")


def print_rag_result(result: dict) -> None:
    """The index version answered from, and each demo answer with its sources."""
    index, answers = result["index"], result["answers"]
    print("\nRAG")
    print(
        f"  index             {index['table']} v{index['version']} ({index['chunks']} chunks "
        f"of {index['documents']} documents, {index['chunks_embedded']} embedded this run)"
    )
    print(f"  answering model   {answers['model']}")
    for a in answers["answers"]:
        print(f"  Q: {a['question']}" + (f"  (user {a['user_id']})" if a["user_id"] else ""))
        print(f"     A: {a['answer']}")
        print(f"     grounded: {grounding_mark(a)}")
        print(
            f"     sources {', '.join(a['sources'])}; cited {', '.join(a['cited']) or '-'}; "
            f"{a['latency_ms']['total_ms']:.0f} ms"
        )


def grounding_mark(answer: dict) -> str:
    """yes, or no with what the answer quoted that it was not given."""
    if answer.get("grounded", True):
        return "yes"
    return "NO, quotes what it was not given: " + ", ".join(answer["ungrounded_spans"])
