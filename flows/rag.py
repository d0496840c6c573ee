"""Flow rag: the RAG stage as the lifecycle runs it — the feature tables synced online → the
chunk index built (one chunking; the grid lives in evaluate-retrieval) → the answering model
genai-rag when it is the configured model and has no champion yet → a few questions answered
on the pinned index version, with their sources, citations and per-step latency."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows.sync_online_features import sync_online_features
from pipelines.finetune.lora import FinetuneConfig, task_model_training
from pipelines.rag.config import RagChainConfig, index_config
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.finetune import task_model_needed
from tasks.rag import RAG_MODEL, answer_questions, build_index, make_rag_model

FLOW_NAME = "rag"
DEMO_QUESTIONS = (
    {"question": "How do I record a numeric value for the current experiment run?"},
    {"question": "How can I make a function run as a task in a workflow?"},
    {"question": "How do I remove duplicate rows from a distributed data frame?"},
    {"question": "Which hotel fits my budget for a weekend city break?", "user_id": "u0001"},
)


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    user_id: str | None = None  # answers for this user use their features and prices


class RagConfig(RagChainConfig):  # features, index, answer: what the chain is built from
    base: str = "models:/genai-base@champion"  # what genai-rag is fine-tuned from
    task_model: FinetuneConfig = Field(default_factory=lambda: task_model_training(640))
    make_task_model: Literal["if-missing", "always", "never"] = "if-missing"  # only when
    # answer.model is genai-rag's champion
    training_questions: int = Field(2000, ge=1)  # template questions genai-rag learns from
    questions: list[Question] = Field(
        default_factory=lambda: [Question(**q) for q in DEMO_QUESTIONS]
    )


@flow(name=FLOW_NAME, log_prints=True)
def rag(
    config: RagConfig | None = None, base: str | None = None, preset: str | None = None
) -> dict:
    """``config``, or ``preset`` (configs/rag/<name>.yaml); ``base`` overrides
    ``config.base`` (the lifecycle passes the model it just pretrained)."""
    config = config_or_preset(RagConfig, "rag", config, preset)
    base = base or config.base
    index = index_config(config)
    with tracked_flow(FLOW_NAME, config) as run:
        features = sync_online_features(config.features) if index.hotels else None
        built = build_index(index, parent_run=run)
        task_model = None
        if task_model_needed(config.answer.model, RAG_MODEL, config.make_task_model):
            task_model = make_rag_model(
                index,
                base,
                config.task_model,
                config.training_questions,
                config.answer,
                parent_run=run,
            )
        answers = answer_questions(
            built, index, config.answer, [q.model_dump() for q in config.questions], parent_run=run
        )
    return {
        "features": features,
        "index": built,
        "task_model": task_model,
        "answers": answers,
        "mlflow_run_id": run,
    }
