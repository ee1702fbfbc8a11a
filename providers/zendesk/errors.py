"""Zendesk's error envelopes, turned into one readable line."""

import requests


def describe_zendesk_error(response: requests.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP{response.status_code}", (response.text or response.reason or "")[:300]
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        if isinstance(error, dict):  # some endpoints nest {"title", "message"}
            return str(error.get("title", "Error")), str(error.get("message", ""))[:500]
        details = body.get("details") or {}
        fields = "; ".join(
            f"{name}: {', '.join(d.get('description', '') for d in items if isinstance(d, dict))}"
            for name, items in details.items()
            if isinstance(items, list)
        )
        message = body.get("description") or str(error)
        return str(error), f"{message} ({fields})" if fields else str(message)
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
        return str(first.get("code", "Error")), str(first.get("detail") or first.get("title", ""))[:500]
    return f"HTTP{response.status_code}", str(body)[:300]
