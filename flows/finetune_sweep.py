"""Flow finetune-sweep: synthetic table-documentation examples → a LoRA grid (rank × target
modules × base precision), one cell at a time → held-out quality per cell beside the base
model and a copy-the-column-names baseline → the best cell merged and registered as
genai-tabledoc (champion only when it beats the current one)."""
from __future__ import annotations

import itertools
from typing import Literal

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from pipelines.finetune import FinetuneConfig
from pipelines.synth import SynthConfig
from tasks.common import tracked_flow
from tasks.finetune import (
    cell_name,
    evaluate_tabledoc,
    export_pairs,
    finetune_model,
    make_tabledoc_examples,
    publish_sweep_summary,
    register_finetuned,
)

FLOW_NAME = "finetune-sweep"
METRICS = ("rouge_l", "column_coverage", "format_validity")


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    synth: SynthConfig = Field(default_factory=SynthConfig)
    base: str = "models:/genai-base@champion"  # or any local HF causal-LM dir
    train: FinetuneConfig = Field(default_factory=FinetuneConfig)  # shared by every cell
    ranks: list[int] = [8, 16]  # LoRA r values (alpha = 2r)
    targets: list[Literal["attention", "all-linear"]] = ["attention", "all-linear"]
    base_bits: list[Literal[4, 16, 32]] = [32, 4]  # 4-bit (QLoRA) cells need CUDA; without it
    # they are listed as skipped in the summary, never trained at another precision
    max_cells: int | None = Field(None, ge=1)  # train only the first N cells of the grid
    metric: Literal["rouge_l", "column_coverage", "format_validity"] = "rouge_l"
    eval_examples: int = Field(64, ge=1)  # held-out tables generated per model
    max_new_tokens: int = Field(384, ge=16)  # a response's budget: ~25 tokens per column
    structured: bool = False  # score with the response template filled field by field (one
    # field per column of the CREATE TABLE), as a serving path that needs parseable output would
    model_name: str = "genai-tabledoc"
    timeout_s: float = Field(24 * 3600, gt=0)  # per cell's launch


def grid(config: SweepConfig) -> tuple[list[FinetuneConfig], list[dict]]:
    """(cells to train, cells skipped with why), in grid order, capped at max_cells."""
    import torch

    cells, skipped = [], []
    for r, targets, bits in itertools.product(config.ranks, config.targets, config.base_bits):
        lora = config.train.lora.model_copy(update={"r": r, "alpha": 2 * r, "targets": targets})
        cell = config.train.model_copy(update={"lora": lora, "base_bits": bits})
        if bits == 4 and not torch.cuda.is_available():
            skipped.append({"cell": cell_name(cell), "why": "4-bit base needs CUDA"})
        elif config.max_cells is None or len(cells) < config.max_cells:
            cells.append(cell)
    return cells, skipped


@flow(name=FLOW_NAME, log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def finetune_sweep(config: SweepConfig = SweepConfig(), base: str | None = None) -> dict:
    """``base`` overrides ``config.base`` (the lifecycle passes the model it just trained).
    One worker thread: cells train one after another (each uses every core)."""
    base = base or config.base
    cells, skipped = grid(config)
    with tracked_flow(FLOW_NAME, config) as run:
        examples = make_tabledoc_examples(config.synth, parent_run=run)
        pairs = export_pairs(examples, parent_run=run)
        trained = finetune_model.map(unmapped(pairs), unmapped(base), cells,
                                     timeout_s=unmapped(config.timeout_s),
                                     parent_run=unmapped(run)).result()
        quality = evaluate_tabledoc.map(
            [t["model_dir"] for t in trained], unmapped(pairs), unmapped(config.eval_examples),
            unmapped(config.max_new_tokens), run_id=[t["mlflow_run_id"] for t in trained],
            structured=unmapped(config.structured)).result()
        reference = {"base": evaluate_tabledoc(base, pairs, config.eval_examples,
                                               config.max_new_tokens,
                                               structured=config.structured),
                     "copy-column-names": copy_baseline(pairs, config.eval_examples)}
        best = max(range(len(trained)), key=lambda i: quality[i][config.metric])
        summary = publish_sweep_summary(trained, quality, skipped, reference, config.metric,
                                        best)
        registered = register_finetuned(trained[best], quality[best], pairs, config.model_name,
                                        config.metric, config.eval_examples,
                                        config.max_new_tokens, parent_run=run,
                                        structured=config.structured)
    return {"examples": examples, "pairs": pairs, "cells": summary, "registered": registered,
            "best": {**trained[best], **{m: quality[best][m] for m in METRICS}},
            "reference": {k: {m: v[m] for m in METRICS} for k, v in reference.items()},
            "mlflow_run_id": run}


def copy_baseline(pairs: dict, limit: int) -> dict:
    from pipelines import tabledoc_eval

    items = tabledoc_eval.read_items(pairs["test"], limit)
    return tabledoc_eval.score(tabledoc_eval.copy_baseline_outputs(items), items)
