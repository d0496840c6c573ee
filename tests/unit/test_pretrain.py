"""Pretraining on a tiny model: losses, determinism, checkpoints, real kill-and-resume, EMA.

Shards are written directly in pipelines.pretrain.tokens' documented format (index.json + .npy +
_COMPLETE), from the tiny tokenizer and sentences: no Spark, so the file stays fast.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import tiny_sentences, write_tiny_shards  # tests/ is on sys.path

from pipelines.pretrain.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer
from pipelines.pretrain.train import PretrainConfig, train
from pipelines.training.checkpoints import (
    COMPLETE,
    LATEST,
    find_resume_checkpoint,
    verify_checkpoint,
)
from pipelines.training.loop import METRICS

REPO = Path(__file__).resolve().parents[2]
SEQ_LEN = 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("shards") / "tokens-test", SEQ_LEN)


def config(**overrides) -> PretrainConfig:
    base = dict(
        preset="tiny",
        seq_len=SEQ_LEN,
        micro_batch=4,
        grad_accum=2,
        max_steps=3,
        lr=3e-3,
        warmup_steps=1,
        min_lr_ratio=0.1,
        checkpoint_every=100,
        eval_every=0,
        eval_batches=2,
        zero_stage=1,
        seed=3,
        keep_checkpoints=2,
    )
    return PretrainConfig(**{**base, **overrides})


def step_losses(out: Path) -> dict[int, float]:
    """Per-step losses from metrics.jsonl; a re-run step's last record wins."""
    losses = {}
    for line in (out / METRICS).read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "step":
            losses[record["step"]] = record["loss"]
    return losses


def run_cli(
    cfg: PretrainConfig, shards: Path, out: Path, fault: str | None = None, skip: int = 0
) -> subprocess.CompletedProcess:
    config_file = out.parent / f"{out.name}-config.json"
    config_file.write_text(cfg.model_dump_json())
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "GENAI_FAULT",
            "GENAI_FAULT_SKIP",
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
        )
    }
    env["PYTHONPATH"] = str(REPO)
    if fault:
        env.update(GENAI_FAULT=fault, GENAI_FAULT_SKIP=str(skip))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.pretrain.train",
            "--config",
            str(config_file),
            "--shards",
            str(shards),
            "--out",
            str(out),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


# --- loss and determinism -------------------------------------------------------------------


def test_a_short_run_gives_finite_falling_losses_and_is_deterministic(shards, tmp_path):
    records = []
    first = train(config(eval_every=0), shards, tmp_path / "a", log=records.append)
    second = train(config(eval_every=0), shards, tmp_path / "b")
    losses = step_losses(tmp_path / "a")
    assert sorted(losses) == [1, 2, 3]
    assert all(math.isfinite(v) for v in losses.values())
    assert losses[3] < losses[1]
    assert losses[1] == pytest.approx(math.log(512), rel=0.05)  # random init ~ uniform
    assert step_losses(tmp_path / "b") == losses  # bitwise: same seed, same numbers
    steps = [r for r in records if r["event"] == "step"]
    assert all(r["lr"] >= 0 and r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in steps)
    assert first["val_loss"] == second["val_loss"] and math.isfinite(first["val_bpb"])
    assert first["val_bpb"] > 0 and first["steps"] == 3


def test_the_mixture_of_experts_preset_trains_through_the_same_code(shards, tmp_path):
    from transformers import AutoModelForCausalLM

    summary = train(config(preset="moe-tiny", max_steps=3), shards, tmp_path / "moe")
    losses = step_losses(tmp_path / "moe")
    assert all(math.isfinite(v) for v in losses.values()) and losses[3] < losses[1]
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    assert model.config.model_type == "mixtral" and model.config.num_local_experts == 16


# --- checkpoint layout ----------------------------------------------------------------------


def test_checkpoints_are_marked_complete_latest_points_at_newest_and_k_are_kept(shards, tmp_path):
    out = tmp_path / "run"
    train(config(max_steps=5, checkpoint_every=1, keep_checkpoints=2), shards, out)
    ckpt = out / "checkpoints"
    tags = sorted(p.name for p in ckpt.iterdir() if p.is_dir())
    assert tags == ["step00000004", "step00000005"]
    assert all((ckpt / t / COMPLETE).is_file() for t in tags)
    assert (ckpt / LATEST).read_text() == "step00000005"
    assert find_resume_checkpoint(ckpt) == "step00000005"
    verify_checkpoint(ckpt / "step00000005")
    # a rerun finds the run finished: it resumes at the last step and trains nothing more
    again = train(config(max_steps=5, checkpoint_every=1, keep_checkpoints=2), shards, out)
    assert again["resumed_from"] == "step00000005" and again["steps"] == 5
    with pytest.raises(ValueError, match="past this config's max_steps"):
        train(config(max_steps=4, checkpoint_every=1), shards, out)


