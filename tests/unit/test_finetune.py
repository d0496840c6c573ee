"""LoRA fine-tuning: parameter counts against the formula, target discovery, response-only
loss, merge equivalence, and a real 2-step run through the launcher on the tiny model."""

from __future__ import annotations

import json

import pytest

from pipelines.finetune.lora import (
    IGNORE,
    Examples,
    FinetuneConfig,
    LoraSettings,
    apply_lora,
    encode_example,
    load_base,
    lora_parameter_count,
    merge_and_export,
    resolve_targets,
    trainable_parameters,
)
from pipelines.finetune.pairs import write_pairs
from pipelines.training.models import build_model, model_config


@pytest.mark.parametrize("preset", ["tiny", "demo", "moe-tiny"])
@pytest.mark.parametrize("targets", ["attention", "all-linear"])
def test_trainable_parameters_equal_the_lora_formula(preset, targets):
    base = build_model(model_config(preset, vocab_size=512), seed=0)
    chosen = resolve_targets(base, targets)
    expected = lora_parameter_count(base, chosen, r=4)
    total_before = sum(p.numel() for p in base.parameters())
    adapted = apply_lora(base, LoraSettings(r=4, alpha=8, targets=targets))
    trainable, total = trainable_parameters(adapted)
    assert trainable == expected > 0
    assert total == total_before + expected
    if targets == "attention":
        assert chosen == ["q_proj", "v_proj"]
    else:
        assert "lm_head" not in chosen and {"q_proj", "o_proj"} <= set(chosen)


def test_a_missing_target_module_lists_the_modules_the_model_has():
    base = build_model(model_config("tiny", vocab_size=512), seed=0)
    with pytest.raises(
        ValueError,
        match="no linear module named query_key_value; its linear "
        "modules are: down_proj, gate_proj, k_proj",
    ):
        resolve_targets(base, ["query_key_value"])


def test_only_response_tokens_are_scored_and_long_prompts_lose_their_head(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ids, labels = encode_example(tokenizer, "The pipeline reads", " delta rows", max_len=64)
    response = tokenizer.encode(" delta rows", add_special_tokens=False)
    assert labels[-len(response) - 1 :] == response + [tokenizer.eos_token_id]
    assert set(labels[: -len(response) - 1]) == {IGNORE}
    assert ids[-1] == tokenizer.eos_token_id and len(ids) == len(labels)
    ids, labels = encode_example(tokenizer, "the mix " * 40, " delta rows", max_len=16)
    assert len(ids) == 16 and labels[-len(response) - 1 :] == response + [tokenizer.eos_token_id]
    batch = Examples([("a table", " checks"), ("the model packs", " an index")], tokenizer, 32)
    inputs, batch_labels = batch.batch([1, 0])
    assert inputs.shape == batch_labels.shape == (2, batch.seq_len)


def test_a_batch_is_cut_to_its_longest_row_without_changing_the_loss(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    examples = Examples(
        [("a table", " checks"), ("the model packs " * 6, " an index")], tokenizer, 64
    )
    short_ids, short_labels = examples.batch([0])
    assert short_ids.shape[1] == examples.lengths[0] < examples.seq_len
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    with torch.no_grad():
        cut = model(
            input_ids=torch.from_numpy(short_ids), labels=torch.from_numpy(short_labels)
        ).loss
        full = model(
            input_ids=torch.from_numpy(examples.input_ids[[0]]),
            labels=torch.from_numpy(examples.labels[[0]]),
        ).loss
    assert torch.allclose(cut, full, atol=1e-5)


def test_the_merged_model_gives_the_adapter_models_logits(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    adapted = apply_lora(
        load_base(tiny_model_dir, 32),
        LoraSettings(r=4, alpha=8, dropout=0.0, targets="all-linear"),
    )
    with torch.no_grad():  # B starts at zero (a no-op adapter): give it weight to merge
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05, generator=torch.Generator().manual_seed(len(name)))
    adapted.eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
    merged_dir = merge_and_export(adapted, tiny_model_dir, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    with torch.no_grad():
        assert (base(input_ids=ids).logits - expected).abs().max() > 1e-3  # adapters matter
    assert (got - expected).abs().max() < 1e-4


def test_trained_embeddings_stay_tied_and_survive_the_merge(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    adapted = apply_lora(
        load_base(tiny_model_dir, 32),
        LoraSettings(r=4, alpha=8, dropout=0.0, targets="attention", train_embeddings=True),
    )
    embeddings = adapted.get_input_embeddings().weight  # the trainable copy
    assert embeddings.requires_grad
    with torch.no_grad():
        embeddings.add_(
            torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(0)) * 0.05
        )
    # the output layer is the same (trained) matrix
    assert adapted.get_output_embeddings().weight.data_ptr() == embeddings.data_ptr()
    adapted.eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
    merged = AutoModelForCausalLM.from_pretrained(
        str(merge_and_export(adapted, tiny_model_dir, tmp_path / "merged"))
    ).eval()
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - expected).abs().max() < 1e-4
    assert (
        merged.get_output_embeddings().weight.data_ptr()
        == merged.get_input_embeddings().weight.data_ptr()
    )


def test_qlora_without_cuda_is_a_clear_error_not_a_downgrade(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="base_bits=4 \\(QLoRA\\) needs CUDA"):
        load_base(tiny_model_dir, 4)


@pytest.mark.slow
def test_two_steps_through_the_launcher_train_export_and_resume(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from pipelines.training.launch import launch_finetune

    pairs = [
        (f"Instruction {i}: describe table t{i}\n### Response:\n", f" t{i} holds rows.")
        for i in range(24)
    ]
    train_file = write_pairs(pairs[:20], tmp_path / "train.jsonl")
    eval_file = write_pairs(pairs[20:], tmp_path / "eval.jsonl")
    config = FinetuneConfig(
        max_steps=2,
        micro_batch=4,
        warmup_steps=1,
        max_len=64,
        checkpoint_every=1,
        eval_every=1,
        eval_batches=1,
        zero_stage=0,
        lora=LoraSettings(r=4, alpha=8, targets="attention"),
    )
    out = tmp_path / "run"
    summary = launch_finetune(
        config,
        tiny_model_dir,
        train_file,
        out,
        eval_file=eval_file,
        base_ref="models:/genai-base@champion",
        timeout_s=300,
    )
    assert summary["steps"] == 2 and summary["train_examples"] == 20
    base = build_model(model_config("tiny", vocab_size=512), seed=0)
    assert summary["trainable_parameters"] == lora_parameter_count(base, ["q_proj", "v_proj"], 4)
    losses = [
        json.loads(line)["loss"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if '"event": "step"' in line
    ]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    assert (
        json.loads((out / "adapter" / "base.json").read_text())["base"]
        == "models:/genai-base@champion"
    )
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(summary["model_dir"])  # a plain HF dir
    # frozen base weights are not checkpointed: the tag holds the adapters only
    tag = out / "checkpoints" / "step00000002"
    assert sum(f.stat().st_size for f in tag.rglob("*model_states.pt")) < 200_000

    longer = config.model_copy(update={"max_steps": 3})  # same dir, one more step: resumes
    again = launch_finetune(
        longer, tiny_model_dir, train_file, out, eval_file=eval_file, timeout_s=300
    )
    assert again["resumed_from"] == "step00000002" and again["steps"] == 3
