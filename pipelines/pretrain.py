"""Pretraining: one DeepSpeed rank trains a preset model on token shards, crash-safe.

Read top to bottom: ``PretrainConfig`` (every default with its why) -> ``train`` (the loop) ->
checkpoints (save, find, verify, load) -> EMA -> validation -> export -> CLI.

* ``train`` runs IN THE CURRENT PROCESS as one rank; rank and world come from the usual
  environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), defaulting to a single
  rank on 127.0.0.1 with a free port. Prefect (or any launcher) stays outside the ranks: run
  ``python -m pipelines.pretrain --config … --shards … --out …`` in its own process group.
* The data order is ``pipelines.data_order.ResumableSampler``: one global position is the
  whole data state, so a resumed run sees exactly the samples the crashed one had left.
* A checkpoint tag ``stepNNNNNNNN`` is trusted only once its ``COMPLETE`` marker exists (it
  lists every file with its SHA-256); our own ``latest`` pointer moves (write temp +
  ``os.replace``) only after the marker. A kill anywhere leaves the previous complete tag in
  charge. Our own files are JSON and safetensors; nothing we wrote is ever unpickled.
* Fault points: ``ckpt.during_save`` (DeepSpeed's files written, no marker yet) and
  ``train.after_checkpoint`` (``latest`` just moved). ``GENAI_FAULT_SKIP=n`` lets the armed
  point pass n times first (e.g. kill during the second checkpoint).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from infra.files import fsync_dir, write_json_atomic, write_text_atomic

from infra.faults import fault_point, reset_fault_counts
from pipelines.models import PRESETS

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[1] / "infra" / "deepspeed"
CHECKPOINTS = "checkpoints"  # under out_dir
LATEST = "latest"  # our pointer file in the checkpoint dir: the newest COMPLETE tag's name
COMPLETE = "COMPLETE"  # in a tag dir, written last: {files: {relpath: {bytes, sha256}}}
TRAINER_STATE = "trainer_state.json"  # step, sampler position, config (rank 0)
EMA_FILE = "ema.safetensors"  # EMA weights (rank 0), keyed by parameter name
METRICS = "metrics.jsonl"  # one JSON line per step / evaluation (rank 0), appended
SUMMARY = "summary.json"  # rank 0's result, written atomically as the very last act
TAG_RE = re.compile(r"^step(\d{8})$")
IGNORE_INDEX = -100  # a label the loss skips (HF convention): prompts, padding

log_ = logging.getLogger(__name__)


class EmaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False  # off by default: the raw weights are the model unless asked
    start_fraction: float = Field(0.035, gt=0, le=1)  # average over the LAST 3.5 % of steps
    # (the seed's number): the early, fast-moving weights never enter the average
    decay: float = Field(0.9999, gt=0, lt=1)  # per-step decay (the seed's number); its horizon
    # is 1/(1-decay) = 10k steps, so tiny runs (tens of steps) need e.g. 0.9 to move at all


class TrainerConfig(BaseModel):
    """What every DeepSpeed training run shares (pretraining and fine-tuning)."""
    model_config = ConfigDict(extra="forbid")

    micro_batch: int = Field(8, ge=1)  # sequences per rank per forward/backward
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimizer step
    max_steps: int = Field(100, ge=1)  # optimizer steps (data wraps into further epochs)
    lr: float = Field(3e-3, gt=0)  # peak AdamW lr; small models tolerate large lrs (nanoGPT)
    warmup_steps: int = Field(10, ge=0)  # linear warmup from 0; then cosine decay
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine floor as a fraction of lr (Chinchilla)
    weight_decay: float = Field(0.1, ge=0)  # AdamW decoupled decay (GPT-3/Llama)
    grad_clip: float = Field(1.0, gt=0)  # global grad-norm clip (GPT-3/Llama)
    seed: int = Field(0, ge=0)  # init, data order and RNGs
    zero_stage: int = Field(1, ge=0, le=3)  # ZeRO stage; overrides the JSON's
    deepspeed_config: str | None = None  # infra/deepspeed/<name>.json or a path; None:
    # zero<stage>_cpu on CPU, zero1_bf16_gpu on CUDA
    checkpoint_every: int = Field(50, ge=1)  # steps between checkpoints (+ one at the end)
    keep_checkpoints: int = Field(2, ge=1)  # complete tags kept; older ones are deleted
    eval_every: int = Field(50, ge=0)  # steps between validation passes; 0: only at the end
    eval_batches: int = Field(4, ge=1)  # micro-batches of validation per pass (per world)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    deterministic: bool = True  # torch deterministic algorithms: bitwise-reproducible on CPU
    peak_flops: float | None = Field(None, gt=0)  # the device's peak FLOP/s for MFU; None:
    # looked up by GPU name and precision (pipelines.models.PEAK_FLOPS); CPUs report no MFU

    @property
    def ema_start_step(self) -> int:
        """EMA averages steps ema_start_step+1 .. max_steps (at least the last one)."""
        span = max(1, math.ceil(self.ema.start_fraction * self.max_steps))
        return self.max_steps - span


class PretrainConfig(TrainerConfig):
    preset: str = "tiny"  # pipelines.models preset; "demo" for the 2-core demo
    seq_len: int = Field(128, ge=2)  # tokens per sequence; must equal the shards' seq_len

    @model_validator(mode="after")
    def _check(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is not one of {sorted(PRESETS)}")
        return self


# --- the loop -------------------------------------------------------------------------------

def train(config: PretrainConfig, shards_dir: Path | str, out_dir: Path | str,
          log: Callable[[dict], None] | None = None,
          tokenizer_dir: Path | str | None = None) -> dict:
    """Train (or resume) in this process as one DeepSpeed rank; returns a JSON summary.

    ``tokenizer_dir`` (default: ``<shards_dir>/tokenizer`` when present) is checked against
    the shards' tokenizer hash and the model config, and is needed to export HF model dirs
    (``<out>/model``, plus ``<out>/model-ema`` with EMA) at the end.
    """
    from pipelines.tokens import TokenShards

    with rank_context(config) as (rank, _world):
        train_shards = TokenShards(shards_dir, "train")
        index = train_shards.index
        if train_shards.seq_len != config.seq_len:
            raise ValueError(f"config seq_len {config.seq_len} does not match the shards' "
                             f"seq_len {train_shards.seq_len} ({Path(shards_dir) / 'index.json'})")
        tokenizer_dir = _tokenizer_dir(shards_dir, tokenizer_dir, index)
        model = _build_model(config, index, tokenizer_dir)
        out_dir = Path(out_dir)

        def export(engine, ema) -> dict:
            state = _full_state_dict(engine)  # every rank: ZeRO-3 gathers the weights
            if rank != 0:
                return {}
            exported = {"model_dir": str(export_model(engine, tokenizer_dir, out_dir / "model",
                                                      state_dict=state))}
            if ema is not None:
                exported["ema_model_dir"] = str(export_model(
                    engine, tokenizer_dir, out_dir / "model-ema", use_ema=True,
                    ema_weights=ema, state_dict=state))
            return exported

        return run_training(config, model, LanguageModeling(train_shards), out_dir,
                            eval_data=_validation(shards_dir), log=log,
                            export=export if tokenizer_dir is not None else None)


class LanguageModeling:
    """A token shard split as training data: every token is its own next-token label."""

    def __init__(self, shards):
        self.shards = shards
        self.seq_len = shards.seq_len

    def __len__(self) -> int:
        return len(self.shards)

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        rows = self.shards.batch(indices).astype(np.int64)
        return rows, rows

    def bits_per_byte(self, mean_nats: float) -> float | None:
        """nats/token -> bits per UTF-8 byte of the split's text."""
        split = self.shards.index["splits"][self.shards.split]
        if not split.get("text_bytes"):
            return None
        return mean_nats * split["tokens"] / split["text_bytes"] / math.log(2)


