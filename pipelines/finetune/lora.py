"""Fine-tuning: LoRA (or QLoRA on CUDA) adapters on a causal LM, trained by the pretraining
stage's DeepSpeed loop, then merged into a plain HF model dir.

Read top to bottom: configs -> target modules and the analytic parameter count -> examples
(prompt/response pairs -> token ids with the loss on response tokens only) -> the model
(base + adapters) -> training (``pipelines.training.loop.run_training``) -> merge and
export -> CLI.

* Targets: ``attention`` = q_proj + v_proj (the LoRA paper's choice); ``all-linear`` = every
  ``nn.Linear`` the model has except the output projection, found by scanning the model, so
  any architecture works; or an explicit list of module names. A name the model lacks is an
  error that lists the names it has.
* Trainable parameters are exactly sum over targeted Linear(in, out) of r * (in + out) — the
  A (r x in) and B (out x r) matrices; ``lora_parameter_count`` computes it without PEFT and
  the tests hold PEFT to it.
* QLoRA (``base_bits: 4``) loads the base in 4-bit NF4 through bitsandbytes and needs CUDA;
  without CUDA it stops with a message instead of silently training a 16/32-bit base.
* The rank process runs ``python -m pipelines.finetune.lora`` in its own process group,
  started by ``pipelines.training.launch`` exactly like pretraining: same checkpoints,
  auto-resume and timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.finetune.pairs import read_pairs
from pipelines.shared.promotion import one_metric
from pipelines.training.config import IGNORE_INDEX as IGNORE
from pipelines.training.config import TrainerConfig
from pipelines.training.hf import load_hf_tokenizer

TARGET_PRESETS = {"attention": ("q_proj", "v_proj")}  # "all-linear" is found by scanning
OUTPUT_LAYERS = ("lm_head",)  # never adapted by "all-linear" (PEFT's convention too)
log_ = logging.getLogger(__name__)


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1)  # adapter rank: 8-16 is the usual sweet spot for narrow tasks
    alpha: int = Field(16, ge=1)  # scaling alpha/r; 2r keeps the update size across ranks
    dropout: float = Field(0.05, ge=0, lt=1)  # on the adapter input; small data overfits
    targets: Literal["attention", "all-linear"] | list[str] = "attention"
    train_embeddings: bool = False  # also train the token embeddings (and a tied output
    # layer, kept tied): a small base whose vocabulary never saw the task's text needs it;
    # adds vocab x hidden trainable parameters, saved with the adapter


class FinetuneConfig(TrainerConfig):
    lora: LoraSettings = Field(default_factory=LoraSettings)
    base_bits: Literal[4, 16, 32] = 32  # 4: QLoRA (CUDA only); 16: bf16 base; 32: fp32 base
    max_len: int = Field(512, ge=8)  # tokens per example (prompt + response); longer ones are
    # cut from the prompt's start, so the response is kept
    lr: float = Field(2e-3, gt=0)  # adapters tolerate a higher lr than full fine-tuning
    max_steps: int = Field(100, ge=1)
    micro_batch: int = Field(8, ge=1)


# A task model is champion while no model beats its held-out eval loss on the same pairs;
# trained on other pairs, the losses do not compare and the newer model takes over
CHAMPION_RULE = one_metric("eval_loss", "lower", same=("pairs",))


def champion_metrics(tags: dict) -> dict:
    """The gate's view of a registered task model, from its registry tags (all strings)."""
    loss = tags.get("eval_loss")
    return {
        "pairs": tags.get("pairs"),
        "eval_loss": None if loss in (None, "None") else float(loss),
    }


# --- target modules -------------------------------------------------------------------------


def task_model_training(max_len: int) -> FinetuneConfig:
    """A stage's default task-model training: r16 all-linear LoRA, 200 steps at 2e-3 (what
    the sweep's best cells use), ``max_len`` tokens per example (the stage's prompts)."""
    return FinetuneConfig(
        lora=LoraSettings(r=16, alpha=32, targets="all-linear"),
        max_len=max_len,
        max_steps=200,
        lr=2e-3,
        warmup_steps=10,
        checkpoint_every=100,
        eval_every=100,
    )


