"""Prefect tasks of fine-tuning: examples table, pairs files, one training run per sweep cell
(its own process group, like pretraining), held-out quality, registration with a gate.

``finetune_task(dataset, base, config)`` is the general entry point later stages call to make
their own task model: pairs from a table or an instruction dataset -> LoRA run -> merged
model registered under the stage's name.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task

from pipelines.evaluation import tabledoc
from pipelines.finetune import examples, lora, runs, sweep
from pipelines.finetune.lora import FinetuneConfig
from pipelines.finetune.pairs import write_pair_files
from pipelines.shared.promotion import register_challenger
from pipelines.training import launch
from pipelines.training.loop import METRICS
from pipelines.training.progress import LogFollower, plot_loss_curve
from tasks.common import (
    NO_CACHE_POLICY,
    Progress,
    current_txn_id,
    input_key,
    jsonable,
    lake_task,
    run_step,
    tracked_step,
)

HOUR = 3600


def _workspace(*parts: str) -> Path:
    from infra.settings import load_settings

    return load_settings().home.joinpath(*parts)


@lake_task("make-tabledoc-examples", timeout_seconds=2 * HOUR)
def make_tabledoc_examples(config: examples.SynthConfig, parent_run: str | None = None) -> dict:
    """Synthetic CREATE TABLE -> documentation examples into silver/tabledoc_examples."""
    return run_step(
        "make-tabledoc-examples",
        parent_run,
        config,
        lambda spark: examples.write_tabledoc_examples(spark, config, txn_id=current_txn_id()),
    )


@lake_task("export-pairs", timeout_seconds=HOUR, tags=())
def export_pairs(
    dataset: dict | str, test_fraction: float = 0.1, parent_run: str | None = None
) -> dict:
    """Prompt/response jsonl files for the ranks: from a table manifest with instruction,
    response and split columns (the table's version pinned), or from an instruction dataset
    file/dir (held out by a hash of the instruction)."""
    spark = None
    if isinstance(dataset, dict):
        from infra.spark import get_spark

        spark = get_spark()
    return write_pair_files(dataset, test_fraction, _workspace("finetune", "pairs"), spark)


@lake_task("finetune-model", timeout_seconds=7 * 24 * HOUR)
def finetune_model(
    pairs: dict,
    base: str,
    config: FinetuneConfig,
    ranks: int = 1,
    timeout_s: float = 24 * HOUR,
    parent_run: str | None = None,
) -> dict:
    """One LoRA run in its own process group (auto-resuming), tracked as an MLflow run."""
    from prefect import get_run_logger

    from infra import registry

    base_dir = registry.model_dir(base)
    out = runs.run_dir(_workspace("runs", "finetune"), config, pairs, input_key(base), ranks)
    name = runs.cell_name(config)
    params = {**jsonable(config), "base": str(base), "ranks": ranks, "run_dir": str(out)}
    with tracked_step(f"finetune {name}", parent_run, params) as run:
        if "table" in pairs["source"]:
            run.log_table(pairs["source"], role="input")
        follower = LogFollower(
            run, get_run_logger(), Progress(f"fine-tuning {name}"), config.max_steps
        )
        started = time.perf_counter()
        summary = launch.launch_finetune(
            config,
            base_dir,
            pairs["train"],
            out,
            eval_file=pairs["test"] if pairs["test_examples"] else None,
            base_ref=str(base),
            ranks=ranks,
            timeout_s=timeout_s,
            on_line=follower,
        )
        follower.flush()
        wall_s = time.perf_counter() - started
        run.log_metrics(
            {
                "trainable_parameters": summary["trainable_parameters"],
                "total_parameters": summary["total_parameters"],
                "wall_s": wall_s,
                **(
                    {"eval_loss": summary["val_loss"]}
                    if summary.get("val_loss") is not None
                    else {}
                ),
            }
        )
        run.log_artifact(plot_loss_curve(out / METRICS, out / "loss_curve.png"))
        return {
            **summary,
            "cell": name,
            "base": str(base),
            "wall_s": wall_s,
            "run_dir": str(out),
            "mlflow_run_id": run.run_id,
            "lora": config.lora.model_dump(mode="json"),
            "base_bits": config.base_bits,
        }


@lake_task("evaluate-tabledoc", timeout_seconds=2 * HOUR)
def evaluate_tabledoc(
    model: str,
    pairs: dict,
    limit: int,
    max_new_tokens: int,
    run_id: str | None = None,
    structured: bool = False,
) -> dict:
    """Held-out quality of a model dir or models:/ URI; logged into ``run_id`` when given.
    ``structured``: the response template filled field by field (pipelines.evaluation.tabledoc)."""
    from infra import registry, tracking

    result = tabledoc.evaluate_held_out(
        registry.model_dir(model), pairs["test"], limit, max_new_tokens, structured=structured
    )
    if run_id:
        run = tracking.Run(run_id)
        metrics = ("format_validity", "column_coverage", "rouge_l", "over_context")
        run.log_metrics({k: result[k] for k in metrics})
        run.log_dict({"samples": result["samples"]}, "fixed_prompt_generations.json")
    return {**result, "model": str(model)}


@lake_task("register-finetuned", timeout_seconds=2 * HOUR)
def register_finetuned(
    best: dict,
    quality: dict,
    pairs: dict,
    name: str,
    metric: str,
    limit: int,
    max_new_tokens: int,
    parent_run: str | None = None,
    structured: bool = False,
) -> dict:
    """Register the merged winner (and its adapter as an artifact pointing at its base); move
    ``champion`` only when it beats the current champion on ``metric`` on the same items."""
    from prefect import get_run_logger

    from infra import registry, tracking

    champion = registry.alias_version(name)
    champion_score = None
    if champion is not None:
        champion_dir = registry.model_dir(f"models:/{name}/{champion.version}")
        champion_score = tabledoc.evaluate_held_out(
            champion_dir, pairs["test"], limit, max_new_tokens, structured=structured
        )[metric]
    tracking.Run(best["mlflow_run_id"]).log_artifacts(best["adapter_dir"], "adapter")
    tags = {
        metric: f"{quality[metric]:.6f}",
        "base": best["base"],
        "cell": best["cell"],
        "adapter": "runs:/" + best["mlflow_run_id"] + "/adapter",
        **{f"source.{k}": v for k, v in pairs["source"].items()},
    }
    with tracked_step(f"register {name}", parent_run, {"name": name, "metric": metric}) as run:
        version, decision = register_challenger(
            name,
            best["model_dir"],
            best["mlflow_run_id"],
            {metric: quality[metric]},
            None if champion_score is None else {metric: champion_score},
            tabledoc.champion_rule(metric),
            tags=tags,
            description=f"LoRA fine-tune of {best['base']}",
        )
        promote = decision.promote
        run.set_tags({"model_version": version, "promoted": promote})
    get_run_logger().info(
        "%s version %s (%s %.4f) %s",
        name,
        version,
        metric,
        quality[metric],
        "is the new champion"
        if promote
        else f"stays a challenger (champion: {champion_score:.4f})",
    )
    return {
        "name": name,
        "version": version,
        "uri": f"models:/{name}/{version}",
        "champion": promote,
        metric: quality[metric],
        "champion_score": champion_score,
        "model_dir": best["model_dir"],
    }


@task(name="publish-sweep-summary", timeout_seconds=120, cache_policy=NO_CACHE_POLICY)
def publish_sweep_summary(
    trained: list[dict],
    quality: list[dict],
    skipped: list[dict],
    reference: dict,
    metric: str,
    best: int,
) -> list[dict]:
    """The seed's summary table (r, target modules, base weight bits, quality, parameters
    updated) as a Prefect table artifact, with the references and skipped cells below."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = sweep.summary_rows(trained, quality, best)
    create_table_artifact(
        key="finetune-sweep", table=rows, description=f"LoRA sweep; best by {metric}"
    )
    create_markdown_artifact(
        key="finetune-sweep-report",
        markdown=sweep.report_markdown(rows, reference, skipped, metric, trained[best]["cell"]),
    )
    return rows