def _validation(shards_dir) -> LanguageModeling | None:
    from pipelines.tokens import TokenShards

    try:
        val = TokenShards(shards_dir, "validation")
    except KeyError:
        return None
    return LanguageModeling(val) if len(val) else None


@contextlib.contextmanager
def rank_context(config: TrainerConfig):
    """This process as one rank: accelerator, rank env, seeds, fault counters; yields (rank,
    world). The process-wide deterministic switch goes back as it was afterwards (tests,
    notebooks)."""
    _select_accelerator()
    import torch

    reset_fault_counts()  # GENAI_FAULT_SKIP counts from this run's start
    rank, world, _local_rank = _dist_env()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    _seed_everything(config.seed, config.deterministic)
    try:
        yield rank, world
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def run_training(config: TrainerConfig, model, train_data, out_dir: Path, *, eval_data=None,
                 export: Callable | None = None, log: Callable[[dict], None] | None = None,
                 facts: dict | None = None) -> dict:
    """The loop every stage trains with, inside ``rank_context``.

    ``train_data`` / ``eval_data``: ``len()``, ``seq_len`` and ``batch(indices) -> (input_ids,
    labels)`` (labels -100 are not scored). ``export(engine, ema) -> dict`` runs on every
    rank after the last step and adds to the summary; ``facts`` go into it as they are.
    """
    import torch

    from pipelines.data_order import ResumableSampler

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINTS
    engine = _initialize(config, model, world)
    global_batch = config.micro_batch * config.grad_accum * world
    sampler = ResumableSampler(len(train_data), config.seed, global_batch, world, rank,
                               end_sample=config.max_steps * global_batch)

    step, ema, resumed = 0, None, find_resume_checkpoint(ckpt_dir)
    if resumed:
        step, ema = _load_checkpoint(engine, ckpt_dir, resumed, sampler, rank)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _discard_incomplete_tags(ckpt_dir)
    _barrier()

    def emit(record: dict) -> None:
        if rank == 0:
            with open(out_dir / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
            if log:
                log(record)

    emit({"event": "start", "step": step, "resumed_from": resumed, "world_size": world,
          "global_batch": global_batch, "max_steps": config.max_steps})
    params = _named_parameters(engine)
    tokens_per_step = global_batch * train_data.seq_len
    flops_per_token, peak = _mfu_terms(config, engine, world, train_data.seq_len)
    last = {"loss": None, "val_loss": None, "val_bpb": None}
    engine.train()
    for indices in sampler.steps():
        step += 1
        start = time.perf_counter()
        inputs, labels = (torch.from_numpy(a).to(engine.device)
                          for a in train_data.batch(indices))
        lr = float(engine.get_lr()[0])
        losses, grad_norm = [], None
        for micro, micro_labels in zip(inputs.split(config.micro_batch),
                                       labels.split(config.micro_batch)):
            loss = engine(input_ids=micro, labels=micro_labels).loss
            engine.backward(loss)
            if engine.is_gradient_accumulation_boundary():
                grad_norm = _grad_norm_before_step(engine)
            engine.step()
            losses.append(loss.detach().float())
        loss = _mean_across_ranks(torch.stack(losses).mean(), world)
        grad_norm = engine.get_global_grad_norm() if grad_norm is None else grad_norm
        seconds = time.perf_counter() - start
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}: training diverged "
                                     "(lower lr, raise warmup_steps or grad_clip)")
        last["loss"] = loss
        tokens_per_s = inputs.numel() * world / seconds  # fine-tuning batches are cut to width
        emit({"event": "step", "step": step, "loss": loss, "lr": lr,
              "grad_norm": None if grad_norm is None else float(grad_norm),
              "tokens_per_s": tokens_per_s, "seconds": seconds,
              "mfu": tokens_per_s * flops_per_token / peak if peak else None})

        if config.ema.enabled and step > config.ema_start_step:
            ema = _update_ema(ema, params, engine, config.ema.decay)
        if eval_data is not None and (
                (config.eval_every and step % config.eval_every == 0) or step == config.max_steps):
            val = evaluate(engine, eval_data, config, rank, world)
            last.update(val_loss=val["val_loss"], val_bpb=val["val_bpb"])
            emit({"event": "eval", "step": step, **val})
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            save_checkpoint(engine, ckpt_dir, step, sampler, ema, config, rank)

    if eval_data is not None and last["val_loss"] is None:  # resumed at the end: no step ran
        val = evaluate(engine, eval_data, config, rank, world)
        last.update(val_loss=val["val_loss"], val_bpb=val["val_bpb"])
    summary = {"steps": step, "resumed_from": resumed, "world_size": world,
               "tokens": step * tokens_per_step, "checkpoint_dir": str(ckpt_dir),
               "latest": _read_latest(ckpt_dir), **last, **_peak_gpu_memory(),
               **(facts or {})}
    if export is not None:
        summary.update(export(engine, ema))
        _barrier()
    emit({"event": "end", **summary})
    if rank == 0:
        write_json_atomic(out_dir / SUMMARY, summary)
    return summary


