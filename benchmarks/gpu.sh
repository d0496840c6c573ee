#!/usr/bin/env bash
# GPU throughput and MFU of pretraining on one NVIDIA GPU (an H100 is the reference), in
# at most ~8 minutes: the `125m` preset in bf16 through the project's DeepSpeed path (ZeRO-1,
# FusedAdam) beside a plain-PyTorch baseline with torch.compile, same model, batch and data,
# in one process run (benchmarks/pretrain.py). Then the baseline without compile, for the
# eager-vs-compiled gap. Each run prints one JSON line last; the lines are collected in
# $OUT/pretrain-gpu.jsonl (or ./pretrain-gpu.jsonl) for docs/BENCHMARKS.md.
#
#   bash benchmarks/gpu.sh            # from the repository root, venv installed (make install)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RESULTS=${OUT:-.}/pretrain-gpu.jsonl
: > "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a /dev/stderr
common=(--preset 125m --seq-len 2048 --micro-batch 16 --vocab 50257 --steps 40 --warmup 10)
timeout 300 "$PY" benchmarks/pretrain.py "${common[@]}" --compile | tail -n 1 | tee -a "$RESULTS"
timeout 150 "$PY" benchmarks/pretrain.py "${common[@]}" | tail -n 1 | tee -a "$RESULTS"
