"""RAG documents, chunks and embeddings: offsets that round-trip, token budgets that hold,
stable chunk ids, refused symlinks and escaping paths, quarantined files, and embeddings equal
to sentence-transformers' for the same model."""

import os

import numpy as np
import pytest

from pipelines.rag.chunking import (
    Chunk,
    ChunkingConfig,
    ChunkTooLongError,
    InputTooLongError,
    check_chunk_sizes,
    chunk_documents,
    count_tokens,
)
from pipelines.rag.documents import (
    Document,
    RagCorpusConfig,
    RagInputError,
    html_to_text,
    load_documents,
)
from pipelines.shared.embedder import Embedder, embedder_name

STRATEGIES = ["fixed", "recursive", "token"]

MARKDOWN = (
    """# Tracking runs

Start a run with `start_run()`. Every parameter and metric logged inside it is kept.

## Parameters

"""
    + " ".join(
        f"Parameter number {i} controls the learning-rate schedule's warm-up." for i in range(12)
    )
    + """

## Artifacts
Artifacts are files.
They live next to the run.

Returns
-------
Run
    The active run, which is a context manager.

Words the vocabulary has never seen: """
    + "zqxjvkbwpyfmgh" * 6
    + " "
    + "qwrtzpsdfghjklyxcvbnm" * 4
    + "."
)


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture(scope="module")
def tokenizer(embedder):
    return embedder.tokenizer


def md_doc(text: str = MARKDOWN, source_id: str = "file:guide.md") -> Document:
    return Document(source_id, text, source_id.removeprefix("file:"))


# ------------------------------------------------------------------------ chunking --------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_chunks_round_trip_their_offsets_and_fit_the_budget(tokenizer, strategy):
    doc = md_doc()
    config = ChunkingConfig(strategy=strategy, size=32, overlap=4)
    chunks = chunk_documents([doc], config, tokenizer)

    assert len(chunks) > 5
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.source_id == doc.source_id and chunk.text.strip() == chunk.text
    assert max(count_tokens(tokenizer, [c.text for c in chunks])) <= 32  # specials included
    covered = set().union(*(range(c.start, c.end) for c in chunks))
    lost = "".join(ch for i, ch in enumerate(doc.text) if i not in covered)
    assert not lost.strip(), f"text in no chunk: {lost.strip()[:80]!r}"
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_strategies_differ_as_documented(tokenizer):
    doc = md_doc(" ".join(f"Sentence {i} says something quite ordinary." for i in range(80)))
    token = chunk_documents([doc], ChunkingConfig(strategy="token", size=40, overlap=0), tokenizer)
    fixed = chunk_documents([doc], ChunkingConfig(strategy="fixed", size=40, overlap=0), tokenizer)
    recursive = chunk_documents(
        [doc], ChunkingConfig(strategy="recursive", size=40, overlap=0), tokenizer
    )
    # token: exact windows, every chunk but the last is full
    assert set(count_tokens(tokenizer, [c.text for c in token[:-1]])) == {40}
    # fixed: windows end at whitespace, never inside a word
    assert all(c.end == len(doc.text) or doc.text[c.end] == " " for c in fixed)
    # recursive: whole sentences
    assert all(c.text.endswith(".") for c in recursive)


def test_recursive_keeps_headings_with_their_section(tokenizer):
    chunks = chunk_documents(
        [md_doc()], ChunkingConfig(strategy="recursive", size=48, overlap=0), tokenizer
    )
    texts = [c.text for c in chunks]
    assert any(t.startswith("## Parameters\n\nParameter number 0") for t in texts)
    assert not any(t.rstrip().endswith(("## Parameters", "## Artifacts")) for t in texts)


