"""A run as consecutive phases (e.g. two image resolutions), each with its own data and steps.

The weights carry over; a phase that restarts its optimizer gets fresh AdamW moments and its
own warmup + cosine schedule, one that does not continues the previous phase's. The lr
multiplier is a pure function of the global step, so a run resumed anywhere, the phase
boundary included, follows exactly the schedule an uninterrupted run follows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.training.config import PhaseConfig, TrainerConfig

SINGLE_PHASE = "train"  # the name of the one phase of a config without phases


@dataclass(frozen=True)
class Phase:
    index: int
    name: str
    first_step: int  # global optimizer steps done before this phase
    steps: int
    restart_optimizer: bool
    schedule_start: int  # first step of the schedule segment this phase belongs to
    schedule_steps: int  # steps of that segment (this phase and the ones continuing it)
    lr_scale: float  # the segment's peak lr over the run's lr (the engine's base lr)
    warmup_steps: int

    @property
    def end_step(self) -> int:
        return self.first_step + self.steps

    def seed(self, run_seed: int) -> int:
        """The data order's seed: phase 0 keeps the run's seed, so a one-phase run's order
        is the one it always was."""
        return run_seed + self.index


def plan_phases(config: TrainerConfig) -> list[Phase]:
    """The run's phases in order; a config without phases is one phase of max_steps."""
    specs = config.phases or [PhaseConfig(name=SINGLE_PHASE, steps=config.max_steps)]
    rows, first = [], 0
    for index, spec in enumerate(specs):
        restarts = index == 0 or spec.restart_optimizer
        if restarts:  # a new schedule segment; continuing phases inherit its lr and warmup
            segment_start = first
            lr = spec.lr or config.lr
            warmup = config.warmup_steps if spec.warmup_steps is None else spec.warmup_steps
        rows.append((index, spec, first, restarts, segment_start, lr, warmup))
        first += spec.steps
    segment_steps = Counter()
    for _, spec, _, _, segment_start, _, _ in rows:
        segment_steps[segment_start] += spec.steps
    return [
        Phase(
            index=index,
            name=spec.name,
            first_step=first,
            steps=spec.steps,
            restart_optimizer=restarts,
            schedule_start=segment_start,
            schedule_steps=segment_steps[segment_start],
            lr_scale=lr / config.lr,
            warmup_steps=warmup,
        )
        for index, spec, first, restarts, segment_start, lr, warmup in rows
    ]


def phase_at(plan: list[Phase], done: int) -> Phase:
    """The phase that the step after ``done`` optimizer steps belongs to."""
    for phase in plan:
        if done < phase.end_step:
            return phase
    return plan[-1]


def lr_multiplier(done: int, plan: list[Phase], min_lr_ratio: float) -> float:
    """The engine's lr multiplier for the step after ``done`` steps (LambdaLR's function)."""
    phase = phase_at(plan, done)
    local = lr_schedule(
        done - phase.schedule_start, phase.warmup_steps, phase.schedule_steps, min_lr_ratio
    )
    return local if phase.lr_scale == 1.0 else phase.lr_scale * local


def lr_schedule(done: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """The lr multiplier for the step after ``done`` optimizer steps (nanoGPT's schedule).

    Linear warmup that never trains at lr 0 ((done+1)/(warmup+1)), then cosine from 1 down
    to ``min_lr_ratio`` at ``max_steps``.
    """
    if done < warmup_steps:
        return (done + 1) / (warmup_steps + 1)
    progress = min(1.0, (done - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def phase_data(data, phase: Phase, what: str = "training data"):
    """This phase's data: ``data`` itself, or its entry by phase name when it is a mapping."""
    if not isinstance(data, Mapping):
        return data
    if phase.name not in data:
        raise KeyError(f"no {what} for phase {phase.name!r}; given: {sorted(data)}")
    return data[phase.name]


def reset_optimizer_state(engine) -> None:
    """Fresh optimizer moments (AdamW's first step again); the weights stay as they are.

    DeepSpeed wraps the torch optimizer (ZeRO's partitioned optimizers hold it as
    ``.optimizer``); the innermost one's per-parameter state is what restarts."""
    optimizer = engine.optimizer
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    optimizer.state.clear()
