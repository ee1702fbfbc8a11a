"""Zendesk webhooks: the triggers we install, signature checks, and parsing what they send.

We install our own triggers, so we choose the body they send (``TRIGGER_BODY``): Zendesk
renders its placeholders, every value arriving as a string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from providers.base import (
    AgentProfile,
    InboundEvent,
    MessagePart,
    ParsedWebhook,
    WebhookInvalid,
    WebhookRejected,
)
from providers.html_parts import filename_from_url, html_to_parts

SIGNATURE_HEADER = "x-zendesk-webhook-signature"
TIMESTAMP_HEADER = "x-zendesk-webhook-signature-timestamp"
INVOCATION_HEADER = "x-zendesk-webhook-invocation-id"

NEW_MESSAGE, ASSIGNED, SOLVED = "newMessage", "ticketAssigned", "ticketSolved"
EVENT_TYPES = (NEW_MESSAGE, ASSIGNED, SOLVED)

# Ticket and comment ids are stored in 64-character columns (Zendesk's are 64-bit integers).
MAX_ID = 64
_PERSON = ("id", "name", "email", "role", "remote_photo_url")


# The latest public comment's attachments as a JSON array, with Zendesk's Liquid: the comment
# object's ``attachments`` each have ``filename`` and ``url`` [doc support.zendesk.com
# "Zendesk placeholders reference", comment data; the same loop is used by public trigger bodies].
_ATTACHMENTS_LIQUID = (
    "[{% for attachment in ticket.latest_public_comment.attachments %}"
    '{"filename": "{{attachment.filename}}", "url": "{{attachment.url}}"}'
    "{% if forloop.last == false %},{% endif %}{% endfor %}]"
)
_ATTACHMENTS_SLOT = "__attachments__"


def trigger_body(event_type: str) -> str:
    """The JSON template a trigger posts; Zendesk fills the ``{{...}}`` placeholders.

    ``attachments`` lists the latest public comment's attachments (an empty array when there
    are none), so relaying an agent's files needs no API read.
    """
    body = {
        "type": event_type,
        "ticketId": "{{ticket.id}}",
        "externalId": "{{ticket.external_id}}",
        "status": "{{ticket.status}}",
        "commentId": "{{ticket.public_comments[0].id}}",
        "comment": "{{ticket.latest_public_comment_html}}",
        "attachments": _ATTACHMENTS_SLOT,
        "agent": {key: f"{{{{ticket.assignee.{key}}}}}" for key in _PERSON},
        "currentUser": {key: f"{{{{current_user.{key}}}}}" for key in _PERSON},
    }
    return json.dumps(body).replace(json.dumps(_ATTACHMENTS_SLOT), _ATTACHMENTS_LIQUID)


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
    parts = comment_parts(_string(data, "comment"), attachments=_attachments(data))
    if not parts:
        return None
    return InboundEvent(
        kind="agent_message",
        ticket_external_id=ticket_id,
        reference=reference,
        agent=author,
        message_external_id=comment_id,
        text="\n\n".join(part.text for part in parts if part.kind == "text"),
        parts=tuple(parts),
    )


def _attachments(data: dict) -> list[MessagePart]:
    """The comment's attachments from our trigger body (absent in bodies of older triggers)."""
    listed = data.get("attachments") or []
    if not isinstance(listed, list):
        raise WebhookInvalid("attachments", "must be a list")
    parts = []
    for item in listed:
        if not isinstance(item, dict):
            raise WebhookInvalid("attachments", "must be a list of objects")
        url = _string(item, "url")
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            continue  # nothing the gateway could fetch
        filename = _string(item, "filename") or filename_from_url(url)
        parts.append(MessagePart(kind="media", url=url, filename=filename))
    return parts


def _is_staff(role: str) -> bool:
    normalised = re.sub(r"[^a-z]", "", role.lower())
    return normalised in ("agent", "admin", "administrator", "lightagent")


# Zendesk's "submitted by X on behalf of Y" banner line [code BP ``hitl-ticket-filter.ts``].
_BANNER = re.compile(r"^\s*!\*\*\*.*|.*\*\*\*!\s*$")
_SEPARATOR = re.compile(r"^\s*-{3,}\s*$")
# The legacy comment header, "Jane Agent, Mar 3, 2026, 10:04" (12-hour clocks add AM/PM)
# [BP PR #14835: dashes, a blank line, an optional banner, "Author, date", then the body].
_AUTHOR_DATE = re.compile(r"^.{1,200}, [A-Z][a-z]{2,8} \d{1,2}, \d{4}, \d{1,2}:\d{2}(?: ?[AaPp][Mm])?\s*$")


def comment_parts(comment_html: str, *, attachments: list[MessagePart] = ()) -> list[MessagePart]:
    """An agent's comment as ordered parts: its text and inline images, then its attachments.

    Zendesk's legacy comment shape loses its dashes line, banner and "Author, date" header; an
    attachment that is also an inline image (same URL) is listed once, where it is inline.
    """
    parts = html_to_parts(comment_html)
    if parts and parts[0].kind == "text":
        body = _strip_legacy_header(parts[0].text)
        parts = ([replace(parts[0], text=body)] if body else []) + parts[1:]
    inline = {_url_key(part.url) for part in parts if part.kind == "media"}
    return parts + [part for part in attachments if _url_key(part.url) not in inline]


def comment_text(comment_html: str) -> str:
    """The text of a rendered comment (Markdown), without Zendesk's legacy header."""
    return "\n\n".join(part.text for part in comment_parts(comment_html) if part.kind == "text")


def _strip_legacy_header(text: str) -> str:
    lines = text.split("\n")
    legacy = bool(lines) and bool(_SEPARATOR.match(lines[0]))
    if legacy:
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    if lines and _BANNER.match(lines[0]):
        lines = lines[1:]
        while lines and not lines[0].strip():
            lines = lines[1:]
    if legacy and lines and _AUTHOR_DATE.match(lines[0]):
        lines = lines[1:]
    return "\n".join(lines).strip()


def _url_key(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.netloc.lower()}{parts.path.rstrip('/')}?{parts.query}"


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