def _peak_gpu_memory() -> dict:
    """This rank's peak GPU memory held by tensors (what LoRA vs QLoRA is compared on)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}


def _grad_norm_before_step(engine):
    """The global gradient norm before clipping, where DeepSpeed does not keep it.

    ZeRO stages >= 1 and bf16 record it in ``engine.get_global_grad_norm()``; plain fp32
    stage 0 clips with the norm and drops it. Gradients are already averaged across ranks here
    (the boundary backward all-reduces them), so every rank computes the same norm.
    """
    import torch

    if engine.zero_optimization() or engine.bfloat16_enabled():
        return None
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else None


def _mfu_terms(config: TrainerConfig, engine, world: int,
               seq_len: int) -> tuple[float, float | None]:
    """(model FLOPs per token, peak FLOP/s of all ranks together, or None when unknown)."""
    import torch

    from pipelines.models import device_peak_flops, flops_per_token

    per_token = flops_per_token(engine.module.config, seq_len)
    peak = config.peak_flops
    if peak is None and torch.cuda.is_available():
        dtype = "bf16" if engine.bfloat16_enabled() else "fp32"
        peak = device_peak_flops(torch.cuda.get_device_name(), dtype)
    return per_token, (peak * world if peak else None)


def _select_accelerator() -> None:
    """DeepSpeed picks its accelerator at import: CPU (gloo) unless CUDA is there."""
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_env() -> tuple[int, int, int]:
    """Rank, world size, local rank; a lone process becomes rank 0 of 1 on a free port."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def _seed_everything(seed: int, deterministic: bool) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # CUDA needs it
        torch.use_deterministic_algorithms(True)


