"""Table-documentation quality end to end: base model -> LoRA/QLoRA cells -> held-out scores.

The fine-tuning stage's path without the orchestration around it: a base model pretrained
here from a corpus file (tokenizer, token shards and DeepSpeed pretraining through
``pipelines.pretrain.tokens`` and ``pipelines.training.launch``) or given as an HF dir; the
synthetic examples of ``pipelines.finetune.examples`` split by table family; one
``pipelines.finetune.lora`` run per cell; and ``pipelines.evaluation.tabledoc`` scores for
each cell beside the untuned base and the copy-the-column-names baseline, on the same
held-out items. Per cell it also reports the
median step time and (on CUDA) peak GPU memory, which is how QLoRA and LoRA are compared.

Each finished part is printed as a JSON line at once (a run cut short keeps its results);
the last stdout line is the whole result.

    # one GPU: a 125m base pretrained on the installed packages' documentation, then
    # r16 all-linear on a bf16 and on a 4-bit base (see benchmarks/gpu.sh)
    python benchmarks/tabledoc_quality.py --corpus corpus.jsonl.xz
    # CPU smoke run of the same path
    python benchmarks/tabledoc_quality.py --corpus corpus.jsonl.xz --preset tiny --vocab 1024 \\
        --seq-len 768 --pretrain-steps 4 --examples 120 --finetune-steps 2 --eval-items 4 \\
        --cells r8:attention:32
    # CPU, structured decoding only, on an existing base (docs/BENCHMARKS.md, tabledoc)
    python benchmarks/tabledoc_quality.py --base <HF dir> --examples 2400 \\
        --cells r16:all-linear:32 --finetune-steps 100 --finetune-micro-batch 4 \\
        --finetune-lr 3e-3 --max-len 832 --eval-items 32 --structured-only --zero-stage 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the bar for genai-tabledoc on held-out families
FORMAT_TARGET, COVERAGE_TARGET, ROUGE_GAIN_TARGET = 0.95, 0.90, 0.2


def log(message: str) -> None:
    print(f"[tabledoc-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(record: dict, results: Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if results is not None:
        with results.open("a") as f:
            f.write(line + "\n")


def read_corpus(path: Path) -> list[tuple[str, str]]:
    """(id, text) from a jsonl (optionally .xz) of {"id", "text"} objects."""
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [(r["id"], r["text"]) for r in map(json.loads, f) if r.get("text")]


def pretrain_base(args, work: Path) -> tuple[Path, dict]:
    """Tokenizer + shards from the corpus file, then pretraining; the exported HF dir."""
    from pipelines.pretrain.tokenizer import TokenizerConfig, train_tokenizer
    from pipelines.pretrain.tokens import tokenize_in_process, write_token_shards
    from pipelines.pretrain.train import PretrainConfig
    from pipelines.training import launch

    records = read_corpus(args.corpus)
    log(f"corpus: {len(records)} documents, {sum(len(t) for _, t in records):,} chars")
    tokenizer = train_tokenizer((t for _, t in records), TokenizerConfig(vocab_size=args.vocab))
    table = {
        "table": f"file:{args.corpus.name}",
        "version": 0,
        "table_id": hashlib.sha256(args.corpus.read_bytes()).hexdigest()[:16],
    }
    shards = write_token_shards(
        lambda: tokenize_in_process(records, tokenizer),
        tokenizer,
        table,
        work / "tokens",
        args.seq_len,
        val_fraction=0.01,
        seed=0,
        shard_sequences=4096,
    )
    log(f"shards: {shards['splits']['train']['tokens']:,} train tokens in {shards['dir']}")
    steps = args.pretrain_steps
    config = PretrainConfig(
        preset=args.preset,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        max_steps=steps,
        lr=args.pretrain_lr,
        warmup_steps=max(1, steps // 20),
        checkpoint_every=steps,
        eval_every=steps,
        eval_batches=8,
        deepspeed_config=args.deepspeed_config,
        deterministic=False,
    )
    started = time.perf_counter()
    summary = launch.launch_training(
        config, shards["dir"], work / "pretrain", timeout_s=args.timeout_s, on_line=_echo
    )
    return Path(summary["model_dir"]), {
        "preset": args.preset,
        "seq_len": args.seq_len,
        "steps": summary["steps"],
        "tokens": summary["tokens"],
        "val_loss": summary.get("val_loss"),
        "wall_s": time.perf_counter() - started,
        **_step_stats(work / "pretrain"),
    }


def _echo(line: str) -> None:
    if '"event": "step"' not in line:  # step lines are summarised, not echoed
        print(line.rstrip(), file=sys.stderr, flush=True)


def _step_stats(run_dir: Path) -> dict:
    """Median step seconds, tokens/s and MFU over the run's steps after the first tenth."""
    from pipelines.training.loop import METRICS

    steps = [
        r
        for r in map(json.loads, (run_dir / METRICS).read_text().splitlines())
        if r.get("event") == "step"
    ]
    steady = steps[len(steps) // 10 :] or steps
    mfu = [r["mfu"] for r in steady if r.get("mfu") is not None]
    return {
        "step_s": statistics.median(r["seconds"] for r in steady),
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
        "mfu": statistics.median(mfu) if mfu else None,
    }


def write_examples(args, work: Path) -> tuple[Path, Path]:
    """Train/test pairs files of the synthetic examples (test = held-out families)."""
    from pipelines.finetune.examples import SynthConfig, tabledoc_rows
    from pipelines.finetune.pairs import write_pairs
    from pipelines.shared.instructions import training_pair

    rows = tabledoc_rows(SynthConfig(n_examples=args.examples))
    pairs = {
        split: [
            training_pair(r["instruction"], r["response"]) for r in rows if r["split"] == split
        ]
        for split in ("train", "test")
    }
    log(f"examples: {len(pairs['train'])} train, {len(pairs['test'])} held out")
    return (
        write_pairs(pairs["train"], work / "pairs" / "train.jsonl"),
        write_pairs(pairs["test"], work / "pairs" / "test.jsonl"),
    )


def parse_cell(text: str):
    """'r16:all-linear:4' -> LoraSettings and base bits; a fourth part 'emb' also trains the
    token embeddings ('r16:all-linear:32:emb')."""
    from pipelines.finetune.lora import LoraSettings

    rank, targets, bits, *extra = text.split(":")
    r = int(rank.lstrip("r"))
    return LoraSettings(
        r=r, alpha=2 * r, dropout=0.05, targets=targets, train_embeddings=extra == ["emb"]
    ), int(bits)


def finetune_cell(
    args, cell: str, base_dir: Path, train: Path, test: Path, work: Path
) -> tuple[Path, dict]:
    from pipelines.finetune.lora import FinetuneConfig
    from pipelines.training import launch

    lora, bits = parse_cell(cell)
    steps = args.finetune_steps
    config = FinetuneConfig(
        lora=lora,
        base_bits=bits,
        max_len=args.max_len,
        micro_batch=args.finetune_micro_batch,
        max_steps=steps,
        lr=args.finetune_lr,
        warmup_steps=max(1, steps // 20),
        checkpoint_every=steps,
        eval_every=steps,
        zero_stage=args.zero_stage,
        deepspeed_config=args.deepspeed_config,
        deterministic=False,
    )
    out = work / "finetune" / cell.replace(":", "-")
    started = time.perf_counter()
    summary = launch.launch_finetune(
        config, base_dir, train, out, eval_file=test, timeout_s=args.timeout_s, on_line=_echo
    )
    stats = _step_stats(out)
    return Path(summary["model_dir"]), {
        "cell": cell,
        "r": lora.r,
        "targets": lora.targets,
        "base_bits": bits,
        "trainable_parameters": summary["trainable_parameters"],
        "total_parameters": summary["total_parameters"],
        "eval_loss": summary.get("val_loss"),
        "peak_gpu_mb": summary.get("peak_gpu_mb"),
        "step_s": stats["step_s"],
        "wall_s": time.perf_counter() - started,
    }


def quality(model_dir: Path, items: list[dict], args) -> dict:
    """Scores of free generation and, with --structured, of the response template filled
    field by field (keys prefixed ``structured_``)."""
    from pipelines.evaluation import tabledoc as tabledoc_eval

    scores = {}
    modes = (True,) if args.structured_only else (False, True) if args.structured else (False,)
    for structured in modes:
        result = tabledoc_eval.evaluate_model(
            model_dir, items, args.max_new_tokens, args.tokens_per_batch, structured
        )
        prefix = "structured_" if structured else ""
        scores |= {
            prefix + k: result[k] for k in ("format_validity", "column_coverage", "rouge_l")
        }
        scores[prefix + "sample"] = (
            result["samples"][0]["generated"] if result["samples"] else None
        )
    return scores


def meets_targets(cell: dict, base: dict, copy: dict, prefix: str = "") -> bool:
    return (
        cell[prefix + "format_validity"] >= FORMAT_TARGET
        and cell[prefix + "column_coverage"] >= COVERAGE_TARGET
        and cell[prefix + "rouge_l"] >= base[prefix + "rouge_l"] + ROUGE_GAIN_TARGET
        and cell[prefix + "rouge_l"] > copy["rouge_l"]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="jsonl(.xz) of {id, text}: pretrain a base")
    source.add_argument("--base", type=Path, help="an HF causal-LM dir to fine-tune instead")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tabledoc-bench"))
    parser.add_argument("--results", type=Path, default=None, help="append JSON lines here")
    parser.add_argument("--preset", default="125m")
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--pretrain-steps", type=int, default=1200)
    parser.add_argument("--pretrain-lr", type=float, default=6e-4)
    parser.add_argument("--examples", type=int, default=3600)
    parser.add_argument(
        "--cells",
        default="r16:all-linear:16,r16:all-linear:4",
        help="comma-separated r<rank>:<targets>:<base bits>",
    )
    parser.add_argument("--finetune-steps", type=int, default=600)
    parser.add_argument("--finetune-micro-batch", type=int, default=16)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--eval-items", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--tokens-per-batch", type=int, default=1 << 17)
    parser.add_argument(
        "--structured",
        action="store_true",
        help="also score the response template filled field by field",
    )
    parser.add_argument(
        "--structured-only",
        action="store_true",
        help="score only the filled template (skips free generation: CPU runs)",
    )
    parser.add_argument("--deepspeed-config", default=None, help="infra/deepspeed name or path")
    parser.add_argument(
        "--zero-stage",
        type=int,
        default=1,
        help="fine-tuning's ZeRO stage (0 on one CPU rank: ZeRO only costs)",
    )
    parser.add_argument("--timeout-s", type=float, default=3600)
    args = parser.parse_args()

    from pipelines.evaluation import tabledoc as tabledoc_eval
    from pipelines.training import launch

    args.work.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    if args.corpus is not None:
        base_dir, result["pretrain"] = pretrain_base(args, args.work)
        emit({"pretrain": result["pretrain"]}, args.results)
    else:
        base_dir = args.base
    train, test = write_examples(args, args.work)
    items = tabledoc_eval.read_items(test, args.eval_items)
    result["copy_baseline"] = tabledoc_eval.score(
        tabledoc_eval.copy_baseline_outputs(items), items
    )
    result["base"] = quality(base_dir, items, args)
    emit({"copy_baseline": result["copy_baseline"], "base": result["base"]}, args.results)
    result["cells"] = []
    for cell in args.cells.split(","):
        try:
            model_dir, trained = finetune_cell(args, cell, base_dir, train, test, args.work)
        except launch.TrainingFailed as err:  # one broken cell must not hide the others
            emit({"cell": {"cell": cell, "error": str(err)[-2000:]}}, args.results)
            continue
        trained.update(quality(model_dir, items, args))
        if not args.structured_only:
            trained["meets_targets"] = meets_targets(
                trained, result["base"], result["copy_baseline"]
            )
        if args.structured or args.structured_only:
            trained["structured_meets_targets"] = meets_targets(
                trained, result["base"], result["copy_baseline"], "structured_"
            )
        result["cells"].append(trained)
        emit({"cell": trained}, args.results)
    if result["cells"]:
        prefix = "structured_" if args.structured_only else ""
        best = max(result["cells"], key=lambda c: c[prefix + "rouge_l"])
        result["best"] = best["cell"]
        result["targets_met"] = best[prefix + "meets_targets"]
    emit(result, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
