"""pretrain end to end on a tiny mix: tracking, export, the champion gate, caching, and a real
kill of the training process group followed by a flow rerun that resumes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_model import tiny_mix_rows, write_tiny_mix
from workspace_size import assert_rerun_adds_little, workspace_bytes

from flows.pretrain import PretrainFlowConfig, pretrain
from infra import registry, tracking
from pipelines.training.checkpoints import LATEST, TRAINER_STATE
from pipelines.training.launch import launch_training
from pipelines.training.loop import METRICS
from tasks.pretrain import current_mix

pytestmark = [pytest.mark.spark, pytest.mark.slow]

TRAIN = dict(
    preset="tiny",
    seq_len=32,
    micro_batch=4,
    max_steps=8,
    warmup_steps=1,
    zero_stage=0,
    checkpoint_every=3,
    eval_every=4,
    eval_batches=2,
    seed=1,
)


def flow_config(model_name: str, **train) -> PretrainFlowConfig:
    return PretrainFlowConfig(
        tokenizer={"vocab_size": 512},
        val_fraction=0.15,
        retries=0,
        model_name=model_name,
        train={**TRAIN, **train},
    )


@pytest.fixture(scope="module")
def mix(spark, settings) -> dict:
    return write_tiny_mix(
        spark, settings.home / "lakes" / "test_pretrain_flow", tiny_mix_rows(300)
    )


def step_losses(out: Path) -> dict[int, float]:
    losses = {}
    for record in map(json.loads, (Path(out) / METRICS).read_text().splitlines()):
        if record["event"] == "step":
            losses[record["step"]] = record["loss"]  # a re-run step's last record wins
    return losses


def test_the_flow_trains_tracks_exports_and_registers_a_champion(
    spark, prefect_server, mix, settings
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = flow_config("genai-test-base")
    before = workspace_bytes(settings.home)
    state = pretrain(config, mix=mix, return_state=True)
    after_first = workspace_bytes(settings.home)
    assert state.is_completed(), state.message
    result = state.result()
    trained, registered = result["trained"], result["registered"]

    model = AutoModelForCausalLM.from_pretrained(trained["final_model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(trained["final_model_dir"])
    prompt = tokenizer("The pipeline", return_tensors="pt")
    out = model.generate(
        **prompt,
        max_new_tokens=4,
        min_new_tokens=4,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4

    client = tracking.client()
    run = client.get_run(trained["mlflow_run_id"])
    assert run.data.tags["mlflow.parentRunId"] == result["mlflow_run_id"]
    for metric in (
        "loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "val_loss",
        "val_bpb",
        "unigram_val_loss",
        "unigram_val_bpb",
    ):
        assert metric in run.data.metrics, metric
    assert len(client.get_metric_history(run.info.run_id, "loss")) == TRAIN["max_steps"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [4, 8]
    assert "loss_curve.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["gold/pretrain_mix"]
    assert run.data.params["input.gold/pretrain_mix.version"] == str(mix["version"])
    tokenizer_run = client.get_run(result["tokenizer"]["mlflow_run_id"])
    assert "tokenizer/tokenizer.json" in {
        a.path for a in client.list_artifacts(tokenizer_run.info.run_id, "tokenizer")
    }

    assert registered["version"] == "1" and registered["champion"] is True
    assert str(registry.alias_version("genai-test-base").version) == "1"
    fetched = registry.model_dir("models:/genai-test-base@champion")
    assert (fetched / "model.safetensors").is_file() and (fetched / "tokenizer.json").is_file()

    before_rerun = workspace_bytes(settings.home)  # fetching the champion above copied it
    rerun = pretrain(config, mix=mix, return_state=True)
    assert rerun.is_completed()
    states = task_run_states(rerun)
    # nothing recomputed; only the artifacts are published again, for this run's page
    assert states.pop("publish-pretrain-report") == "Completed"
    assert set(states.values()) == {"Cached"}
    assert_rerun_adds_little(after_first - before, workspace_bytes(settings.home) - before_rerun)
    assert len(client.search_model_versions("name='genai-test-base'")) == 1

    # a worse model (one step) is registered but the champion alias stays where it was
    worse = pretrain(flow_config("genai-test-base", max_steps=1, eval_every=0), mix=mix)
    assert worse["registered"]["version"] == "2" and worse["registered"]["champion"] is False
    assert worse["registered"]["champion_val_bpb"] < worse["registered"]["val_bpb"]
    assert str(registry.alias_version("genai-test-base").version) == "1"


def test_a_killed_training_is_resumed_by_prefects_retry_and_by_a_flow_rerun(
    spark, prefect_server, mix, monkeypatch, tmp_path
):
    config = flow_config("genai-test-resume", seed=7).model_copy(
        update={"register_model": False, "retries": 1}
    )
    # every launch SIGKILLs its own process group right after its first checkpoint: the first
    # attempt dies after step 3, Prefect's retry resumes there and dies after step 6
    monkeypatch.setenv("GENAI_FAULT", "train.after_checkpoint")
    failed = pretrain(config, mix=mix, return_state=True)
    assert failed.is_failed()
    assert task_run_states(failed)["pretrain-model"] == "Failed"
    out = run_dir_of(config)
    starts = [
        r
        for r in map(json.loads, (out / METRICS).read_text().splitlines())
        if r["event"] == "start"
    ]
    assert [s["resumed_from"] for s in starts] == [None, "step00000003"]
    ckpt = out / "checkpoints"
    assert (ckpt / LATEST).read_text() == "step00000006" and max(step_losses(out)) == 6
    state = json.loads((ckpt / "step00000003" / TRAINER_STATE).read_text())
    assert state["sampler"]["position"] % state["sampler"]["n_samples"] != 0  # mid-epoch

    monkeypatch.delenv("GENAI_FAULT")
    rerun = pretrain(config, mix=mix, return_state=True)
    assert rerun.is_completed(), rerun.message
    states = task_run_states(rerun)
    assert states["train-tokenizer"] == states["build-token-shards"] == "Cached"
    trained = rerun.result()["trained"]
    assert trained["resumed_from"] == "step00000006" and trained["steps"] == 8

    reference = launch_training(
        config.train, rerun.result()["shards"]["dir"], tmp_path / "uninterrupted", timeout_s=300
    )
    assert reference["resumed_from"] is None
    assert step_losses(out) == step_losses(tmp_path / "uninterrupted")  # bitwise, every step


def test_a_missing_or_empty_mix_table_is_a_clear_error(spark, settings, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the prepare-corpus flow first"):
        current_mix(tmp_path / "no-lake")
    lake = settings.home / "lakes" / "test_pretrain_empty_mix"
    write_tiny_mix(spark, lake, [])
    with pytest.raises(ValueError, match="is empty: nothing to pretrain on"):
        current_mix(lake)


def run_dir_of(config: PretrainFlowConfig) -> Path:
    """The run dir whose saved config is this flow config's training config."""
    from infra.settings import load_settings

    wanted = config.train.model_dump(mode="json")
    for candidate in (load_settings().home / "runs" / "pretrain").iterdir():
        saved = candidate / "train_config.json"
        if saved.is_file() and json.loads(saved.read_text()) == wanted:
            return candidate
    raise AssertionError("no run dir for this config")


def task_run_states(state) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}
