"""The base model's architecture: Llama-family presets (RoPE, grouped-query attention, SwiGLU),
a fine-grained mixture-of-experts variant, parameter and FLOP accounting for MFU.

Presets (parameter counts measured by instantiating them, vocab 4096 unless noted; embeddings
tied, so the input embedding and the output projection are one matrix):

    preset     hidden layers heads kv  ffn    params         seq   where
    tiny           64   2      4    2   176     0.36 M        128   tests (trains in seconds)
    demo          192   6      6    2   512     3.15 M        256   the 2-core demo (~4 min)
    small         512   8      8    4  1408    25.7 M         512   a laptop with patience
    125m          768  12     12    4  2304   121 M @ 50257   2048  one GPU (GPT-3 Small size)
    moe-tiny       64   2      4    2  16x48   0.58 M        128   tests (4 of 16 active)
    moe-demo      192   6      6    2  16x128   8.47 M        256   DBRX-style; 3.16 M active

The MoE presets follow DBRX's fine-grained choice — 16 experts, 4 active per token — with each
expert a quarter of the dense preset's FFN, so a token's active parameters match the dense
model's while the layer holds 4x the FFN capacity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROPE_THETA = 10_000.0  # RoPE base period; enough for <= 2048 positions (Llama 2's value)


@dataclass(frozen=True)
class Preset:
    hidden: int  # model width
    layers: int  # transformer blocks
    heads: int  # query heads; head_dim = hidden / heads
    kv_heads: int  # grouped-query attention: each K/V head serves heads / kv_heads query heads
    ffn: int  # SwiGLU inner width (per expert for MoE)
    seq_len: int  # default max_seq_len (RoPE extends, but this is what it trains at)
    experts: int = 0  # 0: dense MLP; else routed experts per layer (MixtralConfig)
    active_experts: int = 0  # experts each token is routed to
    tie_embeddings: bool = True  # one matrix for input embedding and output projection:
    # at these sizes it is a large share of the parameters


PRESETS: dict[str, Preset] = {
    "tiny": Preset(hidden=64, layers=2, heads=4, kv_heads=2, ffn=176, seq_len=128),
    "demo": Preset(hidden=192, layers=6, heads=6, kv_heads=2, ffn=512, seq_len=256),
    "small": Preset(hidden=512, layers=8, heads=8, kv_heads=4, ffn=1408, seq_len=512),
    "125m": Preset(hidden=768, layers=12, heads=12, kv_heads=4, ffn=2304, seq_len=2048),
    "moe-tiny": Preset(
        hidden=64, layers=2, heads=4, kv_heads=2, ffn=48, seq_len=128, experts=16, active_experts=4
    ),
    "moe-demo": Preset(
        hidden=192,
        layers=6,
        heads=6,
        kv_heads=2,
        ffn=128,
        seq_len=256,
        experts=16,
        active_experts=4,
    ),
}
CPU_PRESETS = ("tiny", "demo", "small", "moe-tiny", "moe-demo")  # train on a laptop CPU


def model_config(preset: str, vocab_size: int, max_seq_len: int | None = None, **overrides):
    """The HF config of a preset (LlamaConfig, or MixtralConfig for MoE presets).

    ``overrides`` set any config field, e.g. the tokenizer's special ids
    (``**pipelines.pretrain.tokenizer.special_token_ids(tokenizer)``); without them EOS/BOS/PAD
    are unset rather than Llama's defaults (1, 2), which would point at ordinary tokens of our
    vocab.
    """
    from transformers import LlamaConfig, MixtralConfig

    if preset not in PRESETS:
        raise KeyError(f"no model preset {preset!r}; known: {sorted(PRESETS)}")
    p = PRESETS[preset]
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=p.hidden,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.kv_heads,
        intermediate_size=p.ffn,
        hidden_act="silu",  # SwiGLU: silu(x W_gate) * (x W_up), then W_down
        max_position_embeddings=max_seq_len or p.seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        rms_norm_eps=1e-5,  # RMSNorm epsilon (Llama 2/3)
        initializer_range=0.02,  # std of the normal init (GPT-2/Llama)
        tie_word_embeddings=p.tie_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        use_cache=True,  # KV cache for generation; training ignores it
    )
    if p.experts:
        fields.update(
            num_local_experts=p.experts,
            num_experts_per_tok=p.active_experts,
            router_aux_loss_coef=0.01,  # load-balancing loss weight (Switch/Mixtral)
            output_router_logits=False,  # True adds the aux loss to the model's loss
            sliding_window=None,
        )  # full causal attention, like the dense presets
        config = MixtralConfig(**{**fields, **overrides})
    else:
        config = LlamaConfig(**{**fields, **overrides})
    return config


def build_model(config, seed: int = 0):
    """A freshly initialised causal LM for ``config``; the init is a function of ``seed``.

    The global torch RNG is left as it was.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model


