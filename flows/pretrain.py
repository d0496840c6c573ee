"""Flow pretrain: gold/pretrain_mix → tokenizer → token shards → DeepSpeed training (its own
process group, auto-resuming) → HF model dir → registered as genai-base (champion when it
beats the current one on bits per byte)."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.pretrain.tokenizer import TokenizerConfig
from pipelines.pretrain.train import PretrainConfig
from pipelines.shared.presets import config_or_preset
from tasks.common import tracked_flow
from tasks.pretrain import (
    build_token_shards,
    current_mix,
    pretrain_model,
    publish_pretrain_report,
    register_base_model,
    train_tokenizer,
)

FLOW_NAME = "pretrain"


class PretrainFlowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    val_fraction: float = Field(0.02, ge=0, lt=1)  # documents held out (pinned by id hash)
    split_seed: int = 0  # the holdout's hash seed; change it and the validation set changes
    train: PretrainConfig = Field(default_factory=PretrainConfig)
    ranks: int = Field(1, ge=1)  # data-parallel ranks per node (gloo on CPU, nccl on GPU)
    hostfile: str | None = None  # DeepSpeed hostfile for multi-node (see infra/deepspeed/README)
    timeout_s: float = Field(24 * 3600, gt=0)  # the launch is killed after this, then resumable
    retries: int = Field(1, ge=0)  # Prefect retries of the training task (each one resumes)
    model_name: str = "genai-base"  # registered model name in MLflow
    register_model: bool = True  # False: train and export only

    @model_validator(mode="after")
    def _check(self):
        if self.val_fraction == 0 and self.register_model:
            raise ValueError(
                "register_model=True needs validation documents (val_fraction > "
                "0): the champion gate compares bits per byte on them"
            )
        return self


@flow(name=FLOW_NAME, log_prints=True)
def pretrain(
    config: PretrainFlowConfig | None = None, mix: dict | None = None, preset: str | None = None
) -> dict:
    """``config``, or ``preset`` (a configs/pretrain/<name>.yaml: what a deployment names).
    ``mix`` is the manifest of the gold/pretrain_mix version to train on (the lifecycle
    passes it); without it, the table's current version in the workspace lake."""
    config = config_or_preset(PretrainFlowConfig, "pretrain", config, preset)
    mix = mix or current_mix()
    with tracked_flow(FLOW_NAME, config) as run:
        tokenizer = train_tokenizer(
            mix, config.tokenizer, config.val_fraction, config.split_seed, parent_run=run
        )
        shards = build_token_shards(
            mix,
            tokenizer,
            config.train.seq_len,
            config.val_fraction,
            config.split_seed,
            parent_run=run,
        )
        trained = pretrain_model.with_options(retries=config.retries)(
            shards,
            tokenizer,
            config.train,
            ranks=config.ranks,
            hostfile=config.hostfile,
            timeout_s=config.timeout_s,
            parent_run=run,
        )
        result = {"tokenizer": tokenizer, "shards": shards, "trained": trained}
        if config.register_model:
            result["registered"] = register_base_model(
                trained, shards, config.model_name, parent_run=run
            )
        publish_pretrain_report(result)
        result["mlflow_run_id"] = run
    return result
