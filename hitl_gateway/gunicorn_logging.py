"""gunicorn's logs, minus the URL secrets of the native Botpress endpoints and any credential.

`/botpress/<integration>/<secret>/` and `/hitl-api/<integration>/<secret>/...` carry their
credential in the path (Botpress sends no header we could use), so the access log shows the path
with the secret replaced; request headers a custom access-log format prints (``%({authorization}i)s``)
and gunicorn's error log go through the same redaction (``hitl_gateway.logging.redact_text``).
Use with ``--logger-class hitl_gateway.gunicorn_logging.RedactingLogger``.
"""

from gunicorn.glogging import Logger

from hitl_gateway.logging import REDACTED, redact_text, redaction_install, secret_named


def redact_path(text: str) -> str:
    return redact_text(text)


class RedactingLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            redaction_install(logger)

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: _redact_atom(key, value) for key, value in atoms.items()}


def _redact_atom(key: str, value):
    """Header atoms (``{authorization}i``, ``{x-zendesk-webhook-signature}i``) by name, the rest by shape."""
    if key.startswith("{") and secret_named(key[1:-2]):
        return REDACTED
    return redact_text(value) if isinstance(value, str) else value
