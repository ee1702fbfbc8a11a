"""The Jira Service Management Cloud adapter: customers, requests, comments, admin webhooks.

Protocol facts are from Atlassian's REST references (Service Management API ``/rest/
servicedeskapi``, Jira platform API ``/rest/api``) as read through the ``docs`` corpus and the
jira.js client generated from Atlassian's specs [code MrRefactoring/jira.js ``src/serviceDesk``,
``src/version2``]; points marked *(inferred)* are our reading, to confirm on a live site.

Identity: every call is made as one Atlassian account (e-mail + API token, Basic). Requests
are raised on behalf of the end user's JSM customer (``raiseOnBehalfOf``), but every comment
is authored by the API account, so each one starts with its real author's name and role.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Collection, Iterator, Mapping

import requests

from outbound.http import PermanentError, RetryableError
from outbound.http import request as http_request
from outbound.media import MediaFile
from providers.base import (
    AgentProfile,
    ConnectionCheck,
    ExternalUserSpec,
    HelpDeskProvider,
    InboundEvent,
    OutboundMessage,
    ParsedWebhook,
    TicketRef,
    TicketSpec,
    WebhookInstallation,
)
from providers.jsm import webhooks
from providers.jsm.entity import PRIORITIES, JsmHitlSessionSerializer
from providers.jsm.errors import describe_jsm_error
from providers.jsm.wiki import wiki_file_names, wiki_to_parts
from providers.rendering import render_payload

SDAPI, PLATFORM = "/rest/servicedeskapi", "/rest/api/2"
MEDIA_FIELDS = {"image": "imageUrl", "audio": "audioUrl", "video": "videoUrl", "file": "fileUrl"}
MEDIA_LABELS = {"image": "Image", "audio": "Audio", "video": "Video", "file": "File"}
VISIBILITIES = ("internal", "public")
DEFAULT_VISIBILITY = "internal"
NO_EMAIL_PREFIX = "noemail:"  # an end user (or the bot) JSM has no customer for
PAGE = 100
MAX_PAGES = 50
RECENT_PAGES = 5  # requests scanned by ticket_find, newest first
FIELDS_TTL = 300.0  # seconds the request type's fields are cached per process
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
USER_LEFT = "The end user left the conversation; the Botpress HITL gateway closed this request."
ROLE_LABELS = {"bot": "bot", "end-user": "customer"}
MARKER_LABEL = "Botpress conversation"
# A platform comment with this property is internal in JSM [code jira.js ``Comment.properties``].
INTERNAL_PROPERTY = "sd.public.comment"


def reference_marker(reference: str) -> str:
    """What carries our reference (the Botpress conversation id) in the request's description:
    a hash, so it is one searchable word of fixed length; 96 bits make a collision negligible."""
    return "hitl-" + hashlib.sha256(reference.encode()).hexdigest()[:24]


def noformat(text: str) -> str:
    """``text`` shown verbatim in Jira's wiki renderer (a ``{noformat}`` block that it cannot close)."""
    return "{noformat}\n" + text.replace("{noformat}", "{ noformat}") + "\n{noformat}"