def test_chunk_ids_are_stable_and_change_only_with_their_document(tokenizer):
    config = ChunkingConfig(strategy="recursive", size=32, overlap=4)
    other = md_doc(
        "# Other\n\nA second document about model registries and aliases.", "file:other.md"
    )
    first = chunk_documents([md_doc(), other], config, tokenizer)
    again = chunk_documents([md_doc(), other], config, tokenizer)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]

    edited = md_doc(MARKDOWN.replace("Start a run", "Begin a run"))
    changed = chunk_documents([edited, other], config, tokenizer)
    assert [c.chunk_id for c in changed if c.source_id == "file:other.md"] == [
        c.chunk_id for c in first if c.source_id == "file:other.md"
    ]
    guide_before = {c.chunk_id for c in first if c.source_id == "file:guide.md"}
    guide_after = {c.chunk_id for c in changed if c.source_id == "file:guide.md"}
    assert guide_before != guide_after  # the edited chunk got a new id...
    assert len(guide_before & guide_after) >= len(guide_before) - 2  # ...the rest did not


def test_sizes_beyond_the_embedder_are_refused(tokenizer):
    with pytest.raises(ValueError, match="exceeds the embedder's maximum input of 256"):
        chunk_documents([md_doc()], ChunkingConfig(size=300, overlap=0), tokenizer)
    with pytest.raises(ValueError, match="more than half"):
        ChunkingConfig(size=64, overlap=40)
    too_long = Chunk("file:x.md#0-9.abc", "file:x.md", 0, 9, "word " * 300)
    with pytest.raises(ChunkTooLongError, match="file:x.md#0-9.abc has 302 tokens"):
        check_chunk_sizes([too_long], tokenizer, 256)


def test_duplicate_document_ids_are_refused(tokenizer):
    with pytest.raises(ValueError, match="appears twice"):
        chunk_documents([md_doc(), md_doc()], ChunkingConfig(), tokenizer)


# ----------------------------------------------------------------------- documents --------


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_folders_are_read_with_html_stripped_and_bad_files_quarantined(tmp_path):
    docs = tmp_path / "docs"
    write(docs / "guide.md", "# Guide\n\nRead me.\r\n")
    write(docs / "notes.txt", "plain notes")
    write(
        docs / "sub" / "page.html",
        "<html><head><title>Page</title><style>p {color: red}</style>"
        "<script>alert('x')</script></head><body><h2>Serving</h2><p>Fish &amp; chips"
        "<br>second line</p><ul><li>one</li><li>two</li></ul></body></html>",
    )
    write(docs / "latin1.md", "caf\xe9".encode("latin-1"))
    write(docs / "blank.txt", "  \n")
    write(docs / "image.png", b"\x89PNG")

    loaded = load_documents(RagCorpusConfig(paths=[str(docs)]))

    by_id = {d.source_id: d for d in loaded.documents}
    assert sorted(by_id) == ["file:guide.md", "file:notes.txt", "file:sub/page.html"]
    assert by_id["file:guide.md"].text == "# Guide\n\nRead me.\n"
    page = by_id["file:sub/page.html"].text
    assert page == "Page\n\n## Serving\n\nFish & chips\nsecond line\n\n- one\n- two"
    reasons = {q["source_id"]: q["reason"] for q in loaded.quarantined}
    assert reasons == {
        "file:latin1.md": "undecodable UTF-8 at byte 3",
        "file:blank.txt": "no text",
    }
    assert loaded.stats["quarantined"] == 2 and loaded.stats["skipped_files"] == 1


def test_html_to_text_keeps_pre_and_drops_scripts():
    text = html_to_text(
        "<p>a <b>bold</b>\n  word</p><pre>x = 1\n    y = 2</pre>"
        "<script>var hidden = 1;</script><noscript>nojs</noscript>"
    )
    assert text == "a bold word\n\nx = 1\n    y = 2"