def test_only_incomplete_tags_is_an_error_and_corrupt_files_are_named(shards, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints"
    (ckpt / "step00000002").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="none has its COMPLETE marker"):
        find_resume_checkpoint(ckpt)
    with pytest.raises(RuntimeError, match="Refusing to start from scratch"):
        train(config(), shards, tmp_path / "run")

    out = tmp_path / "good"
    train(config(max_steps=2), shards, out)
    tag_dir = out / "checkpoints" / "step00000002"
    victim = next(p for p in sorted(tag_dir.rglob("*.pt")))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match=f"checkpoint file .*{victim.name} is corrupt"):
        train(config(max_steps=4), shards, out)


# --- kill and resume, for real --------------------------------------------------------------


def test_killed_after_a_checkpoint_resumes_with_bitwise_equal_losses(shards, tmp_path):
    cfg = config(max_steps=6, checkpoint_every=3)
    reference = tmp_path / "reference"
    train(cfg, shards, reference)  # uninterrupted, in this process

    out = tmp_path / "killed"
    killed = run_cli(cfg, shards, out, fault="train.after_checkpoint")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (out / "checkpoints" / LATEST).read_text() == "step00000003"
    assert max(step_losses(out)) == 3

    resumed = run_cli(cfg, shards, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == "step00000003" and summary["steps"] == 6
    assert step_losses(out) == step_losses(reference)  # every step, bitwise


def test_killed_during_a_checkpoint_write_resumes_from_the_previous_one(shards, tmp_path):
    cfg = config(max_steps=4, checkpoint_every=2)
    out = tmp_path / "run"
    killed = run_cli(cfg, shards, out, fault="ckpt.during_save", skip=1)  # the 2nd save
    assert killed.returncode == -9, killed.stderr[-3000:]
    ckpt = out / "checkpoints"
    assert (ckpt / "step00000004").is_dir() and not (ckpt / "step00000004" / COMPLETE).exists()
    assert find_resume_checkpoint(ckpt) == "step00000002"

    reference = tmp_path / "reference"
    train(cfg, shards, reference)
    summary = train(cfg, shards, out)
    assert summary["resumed_from"] == "step00000002" and summary["steps"] == 4
    assert step_losses(out) == step_losses(reference)
    assert (ckpt / "step00000004" / COMPLETE).is_file()


# --- EMA and export -------------------------------------------------------------------------


def test_ema_weights_differ_from_raw_and_both_exports_load_and_generate(shards, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = config(max_steps=4, ema={"enabled": True, "start_fraction": 0.5, "decay": 0.5})
    assert cfg.ema_start_step == 2
    summary = train(cfg, shards, tmp_path / "run")
    raw = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    ema = AutoModelForCausalLM.from_pretrained(summary["ema_model_dir"])
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(raw.state_dict()[name], ema.state_dict()[name])
    assert torch.equal(ema.lm_head.weight, ema.model.embed_tokens.weight)  # still tied
    tokenizer = AutoTokenizer.from_pretrained(summary["ema_model_dir"])
    prompt = tokenizer("The pipeline reads", return_tensors="pt")
    for model in (raw, ema):
        out = model.generate(
            **prompt,
            max_new_tokens=5,
            min_new_tokens=5,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        assert out.shape[1] == prompt["input_ids"].shape[1] + 5
    assert (tmp_path / "run" / "checkpoints" / "step00000004" / "ema.safetensors").is_file()


# --- bad input ------------------------------------------------------------------------------


def test_bad_inputs_fail_fast_with_clear_errors(shards, tmp_path):
    with pytest.raises(ValueError, match="preset 'huge'"):
        config(preset="huge")
    with pytest.raises(ValueError, match="extra"):
        PretrainConfig.model_validate({"max_step": 3})  # a misspelt field is not ignored
    with pytest.raises(ValueError, match="seq_len 64 does not match the shards' seq_len 32"):
        train(config(seq_len=64), shards, tmp_path / "a")
    other = save_tokenizer(
        train_tokenizer(tiny_sentences(), TokenizerConfig(vocab_size=400)),
        tmp_path / "other-tokenizer",
    )
    with pytest.raises(ValueError, match="is not the one the shards .* were built with"):
        train(config(), shards, tmp_path / "b", tokenizer_dir=other)
    with pytest.raises(FileNotFoundError, match="no DeepSpeed config"):
        train(config(deepspeed_config="zero9_tpu"), shards, tmp_path / "c")


def test_vocab_mismatch_between_tokenizer_and_model_is_refused(shards):
    from pipelines.pretrain.tokenizer import check_vocab
    from pipelines.training.models import model_config

    with pytest.raises(ValueError, match="embedding has 300 rows"):
        check_vocab(shards / "tokenizer", model_config("tiny", vocab_size=300))


def test_lr_schedule_warms_up_without_a_zero_step_then_decays_to_the_floor():
    from pipelines.training.phases import lr_schedule

    ratios = [lr_schedule(i, warmup_steps=2, max_steps=10, min_lr_ratio=0.1) for i in range(11)]
    assert ratios[0] == pytest.approx(1 / 3) and ratios[1] == pytest.approx(2 / 3)
    assert ratios[2] == 1.0 and ratios[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(ratios[2:], ratios[3:], strict=False))
