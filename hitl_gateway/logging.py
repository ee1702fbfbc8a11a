"""Log redaction: one function every log path goes through, so a credential never reaches a log line.

Credentials that can end up in log text, and how each is recognised:
- the Botpress URL secret, the segment after the integration id in ``/botpress/<id>/<secret>``
  and ``/hitl-api/<id>/<secret>`` (Botpress sends no header we could use, so the path is the
  credential; Django logs paths on 4xx/5xx, gunicorn in its access log);
- ``Authorization: Bearer <api key>`` / ``Basic <base64>`` values, and our API keys (``hitl_…``)
  wherever they appear;
- ``name=value`` / ``"name": "value"`` pairs whose name says token, secret, password, api key,
  signature or authorization (query strings, reprs of dicts, header dumps).

Where it is applied: ``RedactingFilter`` on every handler of the logging configuration (Django's
``django.request``/``django.security.*``/``django.server`` and Celery's records reach the root
handler; settings attach it there and replace Django's own handlers), the structlog processor
``redact_secrets``, and gunicorn's loggers (``hitl_gateway.gunicorn_logging``).
"""

from __future__ import annotations

import logging
import re
from functools import cache, lru_cache

import structlog

SECRET_KEY_PARTS = ("token", "secret", "password", "authorization", "api_key", "signature", "credential")
REDACTED = "[redacted]"

# /botpress/<id>/<secret>[/...] and /hitl-api/<id>/<secret>[/...]; doubled slashes are routed too.
_URL_SECRET = re.compile(r"(/(?:botpress|hitl-api)/+[^/\s?#\"'<>]+/+)[^/\s?#\"'<>]+")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|Token)(\s+)[A-Za-z0-9._~+/=:-]{6,}", re.IGNORECASE)
_API_KEY = re.compile(r"\bhitl_[A-Za-z0-9_-]{8,}")
# A whole name (a run of name characters, taken at once) that contains one of the words: matched
# from the run's start only, so a long line costs linear time, not quadratic (log lines may hold
# text a caller chose, such as a 404's path).
_SECRET_NAME = (
    r"(?<![A-Za-z0-9_-])"
    r"(?=[A-Za-z0-9_-]*?(?:token|secret|password|passwd|api[_-]?key|signature|authorization))"
    r"[A-Za-z0-9_-]++"
)
_NAMED_VALUE = re.compile(
    rf"({_SECRET_NAME}[\"']?\s*[:=]\s*[\"']?)(?!\[redacted\])([^\s\"',;&}}\])]+)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """``text`` with every credential-looking part replaced by ``[redacted]`` (idempotent)."""
    if not text:
        return text
    # Most values of a structured line recur (event names, kinds, outcomes, ids): a short one
    # found clean is remembered, so it is scanned once per process (the four scans were most of
    # a relay's log line, py-spy). Only clean values are kept: no credential stays in memory.
    if text in _CLEAN:
        return text
    redacted = _redact_scan(text)
    if redacted == text and len(text) <= _CLEAN_MAX_LENGTH:
        if len(_CLEAN) >= _CLEAN_MAX_ENTRIES:
            _CLEAN.clear()
        _CLEAN[text] = None
    return redacted


_CLEAN: dict[str, None] = {}
_CLEAN_MAX_LENGTH, _CLEAN_MAX_ENTRIES = 256, 4096


def _redact_scan(text: str) -> str:
    text = _URL_SECRET.sub(rf"\1{REDACTED}", text)
    text = _AUTH_SCHEME.sub(rf"\1\2{REDACTED}", text)
    text = _API_KEY.sub(REDACTED, text)
    return _NAMED_VALUE.sub(rf"\1{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, traceback and stack with ``redact_text``; drops nothing.

    The record's arguments are merged into the message first (a path is usually an argument,
    as in Django's ``"Forbidden (%s): %s"``), so formatters downstream see only redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_hitl_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logged as its bare template
            message = str(record.msg)
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        record._hitl_redacted = True
        return True


def redaction_install(logger: logging.Logger) -> None:
    """Put ``RedactingFilter`` on each of ``logger``'s handlers (for handlers made outside settings)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


@cache
def _secret_key_parts() -> tuple[str, ...]:
    """``SECRET_KEY_PARTS`` and every help desk's secret credential names (``providers.spec``).

    Imported on first use: settings import this module before the apps are loaded.
    """
    from providers.registry import secret_credential_names

    return SECRET_KEY_PARTS + tuple(name.lower() for name in secret_credential_names())


def redact_secrets(_logger, _method, event_dict: dict) -> dict:
    """structlog processor: blank secret-named fields, however deep, and redact every string."""
    return {key: _redact(key, value) for key, value in event_dict.items()}


@lru_cache(maxsize=1024)
def secret_named(name: str) -> bool:
    """Whether a field or header called ``name`` holds a credential (``api_token``, ``Authorization``)."""
    return any(part in name.lower().replace("-", "_") for part in _secret_key_parts())


def _redact(key: str, value):
    if isinstance(key, str) and secret_named(key):
        return REDACTED
    if isinstance(value, dict):
        return {k: _redact(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact("", item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def configure_structlog(*, json: bool, level: str = "INFO") -> None:
    """structlog over the stdlib loggers, dropping lines below ``level`` (``HITL_LOG_LEVEL``,
    never below INFO) before any processor runs.

    Why here and not only in the stdlib: a line the root logger drops would still have gone
    through the redaction and the renderer first, on every call (a log line per relayed message
    at ``HITL_LOG_LEVEL=WARNING`` was about 3 % of a worker's CPU, py-spy under ``make bench``).
    """
    threshold = logging.getLevelName(level.upper())
    threshold = max(logging.INFO, threshold if isinstance(threshold, int) else logging.INFO)
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            # Tracebacks become text here, so the redaction step sees them too.
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.TimeStamper(fmt="iso", utc=True),  # ours: nothing to redact
            renderer,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        cache_logger_on_first_use=True,
    )
