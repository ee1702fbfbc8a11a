"""Stand-in of the Zendesk Support API (`/api/v2/...`) and of the agents working in Zendesk's UI.

Follows shared/reference/helpdesk-apis.md section 1: users, tickets with audits and comments,
uploads, webhooks and triggers. Agent actions (reply, assign, solve, requester email replies) change
tickets and fire the triggers, whose webhooks are delivered signed, in order, from a worker thread,
with Zendesk's retries, so the gateway's webhook endpoint is exercised as in production.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .server import (
    HttpError,
    Request,
    Response,
    WebhookAnswer,
    WebhookCall,
    WebhookStandin,
    control_body,
    html_text,
    iso_time,
    status_phrase,
    ulid,
)

VIA_WEB, VIA_EMAIL, VIA_API = 0, 4, 5
VIA_CHANNELS = {VIA_WEB: "web", VIA_EMAIL: "email", VIA_API: "api"}
SYSTEM_USER_ID = -1  # `current_user.id` of changes made by Zendesk itself
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
ROLES = ("end-user", "agent", "admin")
WEBHOOK_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
REQUEST_FORMATS = {
    "json": "application/json",
    "xml": "application/xml",
    "form_encoded": "application/x-www-form-urlencoded",
}
TICKET_FIELDS = (
    "subject",
    "status",
    "priority",
    "type",
    "assignee_id",
    "group_id",
    "external_id",
    "tags",
    "ticket_form_id",
)
PHOTO_URL_MAX = 255
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
# The one Liquid loop the stand-in renders: over the latest public comment's attachments, with
# `{{attachment.filename}}`, `{{attachment.url}}` and `{% if forloop.last == false %}...{% endif %}`.
_ATTACHMENT_LOOP = re.compile(
    r"\{%\s*for\s+(\w+)\s+in\s+ticket\.latest_public_comment\.attachments\s*%\}(.*?)\{%\s*endfor\s*%\}", re.S
)
_NOT_LAST = re.compile(r"\{%\s*if\s+forloop\.last\s*==\s*false\s*%\}(.*?)\{%\s*endif\s*%\}", re.S)


def sign_zendesk_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """Zendesk's webhook signature: base64(HMAC-SHA256(key=secret, msg=TIMESTAMP + BODY))."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _invalid(field: str, description: str, error: str = "InvalidValue") -> HttpError:
    details = {field: [{"description": description, "error": error}]}
    return HttpError(422, "Record validation errors", "RecordInvalid", details)


def _not_found() -> HttpError:
    return HttpError(404, "Not found", "RecordNotFound")


def _root(req: Request, key: str) -> dict[str, Any]:
    """The object under the singular root key of a request body (`{"ticket": {...}}`)."""
    data = req.json()
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise HttpError(400, f"Parameter '{key}' is required and must be an object", "ParameterMissing")
    return data[key]


def _to_html(text: str) -> str:
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "".join(f"<p>{html.escape(p, quote=False).replace(chr(10), '<br>')}</p>" for p in paragraphs)