class _FieldsCache:
    """The request type's fields (``{field id: required}``), read once per ``FIELDS_TTL``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[float, dict[str, bool]]] = {}

    def get(self, key: tuple) -> dict[str, bool] | None:
        with self._lock:
            entry = self._entries.get(key)
        return entry[1] if entry and time.monotonic() - entry[0] < FIELDS_TTL else None

    def put(self, key: tuple, fields: dict[str, bool]) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic(), fields)

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()


FIELDS_CACHE = _FieldsCache()
_ACCOUNT_IDS: dict[tuple[str, str], str] = {}


class JsmProvider(HelpDeskProvider):
    kind = "jsm"
    entity_serializer = JsmHitlSessionSerializer

    # --- settings and transport -------------------------------------------------------------
    @property
    def service_desk_id(self) -> str:
        return str(self.credentials.get("service_desk_id", "")).strip()

    @property
    def request_type_id(self) -> str:
        return str(self.credentials.get("request_type_id", "")).strip()

    @property
    def comment_visibility(self) -> str:
        """``internal`` (default) or ``public``; anything else is refused at set-up and on use."""
        value = str(self.credentials.get("comment_visibility") or DEFAULT_VISIBILITY).strip().lower()
        if value not in VISIBILITIES:
            raise PermanentError(f"comment_visibility must be one of {', '.join(VISIBILITIES)}, not {value!r}")
        return value

    def _auth_header(self) -> str:
        """Basic ``email:api_token`` [doc developer.atlassian.com "Basic auth for REST APIs"]."""
        raw = f"{self.credentials['email']}:{self.credentials['api_token']}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _send(self, method: str, path: str, *, headers: Mapping | None = None, **kw) -> requests.Response:
        url = path if "://" in path else f"{self.base_url}{path}"
        return http_request(
            self.session,
            method,
            url,
            timeout=self.timeout,
            describe_error=describe_jsm_error,
            headers={"Authorization": self._auth_header(), "Accept": "application/json", **(headers or {})},
            **kw,
        )

    def _json(self, method: str, path: str, **kw):
        response = self._send(method, path, **kw)
        return response.json() if response.content else {}

    def _values(self, path: str, params: Mapping | None = None, *, max_pages: int = MAX_PAGES) -> Iterator[dict]:
        """Every item of a Service Management page list ``{size, start, limit, isLastPage, values}``."""
        start = 0
        for _ in range(max_pages):
            page = self._json("GET", path, params={**(params or {}), "start": start, "limit": PAGE})
            values = page.get("values") or []
            yield from values
            if page.get("isLastPage", True) or not values:
                return
            start += len(values)

    def _account_id(self) -> str:
        """Our own account (``GET /rest/api/2/myself``), whose comments are never relayed back."""
        key = (self.base_url, str(self.credentials.get("email", "")))
        if key not in _ACCOUNT_IDS:
            _ACCOUNT_IDS[key] = str(self._json("GET", f"{PLATFORM}/myself")["accountId"])
        return _ACCOUNT_IDS[key]

    # --- customers --------------------------------------------------------------------------
    def external_user_upsert(self, user: ExternalUserSpec, *, role: str = "end-user") -> str:
        """The JSM customer of the Botpress user, created if missing, added to our service desk.

        A customer carries no id of ours, so the link is a user property whose key is our
        reference's marker (``PUT /user/properties/{key}?accountId=``), found again with
        ``GET /user/search?property=<key>.linked=true`` [doc "Find users": ``property`` "a query
        string used to search properties"]. A new one: ``POST /customer?strictConflictStatusCode=
        true`` answers 409 when the e-mail already has an account (without the flag, a 400),
        which is then found by e-mail (``GET /user/search?query=``). Creating customers and
        setting other users' properties need the *Administer Jira* global permission.
        ``POST /servicedesk/{id}/customer`` is a no-op for a member. A user without e-mail (and
        the bot) gets no customer: JSM customers are identified by e-mail; their requests are
        raised by the API account and their comments still carry their name.
        """
        key = reference_marker(user.reference)
        found = self._json("GET", f"{PLATFORM}/user/search", params={"property": f"{key}.linked=true"})
        if isinstance(found, list) and found:
            return str(found[0]["accountId"])
        if not user.email:
            return NO_EMAIL_PREFIX + key
        body = {"email": user.email, "displayName": (user.name or user.email)[:255]}
        try:
            created = self._json("POST", f"{SDAPI}/customer", params={"strictConflictStatusCode": "true"}, json=body)
            account_id = str(created["accountId"])
        except RetryableError as exc:
            if exc.status_code != 409:
                raise
            account_id = self._account_by_email(user.email)
        self._send("POST", f"{SDAPI}/servicedesk/{self.service_desk_id}/customer", json={"accountIds": [account_id]})
        self._send("PUT", f"{PLATFORM}/user/properties/{key}", params={"accountId": account_id}, json={"linked": True})
        return account_id

    def _account_by_email(self, email: str) -> str:
        found = self._json("GET", f"{PLATFORM}/user/search", params={"query": email, "maxResults": 50})
        for account in found if isinstance(found, list) else []:
            if str(account.get("emailAddress") or "").lower() == email.lower():
                return str(account["accountId"])
        raise PermanentError(f"JSM reports an existing account for {email} that cannot be found", 409)

    # --- requests ---------------------------------------------------------------------------
    def request_type_fields(self) -> dict[str, bool]:
        """``{field id: required}`` of our request type (``GET .../requesttype/{id}/field``)."""
        key = (self.base_url, self.service_desk_id, self.request_type_id)
        cached = FIELDS_CACHE.get(key)
        if cached is not None:
            return cached
        path = f"{SDAPI}/servicedesk/{self.service_desk_id}/requesttype/{self.request_type_id}/field"
        answer = self._json("GET", path)
        fields = {str(f.get("fieldId")): bool(f.get("required")) for f in answer.get("requestTypeFields") or [] if f}
        FIELDS_CACHE.put(key, fields)
        return fields

    def _field_values(self, spec: TicketSpec) -> dict:
        """``requestFieldValues``: summary, description, then the entity's fields, each checked
        against what the request type declares; an error names the entity's field."""
        extras, declared = spec.extras, self.request_type_fields()
        description = f"{noformat(spec.body)}\n\n{MARKER_LABEL}: {reference_marker(spec.reference)}"
        values: dict = {"summary": spec.subject[:255] or "Untitled request", "description": description}
        wanted: dict[str, tuple[str, object]] = {}
        if extras.get("priority"):
            wanted["priority"] = ("priority", {"name": PRIORITIES[extras["priority"]]})
        if extras.get("labels"):
            wanted["labels"] = ("labels", list(extras["labels"]))
        if extras.get("components"):
            wanted["components"] = ("components", [{"name": name} for name in extras["components"]])
        for field_id, value in (extras.get("fields") or {}).items():
            wanted[field_id] = (f"fields.{field_id}", value)
        for field_id, (entity_field, value) in wanted.items():
            if field_id not in declared:
                raise PermanentError(
                    f"hitlSession.{entity_field}: request type {self.request_type_id} has no field {field_id!r}", 400
                )
            values[field_id] = value
        missing = sorted(f for f, required in declared.items() if required and f not in values)
        if missing:
            raise PermanentError(
                f"request type {self.request_type_id} requires {', '.join(missing)}: give them in hitlSession.fields",
                400,
            )
        return values

    def ticket_create(self, spec: TicketSpec, *, idempotency_key: str) -> TicketRef:
        """``POST /rest/servicedeskapi/request`` raised on behalf of the customer.

        JSM has no idempotency key, so a lost answer is found by the reference marker at the
        end of the description (``ticket_find``). The description is wiki text: the
        description and transcript in a ``{noformat}`` block, so every history type reads as
        rendered (``providers.rendering``) and no chat text is taken for markup.
        """
        body: dict = {
            "serviceDeskId": self.service_desk_id,
            "requestTypeId": self.request_type_id,
            "requestFieldValues": self._field_values(spec),
        }
        if spec.requester_external_id and not spec.requester_external_id.startswith(NO_EMAIL_PREFIX):
            body["raiseOnBehalfOf"] = spec.requester_external_id
        return self._ticket_ref(self._json("POST", f"{SDAPI}/request", json=body))

    def _ticket_ref(self, request: Mapping) -> TicketRef:
        links = request.get("_links") or {}
        status = request.get("currentStatus") or {}
        priority = ""
        for value in request.get("requestFieldValues") or []:
            if isinstance(value, dict) and value.get("fieldId") == "priority":
                priority = str((value.get("value") or {}).get("name") or "")
        return TicketRef(
            external_id=str(request["issueId"]),
            url=str(links.get("agent") or f"{self.base_url}/browse/{request.get('issueKey', '')}"),
            status=str(status.get("status") or ""),
            priority=priority,
        )

    def ticket_find(self, *, reference: str) -> TicketRef | None:
        """The request whose description carries our marker, among the service desk's newest.

        ``GET /request?serviceDeskId=&requestOwnership=ALL_REQUESTS&requestStatus=ALL_REQUESTS``
        lists requests newest first *(inferred)*; JQL text search would read an index that may
        lag behind a request created a moment ago, this list reads the requests themselves.
        """
        marker = reference_marker(reference)
        params = {
            "serviceDeskId": self.service_desk_id,
            "requestOwnership": "ALL_REQUESTS",
            "requestStatus": "ALL_REQUESTS",
        }
        for request in self._values(f"{SDAPI}/request", params, max_pages=RECENT_PAGES):
            for value in request.get("requestFieldValues") or []:
                if not isinstance(value, dict) or value.get("fieldId") != "description":
                    continue
                if f"{MARKER_LABEL}: {marker}" in str(value.get("value") or ""):
                    return self._ticket_ref(request)
        return None

    def ticket_close(self, *, ticket_external_id: str) -> None:
        """Transition into a status of the Done category, with a comment saying the user left.

        The transition is found through ``GET /issue/{id}/transitions`` (workflows differ per
        project: never a hard-coded id). A request already in a Done status is left alone, so a
        repeated close is done, not failed. The comment is internal (``sd.public.comment``),
        so the customer gets no e-mail about their own departure.
        """
        issue = self._json("GET", f"{PLATFORM}/issue/{ticket_external_id}", params={"fields": "status"})
        if _category(issue) == "done":
            return
        answer = self._json(
            "GET", f"{PLATFORM}/issue/{ticket_external_id}/transitions", params={"expand": "transitions.fields"}
        )
        transitions = [t for t in answer.get("transitions") or [] if isinstance(t, dict)]
        done = next((t for t in transitions if _category({"fields": {"status": t.get("to") or {}}}) == "done"), None)
        if done is None:
            raise PermanentError(f"request {ticket_external_id} has no transition into a Done status", 409)
        body: dict = {
            "transition": {"id": str(done["id"])},
            "update": {
                "comment": [
                    {
                        "add": {
                            "body": USER_LEFT,
                            "properties": [{"key": "sd.public.comment", "value": {"internal": True}}],
                        }
                    }
                ]
            },
        }
        resolution = (done.get("fields") or {}).get("resolution") or {}
        if resolution.get("required"):
            allowed = resolution.get("allowedValues") or [{"name": "Done"}]
            body["fields"] = {"resolution": {"name": allowed[0].get("name", "Done")}}
        self._send("POST", f"{PLATFORM}/issue/{ticket_external_id}/transitions", json=body)

    # --- comments ---------------------------------------------------------------------------
    def message_post(self, *, ticket_external_id: str, message: OutboundMessage) -> str:
        """One comment by the API account, starting with its real author ("Ada (customer): …").

        Internal or public as the integration says (``comment_visibility``; see README: a
        public comment by the API account e-mails the customer a copy of their own message).
        Media the media fetcher gets within limits go up as temporary files
        (``POST /servicedesk/{id}/attachTemporaryFile``, multipart ``file``) and are attached
        with the comment in one call (``POST /request/{id}/attachment`` with
        ``additionalComment``); the link stays in the text either way.
        """
        text, media_urls = comment_text(message)
        public = self.comment_visibility == "public"
        temporary = self._temporary_files(media_urls)
        if temporary:
            answer = self._json(
                "POST",
                f"{SDAPI}/request/{ticket_external_id}/attachment",
                json={"temporaryAttachmentIds": temporary, "public": public, "additionalComment": {"body": text}},
            )
            return str((answer.get("comment") or {})["id"])
        answer = self._json(
            "POST", f"{SDAPI}/request/{ticket_external_id}/comment", json={"body": text, "public": public}
        )
        return str(answer["id"])

    def _temporary_files(self, urls: list[str]) -> list[str]:
        ids = []
        for media in self.media_fetched(urls, max_total_bytes=MAX_ATTACHMENT_BYTES):
            answer = self._json(
                "POST",
                f"{SDAPI}/servicedesk/{self.service_desk_id}/attachTemporaryFile",
                files={"file": (media.filename, media.content, media.content_type)},
                # XSRF check of multipart requests, and the method's experimental flag.
                headers={"X-Atlassian-Token": "no-check", "X-ExperimentalApi": "opt-in"},
            )
            ids += [str(t["temporaryAttachmentId"]) for t in answer.get("temporaryAttachments") or []]
        return ids

    def message_find(self, *, ticket_external_id: str, message: OutboundMessage, exclude: set[str]) -> str | None:
        """The comment a lost attempt may have posted: by our account, same text, not known."""
        wanted, _ = comment_text(message)
        ours = self._account_id()
        for comment in self._values(f"{SDAPI}/request/{ticket_external_id}/comment"):
            if str(comment.get("id")) in exclude or str((comment.get("author") or {}).get("accountId")) != ours:
                continue
            if _squash(str(comment.get("body") or "")) == _squash(wanted):
                return str(comment["id"])
        return None

    # --- inbound ----------------------------------------------------------------------------
    @classmethod
    def webhook_verify(cls, *, headers, body, secret, now, window) -> None:
        """``X-Hub-Signature``; the scheme has no timestamp, so ``window`` does not apply."""
        webhooks.signature_verify(headers=headers, body=body, secret=secret)

    @classmethod
    def webhook_replay_key(cls, *, headers, body) -> str:
        """``jsm-sig:`` + SHA-256 of the body, what Jira signed: the identifier (our dedup key)
        is not signed, and no timestamp is, so a captured delivery re-sent under a new identifier
        is still a duplicate. Genuine deliveries never share a body: each carries its event's
        millisecond ``timestamp`` (and a retry keeps its identifier, caught by the dedup key)."""
        return "jsm-sig:" + hashlib.sha256(body).hexdigest()

    @classmethod
    def webhook_parse(cls, *, headers, body, installation=None) -> ParsedWebhook:
        return webhooks.webhook_parse(headers=headers, body=body, installation=installation)

    def webhook_events_fetch(
        self, *, parsed: ParsedWebhook, installation: Mapping, known_message_ids: Collection[str]
    ) -> list[InboundEvent]:
        """Read the request: its public agent comments not yet relayed, its assignee, its status.

        Two calls and a page of comments per 100: ``GET /issue/{id}?fields=status,assignee,
        attachment`` and ``GET /issue/{id}/comment``, plus one more read of the files when a
        comment names one the first read did not list (platform API: its comments say
        ``jsdPublic`` and the author's ``accountType``, ``customer`` for JSM customers). In
        order: ``agent_message`` for each public comment by an Atlassian account other than
        ours, with the attachments its wiki text names (``!name!``, ``[^name]``); ``assigned``
        when the request has an assignee; ``stopped`` when its status is in the Done category.
        Agents are named by account id; the gateway asks ``agent_profile_fetch`` once per agent.
        """
        if not parsed.doorbell:  # a delivery the parser already found to mean nothing for us
            return list(parsed.events)
        issue_id = parsed.ticket_external_id
        issue = self._json("GET", f"{PLATFORM}/issue/{issue_id}", params={"fields": "status,assignee,attachment"})
        fields = issue.get("fields") or {}
        attachments = _attachments_by_name(fields)
        ours = str(installation.get("account_id") or "")
        known, events = set(known_message_ids), []
        comments = []
        for comment in self._comments(issue_id):
            author = comment.get("author") or {}
            author_id = str(author.get("accountId") or "")
            if str(comment.get("id")) in known or comment.get("jsdPublic") is False or not author_id:
                continue
            if author_id != ours and author.get("accountType", "atlassian") == "atlassian":
                comments.append(comment)  # not ours, not a customer's (portal, e-mail) nor an app's
        named = set().union(*(wiki_file_names(str(c.get("body") or "")) for c in comments))
        if named - attachments.keys():
            # A comment posted between the two reads may name a file the first read did not
            # list yet (files are attached before the comment naming them): read them again.
            again = self._json("GET", f"{PLATFORM}/issue/{issue_id}", params={"fields": "attachment"})
            attachments = _attachments_by_name(again.get("fields") or {})
        for comment in comments:
            comment_id, author_id = str(comment.get("id")), str(comment["author"]["accountId"])
            parts = wiki_to_parts(str(comment.get("body") or ""), attachments)
            if not parts:
                continue
            events.append(
                InboundEvent(
                    kind="agent_message",
                    ticket_external_id=issue_id,
                    agent=AgentProfile(external_id=author_id),
                    message_external_id=comment_id,
                    text="\n\n".join(p.text for p in parts if p.kind == "text"),
                    parts=tuple(parts),
                )
            )
        assignee = fields.get("assignee") or {}
        agent = AgentProfile(external_id=str(assignee["accountId"])) if assignee.get("accountId") else None
        if agent is not None:
            events.append(InboundEvent(kind="assigned", ticket_external_id=issue_id, agent=agent))
        if _category(issue) == "done":
            events.append(InboundEvent(kind="stopped", ticket_external_id=issue_id, agent=agent))
        return events

    def _comments(self, issue_id: str) -> Iterator[dict]:
        """Platform comment pages ``{startAt, maxResults, total, comments}``, oldest first."""
        start = 0
        for _ in range(MAX_PAGES):
            page = self._json(
                "GET",
                f"{PLATFORM}/issue/{issue_id}/comment",
                params={"startAt": start, "maxResults": PAGE, "orderBy": "created"},
            )
            comments = [c for c in page.get("comments") or [] if isinstance(c, dict)]
            yield from comments
            start += len(comments)
            if not comments or start >= int(page.get("total") or 0):
                return

    def agent_profile_fetch(self, *, external_id: str) -> AgentProfile | None:
        """``GET /rest/api/2/user?accountId=``: display name, e-mail (if visible) and avatar."""
        try:
            user = self._json("GET", f"{PLATFORM}/user", params={"accountId": external_id})
        except PermanentError as exc:
            if exc.status_code == 404:
                return None
            raise
        avatars = user.get("avatarUrls") if isinstance(user.get("avatarUrls"), dict) else {}
        return AgentProfile(
            external_id=str(user.get("accountId") or external_id),
            name=str(user.get("displayName") or ""),
            email=str(user.get("emailAddress") or ""),
            picture_url=str(avatars.get("48x48") or ""),
        )

    def attachment_download(self, *, url: str) -> MediaFile:
        """An agent's file: ``/rest/api/2/attachment/content/{id}`` on the site, with our
        credentials, one redirect followed on our own host; Jira Cloud may redirect to its media
        service with a signed link *(inferred)*, fetched without credentials (media fetcher)."""
        return self._attachment_download_own(
            url=url,
            authorization=self._auth_header(),
            describe_error=describe_jsm_error,
            desk="Jira",
            redirects=1,
        )

    # --- set-up -----------------------------------------------------------------------------
    def setup_validate(self) -> dict:
        """What set-up needs, each checked with a clear error: our account, the service desk,
        the request type and its fields (``summary`` must be one), the comment visibility."""
        self.comment_visibility  # noqa: B018 (raises when invalid)
        if not self.service_desk_id.isdigit():
            raise PermanentError("service_desk_id must be the numeric id of a service desk", 400)
        if not self.request_type_id.isdigit():
            raise PermanentError("request_type_id must be the numeric id of a request type", 400)
        account_id = self._account_id()
        try:
            desk = self._json("GET", f"{SDAPI}/servicedesk/{self.service_desk_id}")
        except PermanentError as exc:
            raise PermanentError(f"service_desk_id {self.service_desk_id}: {exc.message}", exc.status_code) from exc
        try:
            self._json("GET", f"{SDAPI}/servicedesk/{self.service_desk_id}/requesttype/{self.request_type_id}")
        except PermanentError as exc:
            raise PermanentError(
                f"request_type_id {self.request_type_id} (service desk {self.service_desk_id}): {exc.message}",
                exc.status_code,
            ) from exc
        FIELDS_CACHE.reset()
        fields = self.request_type_fields()
        if "summary" not in fields:
            raise PermanentError(f"request type {self.request_type_id} has no summary field", 400)
        return {
            "account_id": account_id,
            "project_key": str(desk.get("projectKey") or ""),
            "required_fields": sorted(f for f, required in fields.items() if required),
        }

    def webhook_install(self, *, url: str, previous_state: Mapping) -> WebhookInstallation:
        """Validate the settings, then register the admin webhook with a new secret (see
        ``providers.jsm.webhooks`` for why an admin webhook). Needs *Administer Jira*."""
        state = self.setup_validate()
        self.webhook_uninstall(state=previous_state)
        secret = secrets.token_urlsafe(32)
        definition = webhooks.webhook_definition(url=url, secret=secret, project_key=state["project_key"])
        created = self._json("POST", "/rest/webhooks/1.0/webhook", json=definition)
        webhook_id = str(created.get("self") or "").rstrip("/").rsplit("/", 1)[-1] or str(created.get("id") or "")
        return WebhookInstallation(signing_secret=secret, state={**state, "webhook_id": webhook_id, "url": url})

    def webhook_uninstall(self, *, state: Mapping) -> None:
        if not state.get("webhook_id"):
            return
        try:
            self._send("DELETE", f"/rest/webhooks/1.0/webhook/{state['webhook_id']}")
        except PermanentError as exc:
            if exc.status_code != 404:  # already gone is what we wanted
                raise

    def webhook_secret_rotate(self, *, state: Mapping) -> str:
        """A new secret written into the registered webhook (``PUT /rest/webhooks/1.0/webhook/{id}``)."""
        if not state.get("webhook_id") or not state.get("url"):
            raise PermanentError("the webhook is not installed, so it has no secret to rotate")
        secret = secrets.token_urlsafe(32)
        definition = webhooks.webhook_definition(
            url=state["url"], secret=secret, project_key=state.get("project_key", "")
        )
        self._json("PUT", f"/rest/webhooks/1.0/webhook/{state['webhook_id']}", json=definition)
        return secret

    def webhook_instructions(self, *, url: str, secret: str) -> str:
        return webhooks.instructions(url=url, secret=secret, project_key="")

    def connection_check(self, *, installation: Mapping) -> ConnectionCheck:
        """``GET /myself``, the service desk, then our webhook if registered."""
        me = self._json("GET", f"{PLATFORM}/myself")
        details: dict = {"account": me.get("displayName") or "", "account_id": me.get("accountId") or ""}
        desk = self._json("GET", f"{SDAPI}/servicedesk/{self.service_desk_id}")
        details["service_desk"] = desk.get("projectName") or desk.get("projectKey") or self.service_desk_id
        summary = f"authenticated as {details['account'] or details['account_id']} on {details['service_desk']}"
        if not installation.get("webhook_id"):
            return ConnectionCheck(True, f"{summary}; webhook not installed", details)
        try:
            hook = self._json("GET", f"/rest/webhooks/1.0/webhook/{installation['webhook_id']}")
        except PermanentError as exc:
            if exc.status_code != 404:
                raise
            return ConnectionCheck(False, f"{summary}; our webhook is gone", details)
        enabled = hook.get("enabled", True)
        details["webhook_enabled"] = bool(enabled)
        return ConnectionCheck(bool(enabled), f"{summary}; webhook {'enabled' if enabled else 'disabled'}", details)


def comment_text(message: OutboundMessage) -> tuple[str, list[str]]:
    """The comment's text ("Ada Lovelace (customer): …") and the media URLs to attach.

    All parts of a bloc go in one comment. Chat text is sent as it is (Jira renders it as wiki
    markup, where Markdown mostly reads fine).
    """
    single = [{"type": message.type, "payload": message.payload}]
    items = message.payload["items"] if message.type == "bloc" else single
    texts, media_urls = [], []
    for item in items:
        kind, payload = item["type"], item["payload"]
        if kind not in MEDIA_FIELDS:
            texts.append(render_payload(kind, payload))
            continue
        url, title = payload[MEDIA_FIELDS[kind]], payload.get("title", "")
        texts.append(f"{MEDIA_LABELS[kind]}: {title}\n{url}" if title else f"{MEDIA_LABELS[kind]}\n{url}")
        media_urls.append(url)
    role = "bot" if message.author_external_id.startswith(NO_EMAIL_PREFIX) and _is_bot(message) else "customer"
    name = (message.author_name or "Botpress user").strip()
    return f"{name} ({role}): " + "\n\n".join(t for t in texts if t), media_urls


def _is_bot(message: OutboundMessage) -> bool:
    """Botpress marks an end user's message with its ``userId``; the bot's messages have none."""
    return not message.payload.get("userId")


def _category(issue: Mapping) -> str:
    status = ((issue.get("fields") or {}).get("status")) or {}
    return str((status.get("statusCategory") or {}).get("key") or "")


def _squash(text: str) -> str:
    return " ".join(text.split())


def _attachments_by_name(fields: Mapping) -> dict[str, Mapping]:
    """An issue's ``fields.attachment`` by file name, those with a content URL."""
    return {
        str(a.get("filename")): a for a in fields.get("attachment") or [] if isinstance(a, dict) and a.get("content")
    }
