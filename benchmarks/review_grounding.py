"""Review summaries on real reviews: are they grounded in what customers wrote, and how fast?

Reads review files no one here wrote (by default the Amazon 2018 5-core sets in
../shared/data/amazon_reviews_2018_5core_small, every category there; read by path, the
project never requires them) into a scratch workspace through the stage's own ingestion, and
runs the stage's own Spark job (``update_review_summaries``) once per method, side by side in
this one process:

- ``default``: the method a fresh config uses (SummaryConfig().method);
- ``extractive_baseline``: the extractive summariser (no LLM); when it is the default, the
  default's run is its run (a second run would find the embeddings warm in Spark's workers);
- ``llm``: ``--model`` (default ``models:/genai-reviews@champion`` of $GENAI_HOME) answering
  the prompt with the summary settings of ``--llm-preset`` (default ``demo_lora_cpu``: the
  positions the demo's model reads); reported as skipped, with the reason, when there is no
  such model.

Each path reports ``grounded_share`` (statements the reviews support / statements made, the
grounding check of production), ``invented_figures`` (figures in summaries found in no review
of their group), ``parse_rate``, ``reviews_per_hour`` end to end (the job's wall time) and
``generation_reviews_per_hour`` (the generation phase alone, its summed worker time divided by
the parallelism). The default path's report (attention first) is written with a headless
Chromium screenshot under ``$GENAI_HOME/reports/`` when Chromium is installed. Progress goes
to stderr; the last stdout line is one JSON object.

    python benchmarks/review_grounding.py                          # all three paths
    python benchmarks/review_grounding.py --model none             # no LLM path
    python benchmarks/review_grounding.py --window 30d --data DIR  # other windows, other files
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "amazon_reviews_2018_5core_small"
HOUR = 3600.0


def log(message: str) -> None:
    print(f"[review-grounding {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def resolve_llm(spec: str) -> tuple[str | None, str]:
    """(model dir, id) of the LLM path in the ambient workspace; (None, reason) if absent."""
    if spec == "none":
        return None, "--model none"
    if not spec.startswith("models:/"):
        return (spec, spec) if Path(spec).is_dir() else (None, f"{spec} is not a folder")
    from infra import registry

    try:
        version = registry.resolve(spec)
    except Exception as err:  # no such model or alias in this workspace
        return None, f"{spec}: {err}"
    pinned = f"models:/{version.name}/{version.version}"
    return str(registry.model_dir(pinned)), pinned


def review_files(data: Path) -> list[str]:
    files = sorted(str(p) for p in data.glob("*.json.gz"))
    if not files:
        raise SystemExit(f"no *.json.gz review files in {data}")
    return files


def run_path(spark, name: str, manifest: dict, config, llm_spec, model_id, home: Path) -> dict:
    """One method over every review, in a lake of its own (each path computes every group)."""
    from infra.lake import read_table
    from infra.tracking import PromptRef
    from pipelines.prompts.summaries import update_review_summaries
    from pipelines.prompts.summary_prompt import PROMPT_NAME, PROMPT_TEMPLATE

    root = home / "lakes" / name
    shutil.copytree(Path(manifest["table"]).parents[1], root, dirs_exist_ok=True)
    reviews = {**manifest, "table": str(root / Path(manifest["table"]).relative_to(
        Path(manifest["table"]).parents[1]))}  # fmt: skip
    log(f"{name}: summarising {read_table(spark, reviews).count()} reviews ({config.method})")
    started = time.perf_counter()
    result = update_review_summaries(
        spark,
        reviews,
        config,
        llm_spec=llm_spec,
        model_id=model_id,
        prompt=PromptRef(PROMPT_NAME, 0, PROMPT_TEMPLATE),
        txn_id=f"bench-{name}",
        run_id=None,
        cache_dir=home / "cache" / name,
        root=root,
    )
    seconds = time.perf_counter() - started
    summarised_reviews = _summarised_reviews(spark, result)
    generation = result["phase_seconds"]["worker_generate"] / spark.sparkContext.defaultParallelism
    log(f"{name}: {result['groups']} groups in {seconds:.0f} s")
    return {
        "method": config.method,
        "groups": result["groups"],
        "summarised_groups": result["summarised_groups"],
        "statements": result["statements"],
        "grounded_share": round(result["grounded_share"], 4),
        "invented_figures": result["invented_figures"],
        "parse_rate": round(result["parse_rate"], 4),
        "reviews_per_hour": round(summarised_reviews / seconds * HOUR),
        "generation_reviews_per_hour": round(summarised_reviews / max(generation, 1e-9) * HOUR),
        "phase_seconds": {k: round(v, 2) for k, v in result["phase_seconds"].items()},
        "root": str(root),
    }


def _summarised_reviews(spark, result: dict) -> int:
    from pyspark.sql import functions as F

    rows = spark.read.format("delta").load(result["summaries"]["table"])
    return rows.where("summarised").agg(F.sum("review_count")).first()[0] or 0


def write_report(spark, root: Path, reports: Path) -> dict:
    """The default path's report as HTML, and its first screen as a Chromium screenshot."""
    from pipelines.prompts.report import review_report

    built = review_report(spark, "Review summaries", root)
    reports.mkdir(parents=True, exist_ok=True)
    page = reports / "review_summaries.html"
    page.write_text(built["html"], encoding="utf-8")
    shot = screenshot(page, reports / "review_summaries.png")
    return {"html": str(page), "screenshot": shot, "attention": built["attention"]}