def _tokenizer_dir(shards_dir, tokenizer_dir, index: dict) -> Path | None:
    from pipelines.tokens import tokenizer_hash

    if tokenizer_dir is None:
        candidate = Path(shards_dir) / "tokenizer"
        if not (candidate / "tokenizer.json").is_file():
            return None
        tokenizer_dir = candidate
    tokenizer_dir = Path(tokenizer_dir)
    digest = tokenizer_hash(tokenizer_dir)
    if digest != index["tokenizer_hash"]:
        raise ValueError(f"tokenizer {tokenizer_dir} (hash {digest[:12]}) is not the one the "
                         f"shards in {shards_dir} were built with (hash "
                         f"{index['tokenizer_hash'][:12]})")
    return tokenizer_dir


def _build_model(config: PretrainConfig, index: dict, tokenizer_dir: Path | None):
    from pipelines.models import build_model, model_config
    from pipelines.tokens import check_vocab, load_tokenizer, special_token_ids

    if tokenizer_dir is not None:
        tokenizer = load_tokenizer(tokenizer_dir)
        ids, vocab = special_token_ids(tokenizer), len(tokenizer)
    else:  # GPT-2 style: EOS doubles as BOS (pipelines.tokens)
        eos = index.get("eos_token_id")
        ids, vocab = {"eos_token_id": eos, "bos_token_id": eos}, int(index["vocab_size"])
    if vocab != int(index["vocab_size"]):
        raise ValueError(f"the tokenizer has {vocab} tokens, the shards were built with "
                         f"vocab_size {index['vocab_size']}")
    max_len = max(config.seq_len, PRESETS[config.preset].seq_len)
    hf_config = model_config(config.preset, vocab_size=vocab, max_seq_len=max_len, **ids)
    if tokenizer_dir is not None:
        check_vocab(tokenizer, hf_config)
    return build_model(hf_config, seed=config.seed)


