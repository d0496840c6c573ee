"""LoRA vs full fine-tuning: step time, peak memory, trainable parameters.

Each side trains the same model (a preset, same initial weights) on the same batch in its own
child process — peak RSS only ever rises within a process, so measuring both in one would
hide the smaller one. A step is forward + backward + AdamW over the trainable parameters
(all of them for full fine-tuning, the adapters for LoRA). Then, for every CPU preset and
both target presets, PEFT's trainable-parameter count is checked against the analytic
formula sum r * (in + out). Progress goes to stderr; the last stdout line is one JSON object.

    python benchmarks/lora.py                      # demo preset, batch 8 x 256, r 8, attention
    python benchmarks/lora.py --preset small --targets all-linear
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def log(message: str) -> None:
    print(f"[lora-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build(preset: str, vocab: int, mode: str, r: int, targets: str):
    from pipelines.finetune.lora import LoraSettings, apply_lora
    from pipelines.training.models import build_model, model_config

    model = build_model(model_config(preset, vocab_size=vocab), seed=0)
    if mode == "lora":
        model = apply_lora(model, LoraSettings(r=r, alpha=2 * r, dropout=0.0, targets=targets))
    return model


def child(args) -> dict:
    """One side: train ``--steps`` steps, report median step seconds and peak RSS."""
    import torch

    from pipelines.finetune.lora import trainable_parameters

    torch.manual_seed(0)
    model = build(args.preset, args.vocab, args.child, args.r, args.targets)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    batch = torch.randint(
        0, args.vocab, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(1)
    )
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    trained, total = trainable_parameters(model)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {
        "step_s": statistics.median(seconds[args.warmup :]),
        "peak_mb": peak_kb / 1024,
        "trainable": trained,
        "total": total,
    }


def run_child(mode: str, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--preset",
        args.preset,
        "--seq-len",
        str(args.seq_len),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--vocab",
        str(args.vocab),
        "--r",
        str(args.r),
        "--targets",
        args.targets,
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parameter_table(vocab: int, r: int) -> list[dict]:
    """PEFT's trainable count vs the formula for every CPU preset and target preset."""
    from pipelines.finetune.lora import (
        lora_parameter_count,
        resolve_targets,
        trainable_parameters,
    )
    from pipelines.training.models import CPU_PRESETS, build_model, model_config

    rows = []
    for preset in CPU_PRESETS:
        for targets in ("attention", "all-linear"):
            base = build_model(model_config(preset, vocab_size=vocab), seed=0)
            expected = lora_parameter_count(base, resolve_targets(base, targets), r)
            adapted = build(preset, vocab, "lora", r, targets)
            trained, total = trainable_parameters(adapted)
            rows.append(
                {
                    "preset": preset,
                    "targets": targets,
                    "r": r,
                    "trainable": trained,
                    "formula": expected,
                    "total": total,
                    "trainable_share": round(trained / total, 5),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("lora", "full"))
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--targets", default="attention", choices=("attention", "all-linear"))
    args = parser.parse_args(argv)

    from infra.settings import apply_environment

    apply_environment()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    log(f"{args.preset}, batch {args.batch} x {args.seq_len}, r {args.r}, {args.targets}")
    lora = run_child("lora", args)
    log(f"lora: {lora}")
    full = run_child("full", args)
    log(f"full: {full}")
    table = parameter_table(args.vocab, args.r)
    for row in table:
        log(json.dumps(row))
    result = {
        "benchmark": "lora",
        "preset": args.preset,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "r": args.r,
        "targets": args.targets,
        "lora_step_s": round(lora["step_s"], 4),
        "full_step_s": round(full["step_s"], 4),
        "step_time_ratio": round(lora["step_s"] / full["step_s"], 3),
        "lora_peak_mb": round(lora["peak_mb"], 1),
        "full_peak_mb": round(full["peak_mb"], 1),
        "memory_ratio": round(lora["peak_mb"] / full["peak_mb"], 3),
        "lora_trainable": lora["trainable"],
        "full_trainable": full["trainable"],
        "params_match_formula": all(row["trainable"] == row["formula"] for row in table),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
