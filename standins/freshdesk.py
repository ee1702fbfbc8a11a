"""Stand-in of the Freshdesk API v2 (`/api/v2/...`) and of the agents working in Freshdesk's UI.

Follows shared/reference/helpdesk-apis.md section 2 and developers.freshdesk.com/api: API-key
basic auth, contacts, tickets (with the documented validation and error envelope), notes,
replies, paginated conversations, agents, pre-signed attachment links, the filter (search) API
with an index that lags behind writes, per-minute rate limits with their headers, and automation
rules (type 4, ticket updates) whose "trigger webhook" action is delivered from a worker thread
with the rule's custom headers, string-valued placeholders, and Freshdesk's retry schedule
(+5, +30, +60 minutes) compressed in time. Agent actions (reply, assign, resolve, close,
customer reply) change tickets and fire the rules, as a person in the agent UI would.
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

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
)

STATUSES = {2: "Open", 3: "Pending", 4: "Resolved", 5: "Closed"}
PRIORITIES = {1: "Low", 2: "Medium", 3: "High", 4: "Urgent"}
SOURCES = (1, 2, 3, 5, 6, 7, 9, 10, 11)
TICKET_TYPES = ("Question", "Incident", "Problem", "Feature Request", "Refund")
SOURCE_REPLY, SOURCE_NOTE = 0, 2
PERFORMER_AGENT, PERFORMER_REQUESTER, PERFORMER_ANY, PERFORMER_SYSTEM = 1, 2, 3, 4
AUTOMATION_TYPES = (1, 3, 4)
RULE_EVENTS = ("reply_sent", "note_type", "responder_id", "group_id", "status", "priority", "ticket_type")
CONDITION_FIELDS = ("tags", "status", "priority", "group_id", "responder_id", "ticket_type", "source")
WEBHOOK_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
WEBHOOK_CONTENT_TYPES = {"JSON": "application/json", "XML": "application/xml"}
MAX_PER_PAGE = 100
SEARCH_PAGE_SIZE, SEARCH_MAX_PAGES = 30, 10
MAX_TAG_LENGTH = 32
MAX_ATTACHMENTS_BYTES = 20 * 1024 * 1024
TICKET_FIELDS = (
    "requester_id",
    "email",
    "unique_external_id",
    "name",
    "subject",
    "description",
    "status",
    "priority",
    "source",
    "type",
    "tags",
    "custom_fields",
    "responder_id",
    "group_id",
)
CONTACT_FIELDS = ("name", "email", "phone", "mobile", "twitter_id", "unique_external_id", "job_title", "language")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_.]+)\s*\}\}")


def _error(field: str | None, message: str, code: str = "invalid_value") -> dict[str, Any]:
    return {"field": field, "message": message, "code": code}


def _validation(errors: list[dict[str, Any]], status: int = 400) -> HttpError:
    return HttpError(status, "Validation failed", details=errors)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _Invocation:
    rule_id: int
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class FreshdeskStandin(WebhookStandin):
    """Freshdesk for one API agent (an admin, identified by ``api_key``), plus simulated agents."""

    webhook_timeout = 10.0  # seconds before a delivery attempt counts as failed
    # Freshdesk retries a failed webhook 5, 30 and 60 minutes after the previous attempt, then
    # e-mails the account's admins [doc support article 11000000028141]; compressed by default.
    webhook_retry_delays = (300.0, 1800.0, 3600.0)
    webhook_time_scale = 1 / 1500  # 300 s → 0.2 s
    rate_limit_total = 700  # calls per minute (Enterprise)
    search_lag = 0.0  # seconds before a ticket change reaches the filter API's index
    attachment_url_ttl = 300  # seconds a pre-signed attachment link stays valid
    groups = {1: "Support", 2: "Billing"}
    custom_fields = {"cf_order_number": "text", "cf_vip": "checkbox"}

    def __init__(self, api_key: str = "freshdesk-key", port: int = 0, host: str = "127.0.0.1"):
        super().__init__(port, host)
        self.api_key = api_key
        self._link_secret = secrets.token_bytes(16)
        self._rate_lock = threading.Lock()
        self.reset_state()
        api = [
            ("GET", r"agents/me", self._get_me),
            ("GET", r"agents", self._list_agents),
            ("GET", r"agents/(?P<id>\d+)", self._get_agent),
            ("POST", r"contacts", self._create_contact),
            ("GET", r"contacts", self._list_contacts),
            ("GET", r"contacts/(?P<id>\d+)", self._get_contact),
            ("PUT", r"contacts/(?P<id>\d+)", self._update_contact),
            ("POST", r"tickets", self._create_ticket),
            ("GET", r"tickets", self._list_tickets),
            ("GET", r"tickets/(?P<id>\d+)", self._get_ticket),
            ("PUT", r"tickets/(?P<id>\d+)", self._update_ticket),
            ("POST", r"tickets/(?P<id>\d+)/notes", self._create_note),
            ("POST", r"tickets/(?P<id>\d+)/reply", self._create_reply),
            ("GET", r"tickets/(?P<id>\d+)/conversations", self._list_conversations),
            ("GET", r"search/tickets", self._search_tickets),
            ("GET", r"automations/(?P<type>\d+)/rules", self._list_rules),
            ("POST", r"automations/(?P<type>\d+)/rules", self._create_rule),
            ("GET", r"automations/(?P<type>\d+)/rules/(?P<id>\d+)", self._get_rule),
            ("PUT", r"automations/(?P<type>\d+)/rules/(?P<id>\d+)", self._update_rule),
            ("DELETE", r"automations/(?P<type>\d+)/rules/(?P<id>\d+)", self._delete_rule),
        ]
        for method, pattern, handler in api:
            self.route(method, rf"/api/v2/{pattern}", handler)
        self.route("GET", r"/files/(?P<token>\w+)/(?P<name>[^/]+)", self._download, public=True)
        self.control_route("POST", "agents", self._control_add_agent)
        for action in ("reply", "assign", "resolve", "close", "customer_reply"):
            self.control_route("POST", rf"tickets/(?P<id>\d+)/{action}", self._control_agent_action)

    def reset_state(self) -> None:
        """Forget everything but the API agent (the key's owner), who is recreated."""
        self._sender.reset()
        self._ids = itertools.count(43_000_000_001)  # users (contacts and agents), conversations, rules
        self._ticket_ids = itertools.count(1)
        self._contacts: dict[int, dict[str, Any]] = {}
        self._agents: dict[int, dict[str, Any]] = {}
        self._tickets: dict[int, dict[str, Any]] = {}
        self._conversations: dict[int, list[dict[str, Any]]] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._index: dict[int, list[tuple[float, dict[str, Any]]]] = {}
        self._rules: dict[int, dict[str, Any]] = {}
        self._deliveries: list[dict[str, Any]] = []
        self._failure_emails: list[dict[str, Any]] = []
        self.rate_limit_total = type(self).rate_limit_total
        self.search_lag = type(self).search_lag
        with self._rate_lock:
            self._window_start, self._window_used = time.monotonic(), 0
        self.api_agent_id = self._new_agent("API Admin", "admin@example.com")["id"]

    # ----------------------------------------------------------------- read accessors
    def tickets(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._tickets.values()))

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._tickets[int(ticket_id)])

    def conversations(self, ticket_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return [self._conversation_json(c) for c in self._conversations[int(ticket_id)]]

    def contacts(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._contacts.values()))

    def rules(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._rules.values()))

    def failure_emails(self) -> list[dict[str, Any]]:
        """The "webhook failed" e-mails Freshdesk sends admins once every retry has failed."""
        with self.lock:
            return copy.deepcopy(self._failure_emails)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            state = copy.deepcopy(
                {
                    "contacts": list(self._contacts.values()),
                    "agents": list(self._agents.values()),
                    "tickets": list(self._tickets.values()),
                    "conversations": {
                        str(k): [self._conversation_json(c) for c in v] for k, v in self._conversations.items()
                    },
                    "rules": list(self._rules.values()),
                    "webhook_deliveries": self._deliveries_json(),
                    "failure_emails": self._failure_emails,
                }
            )
        return state

    # ----------------------------------------------------------------- HTTP plumbing
    def authenticate(self, req: Request) -> int:
        """Basic auth with the API key as user name and any password; returns the API agent's id."""
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        try:
            login = base64.b64decode(value, validate=True).decode().partition(":")[0]
        except ValueError:
            login = ""
        if scheme.lower() != "basic" or not hmac.compare_digest(login.encode(), self.api_key.encode()):
            raise HttpError(401, "You have to be logged in to perform this action.", "invalid_credentials")
        return self.api_agent_id

    def error_response(self, err: HttpError) -> Response:
        if err.details:
            body: Any = {"description": err.message or "Validation failed", "errors": err.details}
        elif err.status == 404 and not err.type:
            body = None  # Freshdesk answers an unknown record with an empty 404
        else:
            body = {"code": err.type or _code(err.status), "message": err.message or ""}
        return Response(err.status, body, dict(err.headers))

    def rate_limit_response(self, retry_after: int) -> Response:
        err = HttpError(429, "You have exceeded the limit of requests per minute", "rate_limit_exceeded")
        resp = self.error_response(err)
        resp.headers.update({"Retry-After": str(retry_after), **self._rate_headers(0)})
        return resp

    def _dispatch(self, req: Request, control: bool = False) -> Response:
        """Every API request counts against the per-minute budget, failed ones too."""
        if control or req.path.startswith("/files/"):
            return super()._dispatch(req, control)
        with self._rate_lock:
            now = time.monotonic()
            if now - self._window_start >= 60:
                self._window_start, self._window_used = now, 0
            if self._window_used >= self.rate_limit_total:
                retry_after = max(1, int(60 - (now - self._window_start)) + 1)
                return self.rate_limit_response(retry_after)
            self._window_used += 1
            remaining = self.rate_limit_total - self._window_used
        if req.method in ("POST", "PUT") and req.body:
            content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in ("application/json", "multipart/form-data"):
                message = f"Content-Type header is set to {content_type or 'nothing'}. It should be application/json"
                resp = self.error_response(HttpError(415, message, "invalid_content_type"))
                resp.headers.update(self._rate_headers(remaining))
                return resp
        resp = super()._dispatch(req, control)
        resp.headers.update(self._rate_headers(remaining))
        return resp

    def _rate_headers(self, remaining: int) -> dict[str, str]:
        return {
            "X-RateLimit-Total": str(self.rate_limit_total),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Used-CurrentRequest": "1",
            "X-Freshdesk-API-Version": "latest=v2; requested=v2",
        }

    def _body(self, req: Request) -> tuple[dict[str, Any], list[tuple[str, str, str, bytes]]]:
        """The request's fields and files: JSON, or multipart/form-data (fields as strings)."""
        content_type = req.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            return _multipart(content_type, req.body)
        if req.json_error or not isinstance(req.data, dict):
            raise _validation([_error(None, "Request body has invalid json format", "invalid_json")])
        return req.data, []

    def _page(self, req: Request, items: list[Any], path: str) -> Response:
        """One page of ``items``, with ``link: <next>; rel="next"`` when more follow."""
        page, per_page = req.arg("page") or "1", req.arg("per_page") or "30"
        errors = []
        if not page.isdigit() or int(page) < 1:
            errors.append(_error("page", "It should be a/an Positive Integer", "datatype_mismatch"))
        if not per_page.isdigit() or not 1 <= int(per_page) <= MAX_PER_PAGE:
            errors.append(_error("per_page", f"It should be a Positive Integer less than or equal to {MAX_PER_PAGE}"))
        if errors:
            raise _validation(errors)
        start = (int(page) - 1) * int(per_page)
        headers = {}
        if len(items) > start + int(per_page):
            query = "&".join(f"{k}={quote(v[0])}" for k, v in req.query.items() if k not in ("page", "per_page"))
            query = (query + "&" if query else "") + f"page={int(page) + 1}&per_page={per_page}"
            headers["Link"] = f'<{self.base_url}{path}?{query}>; rel="next"'
        return Response(200, items[start : start + int(per_page)], headers)

    # ----------------------------------------------------------------- agents
    def _new_agent(self, name: str, email: str) -> dict[str, Any]:
        agent_id, now = next(self._ids), iso_time(milliseconds=False)
        agent = {
            "id": agent_id,
            "available": True,
            "occasional": False,
            "signature": None,
            "ticket_scope": 1,
            "type": "support_agent",
            "created_at": now,
            "updated_at": now,
            "contact": {
                "active": True,
                "email": email,
                "name": name,
                "job_title": None,
                "language": "en",
                "mobile": None,
                "phone": None,
                "time_zone": "UTC",
                "avatar": {"avatar_url": f"https://avatars.example.com/{agent_id}.png"},
            },
        }
        self._agents[agent_id] = agent
        return agent

    def _get_me(self, req: Request) -> dict[str, Any]:
        return self._agents[req.auth]

    def _list_agents(self, req: Request) -> Response:
        return self._page(req, list(self._agents.values()), req.path)

    def _get_agent(self, req: Request) -> dict[str, Any]:
        agent = self._agents.get(int(req.params["id"]))
        if agent is None:
            raise HttpError(404)
        return agent

    # ----------------------------------------------------------------- contacts
    def _contact_by(self, field: str, value: Any) -> dict[str, Any] | None:
        wanted = str(value).lower()
        return next((c for c in self._contacts.values() if str(c.get(field) or "").lower() == wanted), None)

    def _contact_input(self, data: dict[str, Any], contact: dict[str, Any] | None) -> dict[str, Any]:
        errors = [
            _error(k, "Unexpected/invalid field in request", "invalid_field") for k in data if k not in CONTACT_FIELDS
        ]
        fields = {k: data[k] for k in CONTACT_FIELDS if k in data}
        for name, value in fields.items():
            if value is not None and not isinstance(value, str):
                errors.append(_error(name, "It should be a/an String", "datatype_mismatch"))
        if contact is None and not (isinstance(fields.get("name"), str) and fields["name"].strip()):
            errors.append(_error("name", "It should be a/an String", "missing_field"))
        identities = ("email", "phone", "mobile", "twitter_id", "unique_external_id")
        if contact is None and not any(fields.get(k) for k in identities):
            message = "Please fill at least 1 of email, mobile, phone, twitter_id, unique_external_id fields"
            errors.append(_error("requester_id", message, "missing_field"))
        email_value = fields.get("email")
        if isinstance(email_value, str) and email_value and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email_value):
            errors.append(_error("email", "It should be in the 'valid email address' format"))
        if errors:
            raise _validation(errors)
        conflicts = []
        for unique in ("email", "unique_external_id", "twitter_id"):
            owner = self._contact_by(unique, fields[unique]) if fields.get(unique) else None
            if owner is not None and owner is not contact:
                conflict = _error(unique, "It should be a unique value", "duplicate_value")
                conflict["additional_info"] = {"user_id": owner["id"]}
                conflicts.append(conflict)
        if conflicts:
            raise _validation(conflicts, 409)
        return fields

    def _new_contact(self, fields: dict[str, Any]) -> dict[str, Any]:
        contact_id, now = next(self._ids), iso_time(milliseconds=False)
        contact = {
            "id": contact_id,
            "active": False,
            "address": None,
            "company_id": None,
            "description": None,
            "email": None,
            "job_title": None,
            "language": "en",
            "mobile": None,
            "name": "",
            "phone": None,
            "time_zone": "UTC",
            "twitter_id": None,
            "unique_external_id": None,
            "other_emails": [],
            "tags": [],
            "custom_fields": {},
            "created_at": now,
            "updated_at": now,
        }
        contact.update(fields)
        self._contacts[contact_id] = contact
        return contact

    def _create_contact(self, req: Request) -> Response:
        data, _ = self._body(req)
        contact = self._new_contact(self._contact_input(data, None))
        return Response(201, contact, {"Location": f"{self.base_url}/api/v2/contacts/{contact['id']}"})

    def _list_contacts(self, req: Request) -> Response:
        found = list(self._contacts.values())
        for field in ("email", "mobile", "phone", "unique_external_id"):
            value = req.arg(field)
            if value is not None:
                found = [c for c in found if str(c.get(field) or "").lower() == value.lower()]
        return self._page(req, found, req.path)

    def _contact_or_404(self, contact_id: str) -> dict[str, Any]:
        contact = self._contacts.get(int(contact_id))
        if contact is None:
            raise HttpError(404)
        return contact

    def _get_contact(self, req: Request) -> dict[str, Any]:
        return self._contact_or_404(req.params["id"])

    def _update_contact(self, req: Request) -> dict[str, Any]:
        contact = self._contact_or_404(req.params["id"])
        data, _ = self._body(req)
        contact.update(self._contact_input(data, contact))
        contact["updated_at"] = iso_time(milliseconds=False)
        return contact

    # ----------------------------------------------------------------- tickets
    def _ticket_input(self, data: dict[str, Any], ticket: dict[str, Any] | None) -> dict[str, Any]:
        """Validated ticket fields of a create (``ticket`` None) or update body; every error at once."""
        errors = [
            _error(k, "Unexpected/invalid field in request", "invalid_field") for k in data if k not in TICKET_FIELDS
        ]
        fields = {k: data[k] for k in TICKET_FIELDS if k in data}
        enums = {"status": tuple(STATUSES), "priority": tuple(PRIORITIES), "source": SOURCES}
        for name, allowed in enums.items():
            if name in fields and (not _is_int(fields[name]) or fields[name] not in allowed):
                errors.append(_error(name, f"It should be one of these values: '{','.join(map(str, allowed))}'"))
        for name in ("requester_id", "responder_id", "group_id"):
            if fields.get(name) is not None and not _is_int(fields[name]):
                errors.append(_error(name, "It should be a/an Positive Integer", "datatype_mismatch"))
        for name in ("subject", "description", "type", "email", "unique_external_id", "name"):
            if fields.get(name) is not None and not isinstance(fields[name], str):
                errors.append(_error(name, "It should be a/an String", "datatype_mismatch"))
        if ticket is None:
            for name in ("subject", "description"):
                if not (isinstance(fields.get(name), str) and fields[name].strip()):
                    errors.append(_error(name, "It should be a/an String", "missing_field"))
            if not any(fields.get(k) for k in ("requester_id", "email", "unique_external_id")):
                message = "Please fill at least 1 of requester_id, phone, email, twitter_id, facebook_id fields"
                errors.append(_error("requester_id", message, "missing_field"))
        if _is_int(fields.get("requester_id")) and fields["requester_id"] not in self._contacts:
            errors.append(_error("requester_id", "There is no contact matching the given requester_id"))
        if _is_int(fields.get("responder_id")) and fields["responder_id"] not in self._agents:
            errors.append(_error("responder_id", "There is no agent matching the given responder_id"))
        if _is_int(fields.get("group_id")) and fields["group_id"] not in self.groups:
            errors.append(_error("group_id", "There is no group matching the given group_id"))
        if isinstance(fields.get("type"), str) and fields["type"] not in TICKET_TYPES:
            errors.append(_error("type", f"It should be one of these values: '{','.join(TICKET_TYPES)}'"))
        tags = fields.get("tags")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            errors.append(_error("tags", "It should be a/an Array", "datatype_mismatch"))
        elif tags and any(len(t) > MAX_TAG_LENGTH for t in tags):
            errors.append(
                _error("tags", f"It should only contain elements that have maximum of {MAX_TAG_LENGTH} characters")
            )
        custom = fields.get("custom_fields")
        if custom is not None and not isinstance(custom, dict):
            errors.append(_error("custom_fields", "It should be a/an key/value pair", "datatype_mismatch"))
        elif custom:
            for key, value in custom.items():
                kind = self.custom_fields.get(key)
                if kind is None:
                    errors.append(_error(key, "Unexpected/invalid field in request", "invalid_field"))
                elif kind == "checkbox" and not isinstance(value, bool):
                    errors.append(_error(key, "It should be a/an Boolean", "datatype_mismatch"))
                elif kind == "text" and value is not None and not isinstance(value, str):
                    errors.append(_error(key, "It should be a/an String", "datatype_mismatch"))
        if errors:
            raise _validation(errors)
        return fields

    def _create_ticket(self, req: Request) -> Response:
        data, _ = self._body(req)
        fields = self._ticket_input(data, None)
        requester_id = fields.pop("requester_id", None)
        identity = {k: fields.pop(k) for k in ("email", "unique_external_id", "name") if k in fields}
        if requester_id is None:  # an unknown e-mail or external id creates the contact
            key = "email" if identity.get("email") else "unique_external_id"
            contact = self._contact_by(key, identity[key]) or self._new_contact(
                {key: identity[key], "name": identity.get("name") or identity[key]}
            )
            requester_id = contact["id"]
        ticket_id, now = next(self._ticket_ids), iso_time(milliseconds=False)
        ticket = {
            "id": ticket_id,
            "subject": fields["subject"],
            "description": fields["description"],
            "description_text": html_text(fields["description"]),
            "status": fields.get("status", 2),
            "priority": fields.get("priority", 1),
            "source": fields.get("source", 2),
            "type": fields.get("type"),
            "tags": fields.get("tags", []),
            "custom_fields": {key: None for key in self.custom_fields} | fields.get("custom_fields", {}),
            "requester_id": requester_id,
            "responder_id": fields.get("responder_id"),
            "group_id": fields.get("group_id"),
            "company_id": None,
            "cc_emails": [],
            "fwd_emails": [],
            "reply_cc_emails": [],
            "is_escalated": False,
            "spam": False,
            "attachments": [],
            "due_by": now,
            "fr_due_by": now,
            "created_at": now,
            "updated_at": now,
        }
        self._tickets[ticket_id] = ticket
        self._conversations[ticket_id] = []
        self._reindex(ticket)
        return Response(201, ticket, {"Location": f"{self.base_url}/api/v2/tickets/{ticket_id}"})

    def _ticket_or_404(self, ticket_id: str | int) -> dict[str, Any]:
        ticket = self._tickets.get(int(ticket_id))
        if ticket is None:
            raise HttpError(404)
        return ticket

    def _get_ticket(self, req: Request) -> dict[str, Any]:
        return self._ticket_or_404(req.params["id"])

    def _update_ticket(self, req: Request) -> dict[str, Any]:
        ticket = self._ticket_or_404(req.params["id"])
        data, _ = self._body(req)
        fields = self._ticket_input(data, ticket)
        for name in ("email", "unique_external_id", "name"):
            fields.pop(name, None)
        self._change(ticket, fields, actor=req.auth, performer=PERFORMER_AGENT)
        return ticket

    def _list_tickets(self, req: Request) -> Response:
        """Tickets, by default those created in the last 30 days, oldest or newest first."""
        found = list(self._tickets.values())
        since = req.arg("updated_since")
        if since:
            found = [t for t in found if t["updated_at"] >= since]
        else:
            cutoff = iso_time(time.time() - 30 * 86400, milliseconds=False)
            found = [t for t in found if t["created_at"] >= cutoff]
        if req.arg("requester_id"):
            found = [t for t in found if str(t["requester_id"]) == req.arg("requester_id")]
        order_by, order_type = req.arg("order_by") or "created_at", req.arg("order_type") or "desc"
        if order_by not in ("created_at", "due_by", "updated_at", "status") or order_type not in ("asc", "desc"):
            raise _validation(
                [_error("order_by", "It should be one of these values: 'created_at,due_by,updated_at,status'")]
            )
        found.sort(key=lambda t: (t[order_by], t["id"]), reverse=order_type == "desc")
        return self._page(req, found, req.path)

    def _reindex(self, ticket: dict[str, Any]) -> None:
        """The filter API sees this version of the ticket only after ``search_lag`` seconds."""
        self._index.setdefault(ticket["id"], []).append((time.monotonic() + self.search_lag, copy.deepcopy(ticket)))

    def _search_tickets(self, req: Request) -> dict[str, Any]:
        """``query="tag:'x' AND status:2"``: the whole query in double quotes, terms joined by AND/OR."""
        query = req.arg("query") or ""
        if len(query) < 2 or not (query.startswith('"') and query.endswith('"')) or len(query) > 512:
            raise _validation([_error("query", "It should be enclosed in double quotes and at most 512 characters")])
        alternatives = []
        for alternative in re.split(r"\s+OR\s+", query[1:-1].strip()):
            terms = []
            for term in re.split(r"\s+AND\s+", alternative.strip()):
                match = re.fullmatch(r"(\w+):(?:'([^']*)'|(\d+))", term.strip())
                if not match or match.group(1) not in ("tag", "status", "priority", "group_id", "type"):
                    raise _validation([_error("query", f"Invalid query term: {term.strip()}")])
                terms.append((match.group(1), match.group(2) if match.group(2) is not None else match.group(3)))
            alternatives.append(terms)
        page = req.arg("page") or "1"
        if not page.isdigit() or not 1 <= int(page) <= SEARCH_MAX_PAGES:
            raise _validation(
                [_error("page", f"It should be a Positive Integer less than or equal to {SEARCH_MAX_PAGES}")]
            )
        now, found = time.monotonic(), []
        for versions in self._index.values():
            visible = [snapshot for at, snapshot in versions if at <= now]
            if visible and any(all(_term_matches(visible[-1], *t) for t in terms) for terms in alternatives):
                found.append(visible[-1])
        found.sort(key=lambda t: t["updated_at"], reverse=True)
        start = (int(page) - 1) * SEARCH_PAGE_SIZE
        return {"results": found[start : start + SEARCH_PAGE_SIZE], "total": len(found)}

    # ----------------------------------------------------------------- conversations
    def _conversation_input(self, req: Request, *, note: bool) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
        """Validated fields of a note or reply, and its files as (file name, content type, bytes)."""
        data, files = self._body(req)
        allowed = ("body", "user_id", "notify_emails") + (
            ("private", "incoming") if note else ("cc_emails", "bcc_emails", "from_email")
        )
        errors = [_error(k, "Unexpected/invalid field in request", "invalid_field") for k in data if k not in allowed]
        if any(name != "attachments[]" for name, _, _, _ in files):
            errors.append(_error("attachments", "Unexpected/invalid field in request", "invalid_field"))
        fields = {k: _form_value(k, v) for k, v in data.items() if k in allowed}
        if not (isinstance(fields.get("body"), str) and fields["body"].strip()):
            errors.append(_error("body", "It should be a/an String", "missing_field"))
        for flag in ("private", "incoming"):
            if flag in fields and not isinstance(fields[flag], bool):
                errors.append(_error(flag, "It should be a/an Boolean", "datatype_mismatch"))
        user_id = fields.get("user_id")
        if user_id is not None and not _is_int(user_id):
            errors.append(_error("user_id", "It should be a/an Positive Integer", "datatype_mismatch"))
        elif user_id is not None and user_id not in self._contacts and user_id not in self._agents:
            errors.append(_error("user_id", "There is no contact matching the given user_id"))
        elif user_id is not None and not note and user_id not in self._agents:
            errors.append(_error("user_id", "There is no agent matching the given user_id"))
        if sum(len(content) for _, _, _, content in files) > MAX_ATTACHMENTS_BYTES:
            errors.append(_error("attachments", "The cumulative size of all attachments should not exceed 20 MB"))
        if errors:
            raise _validation(errors)
        return fields, [(filename, content_type, content) for _, filename, content_type, content in files]

    def _new_conversation(
        self,
        ticket: dict[str, Any],
        *,
        body: str,
        user_id: int,
        source: int,
        incoming: bool,
        private: bool,
        files: list[tuple[str, str, bytes]],
    ) -> dict[str, Any]:
        now = iso_time(milliseconds=False)
        conversation = {
            "id": next(self._ids),
            "body": body,
            "body_text": html_text(body),
            "incoming": incoming,
            "private": private,
            "user_id": user_id,
            "source": source,
            "category": 2,
            "support_email": None,
            "ticket_id": ticket["id"],
            "to_emails": [],
            "from_email": None,
            "cc_emails": [],
            "bcc_emails": [],
            "attachments": [self._store_file(name, content_type, content) for name, content_type, content in files],
            "created_at": now,
            "updated_at": now,
        }
        self._conversations[ticket["id"]].append(conversation)
        ticket["updated_at"] = now
        self._reindex(ticket)
        return conversation

    def _create_note(self, req: Request) -> Response:
        ticket = self._ticket_or_404(req.params["id"])
        fields, files = self._conversation_input(req, note=True)
        conversation = self._new_conversation(
            ticket,
            body=fields["body"],
            user_id=fields.get("user_id", req.auth),
            source=SOURCE_NOTE,
            incoming=fields.get("incoming", False),
            private=fields.get("private", True),
            files=files,
        )
        return Response(201, self._conversation_json(conversation))

    def _create_reply(self, req: Request) -> Response:
        ticket = self._ticket_or_404(req.params["id"])
        fields, files = self._conversation_input(req, note=False)
        actor = fields.get("user_id", req.auth)
        conversation = self._reply(ticket, fields["body"], actor, files)
        return Response(201, self._conversation_json(conversation))

    def _reply(self, ticket: dict[str, Any], body: str, agent_id: int, files: list) -> dict[str, Any]:
        conversation = self._new_conversation(
            ticket, body=body, user_id=agent_id, source=SOURCE_REPLY, incoming=False, private=False, files=files
        )
        self._fire(ticket, [("reply_sent", None, None)], actor=agent_id, performer=PERFORMER_AGENT)
        return conversation

    def _list_conversations(self, req: Request) -> Response:
        ticket = self._ticket_or_404(req.params["id"])
        items = [self._conversation_json(c) for c in self._conversations[ticket["id"]]]
        return self._page(req, items, req.path)

    def _conversation_json(self, conversation: dict[str, Any]) -> dict[str, Any]:
        """A conversation as the API shows it: attachment links are signed afresh on every read."""
        shown = copy.deepcopy(conversation)
        shown["attachments"] = [self._attachment_json(a) for a in conversation["attachments"]]
        return shown

    # ----------------------------------------------------------------- attachments
    def _store_file(self, name: str, content_type: str, content: bytes) -> dict[str, Any]:
        token = secrets.token_hex(12)
        now = iso_time(milliseconds=False)
        self._files[token] = {"content_type": content_type or "application/octet-stream", "content": content}
        return {
            "id": next(self._ids),
            "name": name,
            "content_type": content_type or "application/octet-stream",
            "size": len(content),
            "token": token,
            "created_at": now,
            "updated_at": now,
        }

    def _attachment_json(self, attachment: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in attachment.items() if k != "token"}
        expires = int(time.time()) + self.attachment_url_ttl
        signature = self._link_signature(attachment["token"], expires)
        shown["attachment_url"] = (
            f"{self.base_url}/files/{attachment['token']}/{quote(attachment['name'])}"
            f"?X-Amz-Expires={self.attachment_url_ttl}&Expires={expires}&X-Amz-Signature={signature}"
        )
        shown["thumb_url"] = None
        return shown

    def _link_signature(self, token: str, expires: int) -> str:
        return hmac.new(self._link_secret, f"{token}:{expires}".encode(), hashlib.sha256).hexdigest()

    def _download(self, req: Request) -> Response:
        """A pre-signed link: no credentials, a signature and an expiry (S3 answers 403 in XML)."""
        stored = self._files.get(req.params["token"])
        expires = req.arg("Expires") or ""
        signature = req.arg("X-Amz-Signature") or ""
        valid = (
            stored is not None
            and expires.isdigit()
            and hmac.compare_digest(signature, self._link_signature(req.params["token"], int(expires)))
        )
        if not valid or int(expires) < time.time():
            reason = "Request has expired" if valid else "Access Denied"
            body = f"<Error><Code>AccessDenied</Code><Message>{reason}</Message></Error>"
            return Response(403, body, content_type="application/xml")
        return Response(200, stored["content"], content_type=stored["content_type"])

    # ----------------------------------------------------------------- automation rules
    def _rule_input(self, automation_type: int, data: dict[str, Any]) -> dict[str, Any]:
        errors = []
        if not (isinstance(data.get("name"), str) and data["name"].strip()):
            errors.append(_error("name", "It should be a/an String", "missing_field"))
        if not isinstance(data.get("conditions"), list):
            errors.append(_error("conditions", "It should be a/an Array", "missing_field"))
        if not (isinstance(data.get("actions"), list) and data["actions"]):
            errors.append(_error("actions", "It should be a/an Array", "missing_field"))
        if automation_type != 4 and ("performer" in data or "events" in data):
            errors.append(_error("performer", "Applicable only to rules that run on ticket updates", "invalid_field"))
        if automation_type == 4:
            performer = data.get("performer")
            if not (isinstance(performer, dict) and performer.get("type") in (1, 2, 3, 4)):
                errors.append(_error("performer", "It should be one of these values: '1,2,3,4'", "missing_field"))
            events = data.get("events")
            if not (isinstance(events, list) and events):
                errors.append(_error("events", "It should be a/an Array", "missing_field"))
            else:
                for event in events:
                    if not isinstance(event, dict) or event.get("field_name") not in RULE_EVENTS:
                        errors.append(_error("events", f"It should be one of these values: '{','.join(RULE_EVENTS)}'"))
        for condition in data.get("conditions") or []:
            if not isinstance(condition, dict) or condition.get("match_type") not in ("all", "any"):
                errors.append(_error("conditions", "match_type should be one of these values: 'all,any'"))
                continue
            for prop in condition.get("properties") or []:
                if not isinstance(prop, dict) or prop.get("field_name") not in CONDITION_FIELDS:
                    errors.append(_error("conditions", f"field_name should be one of '{','.join(CONDITION_FIELDS)}'"))
                elif prop.get("operator") not in ("in", "not_in", "is", "is_not"):
                    errors.append(_error("conditions", "operator should be one of 'in,not_in,is,is_not'"))
        for action in data.get("actions") or []:
            errors += _action_errors(action)
        if errors:
            raise _validation(errors)
        return data

    def _create_rule(self, req: Request) -> Response:
        automation_type = self._automation_type(req)
        data, _ = self._body(req)
        fields = self._rule_input(automation_type, data)
        rule_id, now = next(self._ids), iso_time(milliseconds=False)
        rule = {"id": rule_id, "automation_type_id": automation_type, "position": len(self._rules) + 1}
        rule |= {"active": True, "operator": "condition_set_1 and condition_set_2", "outdated": False}
        rule |= copy.deepcopy(fields) | {"last_updated_by": req.auth, "created_at": now, "updated_at": now}
        self._rules[rule_id] = rule
        return Response(201, rule)

    def _automation_type(self, req: Request) -> int:
        automation_type = int(req.params["type"])
        if automation_type not in AUTOMATION_TYPES:
            raise HttpError(404)
        return automation_type

    def _rule_or_404(self, req: Request) -> dict[str, Any]:
        rule = self._rules.get(int(req.params["id"]))
        if rule is None or rule["automation_type_id"] != self._automation_type(req):
            raise HttpError(404)
        return rule

    def _list_rules(self, req: Request) -> dict[str, Any]:
        automation_type = self._automation_type(req)
        rules = [r for r in self._rules.values() if r["automation_type_id"] == automation_type]
        return {"rules": rules, "meta": {"count": len(rules), "cascading_rules": True}}

    def _get_rule(self, req: Request) -> dict[str, Any]:
        return self._rule_or_404(req)

    def _update_rule(self, req: Request) -> dict[str, Any]:
        rule = self._rule_or_404(req)
        data, _ = self._body(req)
        rule.update(copy.deepcopy(self._rule_input(rule["automation_type_id"], data)))
        rule["updated_at"] = iso_time(milliseconds=False)
        return rule

    def _delete_rule(self, req: Request) -> Response:
        del self._rules[self._rule_or_404(req)["id"]]
        return Response(204)

    # ----------------------------------------------------------------- changes fire the rules
    def _change(self, ticket: dict[str, Any], fields: dict[str, Any], *, actor: int | None, performer: int) -> None:
        changes = [(name, ticket.get(name), value) for name, value in fields.items() if ticket.get(name) != value]
        if not changes:
            return
        for name, _, value in changes:
            ticket[name] = value
        ticket["updated_at"] = iso_time(milliseconds=False)
        self._reindex(ticket)
        self._fire(ticket, changes, actor=actor, performer=performer)

    def _fire(self, ticket: dict[str, Any], changes: list[tuple], *, actor: int | None, performer: int) -> None:
        """Run every active ticket-update rule whose performer, events and conditions match."""
        for rule in sorted(self._rules.values(), key=lambda r: r["position"]):
            if rule["automation_type_id"] != 4 or not rule.get("active"):
                continue
            if not _performer_matches(rule.get("performer") or {}, actor, performer):
                continue
            if not any(_event_matches(event, change) for event in rule["events"] for change in changes):
                continue
            if not all(_condition_matches(ticket, condition) for condition in rule["conditions"]):
                continue
            for action in rule["actions"]:
                if action.get("field_name") == "trigger_webhook":
                    self._sender.enqueue(self._invocation(rule, action, ticket), key=ticket["id"])

    def _invocation(self, rule: dict[str, Any], action: dict[str, Any], ticket: dict[str, Any]) -> _Invocation:
        values = self._placeholders(ticket)

        def render(value: Any) -> Any:
            if isinstance(value, str):
                return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), value)
            if isinstance(value, dict):
                return {k: render(v) for k, v in value.items()}
            if isinstance(value, list):
                return [render(v) for v in value]
            return value

        content_type = WEBHOOK_CONTENT_TYPES[action.get("content_type", "JSON")]
        headers = {"Content-Type": content_type, "User-Agent": "Freshdesk"}
        headers |= {str(k): render(str(v)) for k, v in (action.get("custom_headers") or {}).items()}
        body = json.dumps(render(action.get("content") or {})).encode() if action["request_type"] != "GET" else b""
        return _Invocation(rule["id"], action["request_type"], render(action["url"]), headers, body)

    def _placeholders(self, ticket: dict[str, Any]) -> dict[str, str]:
        """Placeholder values, all strings, as Freshdesk renders them (empty when unset)."""
        agent = self._agents.get(ticket.get("responder_id") or 0)
        requester = self._contacts.get(ticket["requester_id"]) or {}
        public = [c for c in self._conversations[ticket["id"]] if not c["private"]]
        values = {
            "ticket.id": ticket["id"],
            "ticket.subject": ticket["subject"],
            "ticket.status": STATUSES.get(ticket["status"], ""),
            "ticket.priority": PRIORITIES.get(ticket["priority"], ""),
            "ticket.source": ticket["source"],
            "ticket.ticket_type": ticket.get("type") or "",
            "ticket.tags": ",".join(ticket["tags"]),
            "ticket.url": f"{self.base_url}/a/tickets/{ticket['id']}",
            "ticket.group.id": ticket.get("group_id") or "",
            "ticket.group.name": self.groups.get(ticket.get("group_id") or 0, ""),
            "ticket.agent.id": agent["id"] if agent else "",
            "ticket.agent.name": agent["contact"]["name"] if agent else "",
            "ticket.agent.email": agent["contact"]["email"] if agent else "",
            "ticket.requester.id": requester.get("id", ""),
            "ticket.requester.name": requester.get("name") or "",
            "ticket.requester.email": requester.get("email") or "",
            "ticket.latest_public_comment": public[-1]["body_text"] if public else "",
        }
        return {key: "" if value is None else str(value) for key, value in values.items()}

    # ----------------------------------------------------------------- webhook delivery
    # Queueing, per-ticket order, faults and the retry loop are ``server.WebhookSender``'s; what
    # is Freshdesk's: the rendered request, the record, the retry schedule and the failure e-mail.
    def _webhook_call(self, invocation: _Invocation, attempt: int) -> WebhookCall:
        return WebhookCall(invocation.method, invocation.url, invocation.headers, invocation.body, self.webhook_timeout)

    def _webhook_record(self, invocation: _Invocation, attempt: int, call: WebhookCall, answer: WebhookAnswer) -> None:
        """Every attempt; after the last retry failed, Freshdesk e-mails the account's admins."""
        self._deliveries.append(
            {
                "rule_id": invocation.rule_id,
                "attempt": attempt,
                "method": call.method,
                "url": call.url,
                "headers": dict(call.headers),
                "body": call.body,
                "status": answer.status,
                "error": answer.error,
                "timestamp": iso_time(),
            }
        )
        if not _delivered(answer) and attempt > len(self.webhook_retry_delays):
            self._failure_emails.append({"rule_id": invocation.rule_id, "url": invocation.url})

    def _webhook_retry_wait(self, invocation: _Invocation, attempt: int, answer: WebhookAnswer) -> float | None:
        """The first attempt, then Freshdesk's retries; any answer but 2xx, or none, is a failure."""
        delays = [d * self.webhook_time_scale for d in self.webhook_retry_delays]
        if _delivered(answer) or attempt > len(delays):
            return None
        return delays[attempt - 1]

    # ----------------------------------------------------------------- agent workspace
    def add_agent(self, name: str, email: str) -> int:
        """A human agent who works tickets through the simulated agent UI."""
        with self.lock:
            if any(a["contact"]["email"].lower() == email.lower() for a in self._agents.values()):
                raise ValueError(f"email {email} is already used by an agent")
            return self._new_agent(name, email)["id"]

    def agent_reply(
        self, ticket_id: int, agent_id: int, body: str, attachments: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """A public reply from the agent UI (source 0), e-mailed to the requester; fires "reply sent".

        ``attachments``: ``{filename, content_type, content}`` (bytes, or base64 text through
        the control API).
        """
        files = []
        for file in attachments or []:
            content = file["content"]
            files.append((file["filename"], file.get("content_type", ""), _bytes(content)))
        with self.lock:
            ticket = self._tickets[int(ticket_id)]
            self._agent(agent_id)
            conversation = self._reply(ticket, _to_html(body), agent_id, files)
            return self._conversation_json(conversation)

    def assign(self, ticket_id: int, agent_id: int, system: bool = False) -> dict[str, Any]:
        """Assign the ticket (an agent takes it, or Freshdesk's round-robin when ``system``)."""
        with self.lock:
            ticket = self._tickets[int(ticket_id)]
            self._agent(agent_id)
            performer, actor = (PERFORMER_SYSTEM, None) if system else (PERFORMER_AGENT, agent_id)
            self._change(ticket, {"responder_id": agent_id}, actor=actor, performer=performer)
            return copy.deepcopy(ticket)

    def resolve(self, ticket_id: int, agent_id: int | None = None, status: int = 4) -> dict[str, Any]:
        """Set status 4 (Resolved) or 5 (Closed); ``agent_id`` None means Freshdesk itself."""
        if status not in (4, 5):
            raise ValueError("status must be 4 (Resolved) or 5 (Closed)")
        with self.lock:
            ticket = self._tickets[int(ticket_id)]
            performer = PERFORMER_SYSTEM if agent_id is None else PERFORMER_AGENT
            if agent_id is not None:
                self._agent(agent_id)
            self._change(ticket, {"status": status}, actor=agent_id, performer=performer)
            return copy.deepcopy(ticket)

    def customer_reply(self, ticket_id: int, body: str) -> dict[str, Any]:
        """The requester answers the notification e-mail: an incoming reply; reopens a resolved ticket."""
        with self.lock:
            ticket = self._tickets[int(ticket_id)]
            conversation = self._new_conversation(
                ticket,
                body=_to_html(body),
                user_id=ticket["requester_id"],
                source=SOURCE_REPLY,
                incoming=True,
                private=False,
                files=[],
            )
            if ticket["status"] in (3, 4):
                self._change(ticket, {"status": 2}, actor=ticket["requester_id"], performer=PERFORMER_REQUESTER)
            return self._conversation_json(conversation)

    def _agent(self, agent_id: int) -> int:
        if agent_id not in self._agents:
            raise ValueError(f"user {agent_id} is not an agent")
        return agent_id

    def _control_add_agent(self, req: Request) -> Response:
        return Response(201, {"id": self.add_agent(**control_body(req))})

    def _control_agent_action(self, req: Request) -> dict[str, Any]:
        ticket_id, action = int(req.params["id"]), req.path.rsplit("/", 1)[1]
        body = control_body(req)
        if action == "reply":
            return {"conversation": self.agent_reply(ticket_id, **body)}
        if action == "customer_reply":
            return {"conversation": self.customer_reply(ticket_id, **body)}
        if action == "assign":
            return {"ticket": self.assign(ticket_id, **body)}
        if action == "close":
            body["status"] = 5
        return {"ticket": self.resolve(ticket_id, **body)}


def _code(status: int) -> str:
    return {
        401: "invalid_credentials",
        403: "access_denied",
        405: "method_not_allowed",
        429: "rate_limit_exceeded",
    }.get(status, "internal_error" if status >= 500 else "invalid_request")


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], list[tuple[str, str, str, bytes]]]:
    """Fields (text) and files (field name, file name, content type, bytes) of a multipart body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        raise _validation([_error(None, "The multipart body cannot be parsed", "invalid_value")])
    fields: dict[str, Any] = {}
    files: list[tuple[str, str, str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files.append((name, part.get_filename(), part.get_content_type(), payload))
        else:
            fields[name] = payload.decode("utf-8", "replace")
    return fields, files


def _form_value(name: str, value: Any) -> Any:
    """A multipart field's text as the type Freshdesk reads it (booleans, ids); JSON values as is."""
    if not isinstance(value, str):
        return value
    if name in ("private", "incoming") and value in ("true", "false"):
        return value == "true"
    if name == "user_id" and value.isdigit():
        return int(value)
    return value