def deepspeed_config(config: PretrainConfig, world_size: int = 1) -> dict:
    """The JSON config named by ``config`` with every "auto" filled from it."""
    import torch

    name = config.deepspeed_config or (
        "zero1_bf16_gpu" if torch.cuda.is_available() else f"zero{config.zero_stage}_cpu")
    path = Path(name) if name.endswith(".json") else DEEPSPEED_CONFIGS / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in DEEPSPEED_CONFIGS.glob("*.json"))
        raise FileNotFoundError(f"no DeepSpeed config {path}; known: {known}")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"DeepSpeed config {path} is not valid JSON: {err}") from None
    fill = {"train_micro_batch_size_per_gpu": config.micro_batch,
            "gradient_accumulation_steps": config.grad_accum, "gradient_clipping": config.grad_clip,
            "lr": config.lr, "weight_decay": config.weight_decay}

    def resolve(node):
        if isinstance(node, dict):
            return {k: (fill[k] if v == "auto" and k in fill else resolve(v))
                    for k, v in node.items()}
        return node

    ds = resolve(ds)
    ds["train_batch_size"] = config.micro_batch * config.grad_accum * world_size
    ds.setdefault("zero_optimization", {})["stage"] = config.zero_stage
    left = [k for k, v in _walk(ds) if v == "auto"]
    if left:
        raise ValueError(f"DeepSpeed config {path} has 'auto' values nothing fills: {left}")
    return ds


def _walk(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), node


def _initialize(config: PretrainConfig, model, world: int):
    import deepspeed
    import torch
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)  # its INFO lines drown the training log
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo":
        # DeepSpeed would JIT-compile a shared-memory allreduce for CPU ranks: a C++ compiler
        # at run time and ~30 s on 2 cores per fresh TORCH_EXTENSIONS_DIR. gloo's allreduce
        # is exact and fast enough at CPU scale, so the build is skipped
        compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
        if isinstance(compatible, dict):
            compatible["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                               verbose=False)
    schedule = functools.partial(lr_schedule, warmup_steps=config.warmup_steps,
                                 max_steps=config.max_steps, min_lr_ratio=config.min_lr_ratio)
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(config, world),
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, schedule))
    if world == 1 and not engine.zero_optimization():
        # a lone rank has nothing to reduce, yet DeepSpeed's fallback all-reduce would flatten,
        # "reduce" and copy back every gradient each step; ZeRO stages need that copy
        engine.enable_backward_allreduce = False
    return engine


