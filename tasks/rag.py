"""Prefect tasks of the RAG stage: the chunk index, the answering model genai-rag, answers,
and retriever evaluation cells."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import task

from pipelines.evaluation.retrieval_sets import hand_written_targets
from pipelines.finetune.lora import FinetuneConfig
from pipelines.rag import chain as rag_chain
from pipelines.rag import index as rag_index
from pipelines.rag.index import lancedb_dir
from tasks.common import HEAVY, NO_CACHE_POLICY, tracked_step

HOUR = 3600
RAG_MODEL = "genai-rag"


def workspace(*parts: str) -> Path:
    from infra.settings import load_settings

    return load_settings().home.joinpath(*parts)


# Not cached by Prefect: the index compares itself with the corpus on every run and rewrites
# only what changed, so a rerun with nothing new embeds nothing.
@task(
    name="build-index",
    timeout_seconds=12 * HOUR,
    retries=1,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE_POLICY,
    tags=[HEAVY],
)
def build_index(config: rag_index.IndexConfig, parent_run: str | None = None) -> dict:
    """Sync one chunk table with its corpus (changed sources re-embedded, removed ones
    deleted), refresh the vector and full-text indexes; the manifest pins the version."""
    with tracked_step("build-index", parent_run, config) as run:
        manifest = rag_index.build_index(
            config, lancedb_dir(), progress=True, question_targets=hand_written_targets()
        )
        run.log_metrics(
            {
                k: manifest[k]
                for k in (
                    "documents",
                    "quarantined",
                    "chunks",
                    "sources_written",
                    "sources_deleted",
                    "chunks_embedded",
                    "version",
                    "seconds",
                )
            }
        )
        run.set_tags(
            {"lancedb.table": manifest["table"], "lancedb.version": str(manifest["version"])}
        )
        run.log_dict(manifest, "index_manifest.json")
        return {**manifest, "mlflow_run_id": run.run_id}


@task(name="make-rag-model", timeout_seconds=24 * HOUR, cache_policy=NO_CACHE_POLICY)
def make_rag_model(
    config: rag_index.IndexConfig,
    base: str,
    train: FinetuneConfig,
    questions: int,
    answer: rag_chain.AnswerConfig,
    seed: int = 0,
    parent_run: str | None = None,
) -> dict:
    """genai-rag: ``finetune_task`` on (question, quoted sources → cited answer) pairs from
    the docstring corpus, answered by the rule teacher (the default answering model; any
    other model or endpoint can be configured instead)."""
    from infra.registry import model_dir
    from pipelines.evaluation.retrieval_templates import template_questions
    from pipelines.rag.teacher import training_pairs_for_index
    from pipelines.shared.instructions import write_instruction_jsonl
    from pipelines.training.hf import load_hf_tokenizer
    from tasks.finetune import finetune_task

    # the prompts fitted as the chain will fit them to the tuned model (train.max_len long)
    fit = rag_chain.ContextFit(load_hf_tokenizer(model_dir(base)), train.max_len)
    # the evaluation stage's template questions: a question never names its target
    pairs = training_pairs_for_index(
        config,
        questions,
        answer.k,
        answer.max_source_chars,
        seed,
        fit,
        answer.max_new_tokens,
        template_questions=template_questions,
        question_targets=hand_written_targets(),
    )
    # named by content: export-pairs caches on the path, so other pairs need another path
    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]
    dataset = write_instruction_jsonl(
        pairs, workspace("finetune", "datasets", f"rag-{digest}.jsonl")
    )
    return finetune_task(str(dataset), base, train, RAG_MODEL, parent_run=parent_run)


@task(name="answer-questions", timeout_seconds=2 * HOUR, cache_policy=NO_CACHE_POLICY)
def answer_questions(
    index: dict,
    config: rag_index.IndexConfig,
    answer: rag_chain.AnswerConfig,
    questions: list[dict],
    parent_run: str | None = None,
) -> dict:
    """Answer ``questions`` ({question, user_id?}) on the index version the manifest pins;
    every call traced in MLflow with its per-step latency; a markdown artifact shows them."""
    from prefect.artifacts import create_markdown_artifact

    from infra import tracking

    chain = rag_chain.open_chain(config, answer, lancedb_dir(), version=index["version"])
    answers = [
        {
            "question": q["question"],
            "user_id": q.get("user_id"),
            **chain.answer(q["question"], q.get("user_id")),
        }
        for q in questions
    ]
    with tracked_step(
        "answer-questions",
        parent_run,
        {"answer": answer, "table": index["table"], "version": index["version"]},
    ) as run:
        tracking.log_llm_traces(run.run_id, "rag-answer", [_trace(a) for a in answers])
        run.log_metrics(rag_chain.latency_summary(answers))
        run.log_dict({"answers": answers}, "answers.json")
    create_markdown_artifact(
        key="rag-answers",
        markdown=rag_chain.answers_markdown(answers),
        description="Questions answered by the RAG chain",
    )
    return {
        "answers": answers,
        "table": index["table"],
        "version": index["version"],
        "model": chain.model_id,
        "mlflow_run_id": run.run_id,
    }


def _trace(answer: dict) -> dict:
    return {
        "inputs": {"question": answer["question"], "user_id": answer["user_id"]},
        "outputs": {
            "answer": answer["answer"],
            "sources": answer["sources"],
            "cited": answer["cited"],
        },
        "latency_ms": answer["latency_ms"]["total_ms"],
        **{step: round(ms, 1) for step, ms in answer["latency_ms"].items() if step != "total_ms"},
    }


@task(
    name="evaluate-retrieval-grid",
    timeout_seconds=12 * HOUR,
    cache_policy=NO_CACHE_POLICY,
    tags=[HEAVY],
)
def evaluate_retrieval_grid(
    indexes: dict[int, dict],
    index: rag_index.IndexConfig,
    grid,
    questions,
    parent_run: str | None = None,
) -> dict:
    """Every (chunk size, retriever) cell on the eval set, each reading the table version its
    build pinned; cells already computed for that version and eval set are read back. The
    per-question table, the metrics and a chart go to MLflow and the reports folder; the
    grid's table is published as a Prefect markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    from pipelines.evaluation.retrieval_cells import grid_summary
    from pipelines.evaluation.retrieval_grid import evaluate_grid
    from pipelines.evaluation.retrieval_reports import grid_markdown
    from pipelines.evaluation.retrieval_templates import eval_set_for

    # the RAG stage supplies the documents and the retrievers; the evaluation stage scores them
    documents, _ = rag_index.index_documents(index, hand_written_targets())
    eval_set = eval_set_for(documents, questions)
    retrievers = rag_index.SizedRetrievers(
        lancedb_dir(), index, {size: m["version"] for size, m in indexes.items()}
    )
    with tracked_step(
        "evaluate-retrieval-grid", parent_run, {"grid": grid, "eval_set": eval_set.describe()}
    ) as run:
        results = evaluate_grid(
            grid.cells(),
            retrievers.for_cell,
            eval_set,
            workspace("cache", "rag_eval"),
            table_version={size: f"{m['table']}@{m['version']}" for size, m in indexes.items()},
            ks=grid.ks,
            run=run.run_id,
            out_dir=workspace("reports", "retrieval"),
            key_extra={"embedder": retrievers.embedder.name},
            metric=grid.metric,
        )
        summary = grid_summary(results, grid.metric)
    create_markdown_artifact(
        key="retrieval-grid",
        markdown=grid_markdown(results, grid.metric),
        description="Retriever evaluation: chunk size x retriever x k",
    )
    return {
        **summary,
        "reports": str(workspace("reports", "retrieval")),
        "mlflow_run_id": run.run_id,
    }
