"""Every shipped preset validates against its stage's config (a misplaced or misspelt field
fails here, not in a user's scheduled run)."""

from pathlib import Path

import pytest

from pipelines.shared.presets import load_preset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _config_classes() -> dict:
    from flows.evaluate_retrieval import EvaluateRetrievalConfig
    from flows.finetune_sweep import SweepConfig
    from flows.prepare_corpus import PrepareCorpusConfig
    from flows.pretrain import PretrainFlowConfig
    from flows.rag import RagConfig
    from flows.review_summaries import ReviewSummariesConfig
    from pipelines.rag.feature_tables import SyncOnlineFeaturesConfig
    from pipelines.rag.index import IndexConfig

    return {
        "build_index": IndexConfig,
        "evaluate_retrieval": EvaluateRetrievalConfig,
        "finetune_sweep": SweepConfig,
        "prepare_corpus": PrepareCorpusConfig,
        "pretrain": PretrainFlowConfig,
        "rag": RagConfig,
        "review_summaries": ReviewSummariesConfig,
        "sync_online_features": SyncOnlineFeaturesConfig,
    }


PRESETS = sorted((p.parent.name, p.stem) for p in CONFIGS.glob("*/*.yaml"))


def test_every_stage_folder_has_a_config_class():
    assert {stage for stage, _ in PRESETS} <= set(_config_classes())


@pytest.mark.parametrize("stage,name", PRESETS, ids=[f"{s}/{n}" for s, n in PRESETS])
def test_preset_validates(stage, name):
    config = load_preset(_config_classes()[stage], stage, name)
    assert config.model_dump()  # validated, and every field serialises


def test_a_misspelt_nested_field_names_its_path(tmp_path):
    from flows.review_summaries import ReviewSummariesConfig

    preset = tmp_path / "typo.yaml"
    preset.write_text("summary:\n  window: week\n  context_token: 256\n")  # context_tokens
    with pytest.raises(
        ValueError,
        match=r"no such field\(s\) in ReviewSummariesConfig: "
        r"summary\.context_token",
    ):
        load_preset(ReviewSummariesConfig, "review_summaries", str(preset))
