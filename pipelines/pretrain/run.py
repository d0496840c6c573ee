"""One pretraining run from the outside: its run dir, the launch of its ranks in their own
process group with their log followed into MLflow, and what the run is judged by (the
add-one unigram baseline on the same validation tokens, the loss curve)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from infra.faults import fault_point
from pipelines.pretrain import lm_metrics
from pipelines.pretrain.train import PretrainConfig
from pipelines.training import launch
from pipelines.training.loop import METRICS
from pipelines.training.progress import LogFollower, plot_loss_curve


def run_dir(runs_root: Path, config: PretrainConfig, shards: dict, ranks: int) -> Path:
    """Where a training run lives: a pure function of what its trajectory depends on (config,
    data, world size, the code the ranks run), so a rerun after a fix elsewhere (the task,
    the registration) resumes the same run, and changed training code starts a new one."""
    from infra.fingerprints import code_fingerprint

    payload = {
        "config": config.model_dump(mode="json"),
        "shards": shards["cache_key"],
        "ranks": ranks,
        "code": code_fingerprint("pipelines.pretrain.train"),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return Path(runs_root) / "pretrain" / f"{config.preset}-{digest}"


def train_base_model(
    config: PretrainConfig,
    shards: dict,
    tokenizer: dict,
    out: Path,
    run,
    logger,
    progress: Callable[[float], None],
    ranks: int = 1,
    hostfile: str | None = None,
    timeout_s: float = 86400,
) -> dict:
    """Train (or resume) in ``out``; metrics stream into ``run`` (an MLflow step run) as the
    ranks log them. The launch's timeout kills the process group, so a hung rank fails the
    call and a rerun resumes from the last complete checkpoint in the same run dir."""
    fault_point("pretrain.start")
    run.log_table(shards["table"], role="input")
    follower = LogFollower(run, logger, progress, config.max_steps)
    summary = launch.launch_training(
        config,
        shards["dir"],
        out,
        ranks=ranks,
        hostfile=hostfile,
        timeout_s=timeout_s,
        on_line=follower,
        tokenizer_dir=tokenizer["dir"],
    )
    follower.flush()
    baseline = lm_metrics.unigram_baseline(shards["dir"])
    run.log_metrics({**baseline, "tokens": summary["tokens"], "steps": summary["steps"]})
    if summary.get("val_loss") is not None:
        run.log_metrics(
            {"val_loss_below_unigram": baseline["unigram_val_loss"] - summary["val_loss"]}
        )
    run.log_artifact(plot_loss_curve(out / METRICS, out / "loss_curve.png"))
    final = summary.get("ema_model_dir") or summary["model_dir"]
    return {
        **summary,
        **baseline,
        "final_model_dir": final,
        "run_dir": str(out),
        "seq_len": config.seq_len,
        "mlflow_run_id": run.run_id,
    }