def task_model_needed(configured_model, model_name: str, policy: str) -> bool:
    """Whether a stage must make its task model now: only when the stage is configured to use
    ``models:/<model_name>@champion``; ``policy`` always | never | if-missing (no champion)."""
    from infra import registry

    if configured_model != f"models:/{model_name}@champion" or policy == "never":
        return False
    return policy == "always" or registry.alias_version(model_name) is None


def finetune_task(
    dataset: dict | str,
    base: str,
    config: FinetuneConfig,
    model_name: str,
    parent_run: str | None = None,
    test_fraction: float = 0.1,
) -> dict:
    """Make a task model: pairs from ``dataset`` (a table manifest with instruction,
    response, split; or an instruction dataset path) -> LoRA fine-tune of ``base`` -> merged
    model registered as ``model_name``. Champion gate: held-out eval loss, lower wins."""
    from infra import registry

    pairs = export_pairs(dataset, test_fraction, parent_run=parent_run)
    trained = finetune_model(pairs, base, config, parent_run=parent_run)
    loss = trained.get("val_loss")
    champion = registry.alias_version(model_name)
    if champion is not None and champion.run_id == trained["mlflow_run_id"]:
        return {
            "name": model_name,
            "version": str(champion.version),  # a cached rerun
            "uri": f"models:/{model_name}/{champion.version}",
            "champion": True,
            "eval_loss": loss,
            "model_dir": trained["model_dir"],
        }
    version, decision = register_challenger(
        model_name,
        trained["model_dir"],
        trained["mlflow_run_id"],
        {"eval_loss": loss, "pairs": pairs["key"]},
        None if champion is None else lora.champion_metrics(champion.tags),
        lora.CHAMPION_RULE,
        tags={"base": str(base), "eval_loss": loss, "pairs": pairs["key"]},
    )
    promote = decision.promote
    return {
        "name": model_name,
        "version": version,
        "uri": f"models:/{model_name}/{version}",
        "champion": promote,
        "eval_loss": loss,
        "model_dir": trained["model_dir"],
    }