def lr_schedule(done: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """The lr multiplier for the step after ``done`` optimizer steps (nanoGPT's schedule).

    Linear warmup that never trains at lr 0 ((done+1)/(warmup+1)), then cosine from 1 down
    to ``min_lr_ratio`` at ``max_steps``.
    """
    if done < warmup_steps:
        return (done + 1) / (warmup_steps + 1)
    progress = min(1.0, (done - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _mean_across_ranks(value, world: int) -> float:
    import torch.distributed as dist

    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# --- validation -----------------------------------------------------------------------------

def evaluate(engine, data, config: TrainerConfig, rank: int = 0, world: int = 1) -> dict:
    """Loss (nats per scored token) on the first eval_batches micro-batches of ``data``, and
    bits per byte when the data knows its text's bytes (pretraining's validation split:
    bpb = mean nats/token x split tokens / split bytes / ln 2)."""
    import torch

    n = min(len(data), config.eval_batches * config.micro_batch)
    mine = list(range(rank, n, world))
    nats = torch.zeros(2, dtype=torch.float64)  # [sum of nats, scored tokens]
    engine.eval()
    with torch.no_grad():
        for start in range(0, len(mine), config.micro_batch):
            inputs, labels = (torch.from_numpy(a).to(engine.device)
                              for a in data.batch(mine[start:start + config.micro_batch]))
            loss = engine(input_ids=inputs, labels=labels).loss.double().cpu()
            scored = int((labels[:, 1:] != IGNORE_INDEX).sum())
            nats += torch.tensor([float(loss) * scored, scored], dtype=torch.float64)
    engine.train()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(nats)
    mean = float(nats[0] / nats[1])
    to_bpb = getattr(data, "bits_per_byte", None)
    return {"val_loss": mean, "val_bpb": to_bpb(mean) if to_bpb else None, "val_sequences": n}


# --- EMA ------------------------------------------------------------------------------------

def _named_parameters(engine) -> dict:
    """Trainable parameters by name (a tied embedding appears once; frozen ones never move)."""
    return {k: p for k, p in engine.module.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def _gathered(engine, params):
    """Full parameters in this block (ZeRO-3 partitions them; other stages hold them whole)."""
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params), modifier_rank=None):
            yield
    else:
        yield


def _update_ema(ema: dict | None, params: dict, engine, decay: float) -> dict:
    import torch

    with torch.no_grad(), _gathered(engine, params.values()):
        if ema is None:  # the first averaged step starts the average at the weights
            return {k: p.detach().float().cpu().clone() for k, p in params.items()}
        for k, p in params.items():
            ema[k].mul_(decay).add_(p.detach().float().cpu(), alpha=1 - decay)
    return ema


def _full_state_dict(engine) -> dict:
    """The model's full state dict on CPU (gathered under ZeRO-3); every rank must call it."""
    module = engine.module
    with _gathered(engine, module.parameters()):
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


# --- checkpoints ----------------------------------------------------------------------------

def tag_name(step: int) -> str:
    return f"step{step:08d}"


def _tags(ckpt_dir: Path) -> list[str]:
    """Tag dir names, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir() and TAG_RE.match(p.name))


def _is_complete(tag_dir: Path) -> bool:
    return (tag_dir / COMPLETE).is_file()


def _read_latest(ckpt_dir: Path) -> str | None:
    try:
        return (Path(ckpt_dir) / LATEST).read_text().strip() or None
    except FileNotFoundError:
        return None


def find_resume_checkpoint(ckpt_dir: Path | str) -> str | None:
    """The tag to resume from: our ``latest`` pointer when it names a complete tag, else the
    newest tag with ``COMPLETE``; None for a fresh run (no tag dirs at all).

    Tag dirs without any complete one mean progress we cannot trust: that is an error, never
    a silent restart from scratch over them.
    """
    ckpt_dir = Path(ckpt_dir)
    tags = _tags(ckpt_dir)
    if not tags:
        return None
    latest = _read_latest(ckpt_dir)
    if latest and latest in tags and _is_complete(ckpt_dir / latest):
        return latest
    complete = [t for t in tags if _is_complete(ckpt_dir / t)]
    if not complete:
        raise RuntimeError(
            f"checkpoint dir {ckpt_dir} holds {len(tags)} tag dir(s) ({', '.join(tags)}) but "
            f"none has its {COMPLETE} marker: every save was interrupted. Refusing to start "
            f"from scratch over them; delete {ckpt_dir} to start over")
    return complete[-1]


def save_checkpoint(engine, ckpt_dir: Path, step: int, sampler, ema: dict | None,
                    config: PretrainConfig, rank: int = 0) -> Path:
    """DeepSpeed's files, then ours, then the COMPLETE marker, then ``latest``, then pruning."""
    import torch
    from safetensors.torch import save_file

    tag = tag_name(step)
    tag_dir = Path(ckpt_dir) / tag
    state = {"step": step, "sampler": sampler.state_dict(), "config": config.model_dump()}
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=state, save_latest=False,
                           exclude_frozen_parameters=_has_frozen(engine))
    write_json_atomic(tag_dir / f"rng-rank{rank:05d}.json", _rng_state())
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["torch_cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tag_dir / f"rng-rank{rank:05d}.safetensors"))
    if rank == 0:
        write_json_atomic(tag_dir / TRAINER_STATE, state)
        if ema is not None:
            save_file({k: v.contiguous() for k, v in ema.items()}, str(tag_dir / EMA_FILE))
    _barrier()
    fault_point("ckpt.during_save")
    if rank == 0:
        write_json_atomic(tag_dir / COMPLETE,
                          {"tag": tag, "step": step, "files": _manifest(tag_dir)})
        fsync_dir(tag_dir)
        write_text_atomic(Path(ckpt_dir) / LATEST, tag)
        fsync_dir(Path(ckpt_dir))
        fault_point("train.after_checkpoint")
        _prune(Path(ckpt_dir), config.keep_checkpoints)
    _barrier()
    return tag_dir


def _has_frozen(engine) -> bool:
    """Frozen weights (an adapter's base) are not checkpointed: they never change."""
    return any(not p.requires_grad for p in engine.module.parameters())


def _rng_state() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _restore_rng(tag_dir: Path, rank: int) -> None:
    import torch
    from safetensors.torch import load_file

    path = tag_dir / f"rng-rank{rank:05d}.json"
    if not path.is_file():  # another world size: this rank keeps its seeded RNGs
        return
    state = _read_json(path)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    tensors = _load_safetensors(tag_dir / f"rng-rank{rank:05d}.safetensors", load_file)
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])


