"""Following a training run from outside its ranks: rank 0's JSON log records become MLflow
metrics (batched), readable log lines and progress; the loss curve becomes a PNG."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

THROUGHPUTS = ("tokens_per_s", "samples_per_s")  # what an objective counts (text, images)
STEP_METRICS = ("loss", "lr", "grad_norm", *THROUGHPUTS, "mfu")
EVAL_METRICS = ("val_loss", "val_bpb")
FLUSH_EVERY_S = 5.0  # MLflow gets step metrics in batches at most this far apart


class LogFollower:
    """Turns the ranks' log lines into MLflow metrics, Prefect log lines and progress."""

    def __init__(
        self, run, logger, progress: Callable[[float], None], max_steps: int, log_every: int = 10
    ):
        self.run, self.logger, self.progress = run, logger, progress
        self.max_steps, self.log_every = max_steps, log_every
        self.pending: list[tuple[dict, int]] = []
        self.flushed_at = time.monotonic()

    def __call__(self, line: str) -> None:
        record = _json_record(line)
        if record is None:
            if line.strip():
                self.logger.info(line)
            return
        event, step = record.get("event"), int(record.get("step") or 0)
        if event == "step":
            self.pending.append(({k: record.get(k) for k in STEP_METRICS}, step))
            if step % self.log_every == 0 or step == self.max_steps:
                key = next((k for k in THROUGHPUTS if record.get(k) is not None), None)
                self.logger.info(
                    "step %d/%d loss %.4f lr %.2e%s",
                    step,
                    self.max_steps,
                    record["loss"],
                    record["lr"],
                    f" {record[key]:.0f} {key.removesuffix('_per_s')}/s" if key else "",
                )
                self.progress(step / self.max_steps)
        elif event == "eval":
            self.pending.append(({k: record.get(k) for k in EVAL_METRICS}, step))
            bpb = record.get("val_bpb")
            self.logger.info(
                "step %d validation loss %.4f%s",
                step,
                record["val_loss"],
                f", {bpb:.4f} bits/byte" if bpb is not None else "",
            )
        elif event == "start":
            self.logger.info(
                "training starts at step %d of %d (world size %d%s)",
                step,
                record["max_steps"],
                record["world_size"],
                f", resumed from {record['resumed_from']}" if record.get("resumed_from") else "",
            )
        if event != "step" or time.monotonic() - self.flushed_at > FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        for metrics, step in self.pending:
            self.run.log_metrics({k: v for k, v in metrics.items() if v is not None}, step=step)
        self.pending.clear()
        self.flushed_at = time.monotonic()


def _json_record(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "event" in record else None


def plot_loss_curve(metrics_file: Path, png: Path) -> Path:
    """Training loss per step and validation loss per evaluation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a worker
    import matplotlib.pyplot as plt

    steps, evals = {}, {}
    for line in Path(metrics_file).read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "step":
            steps[record["step"]] = record["loss"]  # a re-run step's last record wins
        elif record["event"] == "eval":
            evals[record["step"]] = record["val_loss"]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(list(steps), list(steps.values()), label="train loss", linewidth=1)
    if evals:
        axes.plot(list(evals), list(evals.values()), "o-", label="validation loss")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (nats/token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
