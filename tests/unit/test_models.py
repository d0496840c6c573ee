"""Model presets: parameter counts, a finite loss, exact save/reload, MoE routing, FLOPs."""

from __future__ import annotations

import pytest
import torch

from pipelines.training.models import (
    CPU_PRESETS,
    PRESETS,
    build_model,
    count_parameters,
    device_peak_flops,
    flops_per_token,
    matmul_parameters,
    model_config,
)

VOCAB = 4096
# measured by instantiation (vocab 4096; 125m at GPT-2's 50257), with a little slack
EXPECTED_PARAMS = {
    "tiny": (0.3e6, 0.4e6),
    "demo": (2.8e6, 3.4e6),
    "small": (23e6, 28e6),
    "moe-tiny": (0.5e6, 0.7e6),
    "moe-demo": (7.5e6, 9.5e6),
    "125m": (115e6, 130e6),
}


@pytest.mark.parametrize("preset", CPU_PRESETS)
def test_each_cpu_preset_instantiates_with_its_parameter_count(preset):
    config = model_config(preset, VOCAB)
    model = build_model(config)
    low, high = EXPECTED_PARAMS[preset]
    assert low <= count_parameters(model) <= high
    # the FLOP formula's parameters are the model's own: all of them but embedding and norms,
    # plus the (tied) output projection
    norms = sum(p.numel() for name, p in model.named_parameters() if "norm" in name)
    assert matmul_parameters(config, active_only=False) == (
        count_parameters(model, exclude_embeddings=True) - norms + VOCAB * config.hidden_size
    )


def test_the_gpu_preset_counts_125m_parameters_without_allocating_them():
    from transformers import AutoModelForCausalLM

    config = model_config("125m", vocab_size=50257)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    low, high = EXPECTED_PARAMS["125m"]
    assert low <= count_parameters(model) <= high
    assert config.max_position_embeddings == 2048


def test_presets_use_rope_gqa_and_swiglu():
    config = model_config("demo", VOCAB, max_seq_len=512)
    assert config.model_type == "llama" and config.hidden_act == "silu"
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.rope_parameters["rope_type"] == "default"
    assert config.max_position_embeddings == 512
    with pytest.raises(KeyError, match="no model preset 'huge'"):
        model_config("huge", VOCAB)


def test_the_init_is_a_function_of_the_seed():
    config = model_config("tiny", 512)
    a, b, c = build_model(config, seed=1), build_model(config, seed=1), build_model(config, seed=2)
    for (name, x), y, _z in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=False
    ):
        assert torch.equal(x, y), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_the_tiny_model_gives_a_finite_loss_near_log_vocab(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = torch.tensor([tokenizer.encode("The pipeline reads delta rows 7 times.")])
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    assert abs(loss.item() - torch.log(torch.tensor(len(tokenizer))).item()) < 1.0  # ~uniform


def test_save_and_reload_gives_identical_logits(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert (tiny_model_dir / "model.safetensors").exists()
    assert not list(tiny_model_dir.glob("*.bin"))  # never a pickle
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(
        0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_the_moe_preset_routes_each_token_to_4_of_16_experts():
    config = model_config("moe-tiny", VOCAB)
    model = build_model(config).eval()
    routed = []
    handle = model.model.layers[0].mlp.gate.register_forward_hook(
        lambda module, inputs, output: routed.append(output)
    )
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids, output_router_logits=True)
    handle.remove()
    logits, weights, experts = routed[0]
    assert logits.shape == (20, 16) and experts.shape == (20, 4)
    assert all(len(set(row)) == 4 for row in experts.tolist())  # 4 distinct experts per token
    assert torch.allclose(weights.sum(-1), torch.ones(20))  # top-k weights renormalised
    assert len(out.router_logits) == config.num_hidden_layers
    # FLOPs count only the active experts: a quarter of the MLP weights
    dense_mlp = 3 * config.hidden_size * config.intermediate_size * config.num_hidden_layers
    assert (
        matmul_parameters(config, active_only=False) - matmul_parameters(config) == 12 * dense_mlp
    )


def test_flops_per_token_is_6n_plus_the_attention_term():
    config = model_config("125m", vocab_size=50257)
    n = matmul_parameters(config)
    assert flops_per_token(config, 2048) == 6 * n + 12 * 12 * 768 * 2048
    assert 0.9e9 < flops_per_token(config, 2048) < 1.0e9


def test_peak_flops_table_matches_device_names():
    assert device_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert device_peak_flops("NVIDIA H100 PCIe", torch.bfloat16) == 756e12
    assert device_peak_flops("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
    assert device_peak_flops("NVIDIA H200", "bf16") == 989e12
    assert device_peak_flops("NVIDIA L4", "fp16") == 121e12
    assert device_peak_flops("NVIDIA L40S", "bf16") is None  # unknown: no MFU, no guess
    assert device_peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 on Volta
    assert device_peak_flops("cpu", "fp32") is None
    assert set(PRESETS) >= set(CPU_PRESETS)
