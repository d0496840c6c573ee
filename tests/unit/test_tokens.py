"""Tokenizer, validation holdout, packing, token shards (built from a real Delta mix table)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tiny_model import (  # noqa: E402  (tests/ is on sys.path)
    build_tiny_model_and_tokenizer,
    tiny_sentences,
)
from tiny_model import tiny_mix_rows as mix_rows  # noqa: E402
from tiny_model import write_tiny_mix as write_mix  # noqa: E402

from infra.faults import InjectedFault
from pipelines.pretrain.holdout import is_validation
from pipelines.pretrain.tokenizer import (
    TokenizerConfig,
    check_vocab,
    save_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)
from pipelines.pretrain.tokens import (
    COMPLETE_MARKER,
    INDEX_FILE,
    SequencePacker,
    TokenShards,
    build_token_shards,
    pack_documents,
    shard_cache_key,
    tokenize_in_process,
    write_token_shards,
)
from pipelines.training.hf import load_tokenizer

UNICODE = "  Grüße, naïve café — 日本語のテキスト 🎉\ttabs\n\nand  double  spaces, ' quotes ' !"
SEQ_LEN, VAL_FRACTION, SEED, SHARD_SEQUENCES = 32, 0.25, 7, 16


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(tiny_sentences(), TokenizerConfig(vocab_size=512))


@pytest.fixture(scope="module")
def tokenizer_dir(tokenizer, tmp_path_factory):
    return save_tokenizer(tokenizer, tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model_and_tokenizer(tmp_path_factory.mktemp("tiny"))


# --- tokenizer ------------------------------------------------------------------------------


def test_byte_level_bpe_round_trips_any_unicode_text(tokenizer):
    for text in (UNICODE, *tiny_sentences(20, seed=3), " leading space", "ends with space "):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None  # byte-level: nothing is ever unknown


def test_special_tokens_come_first_and_eos_doubles_as_bos(tokenizer):
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 0
    assert tokenizer.bos_token_id == 0 and tokenizer.pad_token_id == 1
    assert len(tokenizer) <= 512
    # special tokens are not added to plain encodes: documents get EOS from the packer
    assert 0 not in tokenizer.encode("hello world")


def test_saved_tokenizer_reloads_offline_and_hashes_the_same(tokenizer, tokenizer_dir):
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert reloaded.encode(UNICODE) == tokenizer.encode(UNICODE)
    assert reloaded.decode(reloaded.encode(UNICODE)) == UNICODE
    assert reloaded.eos_token_id == 0 and reloaded.pad_token_id == 1
    assert tokenizer_hash(tokenizer) == tokenizer_hash(tokenizer_dir) == tokenizer_hash(reloaded)


def test_training_is_deterministic_and_the_hash_tells_tokenizers_apart(tokenizer):
    again = train_tokenizer(tiny_sentences(), TokenizerConfig(vocab_size=512))
    other = train_tokenizer(tiny_sentences(), TokenizerConfig(vocab_size=400))
    assert tokenizer_hash(again) == tokenizer_hash(tokenizer)
    assert tokenizer_hash(other) != tokenizer_hash(tokenizer)


def test_missing_tokenizer_dir_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_tokenizer(tmp_path)


def test_check_vocab_refuses_a_model_smaller_than_the_tokenizer(tokenizer, tiny_model_dir):
    from transformers import AutoConfig

    from pipelines.training.models import model_config

    check_vocab(tiny_model_dir, AutoConfig.from_pretrained(tiny_model_dir))  # the fixture fits
    check_vocab(tokenizer, model_config("tiny", vocab_size=1024))  # a padded vocab is fine
    with pytest.raises(ValueError, match="embedding has 300 rows"):
        check_vocab(tokenizer, model_config("tiny", vocab_size=300))
    with pytest.raises(ValueError, match="eos_token_id is 0 in the tokenizer but 2"):
        check_vocab(tokenizer, model_config("tiny", vocab_size=512, eos_token_id=2))


# --- holdout and packing --------------------------------------------------------------------


def test_validation_split_is_a_pure_function_of_seed_and_id():
    ids = [f"doc-{i}" for i in range(4000)]
    chosen = [i for i in ids if is_validation(i, 0.1, seed=1)]
    assert 300 < len(chosen) < 500  # ~10 %
    assert chosen == [i for i in reversed(ids) if is_validation(i, 0.1, seed=1)][::-1]
    assert chosen != [i for i in ids if is_validation(i, 0.1, seed=2)]
    assert not any(is_validation(i, 0.0, seed=1) for i in ids)
    with pytest.raises(ValueError, match="fraction"):
        is_validation("x", 1.0, seed=1)


def test_packing_puts_eos_after_each_document_and_drops_the_tail():
    docs = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]  # 4 docs, 11 tokens + 4 EOS = 15
    packed = pack_documents(docs, seq_len=4, eos_id=0)
    assert packed.shape == (3, 4)
    assert packed.ravel().tolist() == [5, 6, 7, 0, 8, 0, 9, 10, 11, 12, 13, 0]
    packer = SequencePacker(seq_len=4, eos_id=0)
    assert sum(len(packer.add(d)) for d in docs) == 3
    assert packer.dropped_tokens == 3 and packer.tokens == 15 and packer.documents == 4
    assert pack_documents([], seq_len=4, eos_id=0).shape == (0, 4)


def test_a_long_document_fills_several_sequences():
    packer = SequencePacker(seq_len=8, eos_id=1)
    rows = packer.add(list(range(2, 30)))  # 28 tokens + EOS = 29
    assert rows.shape == (3, 8) and packer.dropped_tokens == 5
    assert rows.ravel().tolist() == list(range(2, 26))


# --- shards from a Delta table --------------------------------------------------------------


def build(spark, manifest, tokenizer_dir, out_root):
    return build_token_shards(
        spark,
        manifest,
        tokenizer_dir,
        out_root,
        seq_len=SEQ_LEN,
        val_fraction=VAL_FRACTION,
        seed=SEED,
        shard_sequences=SHARD_SEQUENCES,
    )


def all_sequences(directory, split) -> np.ndarray:
    shards = TokenShards(directory, split)
    return np.stack([shards[i] for i in range(len(shards))])


@pytest.fixture(scope="module")
def mix_manifest(spark, settings):
    return write_mix(spark, settings.home / "lakes" / "test_tokens_mix", mix_rows())


@pytest.fixture(scope="module")
def built(spark, mix_manifest, tokenizer_dir, tmp_path_factory):
    out_root = tmp_path_factory.mktemp("shards")
    return build(spark, mix_manifest, tokenizer_dir, out_root), out_root


@pytest.mark.spark
def test_shards_hold_the_packed_documents_in_repeat_id_order(built, tokenizer):
    summary, _ = built
    rows = sorted(mix_rows(), key=lambda r: (r[7], r[1]))  # (repeat, id)
    for split in ("train", "validation"):
        docs = [r for r in rows if is_validation(r[1], VAL_FRACTION, SEED) == (split != "train")]
        expected = pack_documents([tokenizer.encode(r[5]) for r in docs], SEQ_LEN, eos_id=0)
        np.testing.assert_array_equal(all_sequences(summary["dir"], split), expected)
        stats = summary["splits"][split]
        assert stats["documents"] == len(docs)
        assert stats["text_bytes"] == sum(r[6] for r in docs)
        assert stats["tokens"] == stats["document_tokens"] + len(docs)
        assert stats["sequences"] == len(expected) > 0
        assert stats["packed_tokens"] + stats["dropped_tokens"] == stats["tokens"]
        assert stats["dropped_tokens"] < SEQ_LEN
    index = json.loads((built[1] / summary["cache_key"] / INDEX_FILE).read_text())
    assert index["dtype"] == "uint16" and index["seq_len"] == SEQ_LEN
    assert index["table"]["version"] == summary["table"]["version"] is not None
    assert index["tokenizer_hash"] == tokenizer_hash(tokenizer) and index["seed"] == SEED
    assert len(index["splits"]["train"]["shards"]) > 1  # several shard files were written
    assert summary["reused"] is False


@pytest.mark.spark
def test_validation_documents_are_disjoint_from_train_documents(built, tokenizer):
    summary, _ = built

    def doc_ids(split):
        text = tokenizer.decode(all_sequences(summary["dir"], split).ravel().tolist())
        return {part.split(":")[0] for part in text.split("<|endoftext|>") if part.strip()}

    train, validation = doc_ids("train"), doc_ids("validation")
    assert train and validation and not train & validation
    assert {i for i in train | validation if i.startswith("doc-")} == train | validation


@pytest.mark.spark
def test_a_second_call_finds_the_complete_dir_and_does_no_work(
    spark, built, mix_manifest, tokenizer_dir
):
    summary, out_root = built
    marker = out_root / summary["cache_key"] / COMPLETE_MARKER
    before = marker.stat().st_mtime_ns
    again = build(spark, mix_manifest, tokenizer_dir, out_root)
    assert again["reused"] is True and again["dir"] == summary["dir"]
    assert marker.stat().st_mtime_ns == before
    assert sorted(p.name for p in out_root.iterdir()) == [summary["cache_key"]]  # no temp dirs


@pytest.mark.spark
def test_shards_do_not_depend_on_the_tables_partitioning(
    spark, settings, built, tokenizer_dir, tmp_path
):
    from infra.lake import table_ref
    from pipelines.corpus.mix import PRETRAIN_MIX

    summary, _ = built
    # the same rows, reversed, in 5 files: written directly (the gate is not under test here,
    # and a second gated write would double this file's Spark time)
    path = settings.home / "lakes" / "test_tokens_repartitioned"
    (
        spark.createDataFrame(list(reversed(mix_rows())), PRETRAIN_MIX.schema)
        .repartition(5)
        .write.format("delta")
        .mode("overwrite")
        .save(str(path))
    )
    assert len(list(path.glob("*.parquet"))) == 5
    other = build(spark, table_ref(spark, path), tokenizer_dir, tmp_path)
    assert other["cache_key"] != summary["cache_key"]  # another Delta table id
    for split in ("train", "validation"):
        np.testing.assert_array_equal(
            all_sequences(other["dir"], split), all_sequences(summary["dir"], split)
        )


@pytest.mark.spark
def test_a_crash_before_the_marker_never_leaves_a_dir_that_looks_complete(
    spark, mix_manifest, tokenizer_dir, tmp_path, monkeypatch, built
):
    key = shard_cache_key(
        mix_manifest, tokenizer_hash(tokenizer_dir), SEQ_LEN, VAL_FRACTION, SEED, SHARD_SEQUENCES
    )
    stray = tmp_path / f".{key}.tmp-deadbeef"  # a half-built temp dir from an earlier crash
    stray.mkdir()
    (stray / "train-00000.npy").write_bytes(b"half")
    monkeypatch.setenv("GENAI_FAULT", "tokens.before_marker")
    monkeypatch.setenv("GENAI_FAULT_MODE", "raise")
    with pytest.raises(InjectedFault):
        build(spark, mix_manifest, tokenizer_dir, tmp_path)
    assert (tmp_path / key / INDEX_FILE).exists()  # renamed into place, but no marker
    with pytest.raises(FileNotFoundError, match=f"{key} is not a complete token shard dir"):
        TokenShards(tmp_path / key)

    monkeypatch.delenv("GENAI_FAULT")
    rebuilt = build(spark, mix_manifest, tokenizer_dir, tmp_path)
    assert rebuilt["reused"] is False and (tmp_path / key / COMPLETE_MARKER).exists()
    np.testing.assert_array_equal(
        all_sequences(rebuilt["dir"], "train"), all_sequences(built[0]["dir"], "train")
    )


@pytest.mark.spark
def test_an_empty_or_missing_mix_table_is_a_clear_error(spark, lake_dir, tokenizer_dir, tmp_path):
    from infra.lake import ensure_table, table_ref
    from pipelines.corpus.mix import PRETRAIN_MIX

    path = PRETRAIN_MIX.path(lake_dir)
    with pytest.raises(FileNotFoundError, match=f"no Delta table at {path}"):
        build(spark, {"table": str(path), "table_id": "x", "version": 0}, tokenizer_dir, tmp_path)
    ensure_table(spark, path, PRETRAIN_MIX.schema)
    with pytest.raises(ValueError, match=f"mix table {path} .* has no rows"):
        build(spark, table_ref(spark, path), tokenizer_dir, tmp_path)
    assert list(tmp_path.iterdir()) == []  # the failed build left nothing behind


@pytest.mark.spark
def test_the_reader_names_the_missing_or_corrupt_file(built, tmp_path):
    source = built[0]["dir"]
    copy = shutil.copytree(source, tmp_path / "copy")
    shards = TokenShards(copy, "validation")
    assert len(shards) == built[0]["splits"]["validation"]["sequences"]
    assert shards[-1].shape == (SEQ_LEN,) and shards.batch([0, 1]).shape == (2, SEQ_LEN)
    with pytest.raises(IndexError):
        shards[len(shards)]
    with pytest.raises(KeyError, match="no split 'test'"):
        TokenShards(copy, "test")

    first = copy / "train-00001.npy"
    first.write_bytes(first.read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match="train-00001.npy is not a readable .npy"):
        TokenShards(copy, "train")
    first.unlink()
    with pytest.raises(FileNotFoundError, match="train-00001.npy .* is missing"):
        TokenShards(copy, "train")
    (copy / INDEX_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="index.json is not valid JSON"):
        TokenShards(copy, "validation")


def test_in_process_shards_pack_the_documents_in_id_order_without_spark(tokenizer, tmp_path):
    records = [(r[1], r[5]) for r in mix_rows() if r[7] == 0][::-1]  # any input order
    table = {"table": "file:corpus.jsonl", "table_id": "abc", "version": 0}
    summary = write_token_shards(
        lambda: tokenize_in_process(records, tokenizer, batch=7),
        tokenizer,
        table,
        tmp_path,
        SEQ_LEN,
        VAL_FRACTION,
        SEED,
        SHARD_SEQUENCES,
    )
    for split in ("train", "validation"):
        docs = sorted(
            r for r in records if is_validation(r[0], VAL_FRACTION, SEED) == (split != "train")
        )
        expected = pack_documents([tokenizer.encode(t) for _, t in docs], SEQ_LEN, eos_id=0)
        np.testing.assert_array_equal(all_sequences(summary["dir"], split), expected)
        assert summary["splits"][split]["text_bytes"] == sum(len(t.encode()) for _, t in docs)
    again = write_token_shards(
        lambda: pytest.fail("a complete dir is rebuilt"),
        tokenizer,
        table,
        tmp_path,
        SEQ_LEN,
        VAL_FRACTION,
        SEED,
        SHARD_SEQUENCES,
    )
    assert again["reused"] and again["dir"] == summary["dir"]
