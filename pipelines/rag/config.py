"""What a RAG chain is built from — the feature tables kept online, the chunk index and how
questions are answered — and the chain a ``configs/rag/<preset>.yaml`` describes, opened for
the model server (the served model answers). The rag flow's config extends this one with how
genai-rag is trained and which questions the flow answers.
"""

from __future__ import annotations

import yaml
from pydantic import BaseModel, ConfigDict, Field

from pipelines.rag.chain import AnswerConfig, RagChain, open_chain
from pipelines.rag.feature_tables import SyncOnlineFeaturesConfig
from pipelines.rag.index import IndexConfig, lancedb_dir
from pipelines.shared.presets import preset_path


class RagChainConfig(BaseModel):
    """The parts of a RAG preset the chain itself reads."""

    model_config = ConfigDict(extra="forbid")

    features: SyncOnlineFeaturesConfig = Field(default_factory=SyncOnlineFeaturesConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)  # its hotels follow `features`
    answer: AnswerConfig = Field(default_factory=AnswerConfig)


def index_config(config: RagChainConfig) -> IndexConfig:
    """The index config with the features stage's hotels, so every hotel description the
    chain retrieves has rows in the feature tables."""
    if config.index.hotels is None:
        return config.index
    return config.index.model_copy(update={"hotels": config.features.data})


def load_chain_preset(preset: str) -> RagChainConfig:
    """The chain's parts of configs/rag/<preset>.yaml, checked as strictly as the flow checks
    them; the flow's own fields (training, questions) are left to the flow."""
    path = preset_path("rag", preset)
    data = yaml.safe_load(path.read_text()) or {}
    chain_data = {k: v for k, v in data.items() if k in RagChainConfig.model_fields}
    try:
        config = RagChainConfig.model_validate(chain_data)
    except Exception as err:
        raise ValueError(f"preset {path} is not a valid RagConfig: {err}") from err
    return config


def preset_chain(preset: str, served_model: str) -> RagChain:
    """The chain over the preset's index (latest version), for the model server: the served
    model (``served_model``) answers through the server's own batcher, its tokenizer fitting
    prompts to its context."""
    config = load_chain_preset(preset)
    answer = config.answer.model_copy(update={"model": served_model})
    return open_chain(index_config(config), answer, lancedb_dir(), load_model=False)
