"""Prefect tasks of pretraining: tokenizer, token shards, the training launch, registration.

Training itself never runs in the task's process: ``pipelines.training.launch`` starts the ranks in
their own process group and the task follows their log, turning rank 0's JSON records into
MLflow metrics and Prefect progress as they arrive.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from pipelines.pretrain import inputs, registration, tokens
from pipelines.pretrain import run as pretrain_run
from pipelines.pretrain import tokenizer as tokenizers
from pipelines.pretrain.train import PretrainConfig
from tasks.common import NO_CACHE_POLICY, Progress, jsonable, lake_task, tracked_step

HOUR = 3600


@task(name="current-mix", timeout_seconds=10 * 60, cache_policy=NO_CACHE_POLICY)
def current_mix(lake: Path | str | None = None) -> dict:
    """The mix table's current version (never cached: the table moves on)."""
    from infra.settings import load_settings
    from infra.spark import get_spark

    return inputs.current_mix(get_spark(), Path(lake) if lake else load_settings().lake)


def _workspace(*parts: str) -> Path:
    from infra.settings import load_settings

    return load_settings().home.joinpath(*parts)


@lake_task("train-tokenizer", timeout_seconds=2 * HOUR)
def train_tokenizer(
    mix: dict,
    config: tokenizers.TokenizerConfig,
    val_fraction: float,
    seed: int,
    parent_run: str | None = None,
) -> dict:
    """Byte-level BPE on the mix's train documents; the tokenizer dir is logged to MLflow."""
    from infra.spark import get_spark

    with tracked_step("train-tokenizer", parent_run, config) as run:
        summary = tokenizers.tokenizer_from_table(
            get_spark(), mix, config, _workspace("tokenizers"), val_fraction, seed
        )
        run.log_table(mix, role="input")
        run.log_metrics(
            {
                "vocab_size": summary["vocab_size"],
                "documents": summary["documents"],
                "text_bytes": summary["text_bytes"],
            }
        )
        run.log_artifacts(summary["dir"], "tokenizer")
        return {**summary, "mlflow_run_id": run.run_id}


@lake_task("build-token-shards", timeout_seconds=4 * HOUR)
def build_token_shards(
    mix: dict,
    tokenizer: dict,
    seq_len: int,
    val_fraction: float,
    seed: int,
    parent_run: str | None = None,
) -> dict:
    """Tokenize and pack the mix into train/validation shards (reused when already built)."""
    from infra.spark import get_spark

    params = {
        "seq_len": seq_len,
        "val_fraction": val_fraction,
        "seed": seed,
        "tokenizer_hash": tokenizer["hash"],
    }
    with tracked_step("build-token-shards", parent_run, params) as run:
        summary = tokens.build_token_shards(
            get_spark(), mix, tokenizer["dir"], _workspace("tokens"), seq_len, val_fraction, seed
        )
        run.log_table(mix, role="input")
        run.log_metrics(
            {
                f"{split}.{k}": v
                for split, info in summary["splits"].items()
                for k, v in info.items()
            }
        )
        return {**summary, "mlflow_run_id": run.run_id}


@lake_task("pretrain-model", timeout_seconds=7 * 24 * HOUR)
def pretrain_model(
    shards: dict,
    tokenizer: dict,
    config: PretrainConfig,
    ranks: int = 1,
    hostfile: str | None = None,
    timeout_s: float = 24 * HOUR,
    parent_run: str | None = None,
) -> dict:
    """Train (or resume) in a separate process group; metrics stream into MLflow.

    The launch's own timeout (``timeout_s``) is the one that bites: it kills the process
    group, so a dead or hung rank fails the task, and Prefect's retry — or a flow rerun —
    resumes from the last complete checkpoint in the same run dir.
    """
    from prefect import get_run_logger

    out = pretrain_run.run_dir(_workspace("runs"), config, shards, ranks)
    params = {
        **jsonable(config),
        "ranks": ranks,
        "hostfile": hostfile or "",
        "run_dir": str(out),
        "shards": shards["dir"],
    }
    with tracked_step("pretrain-model", parent_run, params) as run:
        return pretrain_run.train_base_model(
            config,
            shards,
            tokenizer,
            out,
            run,
            get_run_logger(),
            Progress("pretraining"),
            ranks=ranks,
            hostfile=hostfile,
            timeout_s=timeout_s,
        )


@lake_task("register-base-model", timeout_seconds=2 * HOUR)
def register_base_model(
    trained: dict, shards: dict, name: str = "genai-base", parent_run: str | None = None
) -> dict:
    """Register the exported model; move ``champion`` to it only when its bits per byte on the
    pinned validation documents beat the current champion's, scored on the same text."""
    from prefect import get_run_logger

    return registration.register_base_model(
        trained,
        shards,
        name,
        get_run_logger(),
        open_run=lambda: tracked_step("register-base-model", parent_run, {"name": name}),
    )


@task(name="publish-pretrain-report", timeout_seconds=120, cache_policy=NO_CACHE_POLICY)
def publish_pretrain_report(result: dict) -> str:
    """The flow's artifacts: the base model's validation loss beside the unigram baseline (a
    table), what that means at this scale and where the model was registered (markdown)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from pipelines.shared.lifecycle_report import pretrain_quality

    rows, sentence = pretrain_quality(result)
    create_table_artifact(
        key="pretrain-quality",
        table=[dict(zip(rows[0], row, strict=True)) for row in rows[1:]],
        description="pretrain: the base model beside the add-one unigram baseline",
    )
    registered = result.get("registered")
    if registered:
        role = "the new champion" if registered["champion"] else "a challenger"
        sentence += (
            f"\n\nRegistered as `{registered['uri']}`, {role} "
            f"({registered['val_bpb']:.4f} bits/byte on the validation documents)."
        )
    create_markdown_artifact(
        key="pretrain-report", markdown=sentence, description="pretrain: what was trained"
    )
    return sentence
