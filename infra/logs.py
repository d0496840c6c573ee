"""Logging set up once per process, the same way for the CLI, the demo and the model server:
the project's own loggers at INFO (DEBUG with ``verbose``), other libraries at WARNING (INFO
with ``verbose``; the noisiest held to WARNING unless verbose), a plain
``time level logger: message`` format, optionally copied to a file; every record redacted
(``infra.redaction``)."""

from __future__ import annotations

import logging
from pathlib import Path

from infra.redaction import install_log_redaction

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PROJECT_LOGGERS = ("infra", "pipelines", "tasks", "flows")
# Their INFO/DEBUG lines are per connection or per call: noise, unless asked for.
NOISY_LOGGERS = ("httpx", "httpcore", "urllib3", "py4j", "filelock", "multipart")


def configure_logging(
    verbose: bool = False,
    log_file: Path | None = None,
    console_tracebacks: bool = True,
    console_only: tuple[str, ...] | None = None,
) -> None:
    """Idempotent: a second call adds no second handler. A console handler (stderr) is added
    only to a root logger without one — as ``logging.basicConfig`` does, so Prefect's (set up
    when it is imported) is kept; the levels are set on every call. ``console_tracebacks``
    False keeps tracebacks off the console (the CLI shows them with -v); the file and
    Prefect's API log keep them. ``console_only`` names the loggers whose INFO lines still
    reach the console (with warnings and errors from any logger); the file keeps everything."""
    install_log_redaction()
    logging.basicConfig(format=FORMAT)
    root = logging.getLogger()
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    for handler in _console_handlers(root):
        _show_tracebacks(handler, console_tracebacks)
        _quiet(handler, console_only)
    if log_file is not None:
        _log_to_file(root, Path(log_file))


def _console_handlers(root: logging.Logger) -> list[logging.Handler]:
    return [
        h
        for h in root.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


class _WithoutTracebacks(logging.Formatter):
    """Formats a copy of each record without its traceback, through the handler's own
    formatter (Prefect's keeps its colours and layout)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(record.__dict__)
        bare.exc_info = bare.exc_text = bare.stack_info = None
        return self.inner.format(bare)


def _show_tracebacks(handler: logging.Handler, show: bool) -> None:
    current = handler.formatter
    if show and isinstance(current, _WithoutTracebacks):
        handler.setFormatter(current.inner)
    elif not show and not isinstance(current, _WithoutTracebacks):
        handler.setFormatter(_WithoutTracebacks(current))


class _OnlyWarningsAnd(logging.Filter):
    """Passes warnings and errors, and any record from the named loggers or their children."""

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.names = names

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return any(record.name == n or record.name.startswith(n + ".") for n in self.names)


def _quiet(handler: logging.Handler, console_only: tuple[str, ...] | None) -> None:
    for old in [f for f in handler.filters if isinstance(f, _OnlyWarningsAnd)]:
        handler.removeFilter(old)
    if console_only is not None:
        handler.addFilter(_OnlyWarningsAnd(tuple(console_only)))


def _log_to_file(root: logging.Logger, path: Path) -> None:
    path = path.resolve()
    if any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        return  # this file is written already
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