def test_symlinks_and_escaping_paths_are_refused(tmp_path):
    root = tmp_path / "root"
    write(root / "docs" / "a.md", "inside")
    write(tmp_path / "secret.md", "outside")
    with pytest.raises(RagInputError, match="outside the corpus root"):
        load_documents(RagCorpusConfig(root=str(root), paths=["../secret.md"]))
    with pytest.raises(RagInputError, match="outside the corpus root"):
        load_documents(RagCorpusConfig(root=str(root), paths=[str(tmp_path / "secret.md")]))

    os.symlink(tmp_path / "secret.md", root / "docs" / "link.md")
    with pytest.raises(RagInputError, match="symlink .*outside the corpus root"):
        load_documents(RagCorpusConfig(paths=[str(root / "docs")]))
    os.unlink(root / "docs" / "link.md")
    os.symlink(root / "docs" / "a.md", root / "docs" / "inner.md")  # even one inside the root
    with pytest.raises(RagInputError, match="symlinks are refused"):
        load_documents(RagCorpusConfig(root=str(root), paths=["docs"]))
    os.symlink(tmp_path, root / "escape")
    with pytest.raises(RagInputError, match="escape is a symlink"):
        load_documents(RagCorpusConfig(root=str(root), paths=["escape/secret.md"]))

    os.unlink(root / "docs" / "inner.md")
    loaded = load_documents(RagCorpusConfig(root=str(root), paths=["docs"]))
    assert [d.source_id for d in loaded.documents] == ["file:docs/a.md"]


def test_an_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RagInputError, match="RAG corpus is empty"):
        load_documents(RagCorpusConfig(paths=[str(tmp_path / "empty")]))
    write(tmp_path / "bad" / "x.txt", b"\xff\xfe\xfa")
    with pytest.raises(RagInputError, match="1 quarantined"):
        load_documents(RagCorpusConfig(paths=[str(tmp_path / "bad")]))
    with pytest.raises(RagInputError, match="does not exist"):
        load_documents(RagCorpusConfig(paths=[str(tmp_path / "nowhere")]))


def test_package_docs_keep_corpus_ids_and_the_cap_is_deterministic():
    config = RagCorpusConfig(packages=["packaging"])
    full = load_documents(config)
    ids = [d.source_id for d in full.documents]
    assert "pkg:packaging:METADATA" in ids
    assert "py:packaging.version.Version" in ids
    assert all(i.startswith(("py:packaging", "pkg:packaging:")) for i in ids)

    capped = config.model_copy(
        update={"max_documents": 10, "include_ids": ["py:packaging.version.Version"]}
    )
    first, second = load_documents(capped), load_documents(capped)
    assert [d.source_id for d in first.documents] == [d.source_id for d in second.documents]
    assert len(first.documents) == 10
    assert "py:packaging.version.Version" in {d.source_id for d in first.documents}


# ----------------------------------------------------------------------- embedding --------


def test_embeddings_match_sentence_transformers(embedder):
    from sentence_transformers import SentenceTransformer

    sentences = [
        "Log a metric to the active MLflow run.",
        "A Prefect flow retries failed tasks.",
        "Spark DataFrames are lazily evaluated, distributed collections of rows.",
    ]
    ours = embedder.embed(sentences)
    reference = SentenceTransformer(str(embedder.model_dir), device="cpu").encode(
        sentences, normalize_embeddings=True
    )

    assert ours.dtype == np.float32 and ours.shape == (3, 384) == (3, embedder.dim)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (np.sum(ours * reference, axis=1) > 0.999).all()
    assert np.allclose(embedder.embed(sentences[::-1])[::-1], ours, atol=1e-5)  # order kept
    assert np.allclose(embedder.embed_query(sentences[1]), ours[1], atol=1e-5)
    assert embedder.name == "all-minilm-l6-v2" and embedder.max_tokens == 256


def test_over_long_input_is_refused_not_truncated(embedder):
    with pytest.raises(InputTooLongError, match="text 1 has 302 tokens"):
        embedder.embed(["short", "word " * 300])
    assert embedder.embed([]).shape == (0, 384)


def test_embedder_names_and_folders(embedder, tmp_path):
    assert embedder_name(embedder.model_dir) == "all-minilm-l6-v2"
    snapshot = tmp_path / "models--BAAI--bge-small-en-v1.5" / "snapshots" / "0123abcd"
    assert embedder_name(snapshot) == "bge-small-en-v1.5"
    assert embedder_name(tmp_path / "My Encoder") == "my-encoder"
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        Embedder(tmp_path)
