"""The loop every stage trains with: one DeepSpeed engine, the resumable data order, crash-safe
checkpoints, scheduled EMA, validation and MFU logging, inside ``rank_context``.

What it trains for is an objective (``pipelines.training.objectives``): next-token prediction
for pretraining and fine-tuning, denoising for diffusion. A run is one or more phases
(``pipelines.training.phases``), each with its own data and steps; a checkpoint records the
phase and its data position, so a run resumes anywhere, the phase boundaries included.

``run_training`` runs IN THE CURRENT PROCESS as one rank; rank and world come from the usual
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), defaulting to a single
rank on 127.0.0.1 with a free port. Each phase's data order is
``pipelines.training.data_order.ResumableSampler``: one global position is its whole state,
so a resumed run sees exactly the samples the crashed one had left."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

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
from pipelines.training.config import TrainerConfig
from pipelines.training.ema import trainable_named_parameters, update_ema
from pipelines.training.engine import (
    barrier,
    dist_env,
    initialize_engine,
    mean_across_ranks,
    seed_everything,
    select_accelerator,
)
from pipelines.training.objectives import EVAL_STREAM, Objective, step_generator
from pipelines.training.phases import phase_data, plan_phases, reset_optimizer_state

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
    objective: Objective,
    data,
    out_dir: Path,
    *,
    eval_data=None,
    export: Callable | None = None,
    log: Callable[[dict], None] | None = None,
    facts: dict | None = None,
) -> dict:
    """Train ``model`` for ``objective`` through every phase of ``config``, inside
    ``rank_context``; resumes from ``out_dir``'s last complete checkpoint.

    ``data`` / ``eval_data``: ``len()`` and ``batch(indices)`` (an array, a tuple or a dict of
    arrays, split into micro-batches along the first axis), or a mapping from phase name to
    such an object. ``export(engine, ema) -> dict`` runs on every rank after the last step and
    adds to the summary; ``facts`` go into it as they are.
    """
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINTS
    plan = plan_phases(config)
    engine = initialize_engine(config, model, world)
    global_batch = config.micro_batch * config.grad_accum * world

    step, ema, position, resumed = 0, None, None, find_resume_checkpoint(ckpt_dir)
    if resumed:
        step, ema, position = load_checkpoint(engine, ckpt_dir, resumed, config.max_steps, rank)
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
            **({"phases": [p.name for p in plan]} if config.phases else {}),
        }
    )
    params = trainable_named_parameters(engine)
    last = {"loss": None, "val_loss": None, "val_bpb": None}
    engine.train()
    for phase in plan:
        if step >= phase.end_step:
            continue
        train_data = phase_data(data, phase)
        val_data = phase_data(eval_data, phase, "eval data") if eval_data is not None else None
        sampler = _phase_sampler(config, phase, train_data, global_batch, rank, world)
        if position is not None and position["phase"] == phase.index:
            sampler.load_state_dict(position["sampler"])  # resumed inside this phase
        elif step != phase.first_step:
            raise ValueError(
                f"checkpoint {resumed} is at step {step}, inside phase {phase.name!r}, but "
                f"holds the data position of phase {position and position['phase']}"
            )
        elif phase.restart_optimizer and phase.index > 0:  # this phase starts now
            reset_optimizer_state(engine)
        if config.phases:
            emit({"event": "phase", "step": step, "phase": phase.name})
        flops_per_unit, peak = _mfu_terms(config, engine, objective, train_data, world)
        for indices in sampler.steps():
            step += 1
            batch = train_data.batch(indices)
            record = _train_step(engine, objective, batch, config, step, rank, world)
            last["loss"] = record["loss"]
            per_s = record[f"{objective.unit}_per_s"]
            record["mfu"] = per_s * flops_per_unit / peak if peak and flops_per_unit else None
            if config.ema.enabled:
                record["ema"] = step > config.ema_start_step
                if record["ema"]:
                    ema = update_ema(ema, params, engine, config.ema.decay)
            emit(record)
            if val_data is not None and _evaluates_at(config, phase, step):
                val = evaluate(engine, objective, val_data, config, rank, world)
                last.update(val_loss=val["val_loss"], val_bpb=val["val_bpb"])
                emit({"event": "eval", "step": step, **val})
            if step % config.checkpoint_every == 0 or step == phase.end_step:
                position = {"phase": phase.index, "sampler": sampler.state_dict()}
                save_checkpoint(engine, ckpt_dir, step, position, ema, config, rank)

    final_eval = phase_data(eval_data, plan[-1], "eval data") if eval_data is not None else None
    if final_eval is not None and last["val_loss"] is None:  # resumed at the end: no step ran
        val = evaluate(engine, objective, final_eval, config, rank, world)
        last.update(val_loss=val["val_loss"], val_bpb=val["val_bpb"])
    summary = {
        "steps": step,
        "resumed_from": resumed,
        "world_size": world,
        objective.unit: _units_trained(plan, step, data, objective, global_batch),
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


def _phase_sampler(config, phase, data, global_batch: int, rank: int, world: int):
    """The phase's own data order: phase.steps global batches over its data."""
    from pipelines.training.data_order import ResumableSampler

    return ResumableSampler(
        len(data),
        phase.seed(config.seed),
        global_batch,
        world,
        rank,
        end_sample=phase.steps * global_batch,
    )


