"""Flow finetune-sweep: synthetic table-documentation examples → a LoRA grid (rank × target
modules × base precision), one cell at a time → held-out quality per cell beside the base
model and a copy-the-column-names baseline → the best cell merged and registered as
genai-tabledoc (champion only when it beats the current one)."""

from __future__ import annotations

from prefect import flow

from pipelines.evaluation.tabledoc import copy_baseline_scores
from pipelines.finetune.sweep import METRICS, SweepConfig, best_cell, grid
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.finetune import (
    evaluate_tabledoc,
    export_pairs,
    finetune_model,
    make_tabledoc_examples,
    publish_sweep_summary,
    register_finetuned,
)

FLOW_NAME = "finetune-sweep"


@flow(name=FLOW_NAME, log_prints=True)
def finetune_sweep(
    config: SweepConfig | None = None, base: str | None = None, preset: str | None = None
) -> dict:
    """``config``, or ``preset`` (configs/finetune_sweep/<name>.yaml); ``base`` overrides
    ``config.base`` (the lifecycle passes the model it just trained). Cells train one after
    another (each uses every core), called in the flow's own thread, where a task's timeout
    can interrupt it (in a worker thread Prefect can only warn)."""
    config = config_or_preset(SweepConfig, "finetune_sweep", config, preset)
    base = base or config.base
    cells, skipped = grid(config)
    with tracked_flow(FLOW_NAME, config) as run:
        examples = make_tabledoc_examples(config.synth, parent_run=run)
        pairs = export_pairs(examples, parent_run=run)
        trained = [
            finetune_model(pairs, base, cell, timeout_s=config.timeout_s, parent_run=run)
            for cell in cells
        ]
        quality = [
            evaluate_tabledoc(
                t["model_dir"],
                pairs,
                config.eval_examples,
                config.max_new_tokens,
                run_id=t["mlflow_run_id"],
                structured=config.structured,
            )
            for t in trained
        ]
        reference = {
            "base": evaluate_tabledoc(
                base,
                pairs,
                config.eval_examples,
                config.max_new_tokens,
                structured=config.structured,
            ),
            "copy-column-names": copy_baseline_scores(pairs["test"], config.eval_examples),
        }
        best = best_cell(quality, config.metric)
        summary = publish_sweep_summary(trained, quality, skipped, reference, config.metric, best)
        registered = register_finetuned(
            trained[best],
            quality[best],
            pairs,
            config.model_name,
            config.metric,
            config.eval_examples,
            config.max_new_tokens,
            parent_run=run,
            structured=config.structured,
        )
    return {
        "examples": examples,
        "pairs": pairs,
        "cells": summary,
        "registered": registered,
        "best": {**trained[best], **{m: quality[best][m] for m in METRICS}},
        "reference": {k: {m: v[m] for m in METRICS} for k, v in reference.items()},
        "mlflow_run_id": run,
    }