def linear_modules(model) -> dict[str, tuple[int, int]]:
    """Every ``nn.Linear`` by full name -> (in_features, out_features)."""
    import torch

    return {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def resolve_targets(model, targets: str | list[str]) -> list[str]:
    """Leaf module names to adapt; an error lists the model's linear modules when one of the
    requested names matches nothing."""
    linear = linear_modules(model)
    leaves = sorted({name.rsplit(".", 1)[-1] for name in linear})
    if targets == "all-linear":
        chosen = [leaf for leaf in leaves if leaf not in OUTPUT_LAYERS]
    else:
        chosen = (
            list(TARGET_PRESETS.get(targets, targets))
            if isinstance(targets, str)
            else list(targets)
        )
    missing = [t for t in chosen if t not in leaves]
    if missing or not chosen:
        raise ValueError(
            f"the model has no linear module named {', '.join(missing) or '(none)'}"
            f"; its linear modules are: {', '.join(leaves)}"
        )
    return chosen


def lora_parameter_count(model, targets: list[str], r: int) -> int:
    """sum of r * (in + out) over the linear modules whose leaf name is targeted."""
    return sum(
        r * (fan_in + fan_out)
        for name, (fan_in, fan_out) in linear_modules(model).items()
        if name.rsplit(".", 1)[-1] in targets and name.rsplit(".", 1)[-1] not in OUTPUT_LAYERS
    )


# --- examples -------------------------------------------------------------------------------


def encode_example(tokenizer, prompt: str, response: str, max_len: int) -> tuple[list, list]:
    """Token ids of prompt + response + EOS, and labels that score only the response + EOS.

    Too long: the prompt loses tokens from its start (the instruction's head), never the
    response; a response longer than max_len keeps its first max_len - 1 tokens.
    """
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    response_ids = tokenizer.encode(response, add_special_tokens=False)
    response_ids = response_ids[: max_len - 1] + [tokenizer.eos_token_id]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) - (max_len - len(response_ids))) :]
    ids = prompt_ids + response_ids
    return ids, [IGNORE] * len(prompt_ids) + response_ids


class Examples:
    """Prompt/response pairs as padded (input_ids, labels) arrays, batched by index."""

    def __init__(self, pairs: list[tuple[str, str]], tokenizer, max_len: int):
        if not pairs:
            raise ValueError("no examples to fine-tune on")
        pad = (
            tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id
        )
        encoded = [encode_example(tokenizer, p, r, max_len) for p, r in pairs]
        width = max(len(ids) for ids, _ in encoded)
        self.input_ids = np.full((len(encoded), width), pad, dtype=np.int64)
        self.labels = np.full((len(encoded), width), IGNORE, dtype=np.int64)
        for row, (ids, labels) in enumerate(encoded):
            self.input_ids[row, : len(ids)] = ids
            self.labels[row, : len(labels)] = labels
        self.lengths = np.array([len(ids) for ids, _ in encoded])

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """The rows, cut to the longest of them: the columns after it are padding that no
        label reads and, under causal attention, no earlier token sees."""
        indices = np.asarray(indices)
        width = int(self.lengths[indices].max())
        return self.input_ids[indices, :width], self.labels[indices, :width]


# --- the model ------------------------------------------------------------------------------


