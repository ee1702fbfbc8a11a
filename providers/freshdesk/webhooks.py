"""Freshdesk's automation-rule webhooks: the rules we install, the shared secret, the doorbell.

Freshdesk signs nothing: an automation rule's "Trigger webhook" action can only add custom
headers [code BP ``integrations/freshdesk/src/handler.ts``; helpdesk-apis.md 2.4]. Each rule we
install sends our shared secret in ``X-Hitl-Webhook-Secret`` and a small JSON body naming the
ticket. The body is a **doorbell**: the worker reads the ticket and its conversations through
the API (``FreshdeskProvider.webhook_events_fetch``), so a forged or replayed request that
passed the secret check can only make us re-read a ticket, never inject text.

Rules are created through the Automations API (``POST /api/v2/automations/4/rules``; automation
types 1 = ticket creation, 3 = time triggers, 4 = ticket updates) [doc developers.freshdesk.com/api
"Create an Automation Rule", changelog January 2021]. Checked against public clients of that API
(the Go SDK ``askasoft/pango`` ``sdk/fdk/freshdesk``: rule fields ``name``, ``position``,
``active``, ``performer`` {``type``: 1 agent, 2 requester, 3 agent or requester, 4 system;
``members``}, ``events`` [{``field_name``, ``from``, ``to``}], ``conditions`` [{``name``,
``match_type`` all/any, ``properties`` [{``resource_type``, ``field_name``, ``operator``,
``value``}]}], ``actions`` with ``custom_headers``, ``request_type``, ``url``) and a rule read
back from a live account (a public Terraform configuration: ``performer`` {type 1}, events
``reply_sent`` and ``status`` from ``--`` to ``--``, a ``trigger_webhook`` action with
``content_type`` "JSON" (required), ``content_layout`` "2" (a string), ``content`` a JSON object
whose string values carry ``{{ticket.id}}``, and ``custom_headers``). Still *(inferred)*: the
``responder_id`` event name (the admin UI's "Agent is updated"), and the ``tags`` condition field.
Our rules ring on any status change (from ``--`` to ``--``, the documented form) rather than
naming Resolved/Closed: the read decides what the ticket's status means.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping

from providers.base import ParsedWebhook, WebhookInvalid, WebhookRejected

SECRET_HEADER = "x-hitl-webhook-secret"
HITL_TAG = "botpress_hitl"  # on every ticket we open; the rules only fire on tickets carrying it
RULE_PREFIX = "hitl-gateway"
AUTOMATION_TICKET_UPDATES = 4
PERFORMER_AGENT, PERFORMER_SYSTEM = 1, 4
STATUS_RESOLVED, STATUS_CLOSED = 4, 5
EVENT_TYPE = "ticketUpdated"
MAX_ID = 20  # Freshdesk ids are 64-bit integers


def _events(performer: int) -> list[dict]:
    changes = [
        {"field_name": "responder_id", "from": "--", "to": "--"},
        {"field_name": "status", "from": "--", "to": "--"},
    ]
    # Only agents send replies; assignment and closing may also be done by Freshdesk itself
    # (round-robin assignment, auto-close), whose performer is "System".
    return ([{"field_name": "reply_sent"}] if performer == PERFORMER_AGENT else []) + changes


def rule_body(performer: int) -> dict:
    """The JSON a rule posts; Freshdesk renders each ``{{...}}`` placeholder as a string."""
    return {
        "ticket_id": "{{ticket.id}}",
        "status": "{{ticket.status}}",
        "performer": "agent" if performer == PERFORMER_AGENT else "system",
    }


def rule_definition(*, performer: int, url: str, secret: str) -> dict:
    """One automation rule (type 4, ticket updates) whose action calls ``url`` with our secret."""
    who = "agent" if performer == PERFORMER_AGENT else "system"
    return {
        "name": f"{RULE_PREFIX} ({who})",
        "description": "Tells the Botpress HITL gateway that a ticket it opened changed.",
        "active": True,
        "performer": {"type": performer},
        "events": _events(performer),
        "conditions": [
            {
                "name": "condition_set_1",
                "match_type": "all",
                "properties": [
                    {"resource_type": "ticket", "field_name": "tags", "operator": "in", "value": [HITL_TAG]}
                ],
            }
        ],
        "actions": [
            {
                "field_name": "trigger_webhook",
                "request_type": "POST",
                "url": url,
                "content_type": "JSON",
                "content_layout": "2",  # advanced: our own JSON template
                "content": rule_body(performer),
                "custom_headers": {"X-Hitl-Webhook-Secret": secret},
            }
        ],
    }


def instructions(*, url: str, secret: str) -> str:
    """The same two rules, in words, for an operator whose API key may not create rules."""
    lines = [
        "In Freshdesk: Admin > Workflows > Automations > Ticket updates > New rule. Create two rules.",
        "",
    ]
    for performer in (PERFORMER_AGENT, PERFORMER_SYSTEM):
        rule = rule_definition(performer=performer, url=url, secret=secret)
        events = ["Reply is sent"] if performer == PERFORMER_AGENT else []
        events += ["Agent is updated (from Any to Any)", "Status is updated (from Any to Any)"]
        lines += [
            f"Rule name: {rule['name']}",
            f"  When an action is performed by: {'Agent (any agent)' if performer == PERFORMER_AGENT else 'System'}",
            f"  Involves any of these events: {'; '.join(events)}",
            f"  On tickets with these properties: Tags contains {HITL_TAG}",
            "  Perform these actions: Trigger webhook",
            f"    Request type: POST    URL: {url}",
            f"    Custom headers: X-Hitl-Webhook-Secret: {secret}",
            "    Encoding: JSON    Content: Advanced, exactly:",
            "    " + json.dumps(rule_body(performer)),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def secret_verify(*, headers: Mapping[str, str], secret: str) -> None:
    """Constant-time comparison of the shared secret; Freshdesk sends no signature or timestamp."""
    if not secret:
        raise WebhookRejected("no webhook secret configured for this integration")
    given = headers.get(SECRET_HEADER, "")
    if not given:
        raise WebhookRejected("missing X-Hitl-Webhook-Secret header")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise WebhookRejected("webhook secret mismatch")


def webhook_parse(*, headers: Mapping[str, str], body: bytes, now: float | None = None) -> ParsedWebhook:
    """The ticket a doorbell names; no events (the worker reads them).

    Dedup key: ``freshdesk:<ticket>:`` + SHA-256 of the body and the arrival time in
    milliseconds. Only an exact copy arriving in the same millisecond is dropped. A coarser key
    (body + minute) would swallow the doorbell of a second agent reply made within the same
    minute after the first doorbell was already read, and that reply would wait for the next
    event on the ticket; while a doorbell let through twice costs only one more read of the
    ticket (the services deduplicate messages by conversation id). Freshdesk's own retries come
    5, 30 and 60 minutes apart, which no key based on time could merge anyway.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WebhookInvalid("body", "must be a JSON object") from None
    if not isinstance(data, dict):
        raise WebhookInvalid("body", "must be a JSON object")
    ticket_id = data.get("ticket_id")
    if isinstance(ticket_id, int) and not isinstance(ticket_id, bool):
        ticket_id = str(ticket_id)
    if not isinstance(ticket_id, str) or not ticket_id.strip():
        raise WebhookInvalid("ticket_id", "is required")
    ticket_id = ticket_id.strip()
    if not (ticket_id.isascii() and ticket_id.isdigit()) or len(ticket_id) > MAX_ID:
        raise WebhookInvalid("ticket_id", "must be a numeric ticket id")
    arrived_ms = int((time.time() if now is None else now) * 1000)
    digest = hashlib.sha256(body + b"\n" + str(arrived_ms).encode()).hexdigest()[:40]
    return ParsedWebhook(
        dedup_key=f"freshdesk:{ticket_id}:{digest}",
        event_type=EVENT_TYPE,
        ticket_external_id=ticket_id,
        events=[],
        doorbell=True,
    )
