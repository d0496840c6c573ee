"""Pairwise rating of two models' table documentation: the comparison's config, both models
documenting the same held-out tables (greedy generations) as a blind rating sheet, and where
a comparison's sheet lives by default.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipelines.evaluation import pairwise, tabledoc


class PairwiseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_a: str = "models:/genai-tabledoc@champion"  # a models:/ URI or a local HF dir
    model_b: str = "models:/genai-base@champion"
    items: int = Field(62, ge=1)  # unseen tables to rate (the seed used 62)
    seed: int = 0  # side randomisation
    max_new_tokens: int = Field(384, ge=16)
    out_dir: str | None = None  # default: <workspace>/pairwise/<a>-vs-<b>


def prepare_sheet(
    model_dirs: tuple[Path | str, Path | str],
    model_a: str,
    model_b: str,
    test_file: Path | str,
    n_items: int,
    max_new_tokens: int,
    out_dir: Path | str,
    seed: int,
) -> dict:
    """Model A (``model_dirs[0]``) and model B document the first ``n_items`` held-out
    tables; returns ``pairwise.make_rating_sheet``'s paths and counts."""
    items = tabledoc.read_items(test_file, n_items)
    outputs = [tabledoc.generate(model_dir, items, max_new_tokens) for model_dir in model_dirs]
    rows = [
        {"item_id": f"item-{i:03d}", "input": item["prompt"], "output_a": a, "output_b": b}
        for i, (item, a, b) in enumerate(zip(items, outputs[0], outputs[1], strict=False))
    ]
    return pairwise.make_rating_sheet(rows, model_a, model_b, out_dir, seed)


def default_sheet_dir(home: Path, model_a: str, model_b: str) -> Path:
    """``<home>/pairwise/<a>-vs-<b>``, each model named by its URI or path, made path-safe."""

    def slug(model: str) -> str:
        return "".join(c if c.isalnum() else "-" for c in model.removeprefix("models:/"))

    return Path(home) / "pairwise" / f"{slug(model_a)}-vs-{slug(model_b)}"
