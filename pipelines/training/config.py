"""What every DeepSpeed training run is configured by (pretraining, fine-tuning, and the
stages that train through the same loop)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

IGNORE_INDEX = -100  # a label the loss skips (HF convention): prompts, padding


class EmaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False  # off by default: the raw weights are the model unless asked
    start_fraction: float = Field(0.035, gt=0, le=1)  # average over the LAST 3.5 % of steps
    # (the seed's number): the early, fast-moving weights never enter the average
    decay: float = Field(0.9999, gt=0, lt=1)  # per-step decay (the seed's number); its horizon
    # is 1/(1-decay) = 10k steps, so tiny runs (tens of steps) need e.g. 0.9 to move at all


class PhaseConfig(BaseModel):
    """One phase of a run: its own data and steps; the weights carry over from the last."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)  # the stage maps it to this phase's data (e.g. "256px")
    steps: int = Field(ge=1)  # optimizer steps in this phase
    restart_optimizer: bool = True  # fresh AdamW moments and a new warmup + cosine at its
    # start; False continues the previous phase's optimizer state and schedule
    lr: float | None = Field(None, gt=0)  # this phase's peak lr; None: the run's lr
    warmup_steps: int | None = Field(None, ge=0)  # None: the run's warmup_steps


class TrainerConfig(BaseModel):
    """What every DeepSpeed training run shares (pretraining and fine-tuning)."""

    model_config = ConfigDict(extra="forbid")

    micro_batch: int = Field(8, ge=1)  # sequences per rank per forward/backward
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimizer step
    max_steps: int = Field(100, ge=1)  # optimizer steps (data wraps into further epochs)
    lr: float = Field(3e-3, gt=0)  # peak AdamW lr; small models tolerate large lrs (nanoGPT)
    warmup_steps: int = Field(10, ge=0)  # linear warmup from 0; then cosine decay
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine floor as a fraction of lr (Chinchilla)
    weight_decay: float = Field(0.1, ge=0)  # AdamW decoupled decay (GPT-3/Llama)
    grad_clip: float = Field(1.0, gt=0)  # global grad-norm clip (GPT-3/Llama)
    seed: int = Field(0, ge=0)  # init, data order and RNGs
    zero_stage: int = Field(1, ge=0, le=3)  # ZeRO stage; overrides the JSON's
    deepspeed_config: str | None = None  # infra/deepspeed/<name>.json or a path; None:
    # zero<stage>_cpu on CPU, zero1_bf16_gpu on CUDA
    checkpoint_every: int = Field(50, ge=1)  # steps between checkpoints (+ one at the end)
    keep_checkpoints: int = Field(2, ge=1)  # complete tags kept; older ones are deleted
    eval_every: int = Field(50, ge=0)  # steps between validation passes; 0: only at the end
    eval_batches: int = Field(4, ge=1)  # micro-batches of validation per pass (per world)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    deterministic: bool = True  # torch deterministic algorithms: bitwise-reproducible on CPU
    peak_flops: float | None = Field(None, gt=0)  # the device's peak FLOP/s for MFU; None:
    # looked up by GPU name and precision (pipelines.training.models.PEAK_FLOPS); no MFU on CPU
    phases: list[PhaseConfig] = Field(default_factory=list)  # empty: one phase of max_steps;
    # else max_steps is the phases' total

    @model_validator(mode="after")
    def _phases_set_the_total(self):
        if not self.phases:
            return self
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be distinct, got {names}")
        for phase in self.phases[1:]:
            if not phase.restart_optimizer and (phase.lr or phase.warmup_steps is not None):
                raise ValueError(
                    f"phase {phase.name!r} continues the previous schedule "
                    "(restart_optimizer: false), so it cannot set lr or warmup_steps"
                )
        total = sum(p.steps for p in self.phases)
        if "max_steps" in self.model_fields_set and self.max_steps != total:
            raise ValueError(
                f"max_steps {self.max_steps} differs from the phases' total of {total} "
                "steps; leave max_steps out when giving phases"
            )
        self.max_steps = total
        return self

    @property
    def ema_start_step(self) -> int:
        """EMA averages steps ema_start_step+1 .. max_steps (at least the last one); with
        phases, max_steps counts the steps of all of them."""
        span = max(1, math.ceil(self.ema.start_fraction * self.max_steps))
        return self.max_steps - span
