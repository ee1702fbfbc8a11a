"""structlog set-up with a redaction step, so a secret can never reach a log line."""

import logging
from functools import cache

import structlog

SECRET_KEY_PARTS = ("token", "secret", "password", "authorization", "api_key", "signature", "credential")
REDACTED = "[redacted]"


@cache
def _secret_key_parts() -> tuple[str, ...]:
    """``SECRET_KEY_PARTS`` and every help desk's secret credential names (``providers.spec``).

    Imported on first use: settings import this module before the apps are loaded.
    """
    from providers.registry import secret_credential_names

    return SECRET_KEY_PARTS + tuple(name.lower() for name in secret_credential_names())


def redact_secrets(_logger, _method, event_dict: dict) -> dict:
    """Blank any field whose name looks like a secret, however deep it sits."""
    return {key: _redact(key, value) for key, value in event_dict.items()}


def _redact(key: str, value):
    if isinstance(key, str) and any(part in key.lower() for part in _secret_key_parts()):
        return REDACTED
    if isinstance(value, dict):
        return {k: _redact(k, v) for k, v in value.items()}
    return value


def configure_structlog(*, json: bool) -> None:
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            renderer,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
