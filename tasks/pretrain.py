"""Prefect tasks of pretraining: tokenizer, token shards, the training launch, registration.

Training itself never runs in the task's process: ``pipelines.launch`` starts the ranks in
their own process group and the task follows their log, turning rank 0's JSON records into
MLflow metrics and Prefect progress as they arrive.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipelines import launch, lm_metrics, tokens
from pipelines.pretrain import METRICS, PretrainConfig
from tasks.common import Progress, jsonable, lake_task, tracked_step
from tasks.training import LogFollower, plot_loss_curve

HOUR = 3600


def _workspace(*parts: str) -> Path:
    from infra.settings import load_settings

    return load_settings().home.joinpath(*parts)


@lake_task("train-tokenizer", "pipelines.tokens", timeout_seconds=2 * HOUR)
def train_tokenizer(mix: dict, config: tokens.TokenizerConfig, val_fraction: float, seed: int,
                    parent_run: str | None = None) -> dict:
    """Byte-level BPE on the mix's train documents; the tokenizer dir is logged to MLflow."""
    from infra.spark import get_spark

    with tracked_step("train-tokenizer", parent_run, config) as run:
        summary = tokens.tokenizer_from_table(get_spark(), mix, config, _workspace("tokenizers"),
                                              val_fraction, seed)
        run.log_table(mix, role="input")
        run.log_metrics({"vocab_size": summary["vocab_size"], "documents": summary["documents"],
                         "text_bytes": summary["text_bytes"]})
        run.log_artifacts(summary["dir"], "tokenizer")
        return {**summary, "mlflow_run_id": run.run_id}


@lake_task("build-token-shards", "pipelines.tokens", timeout_seconds=4 * HOUR)
def build_token_shards(mix: dict, tokenizer: dict, seq_len: int, val_fraction: float, seed: int,
                       parent_run: str | None = None) -> dict:
    """Tokenize and pack the mix into train/validation shards (reused when already built)."""
    from infra.spark import get_spark

    params = {"seq_len": seq_len, "val_fraction": val_fraction, "seed": seed,
              "tokenizer_hash": tokenizer["hash"]}
    with tracked_step("build-token-shards", parent_run, params) as run:
        summary = tokens.build_token_shards(get_spark(), mix, tokenizer["dir"],
                                            _workspace("tokens"), seq_len, val_fraction, seed)
        run.log_table(mix, role="input")
        run.log_metrics({f"{split}.{k}": v for split, info in summary["splits"].items()
                         for k, v in info.items()})
        return {**summary, "mlflow_run_id": run.run_id}


def run_dir(config: PretrainConfig, shards: dict, ranks: int) -> Path:
    """Where a training run lives: a pure function of what its trajectory depends on (config,
    data, world size) — not of the code — so a rerun after a fix resumes the same run."""
    payload = {"config": config.model_dump(mode="json"), "shards": shards["cache_key"],
               "ranks": ranks}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return _workspace("runs", "pretrain", f"{config.preset}-{digest}")


