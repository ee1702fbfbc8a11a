"""Typed outbound errors and the one place that turns an HTTP exchange into them.

Adapters raise ``RetryableError`` (timeouts, connection errors, 429, 5xx, 409) or
``PermanentError`` (other 4xx); the outbox decides what to do with each.
"""

from __future__ import annotations

import datetime
import email.utils
import os
import socket
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from outbound.guard import AddressRefused

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


@dataclass
class OutboundError(Exception):
    message: str
    status_code: int | None = None
    retry_after: float | None = None
    error_type: str = ""

    def __str__(self) -> str:
        prefix = f"HTTP {self.status_code}: " if self.status_code else ""
        return f"{prefix}{self.message}"


class RetryableError(OutboundError):
    """Worth trying again later (the remote side may recover)."""


class PermanentError(OutboundError):
    """The remote side refused the request itself; retrying cannot help."""


def make_session(*, pool_size: int = 20) -> requests.Session:
    """A pooled keep-alive session; connection set-up dominates small requests otherwise.

    requests reads the environment's proxies, netrc file and CA bundle again for every request
    (``Session.merge_environment_settings``: 4 % of a worker's CPU per relay in a py-spy profile
    of ``make bench``). The CA bundle (``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``) is read
    once, here, as requests would read it; proxies (which depend on the URL, through
    ``NO_PROXY``) and a netrc file are left to requests' per-request look when any is set, and
    skipped when none is, since that look then always finds nothing.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.trust_env = bool(urllib.request.getproxies()) or _netrc_present()
    return session


def _netrc_present() -> bool:
    """Whether requests would find a netrc file (``NETRC``, else ``~/.netrc`` or ``~/_netrc``)."""
    netrc = os.environ.get("NETRC")
    candidates = [netrc] if netrc else [os.path.expanduser("~/.netrc"), os.path.expanduser("~/_netrc")]
    return any(os.path.exists(path) for path in candidates)


def json_object(response: requests.Response) -> dict:
    """The answer's JSON object, or ``{}`` when its body is not one (an HTML error page, a list)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def retry_after_seconds(response: requests.Response) -> float | None:
    """Seconds to wait as the server asks: Retry-After (seconds or HTTP date) or RateLimit-Reset.

    A reset may also be an ISO 8601 time: Jira Cloud's ``X-RateLimit-Reset`` is
    ``yyyy-MM-ddTHH:mmZ`` [doc developer.atlassian.com "Rate limiting"]. A value that is none
    of these is ignored, never an error.
    """
    for header in ("Retry-After", "RateLimit-Reset", "X-RateLimit-Reset"):
        value = (response.headers.get(header) or "").strip()
        if not value:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        parsed = _http_or_iso_time(value)
        if parsed is not None:
            return max(0.0, parsed.timestamp() - time.time())
    return None


def _http_or_iso_time(value: str) -> datetime.datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


UNREACHABLE = "unreachable"  # ``error_type`` of a request that got no connection at all


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _unreachable_reason(exc: BaseException) -> str:
    """The OS-level reason under requests' and urllib3's wrappers, in words ("connection refused")."""
    pending, seen = [exc], set()
    while pending:
        error = pending.pop(0)
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, socket.gaierror):
            return "host name not found"
        if isinstance(error, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(error, OSError) and error.strerror:
            return error.strerror[:1].lower() + error.strerror[1:]
        pending += [error.__cause__, error.__context__, getattr(error, "reason", None)]
        pending += [arg for arg in error.args if isinstance(arg, BaseException)]
    return f"connection failed ({type(exc).__name__})"


def request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    timeout: tuple[float, float],
    describe_error: Callable[[requests.Response], tuple[str, str]],
    **kwargs,
) -> requests.Response:
    """Send one request and return the response, or raise a typed ``OutboundError``.

    ``describe_error`` turns an error response into ``(error_type, message)`` in the remote
    service's own terms (each service has its own error envelope).
    """
    try:
        response = session.request(method, url, timeout=timeout, **kwargs)
    except AddressRefused as exc:
        # A guarded session refused the URL or its address (``outbound.guard``): nothing was sent.
        raise PermanentError(f"address refused: {exc}") from exc
    except requests.Timeout as exc:
        raise RetryableError(f"timed out: {type(exc).__name__}") from exc
    except requests.ConnectionError as exc:
        raise RetryableError(
            f"could not reach {_origin(url)}: {_unreachable_reason(exc)}", error_type=UNREACHABLE
        ) from exc
    if response.status_code < 400:
        return response
    error_type, message = describe_error(response)
    status = response.status_code
    if status in RETRYABLE_STATUSES or status >= 500:
        raise RetryableError(message, status, retry_after_seconds(response), error_type)
    raise PermanentError(message, status, None, error_type)
