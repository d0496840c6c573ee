"""The one redaction rule for what leaves the process: log records, error messages, MLflow
params and tags, Prefect results and parameters.

Removed: credentials inside URLs (``scheme://user:password@host`` keeps only the host;
``?key=…``, ``&token=…`` and similar query values), ``Bearer …`` tokens, values of fields named
like secrets (``api_key: …``, ``"password": "…"``), secrets with well-known provider formats
(OpenAI ``sk-…``, AWS, GitHub, Slack, Google, Stripe keys, JWTs, PEM private keys), and any
string this process was told is a secret (:func:`register_secret`: API keys read from the
environment), raw or percent-encoded.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "***"

# Field names that hold credentials (config keys, MLflow params, query parameters).
# (`max_new_tokens`, `tokenizer` and `author` are not: `token` must stand alone in the name)
SECRET_FIELD = re.compile(
    r"(secret|password|passwd|api[_-]?key|apikey|credential|auth(?!or)|(?<![a-z])token(?![a-z]))",
    re.I,
)
# Secrets with well-known prefixes (providers publish these formats for leak scanners).
KNOWN_SECRETS = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"  # PEM private keys
    r"|(?<![\w-])sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic API keys
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}"  # GitHub tokens
    r"|\bxox[baprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|\b[sr]k_(?:live|test)_[0-9A-Za-z]{16,}"  # Stripe keys
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
    re.DOTALL,
)
# scheme://userinfo@ — userinfo may be percent-encoded; it ends at the last '@' before the path.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/?#@]+@", re.I)
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:key|sig|code|[\w.-]*(?:token|secret|password|passwd|api[_-]?key|auth)"
    r"[\w.-]*)=)[^&#\s'\"]+",
    re.I,
)
_BEARER = re.compile(r"(?P<scheme>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=-]{6,}", re.I)
# `api_key: value`, `"password": "value"`, `token=value` outside URLs.
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<name>[\"']?\b[\w.-]*(?:secret|token|password|passwd|api[_-]?key|apikey)[\"']?"
    r"\s*[:=]\s*)(?P<quote>[\"']?)(?!\*\*\*)[^\s,;&\"'}\]]{4,}",
    re.I,
)

_known: tuple[str, ...] = ()  # longest first: a secret's encodings overlap it
_known_lock = threading.Lock()
_MIN_REGISTERED_CHARS = 6  # shorter strings would blank out ordinary words


def register_secret(value: str | None) -> None:
    """From now on, ``value`` (raw and percent-encoded) is replaced wherever it appears."""
    if not value or len(value) < _MIN_REGISTERED_CHARS:
        return
    global _known
    with _known_lock:
        forms = set(_known) | {value, quote(value, safe=""), quote_plus(value)}
        _known = tuple(sorted(forms, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every credential it contains replaced by ``***``."""
    if not text:
        return text
    for secret in _known:
        text = text.replace(secret, REDACTED)
    text = _URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)
    text = _QUERY_SECRET.sub(rf"\g<name>{REDACTED}", text)
    text = _BEARER.sub(rf"\g<scheme>{REDACTED}", text)
    text = KNOWN_SECRETS.sub(REDACTED, text)
    return _SECRET_ASSIGNMENT.sub(rf"\g<name>\g<quote>{REDACTED}", text)


def redact_value(value: Any) -> Any:
    """``value`` with every string in it redacted, through dicts, lists and tuples; a dict
    entry whose key names a secret (``api_key``) loses its whole value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if names_secret(k) and v not in (None, "") else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def names_secret(key: Any) -> bool:
    """True for a field whose value is a credential (``api_key``); ``api_key_env`` names a
    variable, ``…_block`` a Prefect block, ``…_name`` a name: those are safe to keep."""
    return (
        isinstance(key, str)
        and SECRET_FIELD.search(key) is not None
        and not key.endswith(("_env", "_block", "_name"))
    )


# ---------------------------------------------------------------------------- log records


_previous_factory = None


def install_log_redaction() -> None:
    """Redact every log record this process makes, whoever logs it and whichever handler
    writes it (Prefect's API handler included): the message is rendered and redacted when the
    record is made, and so is its traceback. Idempotent."""
    global _previous_factory
    if _previous_factory is not None:
        return
    _previous_factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_redacting_record)


def _redacting_record(*args, **kwargs) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a bad format string is the handler's error to report, not ours
        return record
    record.msg, record.args = redact(message), ()
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    return record
