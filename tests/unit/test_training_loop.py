"""The shared loop with an objective that is not a language model (tests/toy_denoiser.py), in
two phases: phase plans and schedules, then real kills and resumes across the boundary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import toy_denoiser  # tests/ is on sys.path
from pydantic import ValidationError

from pipelines.training.checkpoints import LATEST
from pipelines.training.config import EmaConfig, PhaseConfig, TrainerConfig
from pipelines.training.loop import METRICS
from pipelines.training.phases import lr_multiplier, plan_phases

REPO = Path(__file__).resolve().parents[2]
RANK_ENV = ("GENAI_FAULT", "GENAI_FAULT_SKIP", "RANK", "WORLD_SIZE", "LOCAL_RANK")
RANK_ENV += ("MASTER_ADDR", "MASTER_PORT")


def two_phase_config() -> TrainerConfig:
    """3 steps on short waves, then 4 on long ones at half the lr with no warmup; EMA over the
    last 40 % of all 7 steps: ceil(2.8) = 3 steps, 5 to 7."""
    return TrainerConfig(
        micro_batch=4,
        grad_accum=2,
        lr=1e-2,
        warmup_steps=1,
        seed=5,
        checkpoint_every=2,
        keep_checkpoints=3,
        eval_every=0,
        eval_batches=2,
        ema=EmaConfig(enabled=True, start_fraction=0.4, decay=0.5),
        phases=[
            PhaseConfig(name="short", steps=3),
            PhaseConfig(name="long", steps=4, lr=5e-3, warmup_steps=0),
        ],
    )


def records(out: Path, event: str) -> dict[int, dict]:
    """Records of one event by step; a step run again after a kill: its last record wins."""
    found = {}
    for line in (out / METRICS).read_text().splitlines():
        record = json.loads(line)
        if record["event"] == event:
            found[record["step"]] = record
    return found


def run_rank(config: TrainerConfig, out: Path, fault: str | None = None, skip: int = 0):
    config_file = out.parent / f"{out.name}-config.json"
    config_file.write_text(config.model_dump_json())
    env = {k: v for k, v in os.environ.items() if k not in RANK_ENV}
    env["PYTHONPATH"] = str(REPO)
    # bitwise equality with the in-process reference needs the same thread count
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    if fault:
        env.update(GENAI_FAULT=fault, GENAI_FAULT_SKIP=str(skip))
    script = REPO / "tests" / "toy_denoiser.py"
    return subprocess.run(
        [sys.executable, str(script), "--config", str(config_file), "--out", str(out)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        start_new_session=True,
    )


def test_phases_total_the_steps_and_a_mismatch_or_a_continuing_lr_is_refused():
    assert two_phase_config().max_steps == 7
    assert two_phase_config().ema_start_step == 4
    with pytest.raises(ValidationError, match="differs from the phases' total of 3"):
        TrainerConfig(max_steps=5, phases=[PhaseConfig(name="a", steps=3)])
    with pytest.raises(ValidationError, match="'b' continues the previous schedule"):
        TrainerConfig(
            phases=[
                PhaseConfig(name="a", steps=3),
                PhaseConfig(name="b", steps=2, restart_optimizer=False, lr=1.0),
            ]
        )
    with pytest.raises(ValidationError, match="distinct"):
        TrainerConfig(phases=[PhaseConfig(name="a", steps=1), PhaseConfig(name="a", steps=1)])


def test_a_continuing_phase_extends_the_schedule_and_a_restarting_one_warms_up_again():
    config = TrainerConfig(
        lr=1.0,
        warmup_steps=1,
        min_lr_ratio=0.0,
        phases=[
            PhaseConfig(name="a", steps=3),
            PhaseConfig(name="b", steps=2, restart_optimizer=False),
            PhaseConfig(name="c", steps=3, lr=0.5, warmup_steps=1),
        ],
    )
    plan = plan_phases(config)
    assert [(p.first_step, p.schedule_start, p.schedule_steps) for p in plan] == [
        (0, 0, 5),
        (3, 0, 5),
        (5, 5, 3),
    ]
    multipliers = [round(lr_multiplier(done, plan, 0.0), 6) for done in range(8)]
    # a: warmup 1/2, then cosine over the 5-step segment a+b; c: warmup from half lr again
    assert multipliers == [0.5, 1.0, 0.853553, 0.5, 0.146447, 0.25, 0.5, 0.25]
    one_phase = plan_phases(TrainerConfig(max_steps=4))
    assert [(p.name, p.steps, p.lr_scale) for p in one_phase] == [("train", 4, 1.0)]


@pytest.mark.slow
def test_two_phase_run_killed_in_phase_one_and_at_the_boundary_resumes_bitwise(tmp_path):
    from safetensors.torch import load_file

    config = two_phase_config()
    reference = tmp_path / "reference"
    summary = toy_denoiser.train(config, reference)  # uninterrupted, in this process
    assert summary["steps"] == 7 and summary["samples"] == 7 * 8

    out = tmp_path / "killed"
    latest = out / "checkpoints" / LATEST
    # phase 1's checkpoint at step 2; the boundary's at step 3 (resumed from there, phase 2
    # must restart its optimizer); phase 2's first one at step 4
    for tag in ("step00000002", "step00000003", "step00000004"):
        killed = run_rank(config, out, fault="train.after_checkpoint")
        assert killed.returncode == -9, killed.stderr[-3000:]
        assert latest.read_text() == tag
    resumed = toy_denoiser.train(config, out)  # the last resume in this process: no import
    assert resumed["resumed_from"] == "step00000004" and resumed["steps"] == 7

    steps, expected = records(out, "step"), records(reference, "step")
    assert sorted(steps) == list(range(1, 8))
    assert {s: r["loss"] for s, r in steps.items()} == {s: r["loss"] for s, r in expected.items()}
    # phase 1: warmup 1 then cosine over 3 steps; phase 2: its own peak (half), no warmup,
    # cosine over its 4 steps down to 10 %
    assert [steps[s]["lr"] for s in range(1, 8)] == pytest.approx(
        [5e-3, 1e-2, 5.5e-3, 5e-3, 5e-3 * 0.868198, 5e-3 * 0.55, 5e-3 * 0.231802], rel=1e-5
    )
    assert [s for s, r in steps.items() if r["ema"]] == [5, 6, 7]  # EMA exactly from step 5
    assert all("samples_per_s" in r and r["mfu"] is None for r in steps.values())
    evals, expected_evals = records(out, "eval"), records(reference, "eval")
    assert sorted(evals) == [3, 7]  # at the end of each phase, on that phase's held-out waves
    assert evals == expected_evals
    ema, expected_ema = (
        load_file(out / "ema.safetensors"),
        load_file(reference / "ema.safetensors"),
    )
    assert ema.keys() == expected_ema.keys()
    assert all(ema[k].equal(expected_ema[k]) for k in ema)
    phases = [r["phase"] for r in map(json.loads, (out / METRICS).read_text().splitlines())
              if r["event"] == "phase"]  # fmt: skip
    assert phases[0] == "short" and phases[-1] == "long"


def test_the_log_follower_reports_either_throughput():
    from pipelines.training.progress import LogFollower

    class Run:
        logged: list = []

        def log_metrics(self, metrics, step):
            self.logged.append((step, metrics))

    class Logger:
        lines: list = []

        def info(self, fmt, *args):
            self.lines.append(fmt % args)

    run, logger = Run(), Logger()
    follow = LogFollower(run, logger, lambda fraction: None, max_steps=2, log_every=1)
    follow(json.dumps({"event": "step", "step": 1, "loss": 0.5, "lr": 1e-3, "samples_per_s": 80}))
    follow(json.dumps({"event": "step", "step": 2, "loss": 0.4, "lr": 1e-3, "tokens_per_s": 900}))
    follow.flush()
    assert logger.lines == [
        "step 1/2 loss 0.5000 lr 1.00e-03 80 samples/s",
        "step 2/2 loss 0.4000 lr 1.00e-03 900 tokens/s",
    ]
    assert run.logged[0] == (1, {"loss": 0.5, "lr": 1e-3, "samples_per_s": 80})
