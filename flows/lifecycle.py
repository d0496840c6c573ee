"""Flow lifecycle: every stage end to end — what `make demo` runs.

Stages are subflows, run in order; each one's wall time is measured and published, and the
demo fails when a stage overruns its budget (DESIGN's time budget, 2 cores, after install).
"""

from __future__ import annotations

import time

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.finetune_sweep import SweepConfig, finetune_sweep
from flows.prepare_corpus import PrepareCorpusConfig, prepare_corpus
from flows.pretrain import PretrainFlowConfig, pretrain
from flows.rag import RagConfig, rag
from flows.review_summaries import ReviewSummariesConfig, review_summaries
from pipelines.shared.presets import config_or_preset
from tasks.lifecycle import publish_stage_times

STAGE_BUDGETS_S = {  # DESIGN's demo budget per stage, seconds on 2 cores
    "corpus preparation": 120,
    "pretraining": 240,
    "fine-tuning": 180,
    "review summaries": 180,
    "RAG": 180,
}
TOTAL_BUDGET_S = 15 * 60


class LifecycleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prepare_corpus: PrepareCorpusConfig = Field(default_factory=PrepareCorpusConfig)
    pretrain: PretrainFlowConfig = Field(default_factory=PretrainFlowConfig)
    finetune: SweepConfig = Field(default_factory=SweepConfig)
    review_summaries: ReviewSummariesConfig = Field(default_factory=ReviewSummariesConfig)
    rag: RagConfig = Field(default_factory=RagConfig)

    @model_validator(mode="before")
    @classmethod
    def _stage_presets(cls, data):
        """A stage given by name is that stage's preset (configs/<stage>/<name>.yaml)."""
        if not isinstance(data, dict):
            return data
        return {
            field: stage_preset(field, value) if isinstance(value, str) else value
            for field, value in data.items()
        }


STAGE_DIRS = {"finetune": "finetune_sweep"}  # the configs/ folder of a field, where it differs


def stage_preset(field: str, name: str):
    from pipelines.shared.presets import load_preset

    if field not in LifecycleConfig.model_fields:
        raise ValueError(f"no such stage in the lifecycle: {field!r}")
    model = LifecycleConfig.model_fields[field].annotation
    return load_preset(model, STAGE_DIRS.get(field, field), name)


@flow(name="lifecycle", log_prints=True)
def lifecycle(config: LifecycleConfig | None = None, preset: str | None = None) -> dict:
    """Every stage in order, with its time against DESIGN's budget; ``config``, or
    ``preset`` (configs/lifecycle/<name>.yaml)."""
    config = config_or_preset(LifecycleConfig, "lifecycle", config, preset)
    stages: dict[str, float] = {}
    outputs: dict[str, dict] = {}

    started = time.perf_counter()
    outputs["corpus preparation"] = prepare_corpus(config.prepare_corpus)
    stages["corpus preparation"] = time.perf_counter() - started

    started = time.perf_counter()
    outputs["pretraining"] = pretrain(config.pretrain, mix=outputs["corpus preparation"])
    stages["pretraining"] = time.perf_counter() - started

    started = time.perf_counter()
    outputs["fine-tuning"] = finetune_sweep(
        config.finetune, base=base_model(outputs["pretraining"])
    )
    stages["fine-tuning"] = time.perf_counter() - started

    started = time.perf_counter()
    outputs["review summaries"] = review_summaries(
        config.review_summaries, base=base_model(outputs["pretraining"])
    )
    stages["review summaries"] = time.perf_counter() - started

    started = time.perf_counter()
    outputs["RAG"] = rag(config.rag, base=base_model(outputs["pretraining"]))
    stages["RAG"] = time.perf_counter() - started

    publish_stage_times(stages, STAGE_BUDGETS_S)
    return {"stages": stages, "outputs": outputs}


def base_model(pretrained: dict) -> str:
    """The model this lifecycle run just pretrained (registered version, else its dir), so
    fine-tuning builds on it even when it did not become the champion."""
    registered = pretrained.get("registered")
    return registered["uri"] if registered else pretrained["trained"]["final_model_dir"]
