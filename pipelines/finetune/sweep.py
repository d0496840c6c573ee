"""The LoRA sweep's plan and summary: its config, the grid of cells (rank x target modules x
base precision, 4-bit cells listed as skipped without CUDA), the best cell, and the summary
rows and markdown.
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.finetune.examples import SynthConfig
from pipelines.finetune.lora import FinetuneConfig
from pipelines.finetune.runs import cell_name
from pipelines.shared.markdown import md_table

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


def grid(config: SweepConfig, cuda: bool | None = None) -> tuple[list[FinetuneConfig], list[dict]]:
    """(cells to train, cells skipped with why), in grid order, capped at max_cells.
    ``cuda``: whether 4-bit cells can run (None: probe this machine)."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    cells, skipped = [], []
    for r, targets, bits in itertools.product(config.ranks, config.targets, config.base_bits):
        lora = config.train.lora.model_copy(update={"r": r, "alpha": 2 * r, "targets": targets})
        cell = config.train.model_copy(update={"lora": lora, "base_bits": bits})
        if bits == 4 and not cuda:
            skipped.append({"cell": cell_name(cell), "why": "4-bit base needs CUDA"})
        elif config.max_cells is None or len(cells) < config.max_cells:
            cells.append(cell)
    return cells, skipped


def best_cell(quality: list[dict], metric: str) -> int:
    """Index of the cell with the highest ``metric`` (the first one on a tie)."""
    return max(range(len(quality)), key=lambda i: quality[i][metric])


def sweep_row(trained: dict, quality: dict) -> dict:
    targets = trained["lora"]["targets"]
    return {
        "cell": trained["cell"],
        "r": trained["lora"]["r"],
        "target_modules": targets if isinstance(targets, str) else ",".join(targets),
        "base_weight_bits": trained["base_bits"],
        "format_validity": round(quality["format_validity"], 4),
        "column_coverage": round(quality["column_coverage"], 4),
        "rouge_l": round(quality["rouge_l"], 4),
        "parameters_updated": trained["trainable_parameters"],
        "share_updated": round(trained["trainable_parameters"] / trained["total_parameters"], 5),
        "eval_loss": trained.get("val_loss"),
        "wall_s": round(trained["wall_s"], 1),
    }


def summary_rows(trained: list[dict], quality: list[dict], best: int) -> list[dict]:
    return [
        sweep_row(t, q) | {"best": i == best}
        for i, (t, q) in enumerate(zip(trained, quality, strict=False))
    ]


def report_markdown(
    rows: list[dict], reference: dict, skipped: list[dict], metric: str, best_name: str
) -> str:
    """The summary table, the reference models (base, copy-the-column-names) below the
    cells, then the skipped cells."""

    def scores(name: str, q: dict) -> tuple:
        return (
            name,
            f"{q['format_validity']:.3f}",
            f"{q['column_coverage']:.3f}",
            f"{q['rouge_l']:.3f}",
        )

    lines = ["# finetune-sweep", "", f"Best cell by {metric}: **{best_name}**", ""]
    lines += md_table(
        ("model", "format validity", "column coverage", "ROUGE-L"),
        [scores(r["cell"], r) for r in rows] + [scores(name, q) for name, q in reference.items()],
    )
    lines += [f"- skipped {s['cell']}: {s['why']}" for s in skipped]
    return "\n".join(lines) + "\n"