def _train_step(
    engine, objective: Objective, batch, config: TrainerConfig, step: int, rank: int, world: int
) -> dict:
    """One optimizer step over this rank's batch (grad_accum micro-batches); its record."""
    import torch

    start = time.perf_counter()
    batch = to_device(batch, engine.device)
    rng = step_generator(config.seed, step, rank, engine.device)
    lr = float(engine.get_lr()[0])
    losses, grad_norm = [], None
    for micro in split_micro_batches(batch, config.micro_batch):
        loss = objective.loss(engine, micro, step, rng)
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
    return {
        "event": "step",
        "step": step,
        "loss": loss,
        "lr": lr,
        "grad_norm": None if grad_norm is None else float(grad_norm),
        f"{objective.unit}_per_s": objective.count(batch) * world / seconds,
        "seconds": seconds,
    }


def _evaluates_at(config: TrainerConfig, phase, step: int) -> bool:
    """Every eval_every steps, and at the end of each phase (the run's end among them)."""
    return bool(config.eval_every and step % config.eval_every == 0) or step == phase.end_step


def _units_trained(plan, step: int, data, objective: Objective, global_batch: int) -> int:
    """Tokens (or samples) the steps done so far trained on, phase by phase."""
    total = 0
    for phase in plan:
        done = max(0, min(step, phase.end_step) - phase.first_step)
        if done:
            total += done * global_batch * objective.units_per_sample(phase_data(data, phase))
    return total


def to_device(batch, device):
    """A batch of numpy arrays (alone, in a tuple or in a dict) as tensors on ``device``."""
    import torch

    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return tuple(to_device(v, device) for v in batch)
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    return batch.to(device)


def split_micro_batches(batch, micro_batch: int) -> list:
    """The batch cut along its first axis into micro-batches of ``micro_batch`` samples."""
    if isinstance(batch, dict):
        keys = list(batch)
        parts = zip(*(batch[k].split(micro_batch) for k in keys), strict=True)
        return [dict(zip(keys, part, strict=True)) for part in parts]
    if isinstance(batch, tuple):
        return list(zip(*(t.split(micro_batch) for t in batch), strict=True))
    return list(batch.split(micro_batch))


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
    config: TrainerConfig, engine, objective: Objective, data, world: int
) -> tuple[float | None, float | None]:
    """(model FLOPs per unit, peak FLOP/s of all ranks together, or None when unknown)."""
    import torch

    from pipelines.training.models import device_peak_flops

    per_unit = objective.flops_per_unit(engine, data)
    peak = config.peak_flops
    if peak is None and torch.cuda.is_available():
        dtype = "bf16" if engine.bfloat16_enabled() else "fp32"
        peak = device_peak_flops(torch.cuda.get_device_name(), dtype)
    return per_unit, (peak * world if peak else None)


def evaluate(
    engine, objective: Objective, data, config: TrainerConfig, rank: int = 0, world: int = 1
) -> dict:
    """The objective's mean validation loss on the first eval_batches micro-batches of
    ``data`` (for language models: nats per scored token), with the same random draws at
    every evaluation, and bits per byte when the data knows its text's bytes (pretraining's
    validation split: bpb = mean nats/token x split tokens / split bytes / ln 2)."""
    import torch

    n = min(len(data), config.eval_batches * config.micro_batch)
    mine = list(range(rank, n, world))
    totals = torch.zeros(2, dtype=torch.float64)  # [summed loss, weight]
    rng = step_generator(config.seed, 0, rank, engine.device, EVAL_STREAM)
    engine.eval()
    with torch.no_grad():
        for start in range(0, len(mine), config.micro_batch):
            batch = to_device(data.batch(mine[start : start + config.micro_batch]), engine.device)
            total, weight = objective.eval_terms(engine, batch, rng)
            totals += torch.tensor([total, weight], dtype=torch.float64)
    engine.train()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(totals)
    mean = float(totals[0] / totals[1])
    to_bpb = getattr(data, "bits_per_byte", None)
    return {"val_loss": mean, "val_bpb": to_bpb(mean) if to_bpb else None, "val_sequences": n}
