#!/usr/bin/env bash
# GPU numbers in one run of at most ~9.5 minutes on one NVIDIA GPU (an H100 is the reference):
#  1. benchmarks/tabledoc_quality.py: a `125m` base pretrained at seq 1024 on the installed
#     packages' documentation through the project's DeepSpeed path (tokens/s, MFU), then
#     r16 all-linear LoRA on the bf16 base and QLoRA on its 4-bit NF4 copy (step time, peak
#     GPU memory), each scored on held-out table families beside the base and the
#     copy-the-column-names baseline.
#  2. if time is left, benchmarks/pretrain.py: the same preset at seq 2048 through DeepSpeed
#     ZeRO-1 beside a plain-PyTorch loop (same model, batch and data).
# Each benchmark's JSON lines go to $OUT (or .): tabledoc-gpu.jsonl, pretrain-gpu.jsonl.
#
#   CORPUS=corpus.jsonl.xz bash benchmarks/gpu.sh    # from the repository root
# CORPUS: jsonl(.xz) of {id, text}, e.g. the documents of `genai prepare-corpus` or
# pipelines.corpus.ingest.iter_records over the installed packages.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RESULTS=${OUT:-.}
BUDGET_S=${BUDGET_S:-570}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 DS_ACCELERATOR=cuda
start=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2

timeout $((BUDGET_S - 100)) "$PY" benchmarks/tabledoc_quality.py --corpus "${CORPUS:?set CORPUS}" \
    --work /tmp/tabledoc-bench --results "$RESULTS/tabledoc-gpu.jsonl" \
    --preset 125m --seq-len 1024 --micro-batch 32 --pretrain-steps "${PRETRAIN_STEPS:-1000}" \
    --cells r16:all-linear:16,r16:all-linear:4 --finetune-steps 600 --structured \
    | tail -n 1

left=$((BUDGET_S - (SECONDS - start)))
if [ "$left" -gt 90 ]; then
    timeout "$left" "$PY" benchmarks/pretrain.py --preset 125m --seq-len 2048 --micro-batch 16 \
        --vocab 50257 --steps 30 --warmup 10 | tail -n 1 | tee "$RESULTS/pretrain-gpu.jsonl"
else
    echo "skipped benchmarks/pretrain.py: ${left}s left" >&2
fi
