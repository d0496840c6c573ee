"""Flow build-index: the RAG stage's chunk table kept in step with its corpus.

Scheduled (deployment ``build-index/nightly``): each run re-reads the corpus, re-embeds only
the sources whose chunks changed, deletes removed sources, refreshes the vector and full-text
indexes, and publishes the new table version — what answers and evaluations pin.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipelines.rag.index import IndexConfig, index_markdown
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.rag import build_index as build_index_task

FLOW_NAME = "build-index"


@flow(name=FLOW_NAME, log_prints=True)
def build_index(config: IndexConfig | None = None, preset: str | None = None) -> dict:
    """``config``, or ``preset`` (configs/build_index/<name>.yaml, what deployments name)."""
    config = config_or_preset(IndexConfig, "build_index", config, preset)
    with tracked_flow(FLOW_NAME, config) as run:
        manifest = build_index_task(config, parent_run=run)
    create_markdown_artifact(
        key="rag-index",
        markdown=index_markdown(manifest),
        description="The chunk table this run left behind",
    )
    return manifest
