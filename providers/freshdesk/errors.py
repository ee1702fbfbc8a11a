"""Freshdesk's error envelope, turned into one readable line.

Validation and conflict errors: ``{"description": "Validation failed", "errors": [{"field",
"message", "code"}]}``; other errors carry ``code`` and ``message`` at the top level
[doc developers.freshdesk.com/api "Error Handling"; code sjkingo/python-freshdesk ``_action``].
"""

from __future__ import annotations

import requests

from outbound.http import json_object


def describe_freshdesk_error(response: requests.Response) -> tuple[str, str]:
    """``(code, message)``: the first error's code and every field's message, or the top-level pair."""
    body = json_object(response)
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    if errors:
        fields = "; ".join(f"{e.get('field') or '-'}: {e.get('message', '')}" for e in errors)
        description = body.get("description") or "Error"
        return str(errors[0].get("code") or "invalid_value"), f"{description} ({fields})"[:500]
    if body.get("code") or body.get("message"):
        return str(body.get("code") or f"HTTP{response.status_code}"), str(body.get("message", ""))[:500]
    return f"HTTP{response.status_code}", (response.text or response.reason or "")[:300]
