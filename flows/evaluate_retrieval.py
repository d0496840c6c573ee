"""Flow evaluate-retrieval: which chunk size and retriever find the right documents.

One chunk table per chunk size (built or brought up to date by the build-index task, each
pinned at the version it left), then every (chunk size × retriever) cell scored on the eval
set — the repository's hand-written questions, template questions drawn from the corpus
(seeded; a question never names its target), and any question files given — with MLflow's
retriever metrics at k = 1…max_k. Cells already scored for the same table version and eval
set are read back from the cache. The best cell by the configured metric is reported.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from pipelines.evaluation.retrieval_cells import GridConfig
from pipelines.evaluation.retrieval_templates import EvalQuestionsConfig
from pipelines.rag.index import IndexConfig, with_chunk_size
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.rag import build_index, evaluate_retrieval_grid

FLOW_NAME = "evaluate-retrieval"


class EvaluateRetrievalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: IndexConfig = Field(default_factory=lambda: IndexConfig(hotels=None))  # the corpus,
    # chunking strategy and embedder; the grid varies the chunk size (overlap: size / 8)
    grid: GridConfig = Field(default_factory=GridConfig)
    questions: EvalQuestionsConfig = Field(default_factory=EvalQuestionsConfig)


@flow(name=FLOW_NAME, log_prints=True)
def evaluate_retrieval(
    config: EvaluateRetrievalConfig | None = None,
    preset: str | None = None,
    question_files: list[str] | None = None,
) -> dict:
    """``config`` or ``preset`` (configs/evaluate_retrieval/<name>.yaml); ``question_files``
    (CSV or JSONL of your own questions) are added to the configured eval set."""
    config = config_or_preset(EvaluateRetrievalConfig, "evaluate_retrieval", config, preset)
    questions = config.questions.model_copy(
        update={"files": [*config.questions.files, *(question_files or [])]}
    )
    with tracked_flow(FLOW_NAME, config) as run:
        indexes = {
            size: build_index(with_chunk_size(config.index, size), parent_run=run)
            for size in config.grid.chunk_sizes
        }
        grid = evaluate_retrieval_grid(
            indexes, config.index, config.grid, questions, parent_run=run
        )
    return {"indexes": indexes, **grid, "mlflow_run_id": run}
