"""Flow lifecycle: every stage end to end — what `make demo` runs.

Stages are subflows, run in order (or the ``stages`` chosen, with the stages they build on,
which come from cache when nothing changed); each one's wall time is measured and published
against DESIGN's budget. Time is reported, never a failure: a stage that fails stops the
lifecycle with ``StageFailedError``, naming the stage and its failed tasks.
"""

from __future__ import annotations

import logging
import time
from typing import Literal, NamedTuple

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.finetune_sweep import SweepConfig, finetune_sweep
from flows.prepare_corpus import PrepareCorpusConfig, prepare_corpus
from flows.pretrain import PretrainFlowConfig, pretrain
from flows.rag import RagConfig, rag
from flows.review_summaries import ReviewSummariesConfig, review_summaries
from pipelines.shared.presets import config_or_preset
from tasks.lifecycle import failed_task_names, publish_stage_times, write_lifecycle_report

log = logging.getLogger(__name__)  # the demo's console shows this logger's lines

StageKey = Literal["corpus", "pretrain", "finetune", "reviews", "rag"]


class Stage(NamedTuple):
    title: str
    budget_s: float  # DESIGN's demo budget, seconds on 2 cores
    needs: tuple[str, ...]  # stages whose output it reads


STAGES: dict[str, Stage] = {  # in the order they run
    "corpus": Stage("corpus preparation", 120, ()),
    "pretrain": Stage("pretraining", 240, ("corpus",)),
    "finetune": Stage("fine-tuning", 180, ("pretrain",)),
    "reviews": Stage("review summaries", 180, ("pretrain",)),
    "rag": Stage("RAG", 180, ("pretrain",)),
}
STAGE_BUDGETS_S = {stage.title: stage.budget_s for stage in STAGES.values()}
TOTAL_BUDGET_S = 15 * 60


class StageFailedError(RuntimeError):
    """A lifecycle stage ended in a failed state; the stage's own error is the cause."""

    def __init__(self, stage: str, tasks: list[str], message: str | None):
        self.stage, self.tasks = stage, tasks
        where = f" in task {', '.join(tasks)}" if tasks else ""
        super().__init__(f"stage {stage!r} failed{where}: {message or 'no message'}")


class LifecycleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prepare_corpus: PrepareCorpusConfig = Field(default_factory=PrepareCorpusConfig)
    pretrain: PretrainFlowConfig = Field(default_factory=PretrainFlowConfig)
    finetune: SweepConfig = Field(default_factory=SweepConfig)
    review_summaries: ReviewSummariesConfig = Field(default_factory=ReviewSummariesConfig)
    rag: RagConfig = Field(default_factory=RagConfig)
    stages: list[StageKey] | None = None  # None: all; else these and the stages they need

    @model_validator(mode="before")
    @classmethod
    def _stage_presets(cls, data):
        """A stage given by name is that stage's preset (configs/<stage>/<name>.yaml)."""
        if not isinstance(data, dict):
            return data
        return {
            field: stage_preset(field, value)
            if isinstance(value, str) and field != "stages"
            else value
            for field, value in data.items()
        }


STAGE_DIRS = {"finetune": "finetune_sweep"}  # the configs/ folder of a field, where it differs


def stage_preset(field: str, name: str):
    from pipelines.shared.presets import load_preset

    if field not in LifecycleConfig.model_fields:
        raise ValueError(f"no such stage in the lifecycle: {field!r}")
    model = LifecycleConfig.model_fields[field].annotation
    return load_preset(model, STAGE_DIRS.get(field, field), name)


def stages_to_run(chosen: list[str] | None) -> list[str]:
    """``chosen`` and every stage they build on, in run order (all when None)."""
    if chosen is None:
        return list(STAGES)
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        raise ValueError(f"no such stage: {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    needed: set[str] = set()
    todo = list(chosen)
    while todo:
        key = todo.pop()
        if key not in needed:
            needed.add(key)
            todo.extend(STAGES[key].needs)
    return [key for key in STAGES if key in needed]


@flow(name="lifecycle", log_prints=True)
def lifecycle(config: LifecycleConfig | None = None, preset: str | None = None) -> dict:
    """Every stage in order (``config.stages``: a subset), with its time against DESIGN's
    budget; ``config``, or ``preset`` (configs/lifecycle/<name>.yaml)."""
    config = config_or_preset(LifecycleConfig, "lifecycle", config, preset)
    keys = stages_to_run(config.stages)
    stages: dict[str, float] = {}
    outputs: dict[str, dict] = {}
    for number, key in enumerate(keys, 1):
        stage = STAGES[key]
        log.info("[%d/%d] %s (budget %.0f s)", number, len(keys), stage.title, stage.budget_s)
        started = time.perf_counter()
        outputs[stage.title] = run_stage(stage.title, *stage_call(key, config, outputs))
        stages[stage.title] = seconds = time.perf_counter() - started
        log.info("      %s done in %.0f s%s", stage.title, seconds, over_note(seconds, stage))
    publish_stage_times(stages, STAGE_BUDGETS_S)
    report = write_lifecycle_report(outputs, stages, STAGE_BUDGETS_S)
    return {"stages": stages, "outputs": outputs, "report": report}


def over_note(seconds: float, stage: Stage) -> str:
    over = seconds - stage.budget_s
    return f", {over:.0f} s over its budget" if over > 0 else ""


def stage_call(key: str, config: LifecycleConfig, outputs: dict) -> tuple:
    """(subflow, args, kwargs) of stage ``key``, fed by the outputs of the stages before it."""
    if key == "corpus":
        return prepare_corpus, (config.prepare_corpus,), {}
    if key == "pretrain":
        return pretrain, (config.pretrain,), {"mix": outputs["corpus preparation"]}
    base = {"base": base_model(outputs["pretraining"])}
    subflows = {
        "finetune": (finetune_sweep, config.finetune),
        "reviews": (review_summaries, config.review_summaries),
        "rag": (rag, config.rag),
    }
    subflow, stage_config = subflows[key]
    return subflow, (stage_config,), base


def run_stage(title: str, subflow, args: tuple, kwargs: dict) -> dict:
    """The stage's result, or ``StageFailedError`` (caused by the stage's own error)."""
    state = subflow(*args, return_state=True, **kwargs)
    if state.is_completed():
        return state.result()
    tasks = failed_task_names(state.state_details.flow_run_id)
    try:
        state.result()  # raises the stage's own error
    except Exception as err:
        raise StageFailedError(title, tasks, str(err)) from err
    raise StageFailedError(title, tasks, state.message)


def base_model(pretrained: dict) -> str:
    """The model this lifecycle run just pretrained (registered version, else its dir), so
    fine-tuning builds on it even when it did not become the champion."""
    registered = pretrained.get("registered")
    return registered["uri"] if registered else pretrained["trained"]["final_model_dir"]
