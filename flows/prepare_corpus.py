"""Flow prepare-corpus: package docs → bronze/corpus_raw → silver/corpus_clean →
silver/corpus_dedup → gold/pretrain_mix, each write gated by its table's expectations."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from pipelines.corpus.ingest import source_fingerprint
from pipelines.corpus.minhash import DedupConfig
from pipelines.corpus.mix import MixConfig
from pipelines.corpus.quality import QualityConfig
from pipelines.shared.documents import CorpusConfig
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.corpus import (
    clean_corpus,
    dedup_corpus,
    ingest_corpus,
    mix_corpus,
    publish_corpus_report,
)

FLOW_NAME = "prepare-corpus"


class PrepareCorpusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    mix: MixConfig = Field(default_factory=MixConfig)


@flow(name=FLOW_NAME, log_prints=True)
def prepare_corpus(config: PrepareCorpusConfig | None = None, preset: str | None = None) -> dict:
    """``config``, or ``preset`` (configs/prepare_corpus/<name>.yaml: what a deployment names)."""
    config = config_or_preset(PrepareCorpusConfig, "prepare_corpus", config, preset)
    with tracked_flow(FLOW_NAME, config) as run:
        raw = ingest_corpus(config.corpus, source_fingerprint(config.corpus), parent_run=run)
        clean = clean_corpus(raw, config.quality, parent_run=run)
        deduped = dedup_corpus(clean, config.dedup, parent_run=run)
        mixed = mix_corpus(deduped, config.mix, parent_run=run)
        publish_corpus_report([raw, clean, deduped, mixed])
    return mixed
