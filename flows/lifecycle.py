"""Flow lifecycle: every stage end to end — what `make demo` runs.

Stages are subflows, run in order; each one's wall time is measured and published, and the
demo fails when a stage overruns its budget (DESIGN's time budget, 2 cores, after install).
"""
from __future__ import annotations

import time

from prefect import flow
from pydantic import BaseModel, Field

from flows.prepare_corpus import PrepareCorpusConfig, prepare_corpus
from flows.pretrain import PretrainFlowConfig, pretrain
from tasks.lifecycle import publish_stage_times

STAGE_BUDGETS_S = {  # DESIGN's demo budget per stage, seconds on 2 cores
    "corpus preparation": 120,
    "pretraining": 240,
}
TOTAL_BUDGET_S = 15 * 60


class LifecycleConfig(BaseModel):
    prepare_corpus: PrepareCorpusConfig = Field(default_factory=PrepareCorpusConfig)
    pretrain: PretrainFlowConfig = Field(default_factory=PretrainFlowConfig)


@flow(name="lifecycle", log_prints=True)
def lifecycle(config: LifecycleConfig = LifecycleConfig()) -> dict:
    stages: dict[str, float] = {}
    outputs: dict[str, dict] = {}

    started = time.perf_counter()
    outputs["corpus preparation"] = prepare_corpus(config.prepare_corpus)
    stages["corpus preparation"] = time.perf_counter() - started

    started = time.perf_counter()
    outputs["pretraining"] = pretrain(config.pretrain, mix=outputs["corpus preparation"])
    stages["pretraining"] = time.perf_counter() - started

    publish_stage_times(stages, STAGE_BUDGETS_S)
    return {"stages": stages, "outputs": outputs}
