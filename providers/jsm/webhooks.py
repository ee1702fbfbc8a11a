"""Jira admin webhooks: the one we register, its signature, and what a delivery says.

Which webhook, and why [doc developer.atlassian.com/cloud/jira/platform/webhooks; api-group-webhooks]:
Jira Cloud has *dynamic* webhooks (``POST /rest/api/3/webhook``), but "only Connect and OAuth 2.0
apps can register and manage" them, they expire after 30 days unless refreshed, and they are
signed with the app's JWT, not a secret of ours. The gateway authenticates with an e-mail and
an API token (Basic), so it registers an **admin webhook** (``POST /rest/webhooks/1.0/webhook``,
needs the *Administer Jira* global permission) with a ``secret``: Jira then signs every
delivery with ``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`` (WebSub's
``method=signature``; the header is ``X-Hub-Signature``, not ``-256``) ["Secure admin webhooks"].
There is no timestamp in that scheme, so no replay window: a delivery is deduplicated by
``X-Atlassian-Webhook-Identifier``, which Jira keeps across its retries [code jira.js
``webhooks/headers.ts``; doc "Get failed webhooks": "the webhook ID, as sent in the
X-Atlassian-Webhook-Identifier header"].

What a delivery means: the webhook is a **doorbell with a filter**. We subscribe to
``jira:issue_updated`` only (a comment raises it too, as ``issue_commented`` with the comment).
A delivery whose comment is internal (``jsdPublic`` false) or was written by our own API
account, and that changed neither assignee, status nor resolution, is dropped here without any
read (``comment_created``, if an operator subscribed to it by hand, is read the same way).
Anything else makes the worker read the request (``JsmProvider.webhook_events_fetch``), because a
comment delivery names its attachments only inside the wiki text (their URLs are on the issue),
carries nothing of ours to find the session by before our ticket row is stored, and Jira may deliver
late or out of order (retries up to ~30 min; "Secondary" flow up to 15 min).
Reading the request yields the replies in their order.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from providers.base import ParsedWebhook, WebhookInvalid, WebhookRejected

SIGNATURE_HEADER = "x-hub-signature"
IDENTIFIER_HEADER = "x-atlassian-webhook-identifier"
COMMENT_CREATED, ISSUE_UPDATED = "comment_created", "jira:issue_updated"
EVENTS = (COMMENT_CREATED, ISSUE_UPDATED)
# Changelog fields that can mean an assignment or the end of the request.
WATCHED_FIELDS = frozenset({"assignee", "status", "resolution"})
WEBHOOK_NAME = "hitl-gateway"
MAX_ID = 64
MAX_IDENTIFIER = 128


def signature_compute(*, secret: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of the raw body with the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_verify(*, headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Constant-time check of ``X-Hub-Signature``; only the ``sha256`` method is accepted."""
    if not secret:
        raise WebhookRejected("no webhook secret configured for this integration")
    given = headers.get(SIGNATURE_HEADER, "")
    if not given:
        raise WebhookRejected("missing X-Hub-Signature header")
    method, _, digest = given.partition("=")
    if method.strip().lower() != "sha256" or not digest:
        raise WebhookRejected("X-Hub-Signature is not method sha256")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), digest.strip().lower().encode()):
        raise WebhookRejected("signature mismatch")


def webhook_definition(*, url: str, secret: str, project_key: str) -> dict:
    """The admin webhook we register: comments and issue updates of the service desk's project."""
    return {
        "name": WEBHOOK_NAME,
        "description": "Relays agents' replies, assignment and resolution to the Botpress HITL gateway.",
        "url": url,
        # One event: Jira also raises ``jira:issue_updated`` (``issue_commented``, with the
        # comment) for every comment, so subscribing to ``comment_created`` too would ring twice.
        "events": [ISSUE_UPDATED],
        "filters": {"issue-related-events-section": f'project = "{project_key}"'},
        "excludeBody": False,
        "secret": secret,
    }


def _object(data: Mapping, key: str, *, required: bool = False) -> dict:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise WebhookInvalid(key, "must be an object")
    return value


def _text(data: Mapping, key: str, *, field: str = "") -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WebhookInvalid(field or key, "must be a string")
    return str(value).strip()


def webhook_parse(*, headers: Mapping[str, str], body: bytes, installation: Mapping | None = None) -> ParsedWebhook:
    """The request a delivery is about, and whether it needs a read (see the module's docstring).

    Raises only ``WebhookInvalid`` naming the bad field. Dedup key: ``jsm:`` + the delivery's
    identifier (or, without one, a hash of the body, which is what was signed).
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WebhookInvalid("body", "must be a JSON object") from None
    if not isinstance(data, dict):
        raise WebhookInvalid("body", "must be a JSON object")
    event_type = _text(data, "webhookEvent")
    if event_type not in EVENTS:
        raise WebhookInvalid("webhookEvent", f"must be one of {', '.join(EVENTS)}")
    issue = _object(data, "issue", required=True)
    issue_id = _text(issue, "id", field="issue.id")
    if not issue_id:
        raise WebhookInvalid("issue.id", "is required")
    if not (issue_id.isascii() and issue_id.isdigit()) or len(issue_id) > MAX_ID:
        raise WebhookInvalid("issue.id", "must be a numeric issue id")
    identifier = str(headers.get(IDENTIFIER_HEADER, "") or "").strip()
    if not identifier or len(identifier) > MAX_IDENTIFIER or not identifier.isprintable():
        identifier = "body-" + hashlib.sha256(body).hexdigest()[:40]
    dedup_key = f"jsm:{identifier}"

    comment = _object(data, "comment", required=event_type == COMMENT_CREATED)
    relevant = bool(comment) and _comment_relevant(comment, installation)
    if event_type == ISSUE_UPDATED:
        changelog = _object(data, "changelog")
        items = changelog.get("items") or []
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise WebhookInvalid("changelog.items", "must be a list of objects")
        changed = {_text(item, "fieldId", field="changelog.items.fieldId") for item in items}
        changed |= {_text(item, "field", field="changelog.items.field").lower() for item in items}
        relevant = relevant or bool(changed & WATCHED_FIELDS)
    return ParsedWebhook(
        dedup_key=dedup_key, event_type=event_type, ticket_external_id=issue_id, events=[], doorbell=relevant
    )


def _comment_relevant(comment: Mapping, installation: Mapping | None) -> bool:
    """A public comment by someone other than our API account (who may be an agent)."""
    author = _object(comment, "author")
    public = comment.get("jsdPublic", True)
    if not isinstance(public, bool):
        raise WebhookInvalid("comment.jsdPublic", "must be a boolean")
    author_id = _text(author, "accountId", field="comment.author.accountId")
    ours = str((installation or {}).get("account_id") or "")
    return public and not (ours and author_id == ours)


def instructions(*, url: str, secret: str, project_key: str) -> str:
    """The same webhook in words, for a site whose API token may not register admin webhooks."""
    definition = webhook_definition(url=url, secret=secret, project_key=project_key or "<your project key>")
    return (
        "In Jira: Settings (cog) > System > WebHooks > Create a WebHook.\n"
        f"  Name: {definition['name']}\n"
        f"  Status: Enabled    URL: {url}\n"
        f"  Secret: {secret}\n"
        f"  Issue related events, JQL: {definition['filters']['issue-related-events-section']}\n"
        "  Events: Issue > updated (only)\n"
        "  Exclude body: unchecked\n"
    )
