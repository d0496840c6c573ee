"""One process as one DeepSpeed rank: accelerator choice, rank environment, seeds, the
engine built from a JSON config with its "auto" values filled, scheduled by the run's phases."""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
from pathlib import Path

import numpy as np

from pipelines.training.config import TrainerConfig
from pipelines.training.phases import lr_multiplier, plan_phases

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "deepspeed"


def select_accelerator() -> None:
    """DeepSpeed picks its accelerator at import: CPU (gloo) unless CUDA is there."""
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_env() -> tuple[int, int, int]:
    """Rank, world size, local rank; a lone process becomes rank 0 of 1 on a free port."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def seed_everything(seed: int, deterministic: bool) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # CUDA needs it
        torch.use_deterministic_algorithms(True)


def deepspeed_config(config: TrainerConfig, world_size: int = 1) -> dict:
    """The JSON config named by ``config`` with every "auto" filled from it."""
    import torch

    name = config.deepspeed_config or (
        "zero1_bf16_gpu" if torch.cuda.is_available() else f"zero{config.zero_stage}_cpu"
    )
    path = Path(name) if name.endswith(".json") else DEEPSPEED_CONFIGS / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in DEEPSPEED_CONFIGS.glob("*.json"))
        raise FileNotFoundError(f"no DeepSpeed config {path}; known: {known}")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"DeepSpeed config {path} is not valid JSON: {err}") from None
    fill = {
        "train_micro_batch_size_per_gpu": config.micro_batch,
        "gradient_accumulation_steps": config.grad_accum,
        "gradient_clipping": config.grad_clip,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
    }

    def resolve(node):
        if isinstance(node, dict):
            return {
                k: (fill[k] if v == "auto" and k in fill else resolve(v)) for k, v in node.items()
            }
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


def initialize_engine(config: TrainerConfig, model, world: int):
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
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    # a pure function of the global step: phases and resumption follow one schedule
    schedule = functools.partial(
        lr_multiplier, plan=plan_phases(config), min_lr_ratio=config.min_lr_ratio
    )
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=model.parameters(),
        config=deepspeed_config(config, world),
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
    )
    if world == 1 and not engine.zero_optimization():
        # a lone rank has nothing to reduce, yet DeepSpeed's fallback all-reduce would flatten,
        # "reduce" and copy back every gradient each step; ZeRO stages need that copy
        engine.enable_backward_allreduce = False
    return engine


def mean_across_ranks(value, world: int) -> float:
    import torch.distributed as dist

    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
