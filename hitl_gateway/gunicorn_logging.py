"""gunicorn's access log, minus the URL secrets of the native Botpress endpoints.

`/botpress/<integration>/<secret>/` and `/hitl-api/<integration>/<secret>/...` carry their
credential in the path (Botpress sends no header we could use), so the log shows the path with
the secret replaced. Use with ``--logger-class hitl_gateway.gunicorn_logging.RedactingLogger``.
"""

import re

from gunicorn.glogging import Logger

SECRET_IN_PATH = re.compile(r"(/(?:botpress|hitl-api)/[^/\s?]+/)[^/\s?]+")


def redact_path(text: str) -> str:
    return SECRET_IN_PATH.sub(r"\1[redacted]", text)


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U"):  # the request line and the path
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_path(atoms[key])
        return atoms