def load_base(base_dir: Path | str, base_bits: int):
    """The base causal LM from a local HF dir, in the precision the config asks for."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"local_files_only": True}
    if base_bits == 4:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "base_bits=4 (QLoRA) needs CUDA: bitsandbytes' 4-bit kernels "
                "run on NVIDIA GPUs. Use base_bits 16 or 32 on this machine, or "
                "run the flow on a GPU worker"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    else:
        kwargs["dtype"] = torch.bfloat16 if base_bits == 16 else torch.float32
    return AutoModelForCausalLM.from_pretrained(str(base_dir), **kwargs)


def apply_lora(model, settings: LoraSettings, base_bits: int = 32):
    """Wrap the base with LoRA adapters on the resolved targets; only adapters train."""
    # peft imports bitsandbytes, whose CPU backend warns about a 4-bit kernel package on every
    # import; 4-bit bases run on CUDA only here, so the warning is noise
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    from peft import LoraConfig, get_peft_model

    targets = resolve_targets(model, settings.targets)
    if base_bits == 4:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    extra = {}
    if settings.train_embeddings:
        embeddings = model.get_input_embeddings()
        name = next(n for n, m in model.named_modules() if m is embeddings)
        extra = {"modules_to_save": [name.rsplit(".", 1)[-1]], "ensure_weight_tying": True}
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        **extra,
    )
    return get_peft_model(model, config)


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(trainable), int(sum(p.numel() for p in model.parameters()))


def merge_and_export(
    peft_model, tokenizer_dir: Path | str, out_dir: Path | str, trained_len: int | None = None
) -> Path:
    """Fold the adapters into the base weights (W + B A * alpha/r) and save a plain HF dir.
    ``trained_len``: the sequence length it was tuned at; when longer than the base's
    positions, the merged config says so (rotary positions have no weights), so servers
    accept the prompts the model was trained on."""
    from pipelines.training.export import export_model

    merged = peft_model.merge_and_unload()
    positions = getattr(merged.config, "max_position_embeddings", None)
    if (
        trained_len
        and positions
        and trained_len > positions
        and getattr(merged.config, "rope_parameters", None)
    ):
        merged.config.max_position_embeddings = trained_len
    return export_model(merged, tokenizer_dir, out_dir)


def save_adapter(peft_model, out_dir: Path | str, base: str) -> Path:
    """The adapter alone (adapter_model.safetensors + adapter_config.json) with a pointer to
    its base (a models:/ URI or a path) in ``base.json``."""
    from infra.files import write_json_atomic

    out_dir = Path(out_dir)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    write_json_atomic(out_dir / "base.json", {"base": base})
    return out_dir


# --- training (one rank; pipelines.training.launch starts it) --------------------------


def train(
    config: FinetuneConfig,
    base_dir: Path | str,
    train_file: Path | str,
    out_dir: Path | str,
    eval_file: Path | str | None = None,
    log=None,
    base_ref: str | None = None,
) -> dict:
    """Fine-tune adapters on the pairs in ``train_file`` (jsonl) in this process as one rank,
    resuming from ``out_dir``'s last complete checkpoint; exports ``<out>/adapter`` (with a
    pointer to ``base_ref``) and the merged ``<out>/model``. Returns the run's summary."""
    from pipelines.training.loop import rank_context, run_training
    from pipelines.training.objectives import NextTokenPrediction

    out_dir = Path(out_dir)
    with rank_context(config) as (rank, _world):
        tokenizer = load_hf_tokenizer(base_dir)
        train_data = Examples(read_pairs(train_file), tokenizer, config.max_len)
        eval_data = (
            Examples(read_pairs(eval_file), tokenizer, config.max_len) if eval_file else None
        )
        model = apply_lora(load_base(base_dir, config.base_bits), config.lora, config.base_bits)
        trainable, total = trainable_parameters(model)

        def export(engine, _ema) -> dict:
            if rank != 0:
                return {}
            adapter = save_adapter(engine.module, out_dir / "adapter", base_ref or str(base_dir))
            merged = merge_and_export(
                engine.module, base_dir, out_dir / "model", trained_len=config.max_len
            )
            return {"adapter_dir": str(adapter), "model_dir": str(merged)}

        return run_training(
            config,
            model,
            NextTokenPrediction(),
            train_data,
            out_dir,
            eval_data=eval_data,
            export=export,
            log=log,
            facts={
                "trainable_parameters": trainable,
                "total_parameters": total,
                "train_examples": len(train_data),
                "eval_examples": len(eval_data) if eval_data else 0,
            },
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.finetune.lora",
        description="Fine-tune (or resume) one DeepSpeed rank.",
    )
    parser.add_argument("--config", required=True, help="JSON file of FinetuneConfig fields")
    parser.add_argument("--base", required=True, help="base model: a local HF dir")
    parser.add_argument("--train", required=True, help="jsonl of {prompt, response}")
    parser.add_argument("--eval", default=None, help="jsonl of held-out {prompt, response}")
    parser.add_argument("--out", required=True, help="run dir (checkpoints, metrics, models)")
    parser.add_argument("--base-ref", default=None, help="what the adapter names as its base")
    parser.add_argument("--workspace", default=None, help="GENAI_HOME for this rank")
    args = parser.parse_args(argv)
    from pipelines.training.rank import rank_main

    def run(config):
        return train(
            config,
            args.base,
            args.train,
            args.out,
            eval_file=args.eval,
            log=lambda r: log_.info(json.dumps(r)),
            base_ref=args.base_ref,
        )

    return rank_main(FinetuneConfig, args.config, args.workspace, run)


if __name__ == "__main__":
    sys.exit(main())
