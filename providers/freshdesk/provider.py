"""The Freshdesk adapter: API-key auth, contacts, tickets, incoming public notes, doorbell webhooks.

Protocol facts are from the Freshdesk API v2 reference [doc developers.freshdesk.com/api, read
from the text copy ``ktsaou/freshdesk_mcp:FRESHDESK_API_DOCS.txt``] unless marked *(inferred)*.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import requests

from outbound.http import PermanentError, RetryableError, json_object
from outbound.http import request as http_request
from outbound.media import MediaFile
from providers.base import (
    AgentProfile,
    ConnectionCheck,
    ExternalUserSpec,
    HelpDeskProvider,
    InboundEvent,
    MessagePart,
    OutboundMessage,
    ParsedWebhook,
    TicketChanges,
    TicketRef,
    TicketSpec,
    WebhookInstallation,
)
from providers.freshdesk import webhooks
from providers.freshdesk.entity import PRIORITIES, FreshdeskHitlSessionSerializer
from providers.freshdesk.errors import describe_freshdesk_error
from providers.html_parts import html_to_parts
from providers.rendering import render_payload

MEDIA_FIELDS = {"image": "imageUrl", "audio": "audioUrl", "video": "videoUrl", "file": "fileUrl"}
MEDIA_LABELS = {"image": "Image", "audio": "Audio", "video": "Video", "file": "File"}
STATUS_OPEN, STATUS_CLOSED = 2, 5
STATUS_NAMES = {2: "open", 3: "pending", 4: "resolved", 5: "closed"}
PRIORITY_NAMES = {number: name for name, number in PRIORITIES.items()}
SOURCE_CHAT = 7  # ticket sources: 1 Email, 2 Portal, 3 Phone, 7 Chat, ...
CONVERSATION_REPLY, CONVERSATION_NOTE = 0, 2  # conversation sources
# Attachments of one conversation, all files together [doc: "total size of these attachments
# cannot exceed 20MB"]; a file that would go over is sent as a link only.
MAX_ATTACHMENTS_BYTES = 20 * 1024 * 1024
PER_PAGE = 100  # the largest page Freshdesk serves
MAX_PAGES = 50  # conversations read per ticket: 5,000, far more than a chat session holds
RECENT_PAGES = 3  # recently updated tickets scanned when the search index has not caught up


def reference_tag(reference: str) -> str:
    """The tag that carries our reference (the Botpress conversation id) on a ticket.

    A hash, because a Botpress conversation id is longer than a tag may be *(inferred: 32
    characters)* and tags are matched case-insensitively; 96 bits make a collision negligible.
    """
    return "hitl-" + hashlib.sha256(reference.encode()).hexdigest()[:24]


@dataclass
class _Budget:
    total: int = 0
    remaining: int = -1
    paused_until: float = 0.0


class _RatePacer:
    """Freshdesk's per-minute, account-wide API budget, as its answers report it, per account.

    Every answer carries ``X-RateLimit-Total`` and ``X-RateLimit-Remaining``; a 429 carries
    ``Retry-After`` (seconds) [doc "Rate Limit"]. Policy:

    - after a 429, or an answer with 0 calls remaining, calls to that account raise
      ``RetryableError`` with ``retry_after`` without being sent (until ``Retry-After`` has
      passed, or ``ZERO_PAUSE`` seconds: Freshdesk does not say when its minute ends), so the
      outbox reschedules them instead of spending calls that count against the budget too;
    - while at most ``LOW_SHARE`` of the budget remains, each call first sleeps the average
      spacing the budget allows (60 s / total), at most ``MAX_SLEEP`` seconds.

    Shared by every adapter of the process (adapters are built per use), keyed by base URL.
    """

    LOW_SHARE = 0.1
    MAX_SLEEP = 1.0
    ZERO_PAUSE = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._budgets: dict[str, _Budget] = {}

    def before(self, key: str) -> None:
        with self._lock:
            budget = self._budgets.get(key)
            if budget is None:
                return
            wait = budget.paused_until - time.monotonic()
            low = budget.total > 0 and 0 <= budget.remaining <= budget.total * self.LOW_SHARE
            pace = min(self.MAX_SLEEP, 60.0 / budget.total) if low else 0.0
        if wait > 0:
            raise RetryableError("Freshdesk API rate limit reached", 429, wait, "rate_limited")
        if pace:
            time.sleep(pace)

    def after(self, key: str, response: requests.Response | None, *, retry_after: float | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            budget = self._budgets.setdefault(key, _Budget())
            if response is not None:
                total = response.headers.get("X-RateLimit-Total", "")
                remaining = response.headers.get("X-RateLimit-Remaining", "")
                if total.isdigit():
                    budget.total = int(total)
                if remaining.lstrip("-").isdigit():
                    budget.remaining = int(remaining)
                    if budget.remaining <= 0:
                        budget.paused_until = max(budget.paused_until, now + self.ZERO_PAUSE)
            if retry_after is not None:
                budget.paused_until = max(budget.paused_until, now + retry_after)

    def reset(self) -> None:
        with self._lock:
            self._budgets.clear()


RATE_PACER = _RatePacer()


class FreshdeskProvider(HelpDeskProvider):
    kind = "freshdesk"
    entity_serializer = FreshdeskHitlSessionSerializer
    doorbell_webhooks = True

    # --- transport --------------------------------------------------------------------------
    def _auth_header(self) -> str:
        """Basic auth with the API key as user name and any password ("X") [doc "Authentication"]."""
        return "Basic " + base64.b64encode(f"{self.credentials['api_key']}:X".encode()).decode()

    def _send(self, method: str, path_or_url: str, *, describe=describe_freshdesk_error, **kw) -> requests.Response:
        url = path_or_url if "://" in path_or_url else f"{self.base_url}/api/v2/{path_or_url}"
        RATE_PACER.before(self.base_url)
        try:
            response = http_request(
                self.session,
                method,
                url,
                timeout=self.timeout,
                describe_error=describe,
                headers={"Authorization": self._auth_header()},
                **kw,
            )
        except RetryableError as exc:
            if exc.status_code == 429:
                RATE_PACER.after(self.base_url, None, retry_after=exc.retry_after or RATE_PACER.ZERO_PAUSE)
            raise
        RATE_PACER.after(self.base_url, response)
        return response

    def _json(self, method: str, path: str, **kw):
        response = self._send(method, path, **kw)
        return response.json() if response.content else {}

    def _pages(self, path: str, params: Mapping | None = None, *, max_pages: int = MAX_PAGES) -> Iterator[dict]:
        """Every item of a paginated list, following the ``link: <...>; rel="next"`` header."""
        url, query = path, {"per_page": PER_PAGE, **(params or {})}
        for _ in range(max_pages):
            response = self._send("GET", url, params=query)
            yield from response.json() or []
            next_url = response.links.get("next", {}).get("url")
            if not next_url:
                return
            if not self._own_host(next_url):
                raise PermanentError(f"Freshdesk's next page is on another host: {urlsplit(next_url).netloc}")
            url, query = next_url, None

    # --- contacts ---------------------------------------------------------------------------
    def external_user_upsert(self, user: ExternalUserSpec, *, role: str = "end-user") -> str:
        """The contact whose ``unique_external_id`` is the Botpress user id; created if missing.

        Freshdesk needs a name and one of email, phone, mobile, twitter_id or
        unique_external_id [doc "Create a Contact"], so a user without e-mail is fine. A 409
        ``duplicate_value`` (the e-mail belongs to an existing contact, or a lost attempt made
        this one) links the existing contact, giving it our id when it has none. The bot is a
        contact too (``role`` is not a Freshdesk notion): its notes then read as incoming.
        Avatars need a multipart upload of the image and are not sent.
        """
        body: dict = {"name": (user.name or user.reference)[:255], "unique_external_id": user.reference}
        if user.email:
            body["email"] = user.email
        answer: dict = {}

        def describe(response: requests.Response) -> tuple[str, str]:
            answer.update(json_object(response))
            return describe_freshdesk_error(response)

        try:
            return str(self._json("POST", "contacts", json=body, describe=describe)["id"])
        except RetryableError as exc:
            codes = {e.get("code") for e in answer.get("errors") or [] if isinstance(e, dict)}
            if exc.status_code != 409 or "duplicate_value" not in codes:
                raise
        existing = self._contact_by(unique_external_id=user.reference)
        if existing is None and user.email:
            existing = self._contact_by(email=user.email)
        if existing is None:
            raise PermanentError("Freshdesk reports a duplicate contact that cannot be found", 409)
        if not existing.get("unique_external_id"):
            self._json("PUT", f"contacts/{existing['id']}", json={"unique_external_id": user.reference})
        return str(existing["id"])

    def _contact_by(self, **criteria: str) -> dict | None:
        found = self._json("GET", "contacts", params=criteria)
        return found[0] if isinstance(found, list) and found else None

    # --- tickets ----------------------------------------------------------------------------
    def ticket_create(self, spec: TicketSpec, *, idempotency_key: str) -> TicketRef:
        """``POST /tickets``; Freshdesk has no idempotency key, so a lost answer is found by our tag.

        The description is HTML: the plain-text description and transcript, escaped, with line
        breaks kept. Status 2 (Open), source 7 (Chat), priority from the entity (default 1 Low).
        """
        extras = spec.extras
        ticket: dict = {
            "requester_id": int(spec.requester_external_id),
            "subject": spec.subject[:255] or "Untitled Ticket",
            "description": text_to_html(spec.body),
            "status": STATUS_OPEN,
            "priority": PRIORITIES.get(extras.get("priority", ""), 1),
            "source": SOURCE_CHAT,
            "tags": list(dict.fromkeys([webhooks.HITL_TAG, reference_tag(spec.reference), *extras.get("tags", [])])),
        }
        if extras.get("groupId"):
            ticket["group_id"] = int(extras["groupId"])
        if extras.get("type"):
            ticket["type"] = extras["type"]
        if extras.get("customFields"):
            ticket["custom_fields"] = dict(extras["customFields"])
        return self._ticket_ref(self._json("POST", "tickets", json=ticket))

    def ticket_find(self, *, reference: str) -> TicketRef | None:
        """The ticket tagged with our reference: by the search API, else among recent tickets.

        The filter API (``GET /search/tickets?query="tag:'...'"``) reads a search index that is
        updated shortly after a write *(inferred: Freshdesk documents no guarantee)*, so a ticket
        created by an attempt whose answer was lost a moment ago may be missing from it; the
        tickets list (``updated_since``, newest first) reads the tickets themselves.
        """
        tag = reference_tag(reference)
        found = self._json("GET", "search/tickets", params={"query": f"\"tag:'{tag}'\""})
        results = [t for t in found.get("results") or [] if tag in (t.get("tags") or [])]
        if results:
            return self._ticket_ref(min(results, key=lambda t: t["id"]))
        since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        params = {"updated_since": since, "order_by": "created_at", "order_type": "asc"}
        for ticket in self._pages("tickets", params, max_pages=RECENT_PAGES):
            if tag in (ticket.get("tags") or []):
                return self._ticket_ref(ticket)
        return None

    def ticket_close(self, *, ticket_external_id: str) -> None:
        """Status 5 (Closed), not 4 (Resolved): the session is over, as with Zendesk's ``closed``.

        Resolved tells the customer the issue is fixed and waits for them to reopen it by
        e-mail; a chat session that the bot stopped has no one left to answer in the ticket.
        """
        self._json("PUT", f"tickets/{ticket_external_id}", json={"status": STATUS_CLOSED})

    def _ticket_ref(self, ticket: dict) -> TicketRef:
        return TicketRef(
            external_id=str(ticket["id"]),
            url=f"{self.base_url}/a/tickets/{ticket['id']}",
            status=STATUS_NAMES.get(ticket.get("status"), str(ticket.get("status") or "")),
            priority=PRIORITY_NAMES.get(ticket.get("priority"), str(ticket.get("priority") or "")),
        )

    # --- notes ------------------------------------------------------------------------------
    def message_post(self, *, ticket_external_id: str, message: OutboundMessage) -> str:
        """A public note that reads as the customer's: ``incoming: true``, ``private: false``,
        ``user_id`` = the contact (the bot's own contact for bot messages).

        A bloc is one note. Media the media fetcher can get within limits are attached as
        multipart ``attachments[]``; the link stays in the text either way.
        """
        body_html, _, media_urls = note_parts(message)
        files = self._attachments(media_urls)
        path = f"tickets/{ticket_external_id}/notes"
        user_id = int(message.author_external_id)
        if files:
            fields = {"body": body_html, "incoming": "true", "private": "false", "user_id": str(user_id)}
            data = self._json("POST", path, data=fields, files=files)
        else:
            note = {"body": body_html, "incoming": True, "private": False, "user_id": user_id}
            data = self._json("POST", path, json=note)
        return str(data["id"])

    def message_find(self, *, ticket_external_id: str, message: OutboundMessage, exclude: set[str]) -> str | None:
        """The note a lost attempt may have posted: same author and text, not already known."""
        _, text, _ = note_parts(message)
        wanted = _squash(text)
        for conversation in self._pages(f"tickets/{ticket_external_id}/conversations"):
            if str(conversation.get("id")) in exclude:
                continue
            if str(conversation.get("user_id")) != str(message.author_external_id):
                continue
            if _squash(conversation.get("body_text") or "") == wanted:
                return str(conversation["id"])
        return None

    def _attachments(self, urls: list[str]) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [
            ("attachments[]", (media.filename, media.content, media.content_type))
            for media in self.media_fetched(urls, max_total_bytes=MAX_ATTACHMENTS_BYTES)
        ]

    # --- inbound: the doorbell ----------------------------------------------------------------
    @classmethod
    def webhook_verify(
        cls, *, headers: Mapping[str, str], body: bytes, secret: str, now: datetime, window: timedelta
    ) -> None:
        """The shared secret of our rules' custom header; Freshdesk sends no timestamp to window."""
        webhooks.secret_verify(headers=headers, secret=secret)

    @classmethod
    def webhook_parse(
        cls, *, headers: Mapping[str, str], body: bytes, installation: Mapping | None = None
    ) -> ParsedWebhook:
        return webhooks.webhook_parse(headers=headers, body=body)

    def webhook_events_fetch(
        self, *, parsed: ParsedWebhook, installation: Mapping, known_message_ids: Collection[str]
    ) -> list[InboundEvent]:
        """Read the ticket and its conversations; return what the gateway has not relayed yet.

        In order: ``agent_message`` for each public agent message (a reply, source 0, or a
        public note, source 2, with ``incoming`` and ``private`` false: what an agent wrote in
        the agent UI; a contact's e-mail reply and our own notes are ``incoming``) not in
        ``known_message_ids``; ``assigned`` when the ticket has a responder; ``stopped`` when its
        status is 4 (Resolved) or 5 (Closed). Agents are named by id only: the gateway looks up
        (``agent_profile_fetch``) only those it does not know yet, so a doorbell costs two calls
        (the ticket, and its conversations a page of 100 at a time).
        """
        ticket_id = parsed.ticket_external_id
        ticket = self._json("GET", f"tickets/{ticket_id}")
        events: list[InboundEvent] = []
        known = set(known_message_ids)
        for conversation in self._pages(f"tickets/{ticket_id}/conversations"):
            conversation_id = str(conversation.get("id"))
            if conversation_id in known or conversation.get("private") or conversation.get("incoming"):
                continue
            if conversation.get("source") not in (CONVERSATION_REPLY, CONVERSATION_NOTE):
                continue
            author = str(conversation.get("user_id") or "")
            parts = html_to_parts(conversation.get("body") or "") + _attachment_parts(conversation)
            if not author or not parts:
                continue
            events.append(
                InboundEvent(
                    kind="agent_message",
                    ticket_external_id=ticket_id,
                    agent=AgentProfile(external_id=author),
                    message_external_id=conversation_id,
                    text="\n\n".join(part.text for part in parts if part.kind == "text"),
                    parts=tuple(parts),
                )
            )
        responder = str(ticket.get("responder_id") or "")
        agent = AgentProfile(external_id=responder) if responder else None
        if agent is not None:
            events.append(InboundEvent(kind="assigned", ticket_external_id=ticket_id, agent=agent))
        if ticket.get("status") in (webhooks.STATUS_RESOLVED, webhooks.STATUS_CLOSED):
            events.append(InboundEvent(kind="stopped", ticket_external_id=ticket_id, agent=agent))
        return events

    def tickets_changed_list(self, *, since: datetime, limit: int) -> TicketChanges:
        """``GET /tickets?updated_since=...&order_by=updated_at&order_type=asc``: every ticket of
        the account changed since ``since``, oldest change first, 100 a page [doc "List All
        Tickets": ``updated_since``, ``order_by`` created_at/due_by/updated_at/status,
        ``order_type`` asc/desc, ``per_page`` at most 100]. One call in the usual case (the
        Tickets List endpoint has its own per-minute sub-limit, 20 on the Growth plan).

        Freshdesk stamps ``updated_at`` to the second (``YYYY-MM-DDTHH:MM:SSZ``), so a change is
        reported as made by that second's end. A listing cut at ``limit`` reports ``through``
        the last change it saw, so the next listing resumes there.
        """
        started = datetime.now(UTC)
        params = {
            "updated_since": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "order_by": "updated_at",
            "order_type": "asc",
        }
        changed: dict[str, datetime] = {}
        pages = max(1, -(-limit // PER_PAGE))
        last = None
        for count, ticket in enumerate(self._pages("tickets", params, max_pages=pages), start=1):
            stamp = _timestamp(ticket.get("updated_at"))
            if ticket.get("id") is None or stamp is None:
                continue
            last = stamp
            changed[str(ticket["id"])] = stamp + timedelta(seconds=1)
            if count >= pages * PER_PAGE:
                return TicketChanges(changed=changed, through=last)
        return TicketChanges(changed=changed, through=started)

    def agent_profile_fetch(self, *, external_id: str) -> AgentProfile | None:
        """``GET /agents/{id}``: name, e-mail and avatar; ``None`` when the user is not an agent."""
        if not external_id.isdigit():
            return None
        try:
            agent = self._json("GET", f"agents/{external_id}")
        except PermanentError as exc:
            if exc.status_code == 404:
                return None
            raise
        contact = agent.get("contact") or {}
        avatar = contact.get("avatar") if isinstance(contact.get("avatar"), dict) else {}
        return AgentProfile(
            external_id=str(agent.get("id", external_id)),
            name=contact.get("name") or "",
            email=contact.get("email") or "",
            picture_url=avatar.get("avatar_url") or "",
        )

    # --- agents' files ----------------------------------------------------------------------
    def attachment_download(self, *, url: str) -> MediaFile:
        """An agent's file. Freshdesk's ``attachment_url`` is a pre-signed link to its file store
        *(inferred from its query string: it opens without credentials and expires)*, fetched
        through the guarded media fetcher; only a URL on the account's own host gets our
        credentials, without following redirects. Size and time are limited.
        """
        return self._attachment_download_own(
            url=url,
            authorization=self._auth_header(),
            describe_error=describe_freshdesk_error,
            desk="Freshdesk",
            redirects=None,
            refused="redirected away from the account's host",
        )

    # --- set-up -----------------------------------------------------------------------------
    def webhook_install(self, *, url: str, previous_state: Mapping) -> WebhookInstallation:
        """Two "ticket updates" automation rules (performer Agent, performer System) calling ``url``
        with a new shared secret in ``X-Hitl-Webhook-Secret``. Needs an admin's API key."""
        self.webhook_uninstall(state=previous_state)
        secret = secrets.token_urlsafe(32)
        rule_ids: list[str] = []
        try:
            for performer in (webhooks.PERFORMER_AGENT, webhooks.PERFORMER_SYSTEM):
                rule = webhooks.rule_definition(performer=performer, url=url, secret=secret)
                rule_ids.append(str(self._json("POST", _rules_path(), json=rule)["id"]))
        except Exception:
            self.webhook_uninstall(state={"rule_ids": rule_ids})
            raise
        return WebhookInstallation(signing_secret=secret, state={"rule_ids": rule_ids, "url": url})

    def webhook_uninstall(self, *, state: Mapping) -> None:
        for rule_id in state.get("rule_ids", []):
            try:
                self._json("DELETE", _rules_path(rule_id))
            except PermanentError as exc:
                if exc.status_code != 404:  # already gone is what we wanted
                    raise

    def webhook_secret_rotate(self, *, state: Mapping) -> str:
        """A new secret written into each installed rule's custom header (``PUT`` of the rule)."""
        if not state.get("rule_ids") or not state.get("url"):
            raise PermanentError("the automation rules are not installed, so they have no secret to rotate")
        secret = secrets.token_urlsafe(32)
        performers = (webhooks.PERFORMER_AGENT, webhooks.PERFORMER_SYSTEM)
        for rule_id, performer in zip(state["rule_ids"], performers, strict=False):
            rule = webhooks.rule_definition(performer=performer, url=state["url"], secret=secret)
            self._json("PUT", _rules_path(rule_id), json=rule)
        return secret

    def webhook_instructions(self, *, url: str, secret: str) -> str:
        return webhooks.instructions(url=url, secret=secret)

    def connection_check(self, *, installation: Mapping) -> ConnectionCheck:
        """``GET /agents/me``, then our automation rules if installed."""
        me = self._json("GET", "agents/me")
        contact = me.get("contact") or {}
        details: dict = {"agent": contact.get("name") or "", "email": contact.get("email") or ""}
        details["agent_id"] = me.get("id")
        summary = f"authenticated as agent {contact.get('name') or me.get('id')}"
        rule_ids = installation.get("rule_ids") or []
        if not rule_ids:
            return ConnectionCheck(True, f"{summary}; automation rules not installed", details)
        active = []
        for rule_id in rule_ids:
            try:
                active.append(bool(self._json("GET", _rules_path(rule_id)).get("active")))
            except PermanentError as exc:
                if exc.status_code != 404:
                    raise
                active.append(False)
        details["rules_active"] = f"{sum(active)}/{len(active)}"
        return ConnectionCheck(all(active), f"{summary}; automation rules active {details['rules_active']}", details)


def _rules_path(rule_id: str = "") -> str:
    base = f"automations/{webhooks.AUTOMATION_TICKET_UPDATES}/rules"
    return f"{base}/{rule_id}" if rule_id else base


def text_to_html(text: str) -> str:
    """Plain text as HTML: escaped, paragraphs at blank lines, ``<br>`` at other line breaks."""
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p.strip(chr(10))).replace(chr(10), '<br>')}</p>" for p in paragraphs) or "<p></p>"


def note_parts(message: OutboundMessage) -> tuple[str, str, list[str]]:
    """The note's HTML, the same as plain text (what Freshdesk's ``body_text`` holds), and the
    media URLs to attach. All parts of a bloc go in one note."""
    single = [{"type": message.type, "payload": message.payload}]
    items = message.payload["items"] if message.type == "bloc" else single
    blocks, texts, media_urls = [], [], []
    for item in items:
        kind, payload = item["type"], item["payload"]
        if kind not in MEDIA_FIELDS:
            text = render_payload(kind, payload)
            blocks.append(text_to_html(text))
            texts.append(text)
            continue
        url, title = payload[MEDIA_FIELDS[kind]], payload.get("title", "")
        label = f"{MEDIA_LABELS[kind]}: {title}" if title else MEDIA_LABELS[kind]
        link = html.escape(url)
        blocks.append(f'<p>{html.escape(label)}<br><a href="{link}">{link}</a></p>')
        texts.append(f"{label}\n{url}")
        media_urls.append(url)
    return "".join(blocks), "\n\n".join(texts), media_urls


def _timestamp(value: object) -> datetime | None:
    """A Freshdesk timestamp (``2016-02-13T23:27:49Z``, UTC) as an aware datetime, else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _attachment_parts(conversation: dict) -> list[MessagePart]:
    parts = []
    for attachment in conversation.get("attachments") or []:
        url = attachment.get("attachment_url") or ""
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            continue
        parts.append(
            MessagePart(
                kind="media",
                url=url,
                filename=attachment.get("name") or "attachment",
                content_type=attachment.get("content_type") or "",
            )
        )
    return parts