def _audit_value(value: Any) -> Any:
    """Audit events carry ids as strings, like Zendesk's."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _same(actual: Any, expected: Any) -> bool:
    """Condition values compare as case-insensitive strings (`"SOLVED"` matches status `solved`)."""
    return ("" if actual is None else str(actual)).lower() == ("" if expected is None else str(expected)).lower()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _Update:
    """One saved ticket change, as triggers see it."""

    before: dict[str, Any] | None  # None when the ticket was just created
    ticket: dict[str, Any]
    comment: dict[str, Any] | None
    actor_id: int
    via_id: int


@dataclass
class _Invocation:
    id: str
    webhook_id: str
    trigger_id: int
    body: bytes


class ZendeskStandin(WebhookStandin):
    """Zendesk Support for one API agent (`email` + `api_token`), plus simulated human agents."""

    webhook_fault_delay = 1.0  # seconds a "delay" fault holds an invocation back by default

    max_comments = 5000  # per ticket; instances may lower it for tests
    webhook_timeout = 10.0  # seconds before a delivery attempt counts as timed out
    webhook_max_retries = 5
    webhook_retry_delay = 0.2  # first backoff in seconds, doubled on each retry
    # The account setting "Require authentication to download" (private attachments): attachment
    # URLs then answer only with the API agent's credentials, as for private tickets.
    private_attachments = False

    def __init__(
        self,
        email: str = "agent@example.com",
        api_token: str = "zendesk-token",
        port: int = 0,
        host: str = "127.0.0.1",
        account_id: int = 12345678,
        webhook_senders: int = 1,
    ):
        """``webhook_senders``: how many invocations are delivered at once (Zendesk sends many
        concurrently); invocations about one ticket still go out one after another, in order."""
        super().__init__(port, host, webhook_senders=webhook_senders)
        self.email = email
        self.api_token = api_token
        self.account_id = account_id
        self._invocation_ids = itertools.count(8_000_000_001)
        self.reset_state()
        for method, pattern, handler in [
            ("GET", r"users/me", self._get_me),
            ("POST", r"users/create_or_update", self._create_or_update_user),
            ("GET", r"users/search", self._search_users),
            ("GET", r"users/(?P<id>\d+)", self._get_user),
            ("PUT", r"users/(?P<id>\d+)", self._update_user),
            ("POST", r"tickets", self._create_ticket),
            ("GET", r"tickets", self._list_tickets),
            ("GET", r"tickets/(?P<id>\d+)", self._get_ticket),
            ("PUT", r"tickets/(?P<id>\d+)", self._update_ticket),
            ("GET", r"tickets/(?P<id>\d+)/comments", self._list_comments),
            ("GET", r"tickets/(?P<id>\d+)/audits", self._list_audits),
            ("POST", r"uploads", self._upload),
            ("DELETE", r"uploads/(?P<token>\w+)", self._delete_upload),
            ("POST", r"webhooks", self._create_webhook),
            ("GET", r"webhooks", self._list_webhooks),
            ("GET", r"webhooks/(?P<id>\w+)", self._get_webhook),
            ("DELETE", r"webhooks/(?P<id>\w+)", self._delete_webhook),
            ("GET", r"webhooks/(?P<id>\w+)/signing_secret", self._show_signing_secret),
            ("POST", r"webhooks/(?P<id>\w+)/signing_secret", self._reset_signing_secret),
            ("POST", r"triggers", self._create_trigger),
            ("GET", r"triggers", self._list_triggers),
            ("GET", r"triggers/(?P<id>\d+)", self._get_trigger),
            ("DELETE", r"triggers/(?P<id>\d+)", self._delete_trigger),
        ]:
            self.route(method, rf"/api/v2/{pattern}(?:\.json)?", handler)  # `.json` is optional
        self.route("GET", r"/attachments/token/(?P<token>\w+)/?", self._download, public=True)
        self.control_route("POST", "agents", self._control_add_agent)
        self.control_route("POST", r"tickets/(?P<id>\d+)/reply", self._control_agent_action)
        self.control_route("POST", r"tickets/(?P<id>\d+)/assign", self._control_agent_action)
        self.control_route("POST", r"tickets/(?P<id>\d+)/solve", self._control_agent_action)
        self.control_route("POST", r"tickets/(?P<id>\d+)/end_user_reply", self._control_agent_action)

    def reset_state(self) -> None:
        """Forget everything but the API agent, who is recreated (the token's own user)."""
        self._sender.reset()
        self._ids = itertools.count(360_000_000_001)  # users, comments, audits, events, triggers...
        self._ticket_ids = itertools.count(1)
        self._users: dict[int, dict[str, Any]] = {}
        self._tickets: dict[int, dict[str, Any]] = {}
        self._comments: dict[int, list[dict[str, Any]]] = {}
        self._audits: dict[int, list[dict[str, Any]]] = {}
        self._uploads: dict[str, dict[str, Any]] = {}
        self._files: dict[str, tuple[str, bytes]] = {}  # attachment token → (content type, content)
        self.private_attachments = type(self).private_attachments
        self._webhooks: dict[str, dict[str, Any]] = {}
        self._secrets: dict[str, str] = {}
        self._triggers: dict[int, dict[str, Any]] = {}
        self._idempotency: dict[str, tuple[str, Response]] = {}
        self._deliveries: list[dict[str, Any]] = []
        self.api_user_id = self._new_user(self.email.split("@")[0], self.email, "admin")["id"]

    # ----------------------------------------------------------------- read accessors
    def tickets(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._tickets.values()))

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._tickets[ticket_id])

    def comments(self, ticket_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._comments[ticket_id])

    def audits(self, ticket_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._audits[ticket_id])

    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._users.values()))

    def webhooks(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._webhooks.values()))

    def triggers(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._triggers.values()))

    def uploads(self) -> list[dict[str, Any]]:
        """Uploads whose token has not been used by a comment (nor deleted) yet."""
        with self.lock:
            return copy.deepcopy(list(self._uploads.values()))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            state = copy.deepcopy(
                {
                    "users": list(self._users.values()),
                    "tickets": list(self._tickets.values()),
                    "comments": {str(k): v for k, v in self._comments.items()},
                    "webhooks": list(self._webhooks.values()),
                    "triggers": list(self._triggers.values()),
                    "uploads": list(self._uploads.values()),
                    "webhook_deliveries": self._deliveries_json(),
                }
            )
        return state

    # ----------------------------------------------------------------- HTTP plumbing
    def authenticate(self, req: Request) -> int:
        """API-token basic auth: base64("{email}/token:{api_token}"); returns the API agent's id."""
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        try:
            login, _, token = base64.b64decode(value, validate=True).decode().partition(":")
        except ValueError:
            login, token = "", ""
        if (
            scheme.lower() != "basic"
            or login.lower() != f"{self.email.lower()}/token"
            or not hmac.compare_digest(token.encode(), self.api_token.encode())
        ):
            raise HttpError(401, type="Couldn't authenticate you")
        return self.api_user_id

    def error_response(self, err: HttpError) -> Response:
        body: dict[str, Any] = {"error": err.type or _error_name(err.status)}
        if err.message:
            body["description"] = err.message
        if err.details:
            body["details"] = err.details
        return Response(err.status, body, dict(err.headers))

    def rate_limit_response(self, retry_after: int) -> Response:
        """Zendesk's 429 comes as plain text, not JSON."""
        return Response(
            429,
            "Too Many Requests",
            {"Retry-After": str(retry_after)},
            content_type="text/plain; charset=utf-8",
        )

    def _url(self, path: str) -> str:
        return f"{self.base_url}/api/v2/{path}.json"

    # ----------------------------------------------------------------- users
    def _new_user(self, name: str, email: str | None, role: str = "end-user", **fields: Any) -> dict[str, Any]:
        user_id, now = next(self._ids), iso_time(milliseconds=False)
        user = {
            "id": user_id,
            "url": self._url(f"users/{user_id}"),
            "name": name,
            "email": email,
            "external_id": None,
            "role": role,
            "remote_photo_url": None,
            "photo": None,
            "active": True,
            "verified": False,
            "created_at": now,
            "updated_at": now,
        }
        self._apply_user(user, fields)
        self._users[user_id] = user
        return user

    def _apply_user(self, user: dict[str, Any], fields: dict[str, Any]) -> None:
        user.update(fields)
        if fields.get("remote_photo_url"):
            user["photo"] = {"content_url": fields["remote_photo_url"]}
        user["updated_at"] = iso_time(milliseconds=False)

    def _user_by(self, field: str, value: Any) -> dict[str, Any] | None:
        wanted = str(value).lower()
        return next((u for u in self._users.values() if str(u[field] or "").lower() == wanted), None)

    def _user_input(self, data: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
        """Validated user fields for creating (`user` None) or updating `user`."""
        fields: dict[str, Any] = {}
        for name in ("name", "email", "external_id", "role", "remote_photo_url"):
            if name in data:
                value = data[name]
                fields[name] = str(value) if _is_int(value) and name == "external_id" else value
        if not (fields.get("name") or user):
            raise _invalid("name", "Name: is too short (minimum one character)", "TooShort")
        if "name" in fields and not (isinstance(fields["name"], str) and fields["name"].strip()):
            raise _invalid("name", "Name: is too short (minimum one character)", "TooShort")
        email = fields.get("email")
        if email is not None:
            if not isinstance(email, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
                raise _invalid("email", f"Email: {email} is not properly formatted", "InvalidFormat")
            owner = self._user_by("email", email)
            if owner is not None and owner is not user:
                raise _invalid("email", f"Email: {email} is already being used by another user", "DuplicateValue")
        if fields.get("role", "end-user") not in ROLES:
            raise _invalid("role", f"Role: {fields['role']} is not valid", "InvalidValue")
        photo = fields.get("remote_photo_url")
        if photo is not None and (not isinstance(photo, str) or len(photo) > PHOTO_URL_MAX):
            raise _invalid(
                "remote_photo_url",
                f"Remote photo url: is too long (maximum is {PHOTO_URL_MAX} characters)",
                "TooLong",
            )
        return fields

    def _get_me(self, req: Request) -> dict[str, Any]:
        return {"user": self._users[req.auth]}

    def _create_or_update_user(self, req: Request) -> Response:
        """Upsert: match on external_id (case-insensitive, rewritten to the given case), then email."""
        data = _root(req, "user")
        user = None
        if data.get("external_id") is not None:
            user = self._user_by("external_id", data["external_id"])
        if user is None and data.get("email"):
            user = self._user_by("email", data["email"])
        fields = self._user_input(data, user)
        if user is not None:
            self._apply_user(user, fields)
            return Response(200, {"user": user})
        name = fields.pop("name")
        return Response(201, {"user": self._new_user(name, fields.pop("email", None), **fields)})

    def _search_users(self, req: Request) -> dict[str, Any]:
        query = (req.arg("query") or "").strip()
        field, _, value = query.partition(":")
        if req.arg("external_id") is not None:
            field, value = "external_id", req.arg("external_id")
        if field in ("email", "external_id") and value:
            found = [u for u in self._users.values() if str(u[field] or "").lower() == value.strip().lower()]
        else:
            found = [
                u
                for u in self._users.values()
                if query and any(query.lower() in str(u[f] or "").lower() for f in ("name", "email"))
            ]
        return {"users": found, "count": len(found), "next_page": None, "previous_page": None}

    def _is_user(self, user_id: Any) -> bool:
        return _is_int(user_id) and user_id in self._users

    def _user_or_404(self, user_id: str) -> dict[str, Any]:
        user = self._users.get(int(user_id))
        if user is None:
            raise _not_found()
        return user

    def _get_user(self, req: Request) -> dict[str, Any]:
        return {"user": self._user_or_404(req.params["id"])}

    def _update_user(self, req: Request) -> dict[str, Any]:
        user = self._user_or_404(req.params["id"])
        self._apply_user(user, self._user_input(_root(req, "user"), user))
        return {"user": user}

    # ----------------------------------------------------------------- tickets
    def _ticket_or_404(self, ticket_id: str | int) -> dict[str, Any]:
        ticket = self._tickets.get(int(ticket_id))
        if ticket is None:
            raise _not_found()
        return ticket

    def _ticket_input(self, data: dict[str, Any]) -> dict[str, Any]:
        """Validated ticket fields given in a create or update body."""
        changes = {name: data[name] for name in TICKET_FIELDS if name in data}
        if "status" in changes and changes["status"] not in STATUSES:
            raise _invalid("status", f"Status: {changes['status']} is not valid")
        if changes.get("priority") is not None and changes["priority"] not in PRIORITIES:
            raise _invalid("priority", f"Priority: {changes['priority']} is not valid")
        assignee_id = changes.get("assignee_id")
        if assignee_id is not None and (
            not self._is_user(assignee_id) or self._users[assignee_id]["role"] not in ("agent", "admin")
        ):
            raise _invalid("assignee_id", "Assignee: is not an agent")
        if changes.get("ticket_form_id") is not None and not _is_int(changes["ticket_form_id"]):
            raise _invalid("ticket_form_id", "Ticket form: must be an integer")
        if _is_int(changes.get("external_id")):
            changes["external_id"] = str(changes["external_id"])
        if changes.get("external_id") is not None and not isinstance(changes["external_id"], str):
            raise _invalid("external_id", "External id: must be a string")
        if "tags" in changes and not (
            isinstance(changes["tags"], list) and all(isinstance(t, str) for t in changes["tags"])
        ):
            raise _invalid("tags", "Tags: must be a list of strings")
        return changes

    def _comment_input(self, ticket: dict[str, Any] | None, comment: Any, author_id: int) -> dict[str, Any]:
        """A validated comment: {body, html_body, public, author_id, uploads}."""
        if not isinstance(comment, dict):
            raise _invalid("comment", "Comment: cannot be blank", "BlankValue")
        body, html_body = comment.get("body"), comment.get("html_body")
        if not any(isinstance(text, str) and text.strip() for text in (body, html_body)):
            raise _invalid("comment", "Comment: body or html_body cannot be blank", "BlankValue")
        public = comment.get("public", True)
        if not isinstance(public, bool):
            raise _invalid("public", "Public: must be true or false")
        author_id = comment.get("author_id", author_id)
        if not self._is_user(author_id):
            raise _invalid("author_id", "Author: is invalid")
        uploads = comment.get("uploads", [])
        if not isinstance(uploads, list) or any(
            not isinstance(token, str) or token not in self._uploads for token in uploads
        ):
            raise _invalid("uploads", "Uploads: contain an unknown or already used token")
        if ticket is not None and len(self._comments[ticket["id"]]) >= self.max_comments:
            raise _invalid("comment", f"Comment: a ticket holds at most {self.max_comments} comments", "TooMany")
        if isinstance(html_body, str) and html_body.strip():
            body = html_text(html_body, block_end="\n\n")
        else:
            html_body = _to_html(body)
        return {
            "body": body,
            "html_body": html_body,
            "public": public,
            "author_id": author_id,
            "uploads": uploads,
        }

    def _requester(self, data: dict[str, Any], submitter_id: int) -> int:
        """`requester_id` wins; `requester` may be {name, email}, an email or an id; else the submitter."""
        if "requester_id" in data:
            if not self._is_user(data["requester_id"]):
                raise _invalid("requester_id", "Requester: is invalid")
            return data["requester_id"]
        requester = data.get("requester")
        if requester is None:
            return submitter_id
        if _is_int(requester):
            if not self._is_user(requester):
                raise _invalid("requester", "Requester: is invalid")
            return requester
        if isinstance(requester, str):
            requester = {"email": requester}
        email = requester.get("email") if isinstance(requester, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise _invalid("requester", "Requester: needs an email address")
        user = self._user_by("email", email)
        if user is None:
            name = requester.get("name") or email.split("@")[0]
            user = self._new_user(str(name), email)
        return user["id"]

    def _create_ticket(self, req: Request) -> Response:
        """Create a ticket, honouring `Idempotency-Key` (same key + same body replays the answer)."""
        key = req.headers.get("idempotency-key")
        fingerprint = hashlib.sha256(
            json.dumps(req.data, sort_keys=True).encode() if req.data is not None else req.body
        ).hexdigest()
        if key and key in self._idempotency:
            original_fingerprint, original = self._idempotency[key]
            if original_fingerprint != fingerprint:
                raise HttpError(
                    400,
                    "The request parameters do not match the original request for this idempotency key",
                    "IdempotentRequestError",
                )
            headers = original.headers | {"x-idempotency-lookup": "hit"}
            return Response(original.status, original.body, headers)
        resp = self._insert_ticket(req)
        if key:
            resp.headers["x-idempotency-lookup"] = "miss"
            self._idempotency[key] = (fingerprint, Response(resp.status, resp.encoded(), dict(resp.headers)))
        return resp

    def _insert_ticket(self, req: Request) -> Response:
        data = _root(req, "ticket")
        fields = self._ticket_input(data)
        submitter_id = data.get("submitter_id", req.auth)
        if not self._is_user(submitter_id):
            raise _invalid("submitter_id", "Submitter: is invalid")
        comment = self._comment_input(None, data.get("comment"), submitter_id)
        requester_id = self._requester(data, submitter_id)
        ticket_id, now = next(self._ticket_ids), iso_time(milliseconds=False)
        ticket = {
            "id": ticket_id,
            "url": self._url(f"tickets/{ticket_id}"),
            "external_id": None,
            "via": _via(VIA_API),
            "created_at": now,
            "updated_at": now,
            "type": None,
            "subject": None,
            "raw_subject": None,
            "description": comment["body"],
            "priority": None,
            "status": "open" if fields.get("assignee_id") else "new",
            "requester_id": requester_id,
            "submitter_id": submitter_id,
            "assignee_id": None,
            "group_id": None,
            "tags": [],
            "ticket_form_id": None,
            "is_public": comment["public"],
        } | fields
        ticket["raw_subject"] = ticket["subject"]
        self._tickets[ticket_id] = ticket
        self._comments[ticket_id] = []
        self._audits[ticket_id] = []
        audit, _ = self._save(ticket, {}, comment, req.auth, VIA_API, created=True)
        return Response(201, {"ticket": ticket, "audit": audit}, {"Location": ticket["url"]})

    def _get_ticket(self, req: Request) -> dict[str, Any]:
        return {"ticket": self._ticket_or_404(req.params["id"])}

    def _list_tickets(self, req: Request) -> dict[str, Any]:
        external_id = req.arg("external_id")
        tickets = [t for t in self._tickets.values() if external_id in (None, t["external_id"])]
        return {"tickets": tickets, "count": len(tickets), "next_page": None, "previous_page": None}

    def _update_ticket(self, req: Request) -> dict[str, Any]:
        ticket = self._ticket_or_404(req.params["id"])
        data = _root(req, "ticket")
        if ticket["status"] == "closed":
            raise _invalid("status", "Ticket is closed", "ClosedTicket")
        if data.get("safe_update") and data.get("updated_stamp") != ticket["updated_at"]:
            raise HttpError(
                409,
                "Safe Update prevented the update due to outdated ticket data. "
                "Please fetch the latest ticket data and try again.",
                "UpdateConflict",
            )
        changes = self._ticket_input(data)
        comment = None
        if data.get("comment") is not None:
            comment = self._comment_input(ticket, data["comment"], req.auth)
        audit, _ = self._save(ticket, changes, comment, req.auth, VIA_API)
        return {"ticket": ticket, "audit": audit}

    def _list_comments(self, req: Request) -> dict[str, Any]:
        ticket = self._ticket_or_404(req.params["id"])
        comments = self._comments[ticket["id"]]
        if req.arg("sort_order") == "desc" or req.arg("sort") == "-created_at":
            comments = comments[::-1]
        return {"comments": comments, "count": len(comments), "next_page": None, "previous_page": None}

    def _list_audits(self, req: Request) -> dict[str, Any]:
        audits = self._audits[self._ticket_or_404(req.params["id"])["id"]]
        return {"audits": audits, "count": len(audits), "next_page": None, "previous_page": None}

    def _save(
        self,
        ticket: dict[str, Any],
        changes: dict[str, Any],
        comment_input: dict[str, Any] | None,
        actor_id: int,
        via_id: int,
        created: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Apply validated changes and a comment as one audit, then run the triggers."""
        before = None if created else copy.deepcopy(ticket)
        audit_id, now, via = next(self._ids), iso_time(milliseconds=False), _via(via_id)
        events = []
        comment = None
        if comment_input is not None:
            comment = self._add_comment(ticket, comment_input, audit_id, via, now)
            events.append({"id": comment["id"], "type": "Comment", **_comment_event(comment)})
        for name in TICKET_FIELDS:
            if created and ticket[name] not in (None, []):
                events.append(
                    {
                        "id": next(self._ids),
                        "type": "Create",
                        "field_name": name,
                        "value": _audit_value(ticket[name]),
                    }
                )
            elif name in changes and changes[name] != ticket[name]:
                events.append(
                    {
                        "id": next(self._ids),
                        "type": "Change",
                        "field_name": name,
                        "value": _audit_value(changes[name]),
                        "previous_value": _audit_value(ticket[name]),
                    }
                )
                ticket[name] = changes[name]
        for event in events:
            event["via"] = via
        ticket["updated_at"] = now
        audit = {
            "id": audit_id,
            "ticket_id": ticket["id"],
            "created_at": now,
            "author_id": actor_id,
            "via": via,
            "metadata": {},
            "events": events,
        }
        self._audits[ticket["id"]].append(audit)
        self._run_triggers(_Update(before, ticket, comment, actor_id, via_id))
        return audit, comment

    def _add_comment(
        self, ticket: dict[str, Any], spec: dict[str, Any], audit_id: int, via: dict[str, Any], now: str
    ) -> dict[str, Any]:
        attachments = [a for token in spec["uploads"] for a in self._uploads.pop(token)["attachments"]]
        comment = {
            "id": next(self._ids),
            "type": "Comment",
            "author_id": spec["author_id"],
            "body": spec["body"],
            "html_body": spec["html_body"],
            "plain_body": spec["body"],
            "public": spec["public"],
            "attachments": attachments,
            "audit_id": audit_id,
            "via": via,
            "metadata": {},
            "created_at": now,
        }
        self._comments[ticket["id"]].append(comment)
        return comment

    # ----------------------------------------------------------------- uploads
    def _upload(self, req: Request) -> Response:
        filename = req.arg("filename")
        if not filename:
            raise _invalid("filename", "Filename: cannot be blank", "BlankValue")
        if not req.body:
            raise _invalid("file", "File: cannot be empty", "BlankValue")
        token = req.arg("token") or secrets.token_hex(12)
        upload = self._uploads.get(token)
        if upload is None:
            if req.arg("token"):
                raise _not_found()
            upload = self._uploads[token] = {
                "token": token,
                "expires_at": iso_time(time.time() + 3600, milliseconds=False),
                "attachments": [],
            }
        content_type = req.headers.get("content-type", "application/binary")
        file_token = secrets.token_hex(12)
        self._files[file_token] = (content_type, req.body)
        attachment_id = next(self._ids)
        attachment = {
            "id": attachment_id,
            "url": self._url(f"attachments/{attachment_id}"),
            "file_name": filename,
            "content_url": f"{self.base_url}/attachments/token/{file_token}/?name={quote(filename)}",
            "content_type": content_type,
            "size": len(req.body),
            "inline": False,
            "deleted": False,
            "thumbnails": [],
        }
        upload["attachments"].append(attachment)
        return Response(201, {"upload": upload | {"attachment": attachment}})

    def _delete_upload(self, req: Request) -> Response:
        if self._uploads.pop(req.params["token"], None) is None:
            raise _not_found()
        return Response(204)

    def _download(self, req: Request) -> Response:
        if self.private_attachments:
            self.authenticate(req)
        found = self._files.get(req.params["token"])
        if found is None:
            raise _not_found()
        content_type, content = found
        return Response(200, content, content_type=content_type)

    # ----------------------------------------------------------------- webhooks
    def _webhook_or_404(self, webhook_id: str) -> dict[str, Any]:
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            raise _not_found()
        return webhook

    def _create_webhook(self, req: Request) -> Response:
        data = _root(req, "webhook")
        for name in ("name", "endpoint"):
            if not isinstance(data.get(name), str) or not data[name].strip():
                raise _invalid(name, f"{name.capitalize()}: cannot be blank", "BlankValue")
        if not re.match(r"https?://", data["endpoint"]):
            raise _invalid("endpoint", "Endpoint: must be an http(s) URL")
        webhook = {
            "status": "active",
            "http_method": "POST",
            "request_format": "json",
            "subscriptions": [],
        } | {k: data[k] for k in ("status", "http_method", "request_format", "subscriptions") if k in data}
        checks = {
            "status": ("active", "inactive"),
            "http_method": WEBHOOK_METHODS,
            "request_format": tuple(REQUEST_FORMATS),
        }
        for name, allowed in checks.items():
            if webhook[name] not in allowed:
                raise _invalid(name, f"{name}: must be one of {', '.join(allowed)}")
        if not isinstance(webhook["subscriptions"], list):
            raise _invalid("subscriptions", "subscriptions: must be a list")
        webhook_id, now = ulid(), iso_time(milliseconds=False)
        webhook = {
            "id": webhook_id,
            "name": data["name"],
            "description": data.get("description"),
            "endpoint": data["endpoint"],
            **webhook,
            "authentication": data.get("authentication"),
            "created_at": now,
            "created_by": str(req.auth),
            "updated_at": now,
        }
        self._webhooks[webhook_id] = webhook
        self._secrets[webhook_id] = _new_secret()
        return Response(201, {"webhook": webhook}, {"Location": f"{self.base_url}/api/v2/webhooks/{webhook_id}"})

    def _list_webhooks(self, req: Request) -> dict[str, Any]:
        name_contains = (req.arg("filter[name_contains]") or "").lower()
        found = [w for w in self._webhooks.values() if name_contains in w["name"].lower()]
        return {
            "webhooks": found,
            "meta": {"has_more": False, "after_cursor": None, "before_cursor": None},
            "links": {"next": None, "prev": None},
        }

    def _get_webhook(self, req: Request) -> dict[str, Any]:
        return {"webhook": self._webhook_or_404(req.params["id"])}

    def _delete_webhook(self, req: Request) -> Response:
        self._webhook_or_404(req.params["id"])
        del self._webhooks[req.params["id"]]
        del self._secrets[req.params["id"]]
        return Response(204)

    def _show_signing_secret(self, req: Request) -> dict[str, Any]:
        self._webhook_or_404(req.params["id"])
        return {"signing_secret": {"algorithm": "SHA256", "secret": self._secrets[req.params["id"]]}}

    def _reset_signing_secret(self, req: Request) -> Response:
        self._webhook_or_404(req.params["id"])
        self._secrets[req.params["id"]] = _new_secret()
        return Response(201, self._show_signing_secret(req))

    # ----------------------------------------------------------------- triggers
    def _create_trigger(self, req: Request) -> Response:
        data = _root(req, "trigger")
        if not isinstance(data.get("title"), str) or not data["title"].strip():
            raise _invalid("title", "Title: cannot be blank", "BlankValue")
        conditions = data.get("conditions")
        if not isinstance(conditions, dict) or not all(
            isinstance(conditions.get(group, []), list)
            and all(isinstance(c, dict) and c.get("field") and c.get("operator") for c in conditions.get(group, []))
            for group in ("all", "any")
        ):
            raise _invalid("conditions", "Conditions: need 'all'/'any' lists of {field, operator, value}")
        actions = data.get("actions")
        if not isinstance(actions, list) or not actions or not all(isinstance(a, dict) for a in actions):
            raise _invalid("actions", "Actions: cannot be blank", "BlankValue")
        for action in actions:
            if action.get("field") != "notification_webhook":
                continue
            value = action.get("value")
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)):
                raise _invalid("actions", "Actions: notification_webhook needs [webhook_id, body]")
            if value[0] not in self._webhooks:
                raise _invalid("actions", f"Actions: webhook {value[0]} does not exist")
        trigger_id, now = next(self._ids), iso_time(milliseconds=False)
        trigger = {
            "id": trigger_id,
            "url": self._url(f"triggers/{trigger_id}"),
            "title": data["title"],
            "raw_title": data["title"],
            "description": data.get("description"),
            "active": data.get("active", True),
            "position": data.get("position", len(self._triggers) + 1),
            "conditions": {"all": conditions.get("all", []), "any": conditions.get("any", [])},
            "actions": actions,
            "created_at": now,
            "updated_at": now,
        }
        self._triggers[trigger_id] = trigger
        return Response(201, {"trigger": trigger})

    def _list_triggers(self, req: Request) -> dict[str, Any]:
        active = req.arg("active")
        found = [t for t in self._triggers.values() if active is None or _same(t["active"], active)]
        return {"triggers": found, "count": len(found), "next_page": None, "previous_page": None}

    def _trigger_or_404(self, trigger_id: str) -> dict[str, Any]:
        trigger = self._triggers.get(int(trigger_id))
        if trigger is None:
            raise _not_found()
        return trigger

    def _get_trigger(self, req: Request) -> dict[str, Any]:
        return {"trigger": self._trigger_or_404(req.params["id"])}

    def _delete_trigger(self, req: Request) -> Response:
        del self._triggers[self._trigger_or_404(req.params["id"])["id"]]
        return Response(204)

    def _run_triggers(self, update: _Update) -> None:
        """Fire every active trigger whose conditions hold for this update, in position order."""
        for trigger in sorted(self._triggers.values(), key=lambda t: (t["position"], t["id"])):
            if not trigger["active"]:
                continue
            conditions = trigger["conditions"]
            if not all(self._holds(c, update) for c in conditions["all"]):
                continue
            if conditions["any"] and not any(self._holds(c, update) for c in conditions["any"]):
                continue
            for action in trigger["actions"]:
                if action.get("field") == "notification_webhook":
                    webhook_id, template = action["value"]
                    webhook = self._webhooks.get(webhook_id)
                    if webhook is not None and webhook["status"] == "active":
                        body = self._render(template, update).encode()
                        invocation_id = str(next(self._invocation_ids))
                        self._sender.enqueue(
                            _Invocation(invocation_id, webhook_id, trigger["id"], body), key=update.ticket["id"]
                        )

    def _holds(self, condition: dict[str, Any], update: _Update) -> bool:
        """Evaluate one trigger condition; unsupported fields or operators never hold."""
        field, operator, expected = condition["field"], condition["operator"], condition.get("value")
        if field == "comment_is_public":
            comment = update.comment
            actual = "not_relevant" if comment is None else str(comment["public"]).lower()
            expected = "true" if _same(expected, "requester_can_see_comment") else expected
        elif field == "current_via_id":
            actual = update.via_id
        elif field == "update_type":
            actual = "Create" if update.before is None else "Change"
        elif field == "role":
            actual = self._users.get(update.actor_id, {}).get("role", "").replace("-", "_")
        elif field in update.ticket:
            actual = update.ticket[field]
            previous = None if update.before is None else update.before[field]
            changed = actual != previous
            changes = {
                "changed": changed,
                "not_changed": not changed,
                "value": changed and _same(actual, expected),
                "value_previous": changed and _same(previous, expected),
                "not_value": changed and not _same(actual, expected),
                "not_value_previous": changed and not _same(previous, expected),
            }
            if operator in changes:
                return changes[operator]
        else:
            return False
        if operator == "is":
            return _same(actual, expected)
        if operator == "is_not":
            return not _same(actual, expected)
        return False

    def _render(self, template: str, update: _Update) -> str:
        """Replace {{placeholders}} with JSON-string-escaped values so a JSON template stays valid."""
        values = self._placeholders(update)

        def substitute(match: re.Match[str], values: dict[str, Any] = values) -> str:
            value = values.get(match.group(1))
            return "" if value is None else json.dumps(str(value))[1:-1]

        def loop(match: re.Match[str]) -> str:
            name, body = match.group(1), match.group(2)
            attachments = values["ticket.latest_public_comment.attachments"]
            rendered = []
            for index, attachment in enumerate(attachments):
                scope = values | {f"{name}.filename": attachment["file_name"], f"{name}.url": attachment["content_url"]}
                last = index == len(attachments) - 1
                text = _NOT_LAST.sub(lambda m, last=last: "" if last else m.group(1), body)
                rendered.append(_PLACEHOLDER.sub(lambda m, scope=scope: substitute(m, scope), text))
            return "".join(rendered)

        return _PLACEHOLDER.sub(substitute, _ATTACHMENT_LOOP.sub(loop, template))

    def _placeholders(self, update: _Update) -> dict[str, Any]:
        ticket = update.ticket
        # From the newest back: the cost must not grow with the ticket's comments (a run's later
        # phases would pay for its earlier ones).
        latest = next((c for c in reversed(self._comments[ticket["id"]]) if c["public"]), None)
        host = self.base_url.split("://", 1)[1]
        values = {
            "ticket.id": ticket["id"],
            "ticket.external_id": ticket["external_id"],
            "ticket.title": ticket["subject"],
            "ticket.status": ticket["status"],
            "ticket.priority": ticket["priority"],
            "ticket.url": f"{host}/agent/tickets/{ticket['id']}",
            "ticket.latest_public_comment_html": latest and latest["html_body"],
            "ticket.latest_public_comment.id": latest and latest["id"],
            "ticket.public_comments[0].id": latest and latest["id"],
            "ticket.latest_public_comment.attachments": latest["attachments"] if latest else [],
        }
        actor = self._users.get(update.actor_id)
        if update.actor_id == SYSTEM_USER_ID:
            actor = {"id": SYSTEM_USER_ID, "name": "Zendesk"}
        for prefix, user in (
            ("ticket.requester", self._users.get(ticket["requester_id"])),
            ("ticket.assignee", self._users.get(ticket["assignee_id"])),
            ("current_user", actor),
        ):
            for name in ("id", "name", "email", "external_id", "role", "remote_photo_url"):
                values[f"{prefix}.{name}"] = (user or {}).get(name)
        return values

    # ----------------------------------------------------------------- webhook delivery
    # Queueing, per-ticket order, faults and the retry loop are ``server.WebhookSender``'s; what
    # is Zendesk's: the signed headers (re-signed on every retry), the record, the retry rules.
    def _webhook_call(self, invocation: _Invocation, attempt: int) -> WebhookCall | None:
        with self.lock:
            webhook = copy.deepcopy(self._webhooks.get(invocation.webhook_id))
            secret = self._secrets.get(invocation.webhook_id, "")
        if webhook is None:
            return None  # deleted since the trigger fired
        timestamp = iso_time(milliseconds=False)
        headers = {
            "Content-Type": REQUEST_FORMATS[webhook["request_format"]],
            "User-Agent": "Zendesk Webhook",
            "x-zendesk-account-id": str(self.account_id),
            "x-zendesk-webhook-id": webhook["id"],
            "x-zendesk-webhook-invocation-id": invocation.id,
            "x-zendesk-webhook-signature-timestamp": timestamp,
            "x-zendesk-webhook-signature": sign_zendesk_webhook(secret, timestamp, invocation.body),
            **_auth_header(webhook.get("authentication")),
        }
        return WebhookCall(webhook["http_method"], webhook["endpoint"], headers, invocation.body, self.webhook_timeout)

    def _webhook_record(self, invocation: _Invocation, attempt: int, call: WebhookCall, answer: WebhookAnswer) -> None:
        self._deliveries.append(
            {
                "invocation_id": invocation.id,
                "webhook_id": invocation.webhook_id,
                "trigger_id": invocation.trigger_id,
                "attempt": attempt,
                "method": call.method,
                "endpoint": call.url,
                "headers": call.headers,
                "body": invocation.body,
                "status": answer.status,
                "error": answer.error,
                "timestamp": call.headers["x-zendesk-webhook-signature-timestamp"],
            }
        )

    def _webhook_retry_wait(self, invocation: _Invocation, attempt: int, answer: WebhookAnswer) -> float | None:
        """Zendesk's rules, at most `webhook_max_retries` retries, backing off from `webhook_retry_delay`."""
        if attempt > self.webhook_max_retries:
            return None
        backoff = self.webhook_retry_delay * 2 ** (attempt - 1)
        if answer.status is None:
            return backoff
        return _retry_wait(answer.status, answer.headers.get("Retry-After"), attempt, backoff)

    # ----------------------------------------------------------------- agent workspace
    def add_agent(self, name: str, email: str, role: str = "agent") -> int:
        """Create a human agent (or admin) who can work tickets through the simulated UI."""
        if role not in ("agent", "admin"):
            raise ValueError("role must be 'agent' or 'admin'")
        with self.lock:
            if self._user_by("email", email) is not None:
                raise ValueError(f"email {email} is already used")
            return self._new_user(name, email, role)["id"]

    def agent_reply(
        self,
        ticket_id: int,
        agent_id: int,
        body: str,
        public: bool = True,
        solve: bool = False,
        attachments: list[dict[str, Any]] | None = None,
        inline_images: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """An agent's reply from the agent workspace (via web); returns the new comment.

        ``attachments`` and ``inline_images``: files as ``{filename, content_type, content}``
        (content as bytes, or base64 text through the control API). Inline images are pasted
        after the text (``<img src=... alt=filename>`` in the HTML body) and, as in Zendesk,
        are also the comment's attachments (``inline: true``).
        """
        with self.lock:
            ticket = self._workable_ticket(ticket_id)
            self._agent(agent_id)
            changes: dict[str, Any] = {}
            if solve:
                changes["status"] = "solved"
                if ticket["assignee_id"] is None:
                    changes["assignee_id"] = agent_id  # solving needs an assignee: the solver takes it
            elif ticket["status"] == "new":
                changes["status"] = "open"
            comment = self._ui_comment(ticket, body, public, agent_id)
            token = None
            for inline, files in ((True, inline_images or []), (False, attachments or [])):
                for file in files:
                    token, attachment = self._store_file(token, file, inline=inline)
                    if inline:
                        src, alt = html.escape(attachment["content_url"]), html.escape(attachment["file_name"])
                        comment["html_body"] += f'<p><img src="{src}" alt="{alt}"></p>'
            if token:
                comment["uploads"] = [token]
            _, saved = self._save(ticket, changes, comment, agent_id, VIA_WEB)
            return copy.deepcopy(saved)

    def _store_file(self, token: str | None, file: dict[str, Any], *, inline: bool) -> tuple[str, dict[str, Any]]:
        """Add one file to the agent's upload `token` (created when None), as the workspace does."""
        content = file["content"]
        if isinstance(content, str):
            content = base64.b64decode(content)
        token = token or secrets.token_hex(12)
        upload = self._uploads.setdefault(token, {"token": token, "expires_at": "", "attachments": []})
        file_token = secrets.token_hex(12)
        self._files[file_token] = (file.get("content_type") or "application/octet-stream", content)
        attachment = {
            "id": next(self._ids),
            "file_name": file["filename"],
            "content_url": f"{self.base_url}/attachments/token/{file_token}/?name={quote(file['filename'])}",
            "content_type": file.get("content_type") or "application/octet-stream",
            "size": len(content),
            "inline": inline,
            "deleted": False,
            "thumbnails": [],
        }
        attachment["url"] = self._url(f"attachments/{attachment['id']}")
        upload["attachments"].append(attachment)
        return token, attachment

    def assign(self, ticket_id: int, agent_id: int, by_agent_id: int | None = None) -> dict[str, Any]:
        """Assign the ticket to `agent_id`, by `by_agent_id` (default: the agent takes it himself)."""
        with self.lock:
            ticket = self._workable_ticket(ticket_id)
            self._agent(agent_id)
            actor_id = agent_id if by_agent_id is None else self._agent(by_agent_id)
            changes = {
                "assignee_id": agent_id,
                "status": "open" if ticket["status"] == "new" else ticket["status"],
            }
            if any(ticket[k] != v for k, v in changes.items()):
                self._save(ticket, changes, None, actor_id, VIA_WEB)
            return copy.deepcopy(ticket)

    def solve(self, ticket_id: int, agent_id: int | None) -> dict[str, Any]:
        """Mark the ticket solved; `agent_id` None means Zendesk itself (current_user.id -1)."""
        with self.lock:
            ticket = self._workable_ticket(ticket_id)
            actor_id = SYSTEM_USER_ID if agent_id is None else self._agent(agent_id)
            changes: dict[str, Any] = {"status": "solved"}
            if ticket["assignee_id"] is None and agent_id is not None:
                changes["assignee_id"] = agent_id
            if ticket["status"] != "solved":
                self._save(ticket, changes, None, actor_id, VIA_WEB)
            return copy.deepcopy(ticket)

    def end_user_reply(self, ticket_id: int, body: str) -> dict[str, Any]:
        """The requester answers the notification e-mail (via email); reopens a pending or solved ticket."""
        with self.lock:
            ticket = self._workable_ticket(ticket_id)
            requester_id = ticket["requester_id"]
            changes = {"status": "open"} if ticket["status"] in ("pending", "solved") else {}
            comment = self._ui_comment(ticket, body, True, requester_id)
            _, saved = self._save(ticket, changes, comment, requester_id, VIA_EMAIL)
            return copy.deepcopy(saved)

    def _workable_ticket(self, ticket_id: int) -> dict[str, Any]:
        ticket = self._tickets[int(ticket_id)]
        if ticket["status"] == "closed":
            raise ValueError(f"ticket {ticket_id} is closed")
        return ticket

    def _agent(self, agent_id: int) -> int:
        if self._users[agent_id]["role"] not in ("agent", "admin"):
            raise ValueError(f"user {agent_id} is not an agent")
        return agent_id

    def _ui_comment(self, ticket: dict[str, Any], body: str, public: bool, author_id: int) -> dict[str, Any]:
        if len(self._comments[ticket["id"]]) >= self.max_comments:
            raise ValueError(f"ticket {ticket['id']} already holds {self.max_comments} comments")
        return {
            "body": body,
            "html_body": _to_html(body),
            "public": public,
            "author_id": author_id,
            "uploads": [],
        }

    def _control_add_agent(self, req: Request) -> Response:
        return Response(201, {"id": self.add_agent(**control_body(req))})

    def _control_agent_action(self, req: Request) -> dict[str, Any]:
        ticket_id, action = int(req.params["id"]), req.path.rsplit("/", 1)[1]
        body = control_body(req)
        if action == "reply":
            return {"comment": self.agent_reply(ticket_id, **body)}
        if action == "end_user_reply":
            return {"comment": self.end_user_reply(ticket_id, **body)}
        if action == "assign":
            return {"ticket": self.assign(ticket_id, **body)}
        return {"ticket": self.solve(ticket_id, **body)}


def _via(via_id: int) -> dict[str, Any]:
    return {"channel": VIA_CHANNELS[via_id], "source": {"from": {}, "to": {}, "rel": None}}


def _comment_event(comment: dict[str, Any]) -> dict[str, Any]:
    names = ("author_id", "body", "html_body", "plain_body", "public", "attachments", "audit_id")
    return {name: comment[name] for name in names}


def _new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _error_name(status: int) -> str:
    """Zendesk's `error` value when only the status is known: RecordNotFound, InternalServerError, ..."""
    named = {404: "RecordNotFound", 422: "RecordInvalid"}
    return named.get(status) or status_phrase(status).title().replace(" ", "").replace("-", "")


def _auth_header(authentication: Any) -> dict[str, str]:
    """The header a webhook's optional sender-side authentication adds."""
    if not isinstance(authentication, dict):
        return {}
    data = authentication.get("data") or {}
    kind = authentication.get("type")
    if kind == "bearer_token":
        return {"Authorization": f"Bearer {data.get('token', '')}"}
    if kind == "basic_auth":
        pair = f"{data.get('username', '')}:{data.get('password', '')}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    if kind == "api_key":
        return {str(data.get("name", "X-Api-Key")): str(data.get("value", ""))}
    return {}


def _retry_wait(status: int, retry_after: str | None, attempt: int, backoff: float) -> float | None:
    """Seconds to wait before retrying an answered attempt, or None to stop (Zendesk's rules)."""
    if status < 400 or (status < 500 and status not in (409, 429)):
        return None
    if status == 409:
        return backoff if attempt <= 3 else None  # conflicts are retried at most 3 times
    if retry_after is not None and status in (429, 503):
        try:
            seconds = float(retry_after)
        except ValueError:
            return backoff
        return seconds if seconds <= 60 else None  # a longer Retry-After is not honoured
    return backoff