def screenshot(page: Path, out: Path) -> str | None:
    """A 1280x900 headless Chromium screenshot of the page; None without Chromium."""
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        return None
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu"]
    command += ["--window-size=1280,900", f"--screenshot={out}", page.as_uri()]
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    return str(out) if out.is_file() else None


def llm_settings(base, preset: str):
    """The LLM path's summary settings: the preset's (the positions its model was trained
    for), with this run's window and group minimum."""
    import yaml

    from pipelines.prompts.summariser import SummaryConfig

    path = REPO / "configs" / "review_summaries" / f"{preset}.yaml"
    summary = yaml.safe_load(path.read_text()).get("summary", {})
    keep = {"window": base.window, "min_group_reviews": base.min_group_reviews}
    return SummaryConfig(**{**summary, **keep, "method": "llm"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="models:/genai-reviews@champion")
    parser.add_argument("--llm-preset", default="demo_lora_cpu", help="its summary settings")
    parser.add_argument("--window", default="all", help="all | day | week | month | <N>d")
    parser.add_argument("--min-group-reviews", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch workspace")
    args = parser.parse_args()

    llm_dir, llm_id = resolve_llm(args.model)  # in the ambient workspace, before the scratch
    home = Path(tempfile.mkdtemp(prefix="genai-bench-reviews-"))
    reports = Path(os.environ.get("GENAI_HOME", REPO / ".genai")) / "reports"
    os.environ["GENAI_HOME"] = str(home)
    from infra.spark import get_spark
    from pipelines.prompts.ingest import write_reviews
    from pipelines.prompts.schema import ReviewsConfig
    from pipelines.prompts.summariser import SummaryConfig

    spark = get_spark()
    files = review_files(args.data)
    log(f"ingesting {len(files)} files from {args.data}")
    manifest = write_reviews(
        spark, ReviewsConfig(paths=files, mapping="amazon_2018"), txn_id="bench-ingest"
    )
    base = SummaryConfig(window=args.window, min_group_reviews=args.min_group_reviews)
    results = {"default": run_path(spark, "default", manifest, base, None, "extractive", home)}
    if base.method == "extractive":  # the default is the baseline: one run, not a warm rerun
        results["extractive_baseline"] = {"same_as": "default"}
    else:
        extractive = base.model_copy(update={"method": "extractive"})
        results["extractive_baseline"] = run_path(
            spark, "extractive_baseline", manifest, extractive, None, "extractive", home
        )
    if llm_dir:
        llm = llm_settings(base, args.llm_preset)
        results["llm"] = run_path(spark, "llm", manifest, llm, llm_dir, llm_id, home)
    else:
        results["llm"] = {"skipped": llm_id}
    report = write_report(spark, Path(results["default"]["root"]), reports)
    for result in results.values():
        result.pop("root", None)
    out = {
        "benchmark": "review_grounding",
        "data": str(args.data),
        "files": [Path(f).name for f in files],
        "reviews": manifest["stats"].get("accepted", manifest.get("rows")),
        "ingest": manifest["stats"],
        "window": args.window,
        "min_group_reviews": args.min_group_reviews,
        "paths": results,
        "report": report,
    }
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
