"""Which failures are the input's (fix the file, row, field or URI, then rerun: a retry fails
the same way) and which may pass on a retry (I/O, an endpoint's 429/5xx, a Delta commit
conflict, a crashed training rank). Tasks retry only the second kind; the CLI ends the first
kind with one ``error:`` line."""

from __future__ import annotations

# Bad values, missing keys/versions/aliases, missing or unreadable paths, pydantic validation
# (a ValueError), undecodable files (UnicodeDecodeError, JSONDecodeError: ValueErrors), the
# quality gate's refusal (infra.lake.QualityGateError is a ValueError).
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    LookupError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
# MLflow answers a missing model, version or alias with these codes (MlflowException).
_MLFLOW_INPUT_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def is_input_error(err: BaseException | None) -> bool:
    """True when ``err`` is about what the user gave, so that retrying cannot help."""
    if err is None:
        return False
    if isinstance(err, INPUT_ERRORS):
        return True
    return getattr(err, "error_code", None) in _MLFLOW_INPUT_CODES


def message_of(err: BaseException) -> str:
    """What the error says, without its type's repr (an MlflowException's own message)."""
    code = getattr(err, "error_code", None)
    if code and hasattr(err, "message"):
        return f"{err.message} ({code})"
    return str(err) or type(err).__name__
