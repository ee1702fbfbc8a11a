"""Limits on what a client may send, applied before any view runs or any JSON is used.

- Body size: ``RequestBodyLimitMiddleware`` answers 413 to a body over
  ``HITL["MAX_REQUEST_BODY_BYTES"]`` before anything reads it. DRF reads the request stream
  itself, so Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` alone would not stop it. A body without
  ``Content-Length`` (``Transfer-Encoding: chunked``; gunicorn hands it over de-chunked) is read
  here, at most one byte past the limit, and handed on as if it had had a length.
- JSON: ``json_loads_checked`` refuses nesting deeper than ``MAX_JSON_DEPTH`` (Python's parser
  would raise ``RecursionError``, a 500, long before its own limit matters), refuses numbers
  PostgreSQL's ``jsonb`` cannot store (NaN, infinities), and sanitises every string (keys too):
  NUL removed and unpaired surrogates replaced with U+FFFD, since PostgreSQL text can store
  neither. Every JSON entry point that Botpress reaches uses it (DRF's parser below, the wire
  protocol's body and configuration header).
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

log = structlog.get_logger(__name__)

MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class JsonRejected(ValueError):
    """JSON that parses but that the gateway will not take (too deep, unstorable number)."""


def text_sanitise(value: str) -> str:
    """``value`` without NUL and with each unpaired surrogate as U+FFFD (both unstorable in PostgreSQL)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _SURROGATE.sub("\ufffd", value)
    return value


def json_loads_checked(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for untrusted input: ``ValueError`` (``JsonRejected`` for the gateway's own rules)."""
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise JsonRejected(f"JSON nested deeper than {max_depth} levels") from None
    return _checked(value, 1, max_depth)


def _reject_constant(name: str) -> None:
    raise JsonRejected(f"{name} is not a JSON number")


def _checked(value: Any, depth: int, max_depth: int) -> Any:
    """A sanitised copy; recursion is bounded by ``max_depth``, checked before descending."""
    if isinstance(value, str):
        return text_sanitise(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise JsonRejected("a number is out of range")
    if isinstance(value, dict | list):
        if depth > max_depth:
            raise JsonRejected(f"JSON nested deeper than {max_depth} levels")
        if isinstance(value, list):
            return [_checked(item, depth + 1, max_depth) for item in value]
        return {text_sanitise(key): _checked(item, depth + 1, max_depth) for key, item in value.items()}
    return value


class CheckedJSONParser(JSONParser):
    """DRF's JSON parser with ``json_loads_checked``: too deep, invalid UTF-8 or bad JSON is a 400."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if stream is not None else b""
        try:
            return json_loads_checked(raw.decode(encoding))
        except JsonRejected as exc:
            raise ParseError(str(exc)) from None
        except ValueError as exc:  # includes UnicodeDecodeError
            raise ParseError(f"JSON parse error - {exc}") from None


# --- body size -------------------------------------------------------------------------------
def max_body_bytes() -> int:
    return settings.HITL["MAX_REQUEST_BODY_BYTES"]


class RequestBodyLimitMiddleware:
    """413 for a body over the limit, in the shape of the transport the path belongs to.

    Runs before every view (admin included). The answer is not logged by Django, whose line
    would hold the path, and Botpress's paths hold the integration's URL secret.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = max_body_bytes()
        declared = request.META.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                return _refuse(request, 400, "The Content-Length header is not a length.")
            if length > limit:
                return _refuse(request, 413, f"The body is larger than {limit} bytes.")
        elif request.method in BODY_METHODS and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            data = _read_at_most(request, limit + 1)
            if len(data) > limit:
                return _refuse(request, 413, f"The body is larger than {limit} bytes.")
            request._stream = io.BytesIO(data)
            request.META["CONTENT_LENGTH"] = str(len(data))
        return self.get_response(request)


def _read_at_most(request: HttpRequest, size: int) -> bytes:
    source = request.environ.get("wsgi.input") or request._stream
    chunks, total = [], 0
    while total < size:
        chunk = source.read(size - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    transport = request.path.lstrip("/").split("/", 1)[0]
    log.info("request.refused", transport=transport, status=status, reason=message)  # no path: it may hold a secret
    if transport == "botpress":
        from botpress.wire import WireError, invalid_payload

        error = WireError("PayloadTooLarge", message) if status == 413 else invalid_payload(message)
        response = JsonResponse(error.body(), status=status)
    else:
        code = "payload_too_large" if status == 413 else "invalid_request"
        response = JsonResponse({"error": code, "message": message, "fields": {"body": [message]}}, status=status)
    response["Connection"] = "close"  # the unread body is not drained
    response._has_been_logged = True
    return response
