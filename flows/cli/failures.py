"""How a `genai` command ends when it fails: one ``error:`` line (redacted), the message's
detail lines under it, the traceback only with ``-v``; exit 2 for a known failure (bad input,
a missing model/alias/path, a refused batch, an endpoint or training failure), 1 otherwise."""

from __future__ import annotations

import sys
import traceback

from infra.errors import is_input_error, message_of
from infra.redaction import redact

MAX_DETAIL_LINES = 20  # e.g. a training log's tail; -v shows everything
KNOWN_FAILURE_EXIT, UNEXPECTED_FAILURE_EXIT = 2, 1


def _known_failure_types() -> tuple[type[BaseException], ...]:
    from prefect.exceptions import ParameterTypeError, SignatureMismatchError

    from infra.llm import LLMError
    from pipelines.training.launch import TrainingFailed

    return (LLMError, TrainingFailed, OSError, ParameterTypeError, SignatureMismatchError)


def is_known_failure(err: BaseException) -> bool:
    return is_input_error(err) or isinstance(err, _known_failure_types())


def report_failure(err: BaseException, verbose: bool = False) -> int:
    """Print ``err`` for a user and return the command's exit code."""
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    known = is_known_failure(err)
    lines = redact(message_of(err)).splitlines() or [type(err).__name__]
    head = lines[0] if known else f"{type(err).__name__}: {lines[0]}"
    print(f"error: {head}", file=sys.stderr)
    for line in lines[1 : 1 + MAX_DETAIL_LINES]:
        print(f"  {line}", file=sys.stderr)
    more = len(lines) - 1 - MAX_DETAIL_LINES
    if not verbose and (more > 0 or not known):  # a known failure's message says it all
        hint = f"{more} more lines and the traceback" if more > 0 else "the traceback"
        print(f"  (-v shows {hint})", file=sys.stderr)
    return KNOWN_FAILURE_EXIT if known else UNEXPECTED_FAILURE_EXIT
