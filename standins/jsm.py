"""Stand-in of Jira Service Management Cloud (one site) and of the agents working in it.

Follows shared/reference/helpdesk-apis.md section 3 and Atlassian's REST references: Basic
auth with an account's e-mail and API token; the Service Management API (``/rest/
servicedeskapi``: service desks, request types and their fields, customers, requests,
comments, temporary attachments) with its paged answers ``{size, start, limit, isLastPage,
values}`` and its error envelope ``{errorMessage, i18nErrorMessage}``; the platform API
(``/rest/api/2``: myself, users, issues, comments with ``jsdPublic``, transitions into status
categories, assignee, attachment content) with ``{errorMessages, errors}``; admin webhooks
(``/rest/webhooks/1.0/webhook``) delivered from a worker thread, signed
``X-Hub-Signature: sha256=<hex>`` when registered with a secret, with
``X-Atlassian-Webhook-Identifier`` kept across retries and ``X-Atlassian-Webhook-Retry``,
retried on 408/409/425/429/5xx or no answer (Jira's ~30 minutes compressed). 429 answers carry
``Retry-After``, ``X-RateLimit-Reset`` (ISO 8601) and ``RateLimit-Reason``. Agent actions
(reply with files, internal note, assign, resolve, customer reply) change requests and fire
the webhooks, as a person in Jira's agent view would.
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .server import HttpError, Request, Response, WebhookAnswer, WebhookCall, WebhookStandin, control_body, iso_time

SDAPI, PLATFORM, WEBHOOKS = "/rest/servicedeskapi", "/rest/api/2", "/rest/webhooks/1.0"
PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")
# Status id: (name, category key, category name) of JSM's default service workflow.
STATUSES = {
    "10001": ("Waiting for support", "new", "To Do"),
    "10002": ("In progress", "indeterminate", "In Progress"),
    "10003": ("Resolved", "done", "Done"),
    "10004": ("Closed", "done", "Done"),
}
# Transition id: (name, from statuses (None = any), to status, requires a resolution).
TRANSITIONS = {
    "11": ("Start progress", {"10001"}, "10002", False),
    "21": ("Resolve this issue", {"10001", "10002"}, "10003", True),
    "31": ("Close", {"10003"}, "10004", False),
    "41": ("Reopen", {"10003", "10004"}, "10001", False),
}
RESOLUTIONS = ("Done", "Won't Do", "Duplicate")
WEBHOOK_EVENTS = ("jira:issue_created", "jira:issue_updated", "jira:issue_deleted", "comment_created")
RETRYABLE = {408, 409, 425, 429}
MAX_LIMIT = 100
_PROJECT_JQL = re.compile(r'^\s*project\s*=\s*"?(?P<key>[A-Z][A-Z0-9_]*)"?\s*$', re.IGNORECASE)


@dataclass
class _Delivery:
    webhook_id: str
    url: str
    identifier: str
    body: bytes
    secret: str


def _hex_id() -> str:
    return secrets.token_hex(12)


def _date(at: datetime | None = None) -> dict[str, Any]:
    moment = at or datetime.now(UTC)
    return {
        "iso8601": moment.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "jira": moment.isoformat(timespec="milliseconds"),
        "friendly": "Today " + moment.strftime("%H:%M"),
        "epochMillis": int(moment.timestamp() * 1000),
    }


def _multipart(content_type: str, body: bytes) -> list[tuple[str, str, str, bytes]]:
    """The files of a multipart body: (field name, file name, content type, bytes)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        raise HttpError(400, "The multipart body cannot be parsed")
    return [
        (
            part.get_param("name", header="content-disposition") or "",
            part.get_filename(),
            part.get_content_type(),
            part.get_payload(decode=True) or b"",
        )
        for part in message.iter_parts()
        if part.get_filename() is not None
    ]


