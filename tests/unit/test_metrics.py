"""The metrics the gates decide on, against cases worked out by hand: bits per byte (the loop's
and the held-out scorer's), ROUGE-L (Lin 2004's own example) and the table-doc scorer."""

from __future__ import annotations

import math

import pytest

from pipelines.evaluation.tabledoc import score
from pipelines.evaluation.text_metrics import lcs_length, mean_rouge_l, rouge_l
from pipelines.pretrain.train import LanguageModeling
from pipelines.shared.tabledoc_format import render_response


class _Split:
    """Just what LanguageModeling reads of a shard split: its index."""

    seq_len, split = 8, "validation"

    def __init__(self, tokens: int, text_bytes: int):
        self.index = {"splits": {"validation": {"tokens": tokens, "text_bytes": text_bytes}}}


def test_the_loops_bits_per_byte_is_nats_per_token_times_tokens_per_byte_over_ln2():
    # 2 bits per token (2 ln 2 nats), 100 tokens for 400 bytes: 2 * 100 / 400 = 0.5 bit/byte
    assert LanguageModeling(_Split(100, 400)).bits_per_byte(2 * math.log(2)) == pytest.approx(0.5)
    # 1 nat per token, 3 bytes per token: 1 / 3 / ln 2
    assert LanguageModeling(_Split(30, 90)).bits_per_byte(1.0) == pytest.approx(0.480898, abs=1e-6)
    assert LanguageModeling(_Split(30, 0)).bits_per_byte(1.0) is None  # no byte count recorded


def test_a_uniform_model_scores_log2_vocab_bits_per_predicted_token(tiny_model_dir, tmp_path):
    """A model whose logits are all zero predicts every token with probability 1/V; each text
    token and the EOS after each text are predicted, so bpb = tokens x log2(V) / bytes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.pretrain.lm_metrics import bits_per_byte

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), local_files_only=True)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    uniform = tmp_path / "uniform"
    model.save_pretrained(str(uniform))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir), local_files_only=True)
    tokenizer.save_pretrained(str(uniform))

    texts = ["The pipeline reads delta rows 7 times.", "Ein naïver Test ☕."]
    tokens = sum(len(tokenizer.encode(t, add_special_tokens=False)) + 1 for t in texts)
    expected = tokens * math.log2(model.config.vocab_size) / sum(len(t.encode()) for t in texts)
    assert bits_per_byte(uniform, texts, window=8) == pytest.approx(expected, rel=1e-5)


def test_rouge_l_on_lins_worked_example():
    # Lin (2004), section 3.1: reference S1; S2 and S3 both share 2 bigrams with it, but S2's
    # LCS is "police the gunman" (3 words) and S3's is "the gunman" (2): R = P = 3/4 and 2/4
    s1, s2, s3 = "police killed the gunman", "police kill the gunman", "the gunman kill police"
    assert lcs_length(s2.split(), s1.split()) == 3
    assert rouge_l(s2, s1) == pytest.approx(0.75)
    assert rouge_l(s3, s1) == pytest.approx(0.5)
    assert mean_rouge_l([s2, s3], [s1, s1]) == pytest.approx(0.625)


def test_rouge_l_with_unequal_lengths_and_what_does_not_count():
    # LCS "the cat on the mat" = 5; P = 5/7, R = 5/6, F1 = 2PR/(P+R) = 10/13
    assert rouge_l("The cat was found on the mat", "the cat sat on the mat") == pytest.approx(
        10 / 13
    )
    assert rouge_l("THE CAT, on the mat!", "the cat on the mat") == 1.0  # case, punctuation
    assert rouge_l("", "anything") == 0.0 and rouge_l("no overlap", "at all") == 0.0
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        mean_rouge_l(["a", "b"], ["a"])


def test_the_tabledoc_scorer_averages_format_coverage_and_rouge_per_item():
    reference = render_response("Users of the shop.", [("id", "user key"), ("name", "full name")])
    items = [{"prompt": "p", "response": reference, "columns": ["id", "name"]}] * 3
    outputs = [
        reference,  # perfect: valid, both columns, ROUGE-L 1
        render_response("Users of the shop.", [("id", "user key")]),  # a column missing
        "Description: Users of the shop.\n* id: user key\n* name: full name",  # wrong bullets
    ]
    result = score(outputs, items)
    # format: only the first is strictly valid; coverage: 1, 1/2, 1 (lenient parser reads *)
    assert result["format_validity"] == pytest.approx(1 / 3)
    assert result["column_coverage"] == pytest.approx((1 + 0.5 + 1) / 3)
    # ROUGE-L: reference words "description users of the shop id user key name full name" (11);
    # the second keeps 8 of them (P = 1, R = 8/11), the third all 11
    assert result["rouge_l"] == pytest.approx((1 + 2 * (8 / 11) / (1 + 8 / 11) + 1) / 3)
    assert result["items"] == 3
    with pytest.raises(ValueError, match="2 outputs for 3 items"):
        score(outputs[:2], items)
