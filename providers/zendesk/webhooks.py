"""Zendesk webhooks: the triggers we install, signature checks, and parsing what they send.

We install our own triggers, so we choose the body they send (``TRIGGER_BODY``): Zendesk
renders its placeholders, every value arriving as a string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta

from providers.base import AgentProfile, InboundEvent, ParsedWebhook, WebhookInvalid, WebhookRejected

SIGNATURE_HEADER = "x-zendesk-webhook-signature"
TIMESTAMP_HEADER = "x-zendesk-webhook-signature-timestamp"
INVOCATION_HEADER = "x-zendesk-webhook-invocation-id"

NEW_MESSAGE, ASSIGNED, SOLVED = "newMessage", "ticketAssigned", "ticketSolved"
EVENT_TYPES = (NEW_MESSAGE, ASSIGNED, SOLVED)

# Ticket and comment ids are stored in 64-character columns (Zendesk's are 64-bit integers).
MAX_ID = 64
_PERSON = ("id", "name", "email", "role", "remote_photo_url")


def trigger_body(event_type: str) -> str:
    """The JSON template a trigger posts; Zendesk fills the ``{{...}}`` placeholders."""
    body = {
        "type": event_type,
        "ticketId": "{{ticket.id}}",
        "externalId": "{{ticket.external_id}}",
        "status": "{{ticket.status}}",
        "commentId": "{{ticket.public_comments[0].id}}",
        "comment": "{{ticket.latest_public_comment_html}}",
        "agent": {key: f"{{{{ticket.assignee.{key}}}}}" for key in _PERSON},
        "currentUser": {key: f"{{{{current_user.{key}}}}}" for key in _PERSON},
    }
    return json.dumps(body)


# Conditions of Botpress's own integration: public comments not made through the API (via 5,
# which is how our own comments are made, so they never echo back), any assignee change,
# status changed to solved.
TRIGGERS = {
    NEW_MESSAGE: {
        "all": [
            {"field": "comment_is_public", "operator": "is", "value": "requester_can_see_comment"},
            {"field": "current_via_id", "operator": "is_not", "value": "5"},
        ],
        "any": [],
    },
    ASSIGNED: {"all": [], "any": [{"field": "assignee_id", "operator": "changed"}]},
    SOLVED: {"all": [{"field": "status", "operator": "value", "value": "solved"}], "any": []},
}


def signature_compute(*, secret: str, timestamp: str, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, TIMESTAMP + BODY)), as Zendesk's current docs specify."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature_verify(*, headers: Mapping[str, str], body: bytes, secret: str, now: datetime, window: timedelta) -> None:
    if not secret:
        raise WebhookRejected("no signing secret configured for this integration")
    signature = headers.get(SIGNATURE_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp:
        raise WebhookRejected("missing signature headers")
    try:
        signed_at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise WebhookRejected("malformed signature timestamp") from None
    if signed_at.tzinfo is None or abs(now - signed_at) > window:
        raise WebhookRejected("signature timestamp outside the replay window")
    expected = signature_compute(secret=secret, timestamp=timestamp, body=body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise WebhookRejected("signature mismatch")


def replay_key(*, headers: Mapping[str, str], body: bytes) -> str:
    """``zendesk-sig:`` + hex SHA-256 of signature timestamp + body: exactly what Zendesk signs.

    The invocation id (our dedup key) is not signed, so a captured webhook re-sent within the
    replay window under a new invocation id has the same key. Two genuine webhooks share it only
    if the same trigger sent the same body in the same second, which says the same thing twice.
    """
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    return "zendesk-sig:" + hashlib.sha256(timestamp.encode() + body).hexdigest()


def webhook_parse(*, headers: Mapping[str, str], body: bytes) -> ParsedWebhook:
    try:
        # UTF-8 only (RFC 8259 section 8.1), so the stored text is the body that was signed.
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WebhookInvalid("body", "must be a JSON object") from None
    if not isinstance(data, dict):
        raise WebhookInvalid("body", "must be a JSON object")
    event_type = _string(data, "type", required=True)
    if event_type not in EVENT_TYPES:
        raise WebhookInvalid("type", f"must be one of {', '.join(EVENT_TYPES)}")
    ticket_id = _string(data, "ticketId", required=True)
    if not (ticket_id.isascii() and ticket_id.isdigit()) or len(ticket_id) > MAX_ID:
        raise WebhookInvalid("ticketId", "must be a numeric ticket id")
    reference = _string(data, "externalId")
    current_user = _person(data, "currentUser")
    invocation = headers.get(INVOCATION_HEADER, "")
    if len(invocation) > MAX_ID:
        invocation = hashlib.sha256(invocation.encode()).hexdigest()
    dedup_source = invocation or hashlib.sha256(body).hexdigest()
    dedup_key = f"zendesk:{event_type}:{dedup_source}"

    events: list[InboundEvent] = []
    if event_type in (NEW_MESSAGE, SOLVED):
        message = _agent_comment(data, ticket_id, reference, current_user)
        if message:
            events.append(message)
    if event_type == ASSIGNED:
        agent = _person(data, "agent")
        # An un-assignment also fires the trigger; it assigns nobody.
        if agent.external_id and agent.external_id != "-1":
            events.append(InboundEvent(kind="assigned", ticket_external_id=ticket_id, reference=reference, agent=agent))
    if event_type == SOLVED:
        events.append(
            InboundEvent(kind="stopped", ticket_external_id=ticket_id, reference=reference, agent=current_user)
        )
    return ParsedWebhook(dedup_key=dedup_key, event_type=event_type, ticket_external_id=ticket_id, events=events)


def _agent_comment(data: dict, ticket_id: str, reference: str, author: AgentProfile) -> InboundEvent | None:
    """The latest public comment, if a human agent wrote it (not a system or end-user comment)."""
    comment_id = _string(data, "commentId")
    if not comment_id:
        return None
    if not (comment_id.isascii() and comment_id.isdigit()) or len(comment_id) > MAX_ID:
        raise WebhookInvalid("commentId", "must be a numeric comment id")
    if author.external_id in ("", "-1") or not _is_staff(_string(data.get("currentUser") or {}, "role")):
        return None
    text = comment_text(_string(data, "comment"))
    if not text:
        return None
    return InboundEvent(
        kind="agent_message",
        ticket_external_id=ticket_id,
        reference=reference,
        agent=author,
        message_external_id=comment_id,
        text=text,
    )


def _is_staff(role: str) -> bool:
    normalised = re.sub(r"[^a-z]", "", role.lower())
    return normalised in ("agent", "admin", "administrator", "lightagent")


_BANNER = re.compile(r"^\s*!\*\*\*.*|.*\*\*\*!\s*$")
_BREAKS = re.compile(r"<\s*(br|/p|/div|/li|/h[1-6])\s*/?\s*>", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]+>")


def comment_text(comment_html: str) -> str:
    """Plain text of a rendered comment, without Zendesk's separator and 'on behalf of' banner."""
    text = _BREAKS.sub("\n", comment_html)
    text = html.unescape(_TAGS.sub("", text)).replace("\r\n", "\n")
    text = text.lstrip().lstrip("-").strip()
    lines = text.split("\n")
    if lines and _BANNER.match(lines[0]):
        lines = lines[1:]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in lines)).strip()


def _string(data: dict, key: str, *, required: bool = False) -> str:
    value = data.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str | int):
        raise WebhookInvalid(key, "must be a string")
    value = str(value).strip()
    if required and not value:
        raise WebhookInvalid(key, "is required")
    return value


def _person(data: dict, key: str) -> AgentProfile:
    person = data.get(key) or {}
    if not isinstance(person, dict):
        raise WebhookInvalid(key, "must be an object")
    return AgentProfile(
        external_id=_string(person, "id"),
        name=_string(person, "name"),
        email=_string(person, "email"),
        picture_url=_string(person, "remote_photo_url"),
    )
