"""The Zendesk Support adapter: API-token auth, tickets, public comments, uploads, triggers."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime, timedelta

from outbound.http import PermanentError
from outbound.http import request as http_request
from outbound.media import MediaFile
from providers.base import (
    ConnectionCheck,
    ExternalUserSpec,
    HelpDeskProvider,
    OutboundMessage,
    ParsedWebhook,
    TicketRef,
    TicketSpec,
    WebhookInstallation,
)
from providers.rendering import render_payload
from providers.zendesk import webhooks
from providers.zendesk.entity import ZendeskHitlSessionSerializer
from providers.zendesk.errors import describe_zendesk_error

MEDIA_FIELDS = {"image": "imageUrl", "audio": "audioUrl", "video": "videoUrl", "file": "fileUrl"}
MEDIA_LABELS = {"image": "Image", "audio": "Audio", "video": "Video", "file": "File"}
# Redirects followed on our own host while downloading an attachment.
MAX_ATTACHMENT_REDIRECTS = 3
# Zendesk refuses photo URLs longer than this, so they are left out rather than failing the call.
MAX_PHOTO_URL = 255
WEBHOOK_NAME = "hitl-gateway"


class ZendeskProvider(HelpDeskProvider):
    kind = "zendesk"
    entity_serializer = ZendeskHitlSessionSerializer

    # --- transport --------------------------------------------------------------------------
    def _auth_header(self) -> str:
        raw = f"{self.credentials['email']}/token:{self.credentials['api_token']}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _call(self, method: str, path: str, *, json: dict | None = None, headers: dict | None = None, **kw):
        response = http_request(
            self.session,
            method,
            f"{self.base_url}/api/v2/{path}",
            timeout=self.timeout,
            describe_error=describe_zendesk_error,
            headers={"Authorization": self._auth_header(), **(headers or {})},
            json=json,
            **kw,
        )
        return response.json() if response.content else {}

    # --- users ------------------------------------------------------------------------------
    def external_user_upsert(self, user: ExternalUserSpec, *, role: str = "end-user") -> str:
        body = {"name": user.name, "external_id": user.reference, "role": role, "skip_verify_email": True}
        if user.email:
            body["email"] = user.email
        if user.picture_url and len(user.picture_url) <= MAX_PHOTO_URL:
            body["remote_photo_url"] = user.picture_url
        return str(self._call("POST", "users/create_or_update.json", json={"user": body})["user"]["id"])

    # --- tickets ----------------------------------------------------------------------------
    def ticket_create(self, spec: TicketSpec, *, idempotency_key: str) -> TicketRef:
        extras = spec.extras
        ticket: dict = {
            "subject": spec.subject,
            "comment": {"body": spec.body, "public": True},
            "external_id": spec.reference,
            "tags": ["botpress_hitl"],
        }
        if extras.get("requesterName"):
            ticket["requester"] = {"name": extras["requesterName"]} | (
                {"email": extras["requesterEmail"]} if extras.get("requesterEmail") else {}
            )
        else:
            ticket["requester_id"] = int(spec.requester_external_id)
        if extras.get("priority"):
            ticket["priority"] = extras["priority"]
        if extras.get("ticketFormId"):
            ticket["ticket_form_id"] = int(extras["ticketFormId"])
        # Zendesk replays the first answer for a repeated key, so a retried create makes one ticket.
        data = self._call("POST", "tickets.json", json={"ticket": ticket}, headers={"Idempotency-Key": idempotency_key})
        first_comment = next((e for e in data.get("audit", {}).get("events", []) if e.get("type") == "Comment"), {})
        return _ticket_ref(data["ticket"], self.base_url, initial_message_id=str(first_comment.get("id", "")))

    def ticket_close(self, *, ticket_external_id: str) -> None:
        try:
            self._call("PUT", f"tickets/{ticket_external_id}.json", json={"ticket": {"status": "closed"}})
        except PermanentError as exc:
            # Closing a ticket that is already closed is done, not failed.
            if exc.status_code == 422 and "closed" in exc.message.lower():
                return
            raise

    def ticket_find(self, *, reference: str) -> TicketRef | None:
        data = self._call("GET", "tickets.json", params={"external_id": reference})
        tickets = data.get("tickets") or []
        return _ticket_ref(tickets[0], self.base_url) if tickets else None

    # --- comments ---------------------------------------------------------------------------
    def message_post(self, *, ticket_external_id: str, message: OutboundMessage) -> str:
        body, media_urls = _comment_parts(message)
        comment = {"body": body, "public": True, "author_id": int(message.author_external_id)}
        uploads = [token for token in map(self._upload, media_urls) if token]
        if uploads:
            comment["uploads"] = uploads
        data = self._call("PUT", f"tickets/{ticket_external_id}.json", json={"ticket": {"comment": comment}})
        return _comment_id(data)

    def message_find(self, *, ticket_external_id: str, message: OutboundMessage, exclude: set[str]) -> str | None:
        """The comment a lost attempt may have posted: same author and text, not already known."""
        body, _ = _comment_parts(message)
        data = self._call("GET", f"tickets/{ticket_external_id}/comments.json", params={"sort_order": "desc"})
        for comment in data.get("comments", []):
            if str(comment["id"]) in exclude or str(comment.get("author_id")) != str(message.author_external_id):
                continue
            if (comment.get("body") or "").strip() == body.strip():
                return str(comment["id"])
        return None

    def _upload(self, url: str) -> str | None:
        """Attach the file when it can be fetched within limits; otherwise the link will do."""
        media = next(self.media_fetched([url]), None)
        if media is None:
            return None
        data = self._call(
            "POST",
            "uploads.json",
            params={"filename": media.filename},
            data=media.content,
            headers={"Content-Type": media.content_type},
        )
        return data["upload"]["token"]

    # --- agents' files ----------------------------------------------------------------------
    def attachment_download(self, *, url: str) -> MediaFile:
        """Download an agent's file; our credentials go only to this integration's own host.

        Attachments of private tickets (and accounts requiring sign-in for attachments) need
        authentication [doc support.zendesk.com "Enabling private attachments"]. Zendesk may
        redirect to its file store: a redirect to another host is fetched without credentials
        through the guarded media fetcher. A file on another host (an agent's inline image
        from the web) never gets credentials either. Size and time are limited.
        """
        return self._attachment_download_own(
            url=url,
            authorization=self._auth_header(),
            describe_error=describe_zendesk_error,
            desk="Zendesk",
            redirects=MAX_ATTACHMENT_REDIRECTS,
        )

    # --- webhooks ---------------------------------------------------------------------------
    @classmethod
    def webhook_verify(
        cls, *, headers: Mapping[str, str], body: bytes, secret: str, now: datetime, window: timedelta
    ) -> None:
        webhooks.signature_verify(headers=headers, body=body, secret=secret, now=now, window=window)

    @classmethod
    def webhook_parse(
        cls, *, headers: Mapping[str, str], body: bytes, installation: Mapping | None = None
    ) -> ParsedWebhook:
        # Our own comments never come back: the triggers exclude those made through the API.
        return webhooks.webhook_parse(headers=headers, body=body)

    @classmethod
    def webhook_replay_key(cls, *, headers: Mapping[str, str], body: bytes) -> str:
        return webhooks.replay_key(headers=headers, body=body)

    def webhook_install(self, *, url: str, previous_state: Mapping) -> WebhookInstallation:
        self.webhook_uninstall(state=previous_state)
        hook = {
            "name": WEBHOOK_NAME,
            "status": "active",
            "endpoint": url,
            "http_method": "POST",
            "request_format": "json",
            "subscriptions": ["conditional_ticket_events"],
        }
        webhook_id = self._call("POST", "webhooks", json={"webhook": hook})["webhook"]["id"]
        secret = self._call("GET", f"webhooks/{webhook_id}/signing_secret")["signing_secret"]["secret"]
        trigger_ids = []
        for event_type, conditions in webhooks.TRIGGERS.items():
            trigger = {
                "title": f"{WEBHOOK_NAME} {event_type}",
                "conditions": conditions,
                "actions": [
                    {"field": "notification_webhook", "value": [webhook_id, webhooks.trigger_body(event_type)]}
                ],
            }
            trigger_ids.append(str(self._call("POST", "triggers.json", json={"trigger": trigger})["trigger"]["id"]))
        return WebhookInstallation(signing_secret=secret, state={"webhook_id": webhook_id, "trigger_ids": trigger_ids})

    # --- operators' console -----------------------------------------------------------------
    def connection_check(self, *, installation: Mapping) -> ConnectionCheck:
        """``GET /users/me``, then our webhook and triggers if installed.

        Zendesk answers ``/users/me`` with an anonymous user (id null) rather than 401 when
        it does not recognise the caller, so that is reported as a failure too.
        """
        me = self._call("GET", "users/me.json").get("user") or {}
        details: dict = {"user": me.get("name") or "", "role": me.get("role") or "", "user_id": me.get("id")}
        if me.get("id") is None:
            return ConnectionCheck(
                False, "Zendesk answered as an anonymous user: the email or API token is not accepted", details
            )
        summary = f"authenticated as {me.get('name')} ({me.get('role')})"
        ok = me.get("role") in ("agent", "admin")
        if not ok:
            summary += ": the gateway needs an agent or admin"
        webhook_id = installation.get("webhook_id")
        if not webhook_id:
            return ConnectionCheck(ok, f"{summary}; webhook not installed", details)
        try:
            hook = self._call("GET", f"webhooks/{webhook_id}")["webhook"]
        except PermanentError as exc:
            if exc.status_code != 404:
                raise
            details["webhook"] = "missing"
            return ConnectionCheck(False, f"{summary}; webhook {webhook_id} no longer exists in Zendesk", details)
        details |= {"webhook_status": hook.get("status"), "webhook_endpoint": hook.get("endpoint")}
        triggers = []
        for trigger_id in installation.get("trigger_ids", []):
            try:
                trigger = self._call("GET", f"triggers/{trigger_id}.json")["trigger"]
            except PermanentError as exc:
                if exc.status_code != 404:
                    raise
                trigger = {"active": None}
            triggers.append(trigger.get("active"))
        details["triggers_active"] = f"{sum(1 for t in triggers if t)}/{len(triggers)}"
        ok = ok and hook.get("status") == "active" and all(triggers)
        return ConnectionCheck(
            ok,
            f"{summary}; webhook {hook.get('status')}, triggers active {details['triggers_active']}",
            details,
        )

    def webhook_secret_rotate(self, *, state: Mapping) -> str:
        if not state.get("webhook_id"):
            raise PermanentError("the webhook is not installed, so it has no secret to rotate")
        answer = self._call("POST", f"webhooks/{state['webhook_id']}/signing_secret")
        return answer["signing_secret"]["secret"]

    def webhook_uninstall(self, *, state: Mapping) -> None:
        paths = [f"triggers/{tid}.json" for tid in state.get("trigger_ids", [])]
        if state.get("webhook_id"):
            paths.append(f"webhooks/{state['webhook_id']}")
        for path in paths:
            try:
                self._call("DELETE", path)
            except PermanentError as exc:
                if exc.status_code != 404:  # already gone is what we wanted
                    raise


def _comment_parts(message: OutboundMessage) -> tuple[str, list[str]]:
    """The comment's text, and the media URLs to attach; all parts of a bloc go in one comment."""
    items = message.payload["items"] if message.type == "bloc" else [{"type": message.type, "payload": message.payload}]
    lines, media_urls = [], []
    for item in items:
        kind, payload = item["type"], item["payload"]
        if kind not in MEDIA_FIELDS:
            lines.append(render_payload(kind, payload))
            continue
        url, title = payload[MEDIA_FIELDS[kind]], payload.get("title", "")
        # The link stays in the text even when attached: agents can open the original.
        lines.append(f"{MEDIA_LABELS[kind]}: {title}\n{url}" if title else f"{MEDIA_LABELS[kind]}\n{url}")
        media_urls.append(url)
    return "\n\n".join(lines), media_urls


def _ticket_ref(ticket: dict, base_url: str, initial_message_id: str = "") -> TicketRef:
    return TicketRef(
        initial_message_id=initial_message_id,
        external_id=str(ticket["id"]),
        url=f"{base_url}/agent/tickets/{ticket['id']}",
        status=ticket.get("status") or "",
        priority=ticket.get("priority") or "",
    )


def _comment_id(data: dict) -> str:
    for event in data.get("audit", {}).get("events", []):
        if event.get("type") == "Comment":
            return str(event["id"])
    raise PermanentError("Zendesk answered without the new comment in its audit")