def _action_errors(action: Any) -> list[dict[str, Any]]:
    if not isinstance(action, dict) or action.get("field_name") != "trigger_webhook":
        return [_error("actions", "The stand-in runs only the 'trigger_webhook' action")]
    errors = []
    if action.get("request_type") not in WEBHOOK_METHODS:
        errors.append(_error("request_type", f"It should be one of these values: '{','.join(WEBHOOK_METHODS)}'"))
    url = action.get("url")
    if not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc):
        errors.append(_error("url", "It should be a valid URL", "invalid_value"))
    if action.get("content_type", "JSON") not in WEBHOOK_CONTENT_TYPES:
        errors.append(_error("content_type", "It should be one of these values: 'JSON,XML'"))
    if str(action.get("content_layout", "1")) not in ("1", "2"):
        errors.append(_error("content_layout", "It should be one of these values: '1,2'"))
    if action.get("content") is not None and not isinstance(action["content"], dict):
        errors.append(_error("content", "It should be a/an key/value pair", "datatype_mismatch"))
    headers = action.get("custom_headers")
    if headers is not None and not (
        isinstance(headers, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        errors.append(_error("custom_headers", "It should be a/an key/value pair of strings", "datatype_mismatch"))
    return errors


def _delivered(answer: WebhookAnswer) -> bool:
    return answer.status is not None and 200 <= answer.status < 300


def _performer_matches(performer: dict[str, Any], actor: int | None, kind: int) -> bool:
    wanted = performer.get("type")
    if wanted == PERFORMER_ANY:
        return kind in (PERFORMER_AGENT, PERFORMER_REQUESTER)
    if wanted != kind:
        return False
    members = performer.get("members") or []
    return kind != PERFORMER_AGENT or not members or actor in {int(m) for m in members if str(m).isdigit()}


def _event_matches(event: dict[str, Any], change: tuple) -> bool:
    name, before, after = change
    if event.get("field_name") != name:
        return False
    if name == "reply_sent":
        return True
    if name == "note_type":  # {"field_name": "note_type", "value": "public"|"private"}
        return event.get("value") in (None, after)
    return all(
        str(event.get(key, "--")) == "--" or str(event.get(key)) == str(value)
        for key, value in (("from", before), ("to", after))
    )


def _condition_matches(ticket: dict[str, Any], condition: dict[str, Any]) -> bool:
    results = []
    for prop in condition.get("properties") or []:
        field = "type" if prop["field_name"] == "ticket_type" else prop["field_name"]
        wanted = prop.get("value")
        wanted = {str(v).lower() for v in (wanted if isinstance(wanted, list) else [wanted])}
        actual = ticket.get(field)
        actual = {str(v).lower() for v in actual} if isinstance(actual, list) else {str(actual or "").lower()}
        hit = bool(actual & wanted)
        results.append(hit if prop["operator"] in ("in", "is") else not hit)
    if not results:
        return True
    return all(results) if condition["match_type"] == "all" else any(results)


def _term_matches(ticket: dict[str, Any], field: str, value: str) -> bool:
    if field == "tag":
        return value.lower() in {t.lower() for t in ticket["tags"]}
    return str(ticket.get(field) or "").lower() == value.lower()


def _to_html(text: str) -> str:
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "".join(f"<div>{html.escape(p, quote=False).replace(chr(10), '<br>')}</div>" for p in paragraphs)


def _bytes(content: Any) -> bytes:
    return base64.b64decode(content) if isinstance(content, str) else content
