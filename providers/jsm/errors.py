"""Jira Service Management's two error envelopes, turned into one readable line.

The Service Management API (``/rest/servicedeskapi``) answers ``{"errorMessage": "...",
"i18nErrorMessage": {"i18nKey", "parameters"}}``; the Jira platform API (``/rest/api``,
``/rest/webhooks``) answers ``{"errorMessages": [...], "errors": {"<field>": "<message>"}}``
[code MrRefactoring/jira.js ``serviceDesk/models/errorResponse.ts``; doc developer.atlassian.com
Jira Cloud platform REST API "Status codes" / ``ErrorCollection``].
"""

from __future__ import annotations

import requests

from outbound.http import json_object


def describe_jsm_error(response: requests.Response) -> tuple[str, str]:
    """``(error type, message)`` from either envelope; the type is the i18n key, the first field
    in error, or ``HTTP<status>``."""
    body = json_object(response)
    if isinstance(body.get("errorMessage"), str):
        i18n = body.get("i18nErrorMessage") if isinstance(body.get("i18nErrorMessage"), dict) else {}
        return str(i18n.get("i18nKey") or f"HTTP{response.status_code}"), body["errorMessage"][:500]
    messages = [str(m) for m in body.get("errorMessages") or [] if isinstance(m, str | int)]
    fields = body.get("errors") if isinstance(body.get("errors"), dict) else {}
    if messages or fields:
        parts = messages + [f"{name}: {message}" for name, message in fields.items()]
        kind = next(iter(fields), "") or f"HTTP{response.status_code}"
        return str(kind), "; ".join(parts)[:500]
    return f"HTTP{response.status_code}", (response.text or response.reason or "")[:300]
