"""The `genai` command: demo, stage runs, local services.

The workspace environment is applied before Prefect or MLflow is imported (they read it at
import), and a Prefect server already running on 127.0.0.1:4200 (`make up`) is used when
present, so runs made here show up in its UI; otherwise Prefect's temporary local server
runs on the same SQLite database under the workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from flows.cli import commands, demo
from flows.cli.failures import report_failure
from flows.cli.parser import build_parser
from infra.logs import configure_logging
from infra.settings import apply_environment


class Command(NamedTuple):
    run: Callable[..., int]
    flow_runs: bool  # runs Prefect flows: attach to the running server first


COMMANDS: dict[str, Command] = {
    "demo": Command(demo.run_demo, True),
    "prepare-corpus": Command(commands.run_prepare_corpus, True),
    "pretrain": Command(commands.run_pretrain, True),
    "finetune-sweep": Command(commands.run_finetune_sweep, True),
    "review-summaries": Command(commands.run_review_summaries, True),
    "pairwise-eval": Command(commands.run_pairwise, True),
    "build-index": Command(commands.run_rag_flow, True),
    "evaluate-retrieval": Command(commands.run_rag_flow, True),
    "sync-features": Command(commands.run_rag_flow, True),
    "rag": Command(commands.run_rag_flow, True),
    "gc": Command(commands.run_gc, True),
    "serve": Command(commands.run_serve, False),  # a server in the foreground, no Prefect
    "ask": Command(commands.run_ask, False),  # one question, answered here
    "up": Command(commands.run_up, False),
    "down": Command(commands.run_down, False),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    apply_environment()
    command = COMMANDS[args.command]
    try:
        if command.flow_runs:
            from infra.prefect import services

            services.use_running_server()
        import prefect  # noqa: F401 -- sets up its logging at import: ours goes on top

        configure_logging(verbose=args.verbose, console_tracebacks=args.verbose)
        return command.run(args)
    except Exception as err:  # a failed run ends in one error line (-v: with its traceback)
        return report_failure(err, args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
