"""The demo's wall times against DESIGN's budget: the budget is held here, not by `make demo`
(which reports time and never fails for it).

Reads the last demo's ``$GENAI_HOME/reports/demo_times.json`` (``genai demo`` writes it), or,
with ``--run``, runs ``genai demo`` first (its console goes to stderr). The baseline beside
the project's times is DESIGN's budget per stage. Demo wall times are the one absolute time
this project records on CPU: quote them with ``loadavg`` (the machine's load when the demo
ended) and the core count.

    GENAI_HOME=.genai python benchmarks/demo.py          # the last demo's times
    GENAI_HOME=.genai python benchmarks/demo.py --run    # run the demo, then report

The last stdout line is one JSON object: ``total_s``, ``budget_s``, ``stages`` {name: {s,
budget_s, over}}, ``loadavg``, ``commit`` (of the demo run), ``within_budget``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_demo(extra: list[str]) -> None:
    genai = Path(sys.executable).parent / "genai"
    command = [str(genai)] if genai.exists() else [sys.executable, "-m", "flows.cli.main"]
    done = subprocess.run([*command, "demo", *extra], cwd=REPO, stdout=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"genai demo failed (exit {done.returncode}); no times to report")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run `genai demo` first")
    parser.add_argument("demo_args", nargs="*", help="after --: passed to `genai demo`")
    args = parser.parse_args()

    from flows.cli.demo import TIMES_REPORT
    from infra.settings import load_settings

    if args.run:
        run_demo(args.demo_args)
    path = load_settings().home / TIMES_REPORT
    if not path.is_file():
        raise SystemExit(f"no demo times at {path}: run `make demo` (or this with --run)")
    report = json.loads(path.read_text())
    for name, stage in report["stages"].items():
        mark = "over" if stage["over"] else "within"
        print(
            f"{name:<22} {stage['s']:8.1f} s of {stage['budget_s']:.0f} s  {mark}", file=sys.stderr
        )
    report["within_budget"] = not report["over"] and not any(
        stage["over"] for stage in report["stages"].values()
    )
    print(json.dumps({"benchmark": "demo", "report": str(path), **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
