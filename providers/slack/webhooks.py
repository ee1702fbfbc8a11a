"""Slack's Events API and interactivity requests: verified on the raw body, parsed without I/O.

Signature v0 [doc docs.slack.dev/authentication/verifying-requests-from-slack; code
slackapi/python-slack-sdk ``slack_sdk/signature``]: ``X-Slack-Signature: v0=<hex>`` is
HMAC-SHA256(signing secret, ``"v0:" + X-Slack-Request-Timestamp + ":" + raw body``), and a
timestamp more than five minutes from now is refused. Events arrive as JSON
(``url_verification`` or ``event_callback`` envelopes [doc docs.slack.dev/reference/events/
url_verification, api.slack.com/types/event]); button presses arrive form-encoded with one
``payload`` field holding the JSON of a ``block_actions`` payload [doc docs.slack.dev/reference/
interaction-payloads/block_actions-payload], signed the same way. Slack retries an event it
got no 2xx for within 3 seconds (``X-Slack-Retry-Num``, ``X-Slack-Retry-Reason``) with the
same ``event_id``, which is the dedup key.

What becomes an event (the rest is stored and ignored):
- a human's reply in a thread of the agents' channel (``thread_ts`` set and not its own ``ts``,
  no ``bot_id``, not our bot user, no subtype or ``file_share``/``thread_broadcast``) →
  ``agent_message`` (text as plain text, files as media parts);
- the Take button → ``assigned``; the Close button, or a ✅ reaction on a root → ``stopped``.
Edits, deletions, joins and other subtypes, top-level messages and other channels are ignored.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier

from providers.base import AgentProfile, InboundEvent, MessagePart, ParsedWebhook, WebhookInvalid, WebhookRejected

SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
RETRY_NUM_HEADER = "x-slack-retry-num"
RETRY_REASON_HEADER = "x-slack-retry-reason"
ACTION_TAKE, ACTION_CLOSE = "hitl_take", "hitl_close"
CLOSE_REACTIONS = frozenset({"white_check_mark", "heavy_check_mark", "ballot_box_with_check"})
RELAYED_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})
_TS = re.compile(r"^\d{1,12}\.\d{1,8}$")
_ID = re.compile(r"^[A-Z0-9]{2,32}$")
_MRKDWN_TOKEN = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


class _Clock:
    def __init__(self, now: datetime) -> None:
        self._now = now.timestamp()

    def now(self) -> float:
        return self._now


def signature_verify(*, headers: Mapping[str, str], body: bytes, secret: str, now: datetime, window: timedelta) -> None:
    """Raise ``WebhookRejected`` unless ``X-Slack-Signature`` signs this body within ``window``."""
    if not secret:
        raise WebhookRejected("no signing secret configured for this integration")
    timestamp, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
    if not timestamp or not signature:
        raise WebhookRejected("missing X-Slack-Signature or X-Slack-Request-Timestamp header")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise WebhookRejected("malformed X-Slack-Request-Timestamp")
    if abs(now.timestamp() - int(timestamp)) > window.total_seconds():
        raise WebhookRejected("X-Slack-Request-Timestamp outside the replay window")
    # slack_sdk compares in constant time (hmac.compare_digest) and applies its own 5 minutes.
    if not SignatureVerifier(secret, clock=_Clock(now)).is_valid(body=body, timestamp=timestamp, signature=signature):
        raise WebhookRejected("signature mismatch")


def mrkdwn_to_text(text: str) -> str:
    """Slack's message text as plain text: ``<@U1>`` → ``@U1``, ``<url|label>`` → ``label (url)``,
    ``<!here>`` → ``@here``, then ``&lt; &gt; &amp;`` unescaped [doc docs.slack.dev/messaging/
    formatting-message-text]."""

    def token(match: re.Match) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith("@") or target.startswith("#"):
            return (label and f"{target[0]}{label}") or target
        if target.startswith("!"):
            name = target[1:].split("^", 1)[0]
            return label or f"@{name}"
        return f"{label} ({target})" if label and label != target else target

    return html.unescape(_MRKDWN_TOKEN.sub(token, text))


def _object(value, field: str) -> dict:
    if not isinstance(value, dict):
        raise WebhookInvalid(field, "must be an object")
    return value


def _string(data: Mapping, key: str, field: str, *, pattern: re.Pattern | None = None, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise WebhookInvalid(field, "must be a non-empty string")
    if pattern is not None and value and not pattern.fullmatch(value):
        raise WebhookInvalid(field, "has an unexpected format")
    return value


IGNORED_REPLY = {"status": "ignored"}


def _ignored(dedup_key: str, event_type: str, ticket: str = "") -> ParsedWebhook:
    """Nothing for the gateway (our own posts' echoes, edits, other channels...): answered at
    once and not stored. Slack sends every message of the channel, ours included, so storing
    them would double the webhooks to apply for nothing."""
    return ParsedWebhook(
        dedup_key=dedup_key, event_type=event_type, ticket_external_id=ticket, events=[], reply=IGNORED_REPLY
    )


def webhook_parse(*, headers: Mapping[str, str], body: bytes, installation: Mapping | None = None) -> ParsedWebhook:
    """Events or a button press, as ``ParsedWebhook``; ``WebhookInvalid`` names the bad field."""
    installation = installation or {}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        return _interaction_parse(body, installation)
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WebhookInvalid("body", "must be a JSON object or a form with a payload field") from None
    data = _object(data, "body")
    kind = data.get("type")
    if kind == "url_verification":
        challenge = _string(data, "challenge", "challenge")
        return ParsedWebhook(
            dedup_key="",
            event_type="url_verification",
            ticket_external_id="",
            events=[],
            reply={"challenge": challenge},
        )
    if kind != "event_callback":
        raise WebhookInvalid("type", "must be 'event_callback' or 'url_verification'")
    event_id = _string(data, "event_id", "event_id", pattern=re.compile(r"^[A-Za-z0-9_-]{1,64}$"))
    event = _object(data.get("event"), "event")
    event_type = _string(event, "type", "event.type")
    dedup_key = f"slack:{event_id}"
    channel_id = str(installation.get("channel_id") or "")
    if event_type == "message":
        return _message_parse(event, dedup_key, channel_id, installation)
    if event_type == "reaction_added":
        item = _object(event.get("item"), "event.item")
        if item.get("type") != "message" or (channel_id and item.get("channel") != channel_id):
            return _ignored(dedup_key, event_type)
        root = _string(item, "ts", "event.item.ts", pattern=_TS)
        if event.get("reaction") not in CLOSE_REACTIONS:
            return _ignored(dedup_key, event_type, root)
        user = _string(event, "user", "event.user", pattern=_ID)
        if user == installation.get("bot_user_id"):
            return _ignored(dedup_key, event_type, root)
        stop = InboundEvent(kind="stopped", ticket_external_id=root, agent=AgentProfile(external_id=user))
        return ParsedWebhook(dedup_key=dedup_key, event_type=event_type, ticket_external_id=root, events=[stop])
    return _ignored(dedup_key, event_type)


def _message_parse(event: dict, dedup_key: str, channel_id: str, installation: Mapping) -> ParsedWebhook:
    subtype = event.get("subtype") or ""
    if not isinstance(subtype, str):
        raise WebhookInvalid("event.subtype", "must be a string")
    event_type = f"message.{subtype}" if subtype else "message"
    thread_ts = event.get("thread_ts") or ""
    if not isinstance(thread_ts, str) or (thread_ts and not _TS.fullmatch(thread_ts)):
        raise WebhookInvalid("event.thread_ts", "has an unexpected format")
    if (channel_id and event.get("channel") != channel_id) or subtype not in RELAYED_SUBTYPES:
        return _ignored(dedup_key, event_type, thread_ts)
    ts = _string(event, "ts", "event.ts", pattern=_TS)
    if not thread_ts or thread_ts == ts:  # a top-level message: not in a session's thread
        return _ignored(dedup_key, event_type, thread_ts)
    user = event.get("user") or ""
    if event.get("bot_id") or not user or user == installation.get("bot_user_id"):
        return _ignored(dedup_key, event_type, thread_ts)  # ours (an echo) or another bot's
    if not isinstance(user, str) or not _ID.fullmatch(user):
        raise WebhookInvalid("event.user", "has an unexpected format")
    text = event.get("text") or ""
    if not isinstance(text, str):
        raise WebhookInvalid("event.text", "must be a string")
    parts = [MessagePart(kind="text", text=mrkdwn_to_text(text).strip())] if text.strip() else []
    files = event.get("files") or []
    if not isinstance(files, list):
        raise WebhookInvalid("event.files", "must be a list")
    for index, item in enumerate(files):
        item = _object(item, f"event.files[{index}]")
        url = item.get("url_private_download") or item.get("url_private") or ""
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            continue  # a file without a downloadable copy (deleted, external, tombstoned)
        parts.append(
            MessagePart(
                kind="media",
                url=url,
                filename=str(item.get("name") or item.get("title") or "attachment")[:255],
                content_type=str(item.get("mimetype") or ""),
                alt=str(item.get("title") or "")[:255] if item.get("title") != item.get("name") else "",
            )
        )
    if not parts:
        return _ignored(dedup_key, event_type, thread_ts)
    message = InboundEvent(
        kind="agent_message",
        ticket_external_id=thread_ts,
        agent=AgentProfile(external_id=user),
        message_external_id=ts,
        text="\n\n".join(p.text for p in parts if p.kind == "text"),
        parts=tuple(parts),
    )
    return ParsedWebhook(dedup_key=dedup_key, event_type=event_type, ticket_external_id=thread_ts, events=[message])


def _interaction_parse(body: bytes, installation: Mapping) -> ParsedWebhook:
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (ValueError, UnicodeDecodeError):
        raise WebhookInvalid("body", "must be a form with a payload field") from None
    raw = form.get("payload") or []
    if len(raw) != 1:
        raise WebhookInvalid("payload", "is required once")
    try:
        payload = json.loads(raw[0])
    except (ValueError, RecursionError):
        raise WebhookInvalid("payload", "must be JSON") from None
    payload = _object(payload, "payload")
    kind = _string(payload, "type", "payload.type")
    digest = hashlib.sha256(raw[0].encode()).hexdigest()[:40]
    if kind != "block_actions":
        return _ignored(f"slack:interaction:{digest}", f"interaction.{kind}"[:64])
    user = _string(_object(payload.get("user"), "payload.user"), "id", "payload.user.id", pattern=_ID)
    container = _object(payload.get("container") or {}, "payload.container")
    message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
    root = container.get("message_ts") or message.get("ts") or ""
    if not isinstance(root, str) or not _TS.fullmatch(root):
        raise WebhookInvalid("payload.container.message_ts", "must be a message timestamp")
    channel = container.get("channel_id") or (payload.get("channel") or {}).get("id") or ""
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        raise WebhookInvalid("payload.actions", "must be a non-empty list")
    action = _object(actions[0], "payload.actions[0]")
    action_id = _string(action, "action_id", "payload.actions[0].action_id")
    action_ts = str(action.get("action_ts") or "")
    dedup_key = f"slack:action:{root}:{action_id}:{user}:{action_ts or digest}"[:200]
    event_type = f"block_actions.{action_id}"[:64]
    channel_id = str(installation.get("channel_id") or "")
    if (channel_id and channel != channel_id) or action_id not in (ACTION_TAKE, ACTION_CLOSE):
        return _ignored(dedup_key, event_type, root)
    reference = action.get("value") if isinstance(action.get("value"), str) else ""
    # The payload's user name is a handle, not a display name: the agent is named by id only,
    # and the worker asks users.info for the profile.
    kind_of = "assigned" if action_id == ACTION_TAKE else "stopped"
    event = InboundEvent(
        kind=kind_of, ticket_external_id=root, reference=reference[:255], agent=AgentProfile(external_id=user)
    )
    return ParsedWebhook(dedup_key=dedup_key, event_type=event_type, ticket_external_id=root, events=[event])