@lake_task("pretrain-model", "pipelines.pretrain", timeout_seconds=7 * 24 * HOUR)
def pretrain_model(shards: dict, tokenizer: dict, config: PretrainConfig, ranks: int = 1,
                   hostfile: str | None = None, timeout_s: float = 24 * HOUR,
                   parent_run: str | None = None) -> dict:
    """Train (or resume) in a separate process group; metrics stream into MLflow.

    The launch's own timeout (``timeout_s``) is the one that bites: it kills the process
    group, so a dead or hung rank fails the task, and Prefect's retry — or a flow rerun —
    resumes from the last complete checkpoint in the same run dir.
    """
    from prefect import get_run_logger

    out = run_dir(config, shards, ranks)
    params = {**jsonable(config), "ranks": ranks, "hostfile": hostfile or "",
              "run_dir": str(out), "shards": shards["dir"]}
    with tracked_step("pretrain-model", parent_run, params) as run:
        run.log_table(shards["table"], role="input")
        follower = LogFollower(run, get_run_logger(), Progress("pretraining"), config.max_steps)
        summary = launch.launch_training(config, shards["dir"], out, ranks=ranks,
                                         hostfile=hostfile, timeout_s=timeout_s,
                                         on_line=follower, tokenizer_dir=tokenizer["dir"])
        follower.flush()
        baseline = lm_metrics.unigram_baseline(shards["dir"])
        run.log_metrics({**baseline, "tokens": summary["tokens"], "steps": summary["steps"]})
        if summary.get("val_loss") is not None:
            run.log_metrics({"val_loss_below_unigram":
                             baseline["unigram_val_loss"] - summary["val_loss"]})
        run.log_artifact(plot_loss_curve(out / METRICS, out / "loss_curve.png"))
        final = summary.get("ema_model_dir") or summary["model_dir"]
        return {**summary, **baseline, "final_model_dir": final, "run_dir": str(out),
                "seq_len": config.seq_len, "mlflow_run_id": run.run_id}


@lake_task("register-base-model", "pipelines.lm_metrics", timeout_seconds=2 * HOUR)
def register_base_model(trained: dict, shards: dict, name: str = "genai-base",
                        parent_run: str | None = None) -> dict:
    """Register the exported model; move ``champion`` to it only when its bits per byte on the
    pinned validation documents beat the current champion's, scored on the same text."""
    from prefect import get_run_logger

    from infra import registry

    existing = registry.version_with_tags(name, {"run_dir": trained["run_dir"],
                                                 "steps": str(trained["steps"])})
    if existing is not None:  # the same finished run, exported again (e.g. after a code change)
        return {"name": name, "version": str(existing.version),
                "uri": f"models:/{name}/{existing.version}",
                "champion": registry.CHAMPION in (existing.aliases or []),
                "val_bpb": float(existing.tags["val_bpb"]), "champion_val_bpb": None,
                "previous_champion": None, "model_dir": trained["final_model_dir"]}
    texts = lm_metrics.validation_texts(shards["dir"])
    window = int(trained["seq_len"])
    bpb = lm_metrics.bits_per_byte(trained["final_model_dir"], texts, window=window)
    champion = registry.alias_version(name)
    champion_bpb = None
    if champion is not None:
        champion_bpb = lm_metrics.bits_per_byte(registry.model_dir(f"models:/{name}/"
                                                                   f"{champion.version}"),
                                                texts, window=window)
    promote = champion_bpb is None or bpb < champion_bpb
    tags = {"val_bpb": f"{bpb:.6f}", "validation_shards": shards["cache_key"],
            "run_dir": trained["run_dir"],
            "steps": trained["steps"], "tokens": trained["tokens"]}
    with tracked_step("register-base-model", parent_run, {"name": name}) as run:
        version = registry.register_model_dir(
            name, trained["final_model_dir"], trained["mlflow_run_id"], tags=tags,
            description="Base LLM pretrained by the pretrain flow")
        if promote:
            registry.set_alias(name, version)
        run.log_metrics({"val_bpb": bpb, **({"champion_val_bpb": champion_bpb}
                                            if champion_bpb is not None else {})})
        run.set_tags({"model_version": version, "promoted": promote})
    verdict = "is the new champion" if promote else \
        f"stays a challenger ({bpb:.4f} >= champion v{champion.version}'s {champion_bpb:.4f})"
    get_run_logger().info("%s version %s: %.4f bits/byte on %d validation texts; %s", name,
                          version, bpb, len(texts), verdict)
    return {"name": name, "version": version, "uri": f"models:/{name}/{version}",
            "champion": promote, "val_bpb": bpb, "champion_val_bpb": champion_bpb,
            "previous_champion": None if champion is None else str(champion.version),
            "model_dir": trained["final_model_dir"]}
