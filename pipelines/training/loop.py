"""The loop every stage trains with: one DeepSpeed engine, the resumable data order, crash-safe
checkpoints, scheduled EMA, validation and MFU logging, inside ``rank_context``.

``run_training`` runs IN THE CURRENT PROCESS as one rank; rank and world come from the usual
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), defaulting to a single
rank on 127.0.0.1 with a free port. The data order is
``pipelines.training.data_order.ResumableSampler``: one global position is the whole data
state, so a resumed run sees exactly the samples the crashed one had left."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from infra.faults import reset_fault_counts
from infra.files import write_json_atomic
from pipelines.training.checkpoints import (
    CHECKPOINTS,
    discard_incomplete_tags,
    find_resume_checkpoint,
    load_checkpoint,
    read_latest,
    save_checkpoint,
)
from pipelines.training.config import IGNORE_INDEX, TrainerConfig
from pipelines.training.ema import trainable_named_parameters, update_ema
from pipelines.training.engine import (
    barrier,
    dist_env,
    initialize_engine,
    mean_across_ranks,
    seed_everything,
    select_accelerator,
)

METRICS = "metrics.jsonl"  # one JSON line per step / evaluation (rank 0), appended
SUMMARY = "summary.json"  # rank 0's result, written atomically as the very last act


@contextlib.contextmanager
def rank_context(config: TrainerConfig):
    """This process as one rank: accelerator, rank env, seeds, fault counters; yields (rank,
    world). The process-wide deterministic switch goes back as it was afterwards (tests,
    notebooks)."""
    select_accelerator()
    import torch

    reset_fault_counts()  # GENAI_FAULT_SKIP counts from this run's start
    rank, world, _local_rank = dist_env()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    seed_everything(config.seed, config.deterministic)
    try:
        yield rank, world
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def run_training(
    config: TrainerConfig,
    model,
    train_data,
    out_dir: Path,
    *,
    eval_data=None,
    export: Callable | None = None,
    log: Callable[[dict], None] | None = None,
    facts: dict | None = None,
) -> dict:
    """The loop every stage trains with, inside ``rank_context``.

    ``train_data`` / ``eval_data``: ``len()``, ``seq_len`` and ``batch(indices) -> (input_ids,
    labels)`` (labels -100 are not scored). ``export(engine, ema) -> dict`` runs on every
    rank after the last step and adds to the summary; ``facts`` go into it as they are.
    """
    import torch

    from pipelines.training.data_order import ResumableSampler

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINTS
    engine = initialize_engine(config, model, world)
    global_batch = config.micro_batch * config.grad_accum * world
    sampler = ResumableSampler(
        len(train_data),
        config.seed,
        global_batch,
        world,
        rank,
        end_sample=config.max_steps * global_batch,
    )

    step, ema, resumed = 0, None, find_resume_checkpoint(ckpt_dir)
    if resumed:
        step, ema = load_checkpoint(engine, ckpt_dir, resumed, sampler, rank)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        discard_incomplete_tags(ckpt_dir)
    barrier()

    def emit(record: dict) -> None:
        if rank == 0:
            with open(out_dir / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
            if log:
                log(record)

    emit(
        {
            "event": "start",
            "step": step,
            "resumed_from": resumed,
            "world_size": world,
            "global_batch": global_batch,
            "max_steps": config.max_steps,
        }
    )
    params = trainable_named_parameters(engine)
    tokens_per_step = global_batch * train_data.seq_len
    flops_per_token, peak = _mfu_terms(config, engine, world, train_data.seq_len)
    last = {"loss": None, "val_loss": None, "val_bpb": None}
    engine.train()
    for indices in sampler.steps():
        step += 1
        start = time.perf_counter()
        inputs, labels = (torch.from_numpy(a).to(engine.device) for a in train_data.batch(indices))
        lr = float(engine.get_lr()[0])
        losses, grad_norm = [], None
        for micro, micro_labels in zip(
            inputs.split(config.micro_batch), labels.split(config.micro_batch), strict=False
        ):
            loss = engine(input_ids=micro, labels=micro_labels).loss
            engine.backward(loss)
            if engine.is_gradient_accumulation_boundary():
                grad_norm = _grad_norm_before_step(engine)
            engine.step()
            losses.append(loss.detach().float())
        loss = mean_across_ranks(torch.stack(losses).mean(), world)
        grad_norm = engine.get_global_grad_norm() if grad_norm is None else grad_norm
        seconds = time.perf_counter() - start
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} at step {step}: training diverged "
                "(lower lr, raise warmup_steps or grad_clip)"
            )
        last["loss"] = loss
        tokens_per_s = inputs.numel() * world / seconds  # fine-tuning batches are cut to width
        emit(
            {
                "event": "step",
                "step": step,
                "loss": loss,
                "lr": lr,
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "tokens_per_s": tokens_per_s,
                "seconds": seconds,
                "mfu": tokens_per_s * flops_per_token / peak if peak else None,
            }
        )

        if config.ema.enabled and step > config.ema_start_step:
            ema = update_ema(ema, params, engine, config.ema.decay)
        if eval_data is not None and (
            (config.eval_every and step % config.eval_every == 0) or step == config.max_steps
        ):
            val = evaluate(engine, eval_data, config, rank, world)
            last.update(val_loss=val["val_loss"], val_bpb=val["val_bpb"])
            emit({"event": "eval", "step": step, **val})
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            save_checkpoint(engine, ckpt_dir, step, sampler, ema, config, rank)

    if eval_data is not None and last["val_loss"] is None:  # resumed at the end: no step ran
        val = evaluate(engine, eval_data, config, rank, world)
        last.update(val_loss=val["val_loss"], val_bpb=val["val_bpb"])
    summary = {
        "steps": step,
        "resumed_from": resumed,
        "world_size": world,
        "tokens": step * tokens_per_step,
        "checkpoint_dir": str(ckpt_dir),
        "latest": read_latest(ckpt_dir),
        **last,
        **_peak_gpu_memory(),
        **(facts or {}),
    }
    if export is not None:
        summary.update(export(engine, ema))
        barrier()
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


def _mfu_terms(
    config: TrainerConfig, engine, world: int, seq_len: int
) -> tuple[float, float | None]:
    """(model FLOPs per token, peak FLOP/s of all ranks together, or None when unknown)."""
    import torch

    from pipelines.training.models import device_peak_flops, flops_per_token

    per_token = flops_per_token(engine.module.config, seq_len)
    peak = config.peak_flops
    if peak is None and torch.cuda.is_available():
        dtype = "bf16" if engine.bfloat16_enabled() else "fp32"
        peak = device_peak_flops(torch.cuda.get_device_name(), dtype)
    return per_token, (peak * world if peak else None)


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
            inputs, labels = (
                torch.from_numpy(a).to(engine.device)
                for a in data.batch(mine[start : start + config.micro_batch])
            )
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