def _manifest(tag_dir: Path) -> dict:
    """Every file of the tag with its size and SHA-256, each fsynced: the marker that lists
    them must never reach the disk before they do."""
    files = {}
    for path in sorted(p for p in tag_dir.rglob("*") if p.is_file() and p.name != COMPLETE):
        files[str(path.relative_to(tag_dir))] = {"bytes": path.stat().st_size,
                                                 "sha256": _sha256(path, fsync=True)}
    return files


def verify_checkpoint(tag_dir: Path | str) -> None:
    """Every file the COMPLETE marker lists is there with its size and SHA-256."""
    tag_dir = Path(tag_dir)
    marker = _read_json(tag_dir / COMPLETE)
    for rel, meta in marker.get("files", {}).items():
        path = tag_dir / rel
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {path} (listed in {tag_dir / COMPLETE}) "
                                    "is missing")
        if path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
            raise ValueError(f"checkpoint file {path} is corrupt: its size or SHA-256 differs "
                             f"from {tag_dir / COMPLETE}; resume from an older tag by deleting "
                             f"{tag_dir}")


def _load_checkpoint(engine, ckpt_dir: Path, tag: str, sampler, rank: int):
    """Restore model/optimizer/scheduler (DeepSpeed), then sampler, step, RNGs and EMA."""
    from safetensors.torch import load_file

    tag_dir = ckpt_dir / tag
    verify_checkpoint(tag_dir)
    try:
        load_path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag,
                                              load_module_strict=not _has_frozen(engine))
    except Exception as err:
        raise RuntimeError(f"cannot load DeepSpeed checkpoint {tag_dir}: {err}") from err
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint to load in {tag_dir}")
    state = _read_json(tag_dir / TRAINER_STATE)
    if int(state["sampler"]["position"]) > sampler.end_sample:
        raise ValueError(f"checkpoint {tag_dir} is at step {state['step']}, past this config's "
                         "max_steps; raise max_steps to continue it")
    sampler.load_state_dict(state["sampler"])
    _restore_rng(tag_dir, rank)
    ema = _load_safetensors(tag_dir / EMA_FILE, load_file) if (tag_dir / EMA_FILE).is_file() \
        else None
    return int(state["step"]), ema


