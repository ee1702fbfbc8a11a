"""Slack Web API failures as the gateway's outbound errors.

Slack answers HTTP 200 with ``{"ok": false, "error": "<code>"}`` for refused calls, a real
HTTP 429 with ``Retry-After`` (seconds) when rate limited, and other HTTP statuses from its
front end [doc docs.slack.dev/apis/web-api "Evaluating responses", "Rate limits";
code slackapi/python-slack-sdk ``slack_sdk/web/slack_response.py::validate``]. ``slack_call``
runs one ``slack_sdk`` call and raises ``outbound.http.RetryableError`` (worth trying later:
429, 5xx, 408/409, connection failures, Slack's transient codes) or ``PermanentError``
(everything Slack refused for good). The WebClient is built without retry handlers, so a 429
comes back here at once and the outbox waits ``Retry-After`` instead of a sleeping SDK.
"""

from __future__ import annotations

import http.client
import urllib.error
from collections.abc import Callable
from typing import TypeVar

from slack_sdk.errors import SlackApiError, SlackClientError

from outbound.http import RETRYABLE_STATUSES, UNREACHABLE, PermanentError, RetryableError

T = TypeVar("T")

# ``ok:false`` codes that say "later" rather than "never" [doc docs.slack.dev/reference/methods
# error tables: ratelimited, service_unavailable, fatal_error, internal_error, request_timeout].
RETRYABLE_CODES = frozenset({"ratelimited", "service_unavailable", "fatal_error", "internal_error", "request_timeout"})


def _retry_after(headers) -> float | None:
    for name in ("Retry-After", "retry-after"):
        value = (headers or {}).get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def api_error(exc: SlackApiError, method: str):
    """The outbound error for a ``SlackApiError`` (an HTTP error status or ``ok: false``)."""
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    data = getattr(response, "data", None)
    code = data.get("error", "") if isinstance(data, dict) else ""
    code = str(code or f"HTTP{status}")
    message = f"Slack {method}: {code}"
    if status == 429 or code == "ratelimited":
        return RetryableError(message, 429, _retry_after(getattr(response, "headers", None)) or 1.0, "ratelimited")
    if status >= 500 or status in RETRYABLE_STATUSES or code in RETRYABLE_CODES:
        return RetryableError(message, status or 503, None, code)
    # 200 + ok:false and other 4xx: Slack refused the call itself.
    return PermanentError(message, status or 400, None, code)


def slack_call(method: str, call: Callable[[], T]) -> T:
    """Run ``call`` (one slack_sdk request) and translate every failure into an outbound error."""
    try:
        return call()
    except SlackApiError as exc:
        raise api_error(exc, method) from None
    except TimeoutError as exc:
        raise RetryableError(f"Slack {method}: timed out") from exc
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise RetryableError(f"Slack {method}: could not reach Slack: {reason}", error_type=UNREACHABLE) from exc
    except SlackClientError as exc:  # a failed upload to the pre-signed URL, a malformed answer
        raise RetryableError(f"Slack {method}: {exc}"[:300]) from exc
    except ValueError as exc:  # an answer that is not JSON (a proxy's error page)
        raise RetryableError(f"Slack {method}: unreadable answer ({type(exc).__name__})") from exc
