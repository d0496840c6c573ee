"""Flow pairwise-eval: double-blind human comparison of two models' table documentation.

``prepare``: both models document the same N unseen tables (held-out families of
silver/tabledoc_examples) → a rating sheet (CSV + static HTML) with sides randomised and
identities hidden, the key kept apart. Raters fill in L / R / T. ``score``: the filled sheets
→ win rates with 95 % intervals, per-rater results, Cohen's and Fleiss' κ → MLflow and a
Prefect markdown artifact. The seed's setup (4 raters, 62 tables) is
``genai pairwise-eval prepare --items 62`` then ``genai pairwise-eval score SHEET…``.
"""

from __future__ import annotations

from prefect import flow

from pipelines.evaluation.pairwise_tabledoc import PairwiseConfig
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.evaluation import current_tabledoc_examples, prepare_sheet, score_sheets
from tasks.finetune import export_pairs

FLOW_NAME = "pairwise-eval"


@flow(name=FLOW_NAME, log_prints=True)
def pairwise_eval(
    config: PairwiseConfig | None = None,
    pairs: dict | None = None,
    sheets: list[str] | None = None,
    key: str | None = None,
    allow_missing: bool = False,
    preset: str | None = None,
) -> dict:
    """Without ``sheets``: prepare a sheet on ``pairs`` (default: the current
    silver/tabledoc_examples held-out split). With ``sheets`` and ``key``: score them.
    ``config``, or ``preset`` (configs/pairwise_eval/<name>.yaml)."""
    config = config_or_preset(PairwiseConfig, "pairwise_eval", config, preset)
    with tracked_flow(FLOW_NAME, config) as run:
        if sheets:
            if not key:
                raise ValueError("scoring needs the sheet's key.json (key=…)")
            return score_sheets(sheets, key, config.model_a, config.model_b, run, allow_missing)
        return prepare_sheet(config, pairs or export_pairs(current_tabledoc_examples()), run)