def _prune(ckpt_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete tags; drop older ones and older incomplete leftovers."""
    tags = _tags(ckpt_dir)
    complete = [t for t in tags if _is_complete(ckpt_dir / t)]
    kept = set(complete[-keep:])
    oldest_kept = min(kept) if kept else None
    for t in tags:
        if t in kept:
            continue
        if t in complete or (oldest_kept and t < oldest_kept):
            _remove(ckpt_dir / t)


def _discard_incomplete_tags(ckpt_dir: Path) -> None:
    """A resumed run rewrites any tag a crash left without its marker."""
    for t in _tags(ckpt_dir):
        if not _is_complete(ckpt_dir / t):
            _remove(ckpt_dir / t)


def _remove(directory: Path) -> None:
    trash = directory.with_name(f".{directory.name}.discarded-{uuid.uuid4().hex[:8]}")
    os.rename(directory, trash)  # atomic: the tag vanishes whole
    shutil.rmtree(trash, ignore_errors=True)


# --- export ---------------------------------------------------------------------------------

def export_model(engine_or_model, tokenizer_dir: Path | str, out_dir: Path | str,
                 use_ema: bool = False, ema_weights: dict | Path | str | None = None,
                 state_dict: dict | None = None) -> Path:
    """An HF model dir (safetensors + config + tokenizer) loadable by AutoModelForCausalLM.

    ``use_ema`` exports ``ema_weights`` (a dict by parameter name, or an ``ema.safetensors``
    path) instead of the raw weights; ``state_dict`` overrides the raw weights (ZeRO-3 callers
    pass the gathered one). Written to a temp dir and renamed into place.
    """
    from pipelines.tokens import load_tokenizer

    model = getattr(engine_or_model, "module", engine_or_model)
    if use_ema:
        if ema_weights is None:
            raise ValueError("use_ema=True needs ema_weights (EMA was not enabled or not reached)")
        if not isinstance(ema_weights, dict):
            from safetensors.torch import load_file

            ema_weights = _load_safetensors(Path(ema_weights), load_file)
        raw = state_dict or {k: v.detach().cpu() for k, v in model.state_dict().items()}
        owner = {id(p): n for n, p in model.named_parameters()}  # tied: one object, one name
        state_dict = dict(raw)
        for k, v in model.state_dict(keep_vars=True).items():
            name = k if k in ema_weights else owner.get(id(v))
            if name in ema_weights:  # a tied output projection follows its averaged embedding
                state_dict[k] = ema_weights[name]
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        model.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        load_tokenizer(tokenizer_dir).save_pretrained(str(tmp))
        if out_dir.exists():
            _remove(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# --- small file helpers ---------------------------------------------------------------------

def _sha256(path: Path, fsync: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        if fsync:
            os.fsync(f.fileno())
    return h.hexdigest()


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint file {path} is corrupt (not valid JSON: {err})") from None


def _load_safetensors(path: Path, load_file) -> dict:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} is missing") from None
    except Exception as err:
        raise ValueError(f"checkpoint file {path} is corrupt (not readable safetensors: "
                         f"{err})") from None


# --- CLI --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.pretrain",
                                     description="Pretrain (or resume) one DeepSpeed rank.")
    parser.add_argument("--config", required=True, help="JSON file of PretrainConfig fields")
    parser.add_argument("--shards", required=True, help="complete token shard dir")
    parser.add_argument("--out", required=True, help="run dir (checkpoints, metrics, models)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer dir (default: "
                        "<shards>/tokenizer when present)")
    parser.add_argument("--workspace", default=None, help="GENAI_HOME for this rank (remote "
                        "nodes do not inherit the launching shell's environment)")
    args = parser.parse_args(argv)
    return rank_main(PretrainConfig, args.config, args.workspace, lambda config: train(
        config, args.shards, args.out, tokenizer_dir=args.tokenizer,
        log=lambda r: log_.info(json.dumps(r))))


def rank_main(config_model: type[TrainerConfig], config_file: str, workspace: str | None,
              run: Callable[[TrainerConfig], dict]) -> int:
    """What a rank's CLI does around ``run``: workspace environment, config, logging."""
    if workspace:
        os.environ["GENAI_HOME"] = workspace
    from infra.settings import apply_environment

    apply_environment()  # offline HF, temp and extension dirs inside the workspace
    try:
        config = config_model.model_validate_json(Path(config_file).read_text())
    except (OSError, ValueError) as err:
        print(f"error: config {config_file}: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar per export would flood the task's log
    print(json.dumps(run(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
