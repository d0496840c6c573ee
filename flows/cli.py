"""The `genai` command: demo, stage runs, local services.

The workspace environment is applied before Prefect or MLflow is imported (they read it at
import), and a Prefect server already running on 127.0.0.1:4200 (`make up`) is used when
present, so runs made here show up in its UI; otherwise Prefect's temporary local server
runs on the same SQLite database under the workspace.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from infra.settings import apply_environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genai", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the whole lifecycle at demo scale")
    demo.add_argument("--preset", default="demo_minhash_cpu", help="prepare_corpus preset")
    demo.add_argument("--pretrain-preset", default="demo_cpu", help="pretrain preset")
    run = commands.add_parser("prepare-corpus", help="run the prepare-corpus flow")
    run.add_argument("--preset", default="demo_minhash_cpu")
    train = commands.add_parser("pretrain", help="run the pretrain flow on the current mix")
    train.add_argument("--preset", default="demo_cpu", help="configs/pretrain/<preset>.yaml")
    commands.add_parser("up", help="start Prefect server + worker + MLflow UI, deploy flows")
    commands.add_parser("down", help="stop what `up` started")
    args = parser.parse_args(argv)

    apply_environment()
    from infra.prefect import services

    if args.command == "up":
        return services.up()
    if args.command == "down":
        return services.down()
    services.use_running_server()
    if args.command == "demo":
        return run_demo(args.preset, args.pretrain_preset)
    if args.command == "pretrain":
        return run_pretrain(args.preset)
    return run_prepare_corpus(args.preset)


def run_demo(preset: str, pretrain_preset: str) -> int:
    from flows.lifecycle import STAGE_BUDGETS_S, TOTAL_BUDGET_S, LifecycleConfig, lifecycle
    from flows.prepare_corpus import PrepareCorpusConfig
    from flows.pretrain import PretrainFlowConfig
    from pipelines.config import load_preset

    config = LifecycleConfig(
        prepare_corpus=load_preset(PrepareCorpusConfig, "prepare_corpus", preset),
        pretrain=load_preset(PretrainFlowConfig, "pretrain", pretrain_preset))
    started = time.perf_counter()
    result = lifecycle(config)
    total = time.perf_counter() - started
    print_pretrain_result(result["outputs"]["pretraining"])
    print("\nstage                     seconds   budget")
    over = []
    for stage, seconds in result["stages"].items():
        budget = STAGE_BUDGETS_S.get(stage)
        print(f"{stage:<24} {seconds:8.1f} {budget:8.0f}")
        if budget and seconds > budget:
            over.append(f"{stage} took {seconds:.0f} s, budget {budget} s")
    print(f"{'total (incl. start-up)':<24} {total:8.1f} {TOTAL_BUDGET_S:8.0f}")
    if total > TOTAL_BUDGET_S:
        over.append(f"the lifecycle took {total:.0f} s, budget {TOTAL_BUDGET_S} s")
    for line in over:
        print(f"OVER BUDGET: {line}", file=sys.stderr)
    return 1 if total > TOTAL_BUDGET_S else 0


def print_pretrain_result(result: dict) -> None:
    """Where the base model and its MLflow runs are, and how it compares with a unigram model."""
    from infra import tracking

    trained, registered = result["trained"], result.get("registered", {})
    print("\nbase model")
    print(f"  model dir         {trained['final_model_dir']}")
    if registered:
        role = "champion" if registered["champion"] else "challenger (champion kept)"
        print(f"  registered        {registered['uri']} ({role})")
    print(f"  MLflow run        {tracking.run_url(trained['mlflow_run_id'])}")
    print(f"  validation loss   {trained['val_loss']:.3f} nats/token "
          f"(add-one unigram {trained['unigram_val_loss']:.3f}), "
          f"{trained['val_bpb']:.3f} bits/byte (unigram {trained['unigram_val_bpb']:.3f})")


def run_pretrain(preset: str) -> int:
    from flows.pretrain import PretrainFlowConfig, pretrain
    from pipelines.config import load_preset

    result = pretrain(load_preset(PretrainFlowConfig, "pretrain", preset))
    print_pretrain_result(result)
    return 0


def run_prepare_corpus(preset: str) -> int:
    from flows.prepare_corpus import PrepareCorpusConfig, prepare_corpus
    from pipelines.config import load_preset

    manifest = prepare_corpus(load_preset(PrepareCorpusConfig, "prepare_corpus", preset))
    print(json.dumps(manifest, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
