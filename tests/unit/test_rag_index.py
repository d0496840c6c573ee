"""Which chunk table a corpus selection reads and writes."""

from pipelines.rag.documents import RagCorpusConfig
from pipelines.rag.index import IndexConfig, corpus_key
from pipelines.rag.travel_data import FeaturesConfig


def test_each_corpus_selection_has_its_own_table():
    demo = IndexConfig(
        corpus=RagCorpusConfig(max_documents=600), hotels=FeaturesConfig(n_users=50, n_hotels=24)
    )
    assert corpus_key(demo) == corpus_key(demo.model_copy(deep=True))
    assert corpus_key(demo).startswith("docs-")
    others = [
        demo.model_copy(update={"hotels": None}),
        demo.model_copy(update={"corpus": RagCorpusConfig()}),
        demo.model_copy(
            update={"corpus": RagCorpusConfig(max_documents=600, cap_order="strided")}
        ),
        demo.model_copy(update={"corpus": RagCorpusConfig(paths=["handbook"])}),
        demo.model_copy(update={"corpus_name": "handbook"}),
    ]
    keys = {corpus_key(c) for c in [demo, *others]}
    assert len(keys) == 6  # a build of one selection never prunes another's documents