def count_parameters(model, exclude_embeddings: bool = False) -> int:
    """Distinct parameters (a tied embedding counts once); optionally without the embedding."""
    total = sum(p.numel() for p in model.parameters())
    if exclude_embeddings:
        total -= model.get_input_embeddings().weight.numel()
    return int(total)


# --- FLOPs and peak throughput, for MFU -----------------------------------------------------


def matmul_parameters(config, active_only: bool = True) -> int:
    """Weights a token multiplies through: attention, MLP (active experts only when
    ``active_only``), routers, and the output projection; not the input embedding (a lookup)
    nor the norms (elementwise)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_width = config.num_attention_heads * head_dim
    kv_width = config.num_key_value_heads * head_dim
    attention = 2 * hidden * q_width + 2 * hidden * kv_width  # q, o + k, v
    mlp = 3 * hidden * config.intermediate_size  # SwiGLU: gate, up, down
    experts = getattr(config, "num_local_experts", 0) or 0
    if experts:
        routed = config.num_experts_per_tok if active_only else experts
        mlp = routed * mlp + hidden * experts  # + the router
    return layers * (attention + mlp) + config.vocab_size * hidden


def flops_per_token(config, seq_len: int) -> int:
    """Model FLOPs per token for one training step (forward + backward), as MFU counts them.

        6 * N  +  12 * L * (heads * head_dim) * T

    6N (PaLM appendix B; Kaplan et al.): 2 FLOPs per multiply-add forward, twice that backward,
    for N = ``matmul_parameters`` (for MoE only the experts a token is routed to). The
    attention term is the QK^T and AV products: 2 matmuls x 2 FLOPs x (heads*head_dim) x T
    per layer forward, x3 with backward; causal masking is not discounted (the convention).
    Recomputation (activation checkpointing) is not counted: this is MFU, not HFU.
    """
    head_dim = (
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * head_dim * seq_len
    return 6 * matmul_parameters(config, active_only=True) + attention


# Dense (no 2:4 sparsity) peak tensor throughput per device, FLOP/s, from vendor data sheets.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "h200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 66.9e12, "fp8": 1979e12},
    "h100-sxm": {
        "bf16": 989e12,
        "fp16": 989e12,
        "tf32": 494.5e12,
        "fp32": 66.9e12,
        "fp8": 1979e12,
    },
    "h100-pcie": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12, "fp8": 1513e12},
    "a100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "l4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12, "fp8": 242e12},
    "v100": {"fp16": 125e12, "fp32": 15.7e12},
    "t4": {"fp16": 65e12, "fp32": 8.1e12},
}
# torch.cuda.get_device_name() spellings -> table keys; first match wins (H100 PCIe before SXM)
_DEVICE_PATTERNS = (
    (r"h200", "h200"),
    (r"h100.*pcie", "h100-pcie"),
    (r"h100", "h100-sxm"),  # "NVIDIA H100 80GB HBM3" is the SXM part
    (r"a100", "a100"),
    (r"\bl4\b", "l4"),
    (r"v100", "v100"),
    (r"\bt4\b", "t4"),
)
_DTYPES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "torch.bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "torch.float16": "fp16",
    "tf32": "tf32",
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "torch.float32": "fp32",
    "fp8": "fp8",
}


def device_peak_flops(name: str, dtype="bf16") -> float | None:
    """Peak FLOP/s of a device (by ``torch.cuda.get_device_name()``) in a dtype, or None when
    the device or the dtype is not in the table (MFU is then not reported)."""
    key = next((k for pattern, k in _DEVICE_PATTERNS if re.search(pattern, name.lower())), None)
    precision = _DTYPES.get(str(dtype).lower())
    if key is None or precision is None:
        return None
    return PEAK_FLOPS[key].get(precision)
