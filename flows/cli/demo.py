"""`genai demo`: the lifecycle at demo scale, reported for a newcomer.

The console is quiet by default — each stage's header and its one-line result, then what
each stage made — and the full log (every library's INFO lines, Prefect's run logs,
tracebacks) goes to ``$GENAI_HOME/logs/demo-<timestamp>.log``; ``-v`` shows it live.
Stage times are printed against DESIGN's budgets and written to
``$GENAI_HOME/reports/demo_times.json`` (read by ``benchmarks/demo.py``); a slow machine is
noted, never a failure. A failed stage fails the demo with its stage, task and log named."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from flows.cli.failures import report_failure
from flows.cli.printing import (
    print_pretrain_result,
    print_rag_result,
    print_review_result,
    print_sweep_result,
)

TIMES_REPORT = Path("reports") / "demo_times.json"  # under $GENAI_HOME
CONSOLE_LOGGERS = ("flows.lifecycle",)  # their INFO lines are the quiet console's headers
PRINTERS = {
    "pretraining": print_pretrain_result,
    "fine-tuning": print_sweep_result,
    "review summaries": print_review_result,
    "RAG": print_rag_result,
}


# Libraries that write to the console themselves, past the logging filter: quiet unless -v
# (the training subprocesses inherit the environment).
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bars
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # MLflow's "Creating initial MLflow database tables"
}


def quiet_library_output() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:  # already imported: its bar setting was read then
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def run_demo(args) -> int:
    """The whole lifecycle (or ``--stages``) at demo scale; exit 0 whenever every stage
    completed, however long it took."""
    if not args.verbose:
        quiet_library_output()
    from flows.lifecycle import LifecycleConfig, StageFailedError, lifecycle
    from infra.logs import configure_logging
    from infra.settings import load_settings

    home = load_settings().home
    log_path = home / "logs" / f"demo-{datetime.datetime.now():%Y%m%d-%H%M%S}.log"
    configure_logging(
        verbose=args.verbose,
        log_file=log_path,
        console_tracebacks=args.verbose,
        console_only=None if args.verbose else CONSOLE_LOGGERS,
    )
    print(f"full log: {log_path}" + ("" if args.verbose else "  (-v shows it here)"))
    config = LifecycleConfig.model_validate(  # each stage by its preset's name
        {
            "prepare_corpus": args.preset,
            "pretrain": args.pretrain_preset,
            "finetune": args.finetune_preset,
            "review_summaries": args.reviews_preset,
            "rag": args.rag_preset,
            "stages": parse_stages(args.stages),
        }
    )
    started = time.perf_counter()
    try:
        result = lifecycle(config)
    except StageFailedError as failed:
        print(f"error: the demo stopped in stage {failed.stage!r}", file=sys.stderr)
        code = report_failure(failed.__cause__ or failed, args.verbose)
        print(f"  the full log: {log_path}", file=sys.stderr)
        return code
    total = time.perf_counter() - started
    for stage, output in result["outputs"].items():
        if stage in PRINTERS:
            PRINTERS[stage](output)
    report = times_report(result["stages"], total)
    for line in format_times(report):
        print(line)
    write_times_report(home / TIMES_REPORT, report)
    print(f"what it made, on one page: {result['report']}")
    return 0


def parse_stages(text: str | None) -> list[str] | None:
    """``--stages rag,reviews`` as a list (the lifecycle adds what they build on)."""
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def times_report(stages: dict[str, float], total_s: float) -> dict:
    """Each stage's seconds against its budget, the total, the machine's load, the commit."""
    from flows.lifecycle import STAGE_BUDGETS_S, TOTAL_BUDGET_S

    return {
        "total_s": round(total_s, 1),
        "budget_s": TOTAL_BUDGET_S,
        "over": total_s > TOTAL_BUDGET_S,
        "stages": {
            name: {
                "s": round(seconds, 1),
                "budget_s": STAGE_BUDGETS_S[name],
                "over": seconds > STAGE_BUDGETS_S[name],
            }
            for name, seconds in stages.items()
        },
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "commit": current_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def format_times(report: dict) -> list[str]:
    """The stage-time table, with a note under it when the machine was slower than DESIGN's."""
    lines = ["", f"{'stage':<24} {'seconds':>8} {'budget':>8}"]
    for name, stage in report["stages"].items():
        mark = "  over" if stage["over"] else ""
        lines.append(f"{name:<24} {stage['s']:8.1f} {stage['budget_s']:8.0f}{mark}")
    mark = "  over" if report["over"] else ""
    lines.append(
        f"{'total (incl. start-up)':<24} {report['total_s']:8.1f} {report['budget_s']:8.0f}{mark}"
    )
    over = [name for name, stage in report["stages"].items() if stage["over"]]
    if over or report["over"]:
        load = ", ".join(f"{x:.2f}" for x in report["loadavg"])
        lines.append(
            f"note: slower than DESIGN's budget for 2 unshared cores (load average {load} on "
            f"{report['cpus']} cores); every stage completed. benchmarks/demo.py records times."
        )
    return lines


def write_times_report(path: Path, report: dict) -> None:
    """Written whole or not at all (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)


def current_commit() -> str | None:
    """The checkout's commit, when the project runs from a git checkout."""
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
