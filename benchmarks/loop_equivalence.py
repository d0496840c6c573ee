"""The shared loop against an earlier commit's, bit for bit: the same tiny pretraining (EMA,
gradient accumulation, evaluations) and LoRA fine-tune (dropout 0.05) run once with this
tree and once with ``--old`` (a commit of this clone, default the last one before the loop
took objectives and phases), each in its own process; the step losses, evaluations, token
counts and the SHA-256 of every exported weight file must be identical.

    python benchmarks/loop_equivalence.py [--old COMMIT]

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE_OBJECTIVES = "769baf8"  # the loop that knew only language-model batches

RUN = r"""
import hashlib, json, os, sys
from pathlib import Path
tree, out = Path(sys.argv[1]), Path(sys.argv[2])
sys.path[:0] = [str(tree), str(tree / "tests")]
os.environ["GENAI_HOME"] = str(out / "home")
from infra.settings import apply_environment
apply_environment()
from tiny_model import build_tiny_model_and_tokenizer, write_tiny_shards
from pipelines.pretrain.train import PretrainConfig, train
from pipelines.finetune.lora import FinetuneConfig, train as finetune

def weights(directory):
    h = hashlib.sha256()
    for f in sorted(Path(directory).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()

def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

config = PretrainConfig(preset="tiny", seq_len=32, micro_batch=4, grad_accum=2, max_steps=6,
    lr=3e-3, warmup_steps=1, checkpoint_every=3, eval_every=3, eval_batches=2, seed=3,
    ema={"enabled": True, "decay": 0.9, "start_fraction": 0.5})
pre = train(config, write_tiny_shards(out / "shards", 32), out / "pretrain")
pairs = out / "pairs.jsonl"
pairs.write_text("".join(json.dumps({"prompt": f"Describe item {i}.",
    "response": f"Item {i} is blue."}) + "\n" for i in range(24)))
ft_config = FinetuneConfig(max_steps=4, micro_batch=4, grad_accum=2, warmup_steps=1,
    max_len=48, zero_stage=0, checkpoint_every=2, eval_every=2, eval_batches=1)
ft = finetune(ft_config, build_tiny_model_and_tokenizer(out / "tiny"), pairs, out / "ft",
    eval_file=pairs)
result = {}
for name, summary, run_dir in (("pretrain", pre, out / "pretrain"), ("finetune", ft, out / "ft")):
    lines = records(run_dir)
    result[name] = {
        "losses": [r["loss"] for r in lines if r["event"] == "step"],
        "evals": [r["val_loss"] for r in lines if r["event"] == "eval"],
        "tokens": summary["tokens"],
        "model": weights(summary["model_dir"]),
    }
result["pretrain"]["ema_model"] = weights(pre["ema_model_dir"])
print("RESULT " + json.dumps(result))
"""


def extract(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", commit, "pipelines", "infra", "tests"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run(tree: Path, out: Path) -> dict:
    print(f"training with {tree}", file=sys.stderr)
    out.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(tree), str(out)],
        cwd=out, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the run with {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default=BEFORE_OBJECTIVES, help="the commit to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = run(extract(args.old, tmp / "old-tree"), (tmp / "old").resolve())
        new = run(REPO, (tmp / "new").resolve())
    differs = [
        f"{stage}.{key}"
        for stage in new
        for key in new[stage]
        if new[stage][key] != old[stage][key]
    ]
    print(json.dumps({"old": args.old, "identical": not differs, "differs": differs, "new": new}))


if __name__ == "__main__":
    main()