class JsmStandin(WebhookStandin):
    """One Jira site with one service desk (project HELP) and the API account as a Jira admin."""

    webhook_timeout = 10.0
    # Jira retries a failed delivery for up to ~30 minutes; compressed: these delays (seconds).
    webhook_retry_delays: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8, 1.6)
    rate_limit_reason = "jira-burst-based"

    def __init__(
        self,
        email: str = "api@acme.test",
        api_token: str = "jsm-token",
        port: int = 0,
        host: str = "127.0.0.1",
        **settings: str,
    ):
        super().__init__(port, host)
        self.email, self.api_token = email, api_token
        self._local = threading.local()
        self.reset_state()
        api = [
            ("GET", rf"{SDAPI}/servicedesk", self._list_desks),
            ("GET", rf"{SDAPI}/servicedesk/(?P<desk>\d+)", self._get_desk),
            ("GET", rf"{SDAPI}/servicedesk/(?P<desk>\d+)/requesttype", self._list_request_types),
            ("GET", rf"{SDAPI}/servicedesk/(?P<desk>\d+)/requesttype/(?P<rt>\d+)", self._get_request_type),
            ("GET", rf"{SDAPI}/servicedesk/(?P<desk>\d+)/requesttype/(?P<rt>\d+)/field", self._request_type_fields),
            ("POST", rf"{SDAPI}/servicedesk/(?P<desk>\d+)/customer", self._add_customers),
            ("POST", rf"{SDAPI}/servicedesk/(?P<desk>\d+)/attachTemporaryFile", self._attach_temporary),
            ("POST", rf"{SDAPI}/customer", self._create_customer),
            ("POST", rf"{SDAPI}/request", self._create_request),
            ("GET", rf"{SDAPI}/request", self._list_requests),
            ("GET", rf"{SDAPI}/request/(?P<issue>[\w-]+)", self._get_request),
            ("POST", rf"{SDAPI}/request/(?P<issue>[\w-]+)/comment", self._create_request_comment),
            ("GET", rf"{SDAPI}/request/(?P<issue>[\w-]+)/comment", self._list_request_comments),
            ("POST", rf"{SDAPI}/request/(?P<issue>[\w-]+)/attachment", self._create_request_attachment),
            ("GET", rf"{PLATFORM}/myself", self._myself),
            ("GET", rf"{PLATFORM}/user", self._get_user),
            ("GET", rf"{PLATFORM}/user/search", self._search_users),
            ("PUT", rf"{PLATFORM}/user/properties/(?P<key>[\w-]+)", self._put_user_property),
            ("GET", rf"{PLATFORM}/user/properties/(?P<key>[\w-]+)", self._get_user_property),
            ("GET", rf"{PLATFORM}/issue/(?P<issue>[\w-]+)", self._get_issue),
            ("GET", rf"{PLATFORM}/issue/(?P<issue>[\w-]+)/comment", self._list_issue_comments),
            ("GET", rf"{PLATFORM}/issue/(?P<issue>[\w-]+)/transitions", self._list_transitions),
            ("POST", rf"{PLATFORM}/issue/(?P<issue>[\w-]+)/transitions", self._do_transition),
            ("PUT", rf"{PLATFORM}/issue/(?P<issue>[\w-]+)/assignee", self._put_assignee),
            ("GET", rf"{PLATFORM}/attachment/content/(?P<id>\d+)", self._attachment_content),
            ("GET", rf"{WEBHOOKS}/webhook", self._list_webhooks),
            ("POST", rf"{WEBHOOKS}/webhook", self._create_webhook),
            ("GET", rf"{WEBHOOKS}/webhook/(?P<id>\d+)", self._get_webhook),
            ("PUT", rf"{WEBHOOKS}/webhook/(?P<id>\d+)", self._update_webhook),
            ("DELETE", rf"{WEBHOOKS}/webhook/(?P<id>\d+)", self._delete_webhook),
        ]
        for method, pattern, handler in api:
            self.route(method, pattern, handler)
        self.control_route("POST", "agents", self._control_add_agent)
        for action in ("reply", "note", "assign", "resolve", "customer_reply"):
            self.control_route("POST", rf"issues/(?P<id>\d+)/{action}", self._control_agent_action)

    def reset_state(self) -> None:
        """Forget everything but the API account (a Jira admin) and the service desk's set-up."""
        self._sender.reset()
        self._ids = itertools.count(10_000)  # comments, attachments, webhooks, temporary files
        self._issue_numbers = itertools.count(1)
        self._issue_ids = itertools.count(10_001)
        self._accounts: dict[str, dict[str, Any]] = {}
        self._user_properties: dict[tuple[str, str], Any] = {}
        self._desk_customers: dict[str, set[str]] = {"1": set()}
        self._issues: dict[str, dict[str, Any]] = {}
        self._temporary: dict[str, dict[str, Any]] = {}
        self._attachments: dict[str, dict[str, Any]] = {}
        self._webhooks: dict[str, dict[str, Any]] = {}
        self._deliveries: list[dict[str, Any]] = []
        self.desks = {"1": {"id": "1", "projectId": "10000", "projectKey": "HELP", "projectName": "Help Center"}}
        self.request_types = {
            "10": {"name": "Get help", "fields": self._standard_fields()},
            "11": {
                "name": "Report an incident",
                "fields": [
                    *self._standard_fields(),
                    {"fieldId": "customfield_10050", "name": "Impact", "required": True},
                ],
            },
        }
        # The same id after a reset, as a real account keeps its id.
        stable_id = hashlib.sha256(self.email.lower().encode()).hexdigest()[:24]
        self.api_account_id = self._new_account("API Admin", self.email, "atlassian", stable_id)["accountId"]

    @staticmethod
    def _standard_fields() -> list[dict[str, Any]]:
        return [
            {"fieldId": "summary", "name": "Summary", "required": True},
            {"fieldId": "description", "name": "Description", "required": False},
            {"fieldId": "priority", "name": "Priority", "required": False},
            {"fieldId": "labels", "name": "Labels", "required": False},
            {"fieldId": "components", "name": "Components", "required": False},
            {"fieldId": "customfield_10010", "name": "Order number", "required": False},
        ]

    # ----------------------------------------------------------------- read accessors
    def issues(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._issue_json(i) for i in self._issues.values()]

    def issue(self, issue_id: str | int) -> dict[str, Any]:
        with self.lock:
            return self._issue_json(self._issue(str(issue_id)))

    def tickets(self) -> list[dict[str, Any]]:
        """The requests as issues (the name the shared end-to-end helpers use)."""
        return self.issues()

    def user_properties(self) -> dict[tuple[str, str], Any]:
        """``{(account id, property key): value}``."""
        with self.lock:
            return copy.deepcopy(self._user_properties)

    def comments(self, issue_id: str | int) -> list[dict[str, Any]]:
        with self.lock:
            return [self._comment_json(c) for c in self._issue(str(issue_id))["comments"]]

    def accounts(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._accounts.values()))

    def webhooks(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._webhooks.values()))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            state = {
                "accounts": copy.deepcopy(list(self._accounts.values())),
                "issues": [self._issue_json(i) for i in self._issues.values()],
                "comments": {k: [self._comment_json(c) for c in v["comments"]] for k, v in self._issues.items()},
                "webhooks": copy.deepcopy(list(self._webhooks.values())),
                "webhook_deliveries": self._deliveries_json(),
            }
        return state

    # ----------------------------------------------------------------- HTTP plumbing
    def authenticate(self, req: Request) -> str:
        """Basic ``email:api_token``; answers 401 without naming which part was wrong."""
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        try:
            login, _, token = base64.b64decode(value, validate=True).decode().partition(":")
        except ValueError:
            login, token = "", ""
        ok = hmac.compare_digest(login.encode(), self.email.encode())
        ok &= hmac.compare_digest(token.encode(), self.api_token.encode())
        if scheme.lower() != "basic" or not ok:
            raise HttpError(401, "Client must be authenticated to access this resource.")
        return self.api_account_id

    def error_response(self, err: HttpError) -> Response:
        """The Service Management envelope under ``/rest/servicedeskapi``, the platform's elsewhere.

        ``err.type`` "servicedesk" / "platform" when the caller says; else the path's API decides.
        ``err.details`` holds the platform's per-field ``errors``.
        """
        envelope = err.type or ("servicedesk" if getattr(self._local, "path", "").startswith(SDAPI) else "platform")
        if envelope == "servicedesk":
            key = "sd.rest.error." + {400: "bad.request", 401: "unauthorized", 403: "forbidden", 404: "not.found"}.get(
                err.status, "server"
            )
            body: Any = {"errorMessage": err.message or "", "i18nErrorMessage": {"i18nKey": key, "parameters": []}}
        else:
            body = {"errorMessages": [err.message] if err.message else [], "errors": err.details or {}}
        return Response(err.status, body, dict(err.headers))

    def rate_limit_response(self, retry_after: int) -> Response:
        reset = (datetime.now(UTC) + timedelta(seconds=retry_after)).strftime("%Y-%m-%dT%H:%MZ")
        err = HttpError(
            429,
            "Rate limit exceeded.",
            headers={
                "Retry-After": str(retry_after),
                "X-RateLimit-Reset": reset,
                "X-RateLimit-Limit": "100",
                "X-RateLimit-Remaining": "0",
                "RateLimit-Reason": self.rate_limit_reason,
            },
        )
        return self.error_response(err)

    def _parse(self, handler: Any) -> Request:
        """Remember the request's path: its error (also an injected one) takes that API's envelope."""
        req = super()._parse(handler)
        self._local.path = req.path
        return req

    @staticmethod
    def _page(req: Request, items: list[Any]) -> dict[str, Any]:
        start, limit = req.arg("start") or "0", req.arg("limit") or "50"
        if not start.isdigit() or not limit.isdigit() or int(limit) < 1:
            raise HttpError(400, "start and limit must be non-negative integers (limit at least 1)")
        start_i, limit_i = int(start), min(int(limit), MAX_LIMIT)
        values = items[start_i : start_i + limit_i]
        return {
            "size": len(values),
            "start": start_i,
            "limit": limit_i,
            "isLastPage": start_i + limit_i >= len(items),
            "values": values,
            "_links": {},
        }

    def _json_body(self, req: Request) -> dict[str, Any]:
        if req.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise HttpError(415, "Unsupported Media Type: expected application/json")
        data = req.json()
        if not isinstance(data, dict):
            raise HttpError(400, "The request body must be a JSON object")
        return data

    # ----------------------------------------------------------------- accounts
    def _new_account(self, name: str, email: str, account_type: str, account_id: str = "") -> dict[str, Any]:
        account_id = account_id or (f"qm:{uuid.uuid4()}:{_hex_id()}" if account_type == "customer" else _hex_id())
        avatar = f"{self.base_url}/secure/useravatar?ownerId={account_id}"
        account = {
            "accountId": account_id,
            "accountType": account_type,
            "displayName": name,
            "emailAddress": email,
            "active": True,
            "timeZone": "Europe/Paris",
            "avatarUrls": {size: f"{avatar}&size={size}" for size in ("16x16", "24x24", "32x32", "48x48")},
        }
        self._accounts[account_id] = account
        return account

    def _user_json(self, account_id: str | None) -> dict[str, Any] | None:
        if not account_id:
            return None
        account = self._accounts[account_id]
        return copy.deepcopy(account) | {"self": f"{self.base_url}{PLATFORM}/user?accountId={account_id}"}

    def _myself(self, req: Request) -> dict[str, Any]:
        return self._user_json(req.auth)

    def _get_user(self, req: Request) -> dict[str, Any]:
        account_id = req.arg("accountId") or ""
        if not account_id:
            raise HttpError(400, "accountId is required", details={"accountId": "accountId is required"})
        if account_id not in self._accounts:
            raise HttpError(404, f"Specified user does not exist or you do not have required permissions: {account_id}")
        return self._user_json(account_id)

    def _search_users(self, req: Request) -> list[dict[str, Any]]:
        """By ``query`` (prefix of display name or e-mail words) or ``property`` (``key.path=value``)."""
        query, prop = (req.arg("query") or "").strip().lower(), (req.arg("property") or "").strip()
        if not query and not prop:
            raise HttpError(400, "One of 'query', 'accountId' or 'property' query parameters is required.")
        found = list(self._accounts.values())
        if query:
            found = [a for a in found if query in a["emailAddress"].lower() or query in a["displayName"].lower()]
        if prop:
            path, _, wanted = prop.partition("=")
            key, _, field = path.partition(".")
            found = [
                a for a in found if _property_matches(self._user_properties.get((a["accountId"], key)), field, wanted)
            ]
        return [self._user_json(a["accountId"]) for a in found[: int(req.arg("maxResults") or 50)]]

    def _property_account(self, req: Request) -> str:
        account_id = req.arg("accountId") or ""
        if account_id not in self._accounts:
            raise HttpError(404, f"User {account_id} does not exist.")
        if account_id != req.auth and self._accounts[req.auth]["emailAddress"] != self.email:
            raise HttpError(403, "Administer Jira permission is required to set another user's property.")
        return account_id

    def _put_user_property(self, req: Request) -> Response:
        account_id = self._property_account(req)
        value = req.json()
        if req.json_error or value is None:
            raise HttpError(400, "The property value must be valid JSON.")
        created = (account_id, req.params["key"]) not in self._user_properties
        self._user_properties[(account_id, req.params["key"])] = value
        return Response(201 if created else 200)

    def _get_user_property(self, req: Request) -> dict[str, Any]:
        account_id = self._property_account(req)
        if (account_id, req.params["key"]) not in self._user_properties:
            raise HttpError(404, f"The property with key '{req.params['key']}' was not found.")
        return {
            "key": req.params["key"],
            "value": copy.deepcopy(self._user_properties[(account_id, req.params["key"])]),
        }

    def _create_customer(self, req: Request) -> Response:
        """Jira-admin only; a duplicate e-mail is 409 with ``strictConflictStatusCode=true``, else 400."""
        data = self._json_body(req)
        email = data.get("email")
        name = data.get("displayName") or data.get("fullName")
        if not isinstance(email, str) or "@" not in email:
            raise HttpError(400, "A valid email address is required.", "servicedesk")
        if not isinstance(name, str) or not name.strip():
            raise HttpError(400, "displayName is required.", "servicedesk")
        if any(a["emailAddress"].lower() == email.lower() for a in self._accounts.values()):
            strict = (req.arg("strictConflictStatusCode") or "").lower() == "true"
            raise HttpError(409 if strict else 400, "An account already exists for this email", "servicedesk")
        return Response(201, self._user_json(self._new_account(name.strip(), email, "customer")["accountId"]))

    def _desk(self, desk_id: str) -> dict[str, Any]:
        if desk_id not in self.desks:
            raise HttpError(404, f"Service desk {desk_id} does not exist.", "servicedesk")
        return self.desks[desk_id]

    def _add_customers(self, req: Request) -> Response:
        self._desk(req.params["desk"])
        ids = self._json_body(req).get("accountIds")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise HttpError(400, "accountIds must be a non-empty list of account ids", "servicedesk")
        unknown = [i for i in ids if i not in self._accounts]
        if unknown:
            raise HttpError(400, f"The users do not exist: {', '.join(unknown)}", "servicedesk")
        self._desk_customers[req.params["desk"]].update(ids)
        return Response(204)

    # ----------------------------------------------------------------- desks and request types
    def _list_desks(self, req: Request) -> dict[str, Any]:
        return self._page(req, list(self.desks.values()))

    def _get_desk(self, req: Request) -> dict[str, Any]:
        return copy.deepcopy(self._desk(req.params["desk"]))

    def _request_type(self, desk_id: str, rt_id: str) -> dict[str, Any]:
        self._desk(desk_id)
        if rt_id not in self.request_types:
            raise HttpError(404, f"Request type {rt_id} does not exist in service desk {desk_id}.", "servicedesk")
        return self.request_types[rt_id]

    def _request_type_json(self, desk_id: str, rt_id: str) -> dict[str, Any]:
        rt = self._request_type(desk_id, rt_id)
        return {"id": rt_id, "name": rt["name"], "serviceDeskId": desk_id, "issueTypeId": "10100"}

    def _list_request_types(self, req: Request) -> dict[str, Any]:
        desk = req.params["desk"]
        return self._page(req, [self._request_type_json(desk, rt) for rt in self.request_types])

    def _get_request_type(self, req: Request) -> dict[str, Any]:
        return self._request_type_json(req.params["desk"], req.params["rt"])

    def _request_type_fields(self, req: Request) -> dict[str, Any]:
        rt = self._request_type(req.params["desk"], req.params["rt"])
        fields = []
        for field in rt["fields"]:
            valid = [{"value": p, "label": p} for p in PRIORITIES] if field["fieldId"] == "priority" else []
            fields.append({**field, "validValues": valid, "jiraSchema": {"system": field["fieldId"]}})
        return {"requestTypeFields": fields, "canRaiseOnBehalfOf": True, "canAddRequestParticipants": True}

    # ----------------------------------------------------------------- requests (issues)
    def _issue(self, id_or_key: str, envelope: str = "platform") -> dict[str, Any]:
        issue = self._issues.get(id_or_key) or next(
            (i for i in self._issues.values() if i["key"] == id_or_key.upper()), None
        )
        if issue is None:
            raise HttpError(404, "Issue does not exist or you do not have permission to see it.", envelope)
        return issue

    def _check_request_fields(self, rt: dict[str, Any], values: Any) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise HttpError(400, "requestFieldValues must be an object", "servicedesk")
        declared = {f["fieldId"]: f for f in rt["fields"]}
        for field_id in values:
            if field_id not in declared:
                raise HttpError(400, f"Field '{field_id}' is not valid for this request type.", "servicedesk")
        for field_id, field in declared.items():
            value = values.get(field_id)
            if field["required"] and (value is None or value == "" or value == []):
                raise HttpError(400, f"Your request could not be created. {field['name']} is required.", "servicedesk")
        if not isinstance(values.get("summary"), str) or len(values["summary"]) > 255:
            raise HttpError(400, "Summary must be a string of at most 255 characters.", "servicedesk")
        if "description" in values and not isinstance(values["description"], str):
            raise HttpError(400, "Description must be a string.", "servicedesk")
        priority = values.get("priority")
        if priority is not None and (not isinstance(priority, dict) or priority.get("name") not in PRIORITIES):
            raise HttpError(400, f"Specify a valid priority name: {', '.join(PRIORITIES)}", "servicedesk")
        labels = values.get("labels")
        if labels is not None and (
            not isinstance(labels, list) or not all(isinstance(x, str) and x and " " not in x for x in labels)
        ):
            raise HttpError(400, "Labels must be a list of strings without spaces.", "servicedesk")
        components = values.get("components")
        if components is not None and (
            not isinstance(components, list) or not all(isinstance(c, dict) and c.get("name") for c in components)
        ):
            raise HttpError(400, "Components must be a list of objects with a name.", "servicedesk")
        return values

    def _create_request(self, req: Request) -> Response:
        data = self._json_body(req)
        desk_id, rt_id = str(data.get("serviceDeskId") or ""), str(data.get("requestTypeId") or "")
        if not desk_id or not rt_id:
            raise HttpError(400, "serviceDeskId and requestTypeId are required.", "servicedesk")
        values = self._check_request_fields(self._request_type(desk_id, rt_id), data.get("requestFieldValues"))
        reporter = data.get("raiseOnBehalfOf") or req.auth
        if reporter not in self._accounts:
            raise HttpError(400, f"The user '{reporter}' does not exist.", "servicedesk")
        if reporter != req.auth and reporter not in self._desk_customers[desk_id]:
            raise HttpError(400, "The reporter is not a customer of this service desk.", "servicedesk")
        number, issue_id = next(self._issue_numbers), str(next(self._issue_ids))
        now = datetime.now(UTC)
        issue = {
            "id": issue_id,
            "key": f"{self.desks[desk_id]['projectKey']}-{number}",
            "serviceDeskId": desk_id,
            "requestTypeId": rt_id,
            "created": now,
            "status": "10001",
            "statusDate": now,
            "resolution": None,
            "assignee": None,
            "reporter": reporter,
            "values": copy.deepcopy(values),
            "comments": [],
            "attachments": [],
        }
        self._issues[issue_id] = issue
        self._fire(issue, "jira:issue_created", actor=req.auth, event_name="issue_created")
        return Response(201, self._request_json(issue))

    def _request_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        name, category, _ = STATUSES[issue["status"]]
        rt = self.request_types[issue["requestTypeId"]]
        labels = {f["fieldId"]: f["name"] for f in rt["fields"]}
        return {
            "issueId": issue["id"],
            "issueKey": issue["key"],
            "requestTypeId": issue["requestTypeId"],
            "serviceDeskId": issue["serviceDeskId"],
            "createdDate": _date(issue["created"]),
            "reporter": self._user_json(issue["reporter"]),
            "requestFieldValues": [
                {"fieldId": k, "label": labels.get(k, k), "value": copy.deepcopy(v)} for k, v in issue["values"].items()
            ],
            "currentStatus": {
                "status": name,
                "statusCategory": category.upper() if category != "indeterminate" else "INDETERMINATE",
                "statusDate": _date(issue["statusDate"]),
            },
            "_links": {
                "web": f"{self.base_url}/servicedesk/customer/portal/1/{issue['key']}",
                "agent": f"{self.base_url}/browse/{issue['key']}",
                "jiraRest": f"{self.base_url}{PLATFORM}/issue/{issue['id']}",
                "self": f"{self.base_url}{SDAPI}/request/{issue['id']}",
            },
        }

    def _list_requests(self, req: Request) -> dict[str, Any]:
        """Newest first; the API account sees every request with ``requestOwnership=ALL_REQUESTS``."""
        ownership = req.arg("requestOwnership") or "OWNED_REQUESTS"
        if ownership not in (
            "OWNED_REQUESTS",
            "PARTICIPATED_REQUESTS",
            "ORGANIZATION",
            "ALL_ORGANIZATIONS",
            "APPROVER",
            "ALL_REQUESTS",
        ):
            raise HttpError(400, f"Invalid requestOwnership: {ownership}", "servicedesk")
        status = req.arg("requestStatus") or "ALL_REQUESTS"
        desk = req.arg("serviceDeskId")
        found = []
        for issue in sorted(self._issues.values(), key=lambda i: int(i["id"]), reverse=True):
            if desk and issue["serviceDeskId"] != desk:
                continue
            if ownership == "OWNED_REQUESTS" and issue["reporter"] != req.auth:
                continue
            done = STATUSES[issue["status"]][1] == "done"
            if (status == "CLOSED_REQUESTS" and not done) or (status == "OPEN_REQUESTS" and done):
                continue
            found.append(self._request_json(issue))
        return self._page(req, found)

    def _get_request(self, req: Request) -> dict[str, Any]:
        return self._request_json(self._issue(req.params["issue"], "servicedesk"))

    def _issue_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        name, category, category_name = STATUSES[issue["status"]]
        values = issue["values"]
        fields = {
            "summary": values.get("summary"),
            "description": values.get("description"),
            "priority": values.get("priority") or {"name": "Medium"},
            "labels": values.get("labels") or [],
            "components": values.get("components") or [],
            "status": {
                "id": issue["status"],
                "name": name,
                "statusCategory": {"key": category, "name": category_name},
            },
            "resolution": {"name": issue["resolution"]} if issue["resolution"] else None,
            "assignee": self._user_json(issue["assignee"]),
            "reporter": self._user_json(issue["reporter"]),
            "project": {"key": self.desks[issue["serviceDeskId"]]["projectKey"]},
            "attachment": [self._attachment_json(self._attachments[a]) for a in issue["attachments"]],
            "created": issue["created"].isoformat(timespec="milliseconds"),
        }
        fields |= {k: copy.deepcopy(v) for k, v in values.items() if k.startswith("customfield_")}
        return {
            "id": issue["id"],
            "key": issue["key"],
            "self": f"{self.base_url}{PLATFORM}/issue/{issue['id']}",
            "fields": fields,
        }

    def _get_issue(self, req: Request) -> dict[str, Any]:
        issue = self._issue_json(self._issue(req.params["issue"]))
        wanted = req.arg("fields")
        if wanted and wanted not in ("*all", "*navigable"):
            names = {name.strip() for name in wanted.split(",")}
            issue["fields"] = {k: v for k, v in issue["fields"].items() if k in names}
        return issue

    # ----------------------------------------------------------------- comments
    def _new_comment(
        self, issue: dict[str, Any], body: str, author: str, public: bool, *, event: bool = True
    ) -> dict[str, Any]:
        comment = {
            "id": str(next(self._ids)),
            "body": body,
            "author": author,
            "public": public,
            "created": datetime.now(UTC),
        }
        issue["comments"].append(comment)
        if event:
            self._fire(issue, "comment_created", actor=author, comment=comment)
            self._fire(issue, "jira:issue_updated", actor=author, comment=comment, event_name="issue_commented")
        return comment

    def _comment_json(self, comment: dict[str, Any], *, platform: bool = True) -> dict[str, Any]:
        author = self._user_json(comment["author"])
        common = {"id": comment["id"], "body": comment["body"], "author": author}
        if platform:
            return common | {
                "jsdPublic": comment["public"],
                "created": comment["created"].isoformat(timespec="milliseconds"),
                "updateAuthor": author,
            }
        return common | {"public": comment["public"], "created": _date(comment["created"])}

    def _create_request_comment(self, req: Request) -> Response:
        issue = self._issue(req.params["issue"], "servicedesk")
        data = self._json_body(req)
        body, public = data.get("body"), data.get("public", True)
        if not isinstance(body, str) or not body.strip():
            raise HttpError(400, "Comment body is required.", "servicedesk")
        if not isinstance(public, bool):
            raise HttpError(400, "public must be a boolean.", "servicedesk")
        comment = self._new_comment(issue, body, req.auth, public)
        return Response(201, self._comment_json(comment, platform=False))

    def _list_request_comments(self, req: Request) -> dict[str, Any]:
        issue = self._issue(req.params["issue"], "servicedesk")
        public = (req.arg("public") or "true").lower() != "false"
        internal = (req.arg("internal") or "true").lower() != "false"
        found = [
            self._comment_json(c, platform=False)
            for c in issue["comments"]
            if (c["public"] and public) or (not c["public"] and internal)
        ]
        return self._page(req, found)

    def _list_issue_comments(self, req: Request) -> dict[str, Any]:
        issue = self._issue(req.params["issue"])
        start, limit = req.arg("startAt") or "0", req.arg("maxResults") or "50"
        if not start.isdigit() or not limit.isdigit():
            raise HttpError(400, "startAt and maxResults must be integers", details={"startAt": "invalid"})
        comments = sorted(issue["comments"], key=lambda c: (c["created"], int(c["id"])))
        if (req.arg("orderBy") or "").startswith("-"):
            comments.reverse()
        start_i, limit_i = int(start), min(int(limit), MAX_LIMIT)
        page = comments[start_i : start_i + limit_i]
        return {
            "startAt": start_i,
            "maxResults": limit_i,
            "total": len(comments),
            "comments": [self._comment_json(c) for c in page],
        }

    # ----------------------------------------------------------------- attachments
    def _attach_temporary(self, req: Request) -> Response:
        self._desk(req.params["desk"])
        if req.headers.get("x-atlassian-token", "").lower() != "no-check":
            raise HttpError(403, "XSRF check failed", "servicedesk")
        content_type = req.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise HttpError(415, "Unsupported Media Type: expected multipart/form-data", "servicedesk")
        files = [f for f in _multipart(content_type, req.body) if f[0] == "file"]
        if not files:
            raise HttpError(400, "No file was sent in the 'file' part.", "servicedesk")
        temporary = []
        for _, filename, file_type, content in files:
            temp_id = str(uuid.uuid4())
            self._temporary[temp_id] = {"filename": filename, "mimeType": file_type, "content": content}
            temporary.append({"temporaryAttachmentId": temp_id, "fileName": filename})
        return Response(201, {"temporaryAttachments": temporary})

    def _store_attachment(self, filename: str, mime_type: str, content: bytes, author: str) -> dict[str, Any]:
        attachment = {
            "id": str(next(self._ids)),
            "filename": filename,
            "mimeType": mime_type or "application/octet-stream",
            "size": len(content),
            "content": content,
            "author": author,
            "created": iso_time(),
        }
        self._attachments[attachment["id"]] = attachment
        return attachment

    def _attachment_json(self, attachment: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}{PLATFORM}/attachment/content/{attachment['id']}"
        return {
            "id": attachment["id"],
            "filename": attachment["filename"],
            "mimeType": attachment["mimeType"],
            "size": attachment["size"],
            "created": attachment["created"],
            "author": self._user_json(attachment["author"]),
            "content": url,
            "_links": {"content": url},
        }

    def _create_request_attachment(self, req: Request) -> Response:
        """Temporary files become the request's attachments, with a comment naming them."""
        issue = self._issue(req.params["issue"], "servicedesk")
        data = self._json_body(req)
        ids, public = data.get("temporaryAttachmentIds"), data.get("public", True)
        if not isinstance(ids, list) or not ids:
            raise HttpError(400, "temporaryAttachmentIds is required.", "servicedesk")
        if not isinstance(public, bool):
            raise HttpError(400, "public must be a boolean.", "servicedesk")
        missing = [i for i in ids if i not in self._temporary]
        if missing:
            raise HttpError(400, f"Temporary attachments not found: {', '.join(map(str, missing))}", "servicedesk")
        extra = (data.get("additionalComment") or {}).get("body") or ""
        stored = []
        for temp_id in ids:
            temp = self._temporary.pop(temp_id)
            stored.append(self._store_attachment(temp["filename"], temp["mimeType"], temp["content"], req.auth))
        issue["attachments"] += [a["id"] for a in stored]
        refs = "\n".join(f"[^{a['filename']}]" for a in stored)
        comment = self._new_comment(issue, f"{extra}\n\n{refs}".strip(), req.auth, public)
        values = [self._attachment_json(a) for a in stored]
        return Response(
            201,
            {
                "comment": self._comment_json(comment, platform=False),
                "attachments": {
                    "size": len(values),
                    "start": 0,
                    "limit": len(values),
                    "isLastPage": True,
                    "values": values,
                },
            },
        )

    def _attachment_content(self, req: Request) -> Response:
        attachment = self._attachments.get(req.params["id"])
        if attachment is None:
            raise HttpError(404, "The attachment does not exist.")
        return Response(
            200,
            attachment["content"],
            {"Content-Disposition": f'attachment; filename="{attachment["filename"]}"'},
            content_type=attachment["mimeType"],
        )

    # ----------------------------------------------------------------- transitions and assignment
    def _available(self, issue: dict[str, Any]) -> list[str]:
        return [t for t, (_, sources, _, _) in TRANSITIONS.items() if issue["status"] in sources]

    def _list_transitions(self, req: Request) -> dict[str, Any]:
        issue = self._issue(req.params["issue"])
        expand = "transitions.fields" in (req.arg("expand") or "")
        transitions = []
        for transition_id in self._available(issue):
            name, _, target, needs_resolution = TRANSITIONS[transition_id]
            status, category, category_name = STATUSES[target]
            item: dict[str, Any] = {
                "id": transition_id,
                "name": name,
                "to": {"id": target, "name": status, "statusCategory": {"key": category, "name": category_name}},
            }
            if expand:
                item["fields"] = (
                    {
                        "resolution": {
                            "required": True,
                            "name": "Resolution",
                            "allowedValues": [{"name": r} for r in RESOLUTIONS],
                        }
                    }
                    if needs_resolution
                    else {}
                )
            transitions.append(item)
        return {"transitions": transitions}

    def _do_transition(self, req: Request) -> Response:
        issue = self._issue(req.params["issue"])
        data = self._json_body(req)
        transition_id = str((data.get("transition") or {}).get("id") or "")
        if transition_id not in self._available(issue):
            raise HttpError(
                400,
                f"Transition id '{transition_id}' is not valid for this issue.",
                details={"transition": f"Transition id '{transition_id}' is not valid for this issue."},
            )
        resolution = ((data.get("fields") or {}).get("resolution") or {}).get("name")
        if TRANSITIONS[transition_id][3] and resolution not in RESOLUTIONS:
            raise HttpError(400, None, details={"resolution": "Resolution is required."})
        comments = ((data.get("update") or {}).get("comment")) or []
        self._transition(issue, transition_id, actor=req.auth, resolution=resolution, comments=comments)
        return Response(204)

    def _transition(
        self,
        issue: dict[str, Any],
        transition_id: str,
        *,
        actor: str,
        resolution: str | None = None,
        comments: list[Any] = (),
    ) -> None:
        before = issue["status"]
        target = TRANSITIONS[transition_id][2]
        for operation in comments:
            add = (operation or {}).get("add") if isinstance(operation, dict) else None
            if not isinstance(add, dict) or not isinstance(add.get("body"), str):
                raise HttpError(400, None, details={"comment": "Comment body can not be empty!"})
            properties = {p.get("key"): p.get("value") for p in add.get("properties") or [] if isinstance(p, dict)}
            internal = bool((properties.get("sd.public.comment") or {}).get("internal"))
            self._new_comment(issue, add["body"], actor, not internal)
        issue["status"], issue["statusDate"] = target, datetime.now(UTC)
        items = [self._change("status", before, target)]
        if STATUSES[target][1] == "done":
            issue["resolution"] = resolution or "Done"
            items.append(
                {
                    "field": "resolution",
                    "fieldId": "resolution",
                    "fieldtype": "jira",
                    "from": None,
                    "fromString": None,
                    "to": "10000",
                    "toString": issue["resolution"],
                }
            )
        else:
            issue["resolution"] = None
        self._fire(issue, "jira:issue_updated", actor=actor, items=items, event_name="issue_generic")

    @staticmethod
    def _change(field: str, before: str, after: str) -> dict[str, Any]:
        return {
            "field": field,
            "fieldId": field,
            "fieldtype": "jira",
            "from": before,
            "fromString": STATUSES.get(before, (before,))[0] if field == "status" else before,
            "to": after,
            "toString": STATUSES.get(after, (after,))[0] if field == "status" else after,
        }

    def _put_assignee(self, req: Request) -> Response:
        issue = self._issue(req.params["issue"])
        account_id = self._json_body(req).get("accountId")
        if account_id is not None and (
            account_id not in self._accounts or self._accounts[account_id]["accountType"] != "atlassian"
        ):
            raise HttpError(400, None, details={"assignee": f"User '{account_id}' cannot be assigned issues."})
        self._assign(issue, account_id, actor=req.auth)
        return Response(204)

    def _assign(self, issue: dict[str, Any], account_id: str | None, *, actor: str) -> None:
        before, issue["assignee"] = issue["assignee"], account_id
        item = {
            "field": "assignee",
            "fieldId": "assignee",
            "fieldtype": "jira",
            "from": before,
            "fromString": self._accounts[before]["displayName"] if before else None,
            "to": account_id,
            "toString": self._accounts[account_id]["displayName"] if account_id else None,
        }
        self._fire(issue, "jira:issue_updated", actor=actor, items=[item], event_name="issue_assigned")

    # ----------------------------------------------------------------- admin webhooks
    def _webhook_input(self, req: Request, current: dict[str, Any] | None) -> dict[str, Any]:
        if self._accounts[req.auth]["emailAddress"] != self.email:
            raise HttpError(403, "You must be a Jira administrator to manage webhooks.")
        data = self._json_body(req)
        errors = {}
        if not isinstance(data.get("name"), str) or not data["name"].strip():
            errors["name"] = "The webhook name is required."
        url = data.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            errors["url"] = "The URL must be a valid http(s) URL."
        events = data.get("events")
        if not isinstance(events, list) or not events or not all(e in WEBHOOK_EVENTS for e in events):
            errors["events"] = f"Events must be a non-empty list of: {', '.join(WEBHOOK_EVENTS)}"
        filters = data.get("filters") or {}
        jql = filters.get("issue-related-events-section", "") if isinstance(filters, dict) else None
        if jql is None or (jql and not _PROJECT_JQL.match(jql)):
            errors["filters"] = "The stand-in understands only the JQL filter: project = KEY"
        secret = data.get("secret", (current or {}).get("secret", ""))
        if secret is not None and not isinstance(secret, str):
            errors["secret"] = "The secret must be a string."
        if errors:
            raise HttpError(400, None, details=errors)
        webhook_id = (current or {}).get("id") or str(next(self._ids))
        return {
            "id": webhook_id,
            "name": data["name"],
            "url": url,
            "events": events,
            "filters": {"issue-related-events-section": jql},
            "excludeBody": bool(data.get("excludeBody", False)),
            "enabled": bool(data.get("enabled", True)),
            "secret": secret or "",
        }

    def _webhook_json(self, webhook: dict[str, Any]) -> dict[str, Any]:
        visible = {k: copy.deepcopy(v) for k, v in webhook.items() if k not in ("secret", "id")}
        return visible | {"self": f"{self.base_url}{WEBHOOKS}/webhook/{webhook['id']}"}

    def _webhook_or_404(self, req: Request) -> dict[str, Any]:
        if req.params["id"] not in self._webhooks:
            raise HttpError(404, "Webhook not found.")
        return self._webhooks[req.params["id"]]

    def _list_webhooks(self, req: Request) -> list[dict[str, Any]]:
        return [self._webhook_json(w) for w in self._webhooks.values()]

    def _create_webhook(self, req: Request) -> Response:
        webhook = self._webhook_input(req, None)
        self._webhooks[webhook["id"]] = webhook
        return Response(201, self._webhook_json(webhook))

    def _get_webhook(self, req: Request) -> dict[str, Any]:
        return self._webhook_json(self._webhook_or_404(req))

    def _update_webhook(self, req: Request) -> dict[str, Any]:
        webhook = self._webhook_input(req, self._webhook_or_404(req))
        self._webhooks[webhook["id"]] = webhook
        return self._webhook_json(webhook)

    def _delete_webhook(self, req: Request) -> Response:
        del self._webhooks[self._webhook_or_404(req)["id"]]
        return Response(204)

    def _fire(
        self,
        issue: dict[str, Any],
        event: str,
        *,
        actor: str,
        comment: dict[str, Any] | None = None,
        items: list[dict[str, Any]] | None = None,
        event_name: str = "",
    ) -> None:
        """Queue a delivery to each enabled webhook subscribed to ``event`` whose JQL matches."""
        project = self.desks[issue["serviceDeskId"]]["projectKey"]
        for webhook in self._webhooks.values():
            if not webhook["enabled"] or event not in webhook["events"]:
                continue
            jql = webhook["filters"].get("issue-related-events-section") or ""
            match = _PROJECT_JQL.match(jql) if jql else None
            if jql and (match is None or match.group("key").upper() != project):
                continue
            issue_json = self._issue_json(issue)
            payload: dict[str, Any] = {
                "timestamp": int(datetime.now(UTC).timestamp() * 1000),
                "webhookEvent": event,
                "matchedWebhookIds": [int(webhook["id"])],
            }
            if event == "comment_created":
                fields = {k: issue_json["fields"][k] for k in ("summary", "status", "priority", "assignee", "project")}
                payload |= {
                    "comment": self._comment_json(comment),
                    "issue": {"id": issue["id"], "key": issue["key"], "fields": fields},
                }
            else:
                payload |= {
                    "issue_event_type_name": event_name,
                    "user": self._user_json(actor),
                    "issue": issue_json,
                }
                if items is not None:
                    payload["changelog"] = {"id": str(next(self._ids)), "items": items}
                if comment is not None:
                    payload["comment"] = self._comment_json(comment)
            delivery = _Delivery(
                webhook_id=webhook["id"],
                url=webhook["url"],
                identifier=str(uuid.uuid4()),
                body=json.dumps(payload).encode(),
                secret=webhook["secret"],
            )
            self._sender.enqueue(delivery)

    # ----------------------------------------------------------------- webhook delivery
    # Queueing, in order from one sender, faults and the retry loop are ``server.WebhookSender``'s;
    # what is Jira's: the signed request, the record and the retry schedule.
    def _webhook_call(self, delivery: _Delivery, attempt: int) -> WebhookCall:
        """The attempt's request: the identifier stays across retries, which are numbered."""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Atlassian Webhook HTTP Client",
            "X-Atlassian-Webhook-Identifier": delivery.identifier,
            "X-Atlassian-Webhook-Flow": "Primary",
        }
        if attempt > 1:
            headers["X-Atlassian-Webhook-Retry"] = str(attempt - 1)
        if delivery.secret:
            digest = hmac.new(delivery.secret.encode(), delivery.body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature"] = f"sha256={digest}"
        return WebhookCall("POST", delivery.url, headers, delivery.body, self.webhook_timeout)

    def _webhook_record(self, delivery: _Delivery, attempt: int, call: WebhookCall, answer: WebhookAnswer) -> None:
        self._deliveries.append(
            {
                "webhook_id": delivery.webhook_id,
                "attempt": attempt,
                "url": call.url,
                "headers": dict(call.headers),
                "body": call.body,
                "status": answer.status,
                "error": answer.error,
                "timestamp": iso_time(),
            }
        )

    def _webhook_retry_wait(self, delivery: _Delivery, attempt: int, answer: WebhookAnswer) -> float | None:
        """The first attempt, then retries on 408/409/425/429/5xx or no answer, ``webhook_retry_delays`` apart."""
        delays, status = self.webhook_retry_delays, answer.status
        if status is not None and (200 <= status < 300 or (status not in RETRYABLE and status < 500)):
            return None
        return delays[attempt - 1] if attempt <= len(delays) else None

    # ----------------------------------------------------------------- agent view
    def add_agent(self, name: str, email: str) -> str:
        """A human agent (an Atlassian account with a JSM agent licence) working in the agent view."""
        with self.lock:
            if any(a["emailAddress"].lower() == email.lower() for a in self._accounts.values()):
                raise ValueError(f"email {email} already has an account")
            return self._new_account(name, email, "atlassian")["accountId"]

    def agent_reply(
        self,
        issue_id: str | int,
        agent_id: str,
        text: str,
        attachments: list[dict[str, Any]] | None = None,
        *,
        internal: bool = False,
    ) -> dict[str, Any]:
        """A comment from the agent view ("Reply to customer", or "Add internal note").

        ``attachments``: ``{filename, content_type, content}`` (bytes, or base64 text through
        the control API), added to the issue and named in the comment (``!name|thumbnail!``
        for images, ``[^name]`` otherwise), as Jira's editor does.
        """
        with self.lock:
            issue = self._issue(str(issue_id))
            self._agent(agent_id)
            refs = []
            for file in attachments or []:
                content = file["content"]
                content = base64.b64decode(content) if isinstance(content, str) else content
                stored = self._store_attachment(file["filename"], file.get("content_type", ""), content, agent_id)
                issue["attachments"].append(stored["id"])
                image = stored["mimeType"].startswith("image/")
                refs.append(f"!{stored['filename']}|thumbnail!" if image else f"[^{stored['filename']}]")
            body = "\n\n".join([text, *refs]) if refs else text
            return self._comment_json(self._new_comment(issue, body, agent_id, not internal))

    def assign(self, issue_id: str | int, agent_id: str | None) -> dict[str, Any]:
        with self.lock:
            issue = self._issue(str(issue_id))
            if agent_id is not None:
                self._agent(agent_id)
            self._assign(issue, agent_id, actor=agent_id or self.api_account_id)
            return self._issue_json(issue)

    def resolve(self, issue_id: str | int, agent_id: str, resolution: str = "Done") -> dict[str, Any]:
        """ "Resolve this issue" (into Resolved, a Done-category status)."""
        with self.lock:
            issue = self._issue(str(issue_id))
            self._agent(agent_id)
            available = [t for t in self._available(issue) if STATUSES[TRANSITIONS[t][2]][1] == "done"]
            if not available:
                raise ValueError(f"issue {issue_id} cannot be resolved from {STATUSES[issue['status']][0]}")
            self._transition(issue, available[0], actor=agent_id, resolution=resolution)
            return self._issue_json(issue)

    def customer_reply(self, issue_id: str | int, text: str) -> dict[str, Any]:
        """The customer comments on the portal (public, authored by the customer's account)."""
        with self.lock:
            issue = self._issue(str(issue_id))
            return self._comment_json(self._new_comment(issue, text, issue["reporter"], True))

    def _agent(self, agent_id: str) -> str:
        account = self._accounts.get(agent_id)
        if account is None or account["accountType"] != "atlassian":
            raise ValueError(f"account {agent_id} is not an agent")
        return agent_id

    def _control_add_agent(self, req: Request) -> Response:
        return Response(201, {"accountId": self.add_agent(**control_body(req))})

    def _control_agent_action(self, req: Request) -> dict[str, Any]:
        issue_id, action = req.params["id"], req.path.rsplit("/", 1)[1]
        body = control_body(req)
        if action in ("reply", "note"):
            return {"comment": self.agent_reply(issue_id, internal=action == "note", **body)}
        if action == "customer_reply":
            return {"comment": self.customer_reply(issue_id, **body)}
        if action == "assign":
            return {"issue": self.assign(issue_id, **body)}
        return {"issue": self.resolve(issue_id, **body)}


def _property_matches(value: Any, path: str, wanted: str) -> bool:
    for part in [p for p in path.split(".") if p]:
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return json.dumps(value) == wanted or str(value) == wanted
