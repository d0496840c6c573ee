"""Training throughput: the project's DeepSpeed path vs a plain PyTorch loop, one process.

Both train the same preset from the same initial weights on the same batches in the same
order (a seeded ``ResumableSampler`` over one shard dir), with the same AdamW settings,
gradient clipping and lr schedule:

* deepspeed — ``pipelines.pretrain.train.train``, exactly what the pretrain flow runs (one rank,
  the preset's DeepSpeed JSON: ZeRO-0 fp32 on CPU, ZeRO-1 bf16 on a GPU);
* torch — a hand-written loop: forward, backward, ``clip_grad_norm_``, ``AdamW.step``; on a
  GPU with bf16 autocast, fused AdamW and, with ``--compile``, ``torch.compile``.

Tokens/s is the median over the timed steps (the first ``--warmup`` steps of each path are
not timed). Both paths record their losses, and the first steps' losses must agree (the
paths do the same math), so the comparison is like for like. Progress goes to stderr; the
last stdout line is one JSON object.

    python benchmarks/pretrain.py                       # CPU: demo preset, seq 256, batch 8
    python benchmarks/pretrain.py --preset 125m --seq-len 2048 --micro-batch 16 --compile
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def log(message: str) -> None:
    print(f"[pretrain-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_synthetic_shards(
    root: Path, sequences: int, seq_len: int, vocab: int, seed: int = 0
) -> Path:
    """A shard dir in pipelines.pretrain.tokens' format holding Zipf-distributed token ids (the
    frequency shape of real text; throughput does not depend on what the ids mean)."""
    import numpy as np

    from pipelines.pretrain.tokens import COMPLETE_MARKER, INDEX_FILE, SHARD_FORMAT, shard_dtype

    rng = np.random.default_rng(seed)
    dtype = shard_dtype(vocab)
    rows = (rng.zipf(1.2, size=(sequences, seq_len)) % vocab).astype(dtype)
    root.mkdir(parents=True)
    np.save(root / "train-00000.npy", rows)
    split = {
        "documents": sequences,
        "text_bytes": rows.size * 4,
        "tokens": rows.size,
        "sequences": sequences,
        "shards": [{"file": "train-00000.npy", "sequences": sequences}],
    }
    index = {
        "format": SHARD_FORMAT,
        "seq_len": seq_len,
        "dtype": dtype.name,
        "vocab_size": vocab,
        "eos_token_id": 0,
        "tokenizer_hash": "synthetic",
        "table": {"table": "synthetic"},
        "seed": seed,
        "splits": {"train": split},
    }
    (root / INDEX_FILE).write_text(json.dumps(index))
    (root / COMPLETE_MARKER).write_text("{}")
    return root


def deepspeed_path(config, shards: Path, out: Path) -> dict:
    from pipelines.pretrain.train import train

    records: list[dict] = []
    train(config, shards, out, log=lambda r: records.append(r) if r["event"] == "step" else None)
    return {
        "losses": [r["loss"] for r in records],
        "tokens_per_s": [r["tokens_per_s"] for r in records],
        "mfu": [r["mfu"] for r in records if r.get("mfu") is not None],
    }


def torch_path(config, shards: Path, compile_model: bool) -> dict:
    """The baseline loop, step for step what ``train`` does, without DeepSpeed."""
    import functools

    import numpy as np
    import torch

    from pipelines.pretrain.tokens import TokenShards
    from pipelines.training.data_order import ResumableSampler
    from pipelines.training.engine import seed_everything
    from pipelines.training.models import (
        build_model,
        device_peak_flops,
        flops_per_token,
        model_config,
    )
    from pipelines.training.phases import lr_schedule

    data = TokenShards(shards, "train")
    seed_everything(config.seed, config.deterministic)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    hf_config = model_config(
        config.preset,
        vocab_size=int(data.index["vocab_size"]),
        max_seq_len=config.seq_len,
        eos_token_id=0,
        bos_token_id=0,
    )
    model = build_model(hf_config, seed=config.seed).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        weight_decay=config.weight_decay,
        fused=cuda,
    )
    schedule = functools.partial(
        lr_schedule,
        warmup_steps=config.warmup_steps,
        max_steps=config.max_steps,
        min_lr_ratio=config.min_lr_ratio,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step_fn = torch.compile(model) if compile_model else model
    global_batch = config.micro_batch * config.grad_accum
    sampler = ResumableSampler(
        len(data), config.seed, global_batch, end_sample=config.max_steps * global_batch
    )
    per_token = flops_per_token(hf_config, config.seq_len)
    peak = config.peak_flops or (
        device_peak_flops(torch.cuda.get_device_name(), "bf16") if cuda else None
    )
    losses, rates = [], []
    for indices in sampler.steps():
        start = time.perf_counter()
        batch = torch.from_numpy(data.batch(indices).astype(np.int64)).to(device)
        step_losses = []
        for micro in batch.split(config.micro_batch):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
                loss = step_fn(input_ids=micro, labels=micro).loss
            (loss / config.grad_accum).backward()
            step_losses.append(loss.detach().float())
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(torch.stack(step_losses).mean())  # syncs, as train() does
        rates.append(global_batch * config.seq_len / (time.perf_counter() - start))
        losses.append(loss_value)
    return {
        "losses": losses,
        "tokens_per_s": rates,
        "mfu": [r * per_token / peak for r in rates] if peak else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60, help="steps per path, warmup included")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per path")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--compile", action="store_true", help="torch.compile the baseline")
    parser.add_argument("--deepspeed-config", default=None, help="infra/deepspeed/<name>")
    args = parser.parse_args(argv)

    from infra.settings import apply_environment

    apply_environment()
    import torch

    from pipelines.pretrain.train import PretrainConfig
    from pipelines.training.engine import select_accelerator

    select_accelerator()
    cuda = torch.cuda.is_available()
    config = PretrainConfig(
        preset=args.preset,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        grad_accum=1,
        max_steps=args.steps,
        lr=3e-3 if not cuda else 6e-4,
        warmup_steps=args.warmup,
        zero_stage=1 if cuda else 0,
        deepspeed_config=args.deepspeed_config,
        checkpoint_every=10**9,
        eval_every=0,
        deterministic=not cuda,
        seed=0,
    )
    with tempfile.TemporaryDirectory(prefix="pretrain-bench-") as tmp:
        sequences = args.steps * args.micro_batch
        shards = write_synthetic_shards(Path(tmp) / "shards", sequences, args.seq_len, args.vocab)
        log(
            f"{args.preset}, seq {args.seq_len}, micro-batch {args.micro_batch}, "
            f"{args.steps} steps per path on {'CUDA' if cuda else 'CPU'}"
        )
        started = time.perf_counter()
        ds = deepspeed_path(config, shards, Path(tmp) / "run")
        log(f"deepspeed path done in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        plain = torch_path(config, shards, args.compile)
        log(f"torch path done in {time.perf_counter() - started:.0f} s")

    timed = slice(args.warmup, None)
    ds_rate = statistics.median(ds["tokens_per_s"][timed])
    torch_rate = statistics.median(plain["tokens_per_s"][timed])
    compared = min(5, len(ds["losses"]))
    loss_gap = max(
        abs(a - b)
        for a, b in zip(ds["losses"][:compared], plain["losses"][:compared], strict=False)
    )
    result = {
        "benchmark": "pretrain",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "preset": args.preset,
        "seq_len": args.seq_len,
        "micro_batch": args.micro_batch,
        "timed_steps": args.steps - args.warmup,
        "compile_baseline": args.compile,
        "deepspeed_tokens_per_s": round(ds_rate, 1),
        "torch_tokens_per_s": round(torch_rate, 1),
        "overhead": round(torch_rate / ds_rate, 3),
        "first_losses_max_abs_diff": loss_gap,
    }
    if ds["mfu"]:
        result["mfu"] = round(statistics.median(ds["mfu"][timed]), 4)
        result["torch_mfu"] = round(statistics.median(plain["mfu"][timed]), 4)
    if not math.isfinite(loss_gap) or (not cuda and loss_gap > 1e-3):
        log(f"WARNING: the paths' first losses differ by {loss_gap}: not the same computation")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
