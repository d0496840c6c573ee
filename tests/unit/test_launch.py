"""The training launch: its own process group, data parallel through DeepSpeed's launcher,
timeouts and dead ranks that never hang the caller."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tiny_model import write_tiny_shards

from pipelines.pretrain.train import PretrainConfig
from pipelines.training.launch import TrainingFailed, launch_training, training_command
from pipelines.training.loop import METRICS

SEQ_LEN = 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("shards") / "tokens-launch", SEQ_LEN)


def config(**overrides) -> PretrainConfig:
    base = dict(
        preset="tiny",
        seq_len=SEQ_LEN,
        micro_batch=4,
        grad_accum=1,
        max_steps=4,
        lr=3e-3,
        warmup_steps=1,
        checkpoint_every=100,
        eval_every=0,
        eval_batches=2,
        zero_stage=0,
        seed=5,
    )
    return PretrainConfig(**{**base, **overrides})


def records(out: Path, event: str) -> list[dict]:
    lines = (out / METRICS).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_one_rank_runs_in_its_own_process_group_and_streams_rank_0s_records(shards, tmp_path):
    lines: list[str] = []
    summary = launch_training(
        config(), shards, tmp_path / "run", on_line=lines.append, timeout_s=300
    )
    assert summary["steps"] == 4 and summary["world_size"] == 1
    streamed = [json.loads(x) for x in lines if x.startswith('{"event"')]
    assert [r["step"] for r in streamed if r["event"] == "step"] == [1, 2, 3, 4]
    assert Path(summary["model_dir"], "model.safetensors").is_file()


def test_two_gloo_ranks_match_one_rank_with_the_same_global_batch(shards, tmp_path):
    one = launch_training(config(micro_batch=4), shards, tmp_path / "one", timeout_s=300)
    two = launch_training(
        config(micro_batch=2, zero_stage=1), shards, tmp_path / "two", ranks=2, timeout_s=600
    )
    assert one["world_size"] == 1 and two["world_size"] == 2
    single = [r["loss"] for r in records(tmp_path / "one", "step")]
    data_parallel = [r["loss"] for r in records(tmp_path / "two", "step")]
    assert len(single) == len(data_parallel) == 4
    assert data_parallel == pytest.approx(single, abs=1e-5)
    assert single[-1] < single[0]


def test_the_timeout_kills_the_whole_group_and_says_how_to_resume(shards, tmp_path):
    started = time.monotonic()
    with pytest.raises(TrainingFailed, match="timed out after 2 s .* resume") as caught:
        launch_training(config(max_steps=100_000), shards, tmp_path / "slow", timeout_s=2)
    assert time.monotonic() - started < 30
    assert "Log tail" in str(caught.value)


def test_a_rank_that_dies_takes_the_others_down_instead_of_hanging(shards, tmp_path, monkeypatch):
    # rank 0 alone passes this point (it moves `latest`); rank 1 waits for it at a barrier
    monkeypatch.setenv("GENAI_FAULT", "train.after_checkpoint")
    monkeypatch.setenv("GENAI_FAULT_MODE", "raise")
    started = time.monotonic()
    with pytest.raises(TrainingFailed, match="exited with status") as caught:
        launch_training(
            config(micro_batch=2, checkpoint_every=2),
            shards,
            tmp_path / "dead",
            ranks=2,
            timeout_s=600,
        )
    assert time.monotonic() - started < 300  # far below the timeout: nothing hung
    assert "InjectedFault" in str(caught.value)


def test_the_launch_command_uses_deepspeeds_launcher_for_several_ranks_or_hosts(tmp_path):
    script = ["--shards", str(tmp_path / "s")]
    single = training_command(
        "pipelines.pretrain.train", tmp_path / "c.json", tmp_path / "o", script
    )
    assert single[1:4] == ["-u", "-m", "pipelines.pretrain.train"] and "--workspace" in single
    local = training_command(
        "pipelines.finetune.lora",
        tmp_path / "c.json",
        tmp_path / "o",
        script,
        ranks=2,
        master_port=29555,
    )
    assert "deepspeed.launcher.runner" in local and local[local.index("--num_gpus") + 1] == "2"
    assert local[local.index("--module") + 1] == "pipelines.finetune.lora"
    hosts = tmp_path / "hostfile"
    hosts.write_text("node-a slots=4\nnode-b slots=4\n")
    multi = training_command(
        "pipelines.pretrain.train",
        tmp_path / "c.json",
        tmp_path / "o",
        script,
        ranks=4,
        hostfile=hosts,
        master_port=29555,
    )
    assert multi[multi.index("--hostfile") + 1] == str(hosts)
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        launch_training(config(), tmp_path / "s", tmp_path / "o", ranks=0)
