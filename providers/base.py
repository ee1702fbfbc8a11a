"""The one small interface every help desk implements.

Shaped to fit Zendesk tickets, Freshdesk tickets, Jira Service Management requests and Slack
threads alike: a *ticket* is whatever holds one session's conversation, an *external user* is
the end user's record there (Slack has none and returns a stable pseudo id). Adapters take and
return plain data, never Django models, and raise ``outbound.http`` errors.
"""

from __future__ import annotations

import abc
import mimetypes
import posixpath
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar
from urllib.parse import unquote, urljoin, urlsplit

import requests

from outbound.http import PermanentError, RetryableError
from outbound.http import request as http_request
from outbound.media import MediaFile, MediaRefused


@dataclass(frozen=True)
class ExternalUserSpec:
    reference: str  # the Botpress user id, stored as the help desk's external id
    name: str
    email: str = ""
    picture_url: str = ""


@dataclass(frozen=True)
class TicketSpec:
    requester_external_id: str
    subject: str
    body: str
    reference: str  # the Botpress conversation id, stored on the ticket
    extras: Mapping = field(default_factory=dict)  # the validated hitlSession entity
    # Who is asking, for desks without a user record to read it from (Slack's root message).
    requester_name: str = ""
    requester_email: str = ""


@dataclass(frozen=True)
class TicketRef:
    external_id: str
    url: str = ""
    status: str = ""
    priority: str = ""
    initial_message_id: str = ""  # the ticket's first message (our transcript), never relayed back


@dataclass(frozen=True)
class OutboundMessage:
    """A Botpress ``hitl`` channel message, to be posted by ``author_external_id``.

    ``author_name``, ``author_picture_url``: the real author's display name and picture (the end
    user's, or the bot's), for desks that post everything as one API account (JSM comments,
    Slack's username/icon override).
    """

    type: str
    payload: Mapping
    author_external_id: str
    author_name: str = ""
    author_picture_url: str = ""


@dataclass(frozen=True)
class AgentProfile:
    external_id: str
    name: str = ""
    email: str = ""
    picture_url: str = ""


@dataclass(frozen=True)
class MessagePart:
    """One piece of an agent's message, in the order the agent wrote it.

    ``kind`` "text": ``text`` is Markdown. ``kind`` "media": ``url`` is where the help desk
    serves the file (it may need the help desk's credentials), ``filename`` and ``alt`` describe
    it, ``content_type`` is empty when the help desk does not say (it is known on download).
    """

    kind: str  # "text" | "media"
    text: str = ""
    url: str = ""
    filename: str = ""
    content_type: str = ""
    alt: str = ""


@dataclass(frozen=True)
class InboundEvent:
    """One thing a help desk told us, in the domain's words."""

    kind: str  # "agent_message" | "assigned" | "stopped"
    ticket_external_id: str
    reference: str = ""  # what the ticket carries as our reference (the conversation id)
    agent: AgentProfile | None = None
    message_external_id: str = ""
    text: str = ""  # the text parts of ``parts``, joined
    parts: tuple[MessagePart, ...] = ()  # agent_message: text and media in the agent's order


@dataclass(frozen=True)
class ParsedWebhook:
    """What an authenticated webhook says, parsed without I/O on the acknowledgement path.

    ``doorbell``: the webhook only names the ticket (maybe with an event hint); the worker asks
    the adapter for the real events (``HelpDeskProvider.webhook_events_fetch``), so ``events``
    may be empty. ``reply``: a body to answer synchronously (HTTP 200) instead of storing
    anything, such as Slack's ``url_verification`` challenge.
    """

    dedup_key: str
    event_type: str
    ticket_external_id: str  # webhooks about one ticket are applied in the order they arrived
    events: list[InboundEvent]
    doorbell: bool = False
    reply: Mapping | None = None


@dataclass(frozen=True)
class TicketChanges:
    """What a help desk reports changed since a moment: ``{ticket external id: changed_by}``.

    ``changed_by``: the latest instant (UTC) the ticket's last change can have been made. A desk
    that stamps changes to the whole second reports its stamp plus one second, so "something
    reached us after ``changed_by``" proves we heard of that change. ``through``: every change
    up to this instant is listed; a listing cut short by its page limit says where it stopped,
    and the next one starts there.
    """

    changed: Mapping[str, datetime]
    through: datetime


@dataclass(frozen=True)
class WebhookInstallation:
    signing_secret: str
    state: dict  # what uninstall needs (webhook and trigger ids)


@dataclass(frozen=True)
class ConnectionCheck:
    """What a remote service answered to a harmless authenticated call, for an operator.

    ``summary`` is one readable line and ``details`` plain values; neither ever holds a secret.
    """

    ok: bool
    summary: str
    details: Mapping = field(default_factory=dict)


class WebhookRejected(Exception):
    """Authentication of an inbound webhook failed; the reason is for our records, not the caller."""


class WebhookInvalid(Exception):
    """An authenticated webhook whose body is malformed; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class AttachmentUnavailable(Exception):
    """An agent's file cannot be transferred to Botpress, and retrying will not change that.

    ``link_ok``: its URL opens without help-desk credentials, so the end user may get the link;
    otherwise they get a note naming the file.
    """

    def __init__(self, reason: str, *, link_ok: bool) -> None:
        super().__init__(reason)
        self.link_ok = link_ok


MediaFetcher = Callable[[str], MediaFile]
DEFAULT_MEDIA_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MEDIA_TIMEOUT = 10.0


class HelpDeskProvider(abc.ABC):
    kind: ClassVar[str]
    #: DRF serializer class validating this provider's ``hitlSession`` entity.
    entity_serializer: ClassVar[type]
    #: Whether ``ticket_head_update`` does anything: the gateway enqueues it on assignment and
    #: stop only then, so a desk without a ticket head costs no delivery.
    updates_ticket_head: ClassVar[bool] = False
    #: Whether its webhooks are doorbells (``ParsedWebhook.doorbell``): then the gateway's
    #: sweep also re-reads tickets whose doorbell may have been lost (``tickets_changed_list``),
    #: so no agent message depends on the desk retrying a webhook.
    doorbell_webhooks: ClassVar[bool] = False

    def __init__(
        self,
        *,
        base_url: str,
        credentials: Mapping,
        session: requests.Session,
        timeout: tuple[float, float],
        media_fetcher: MediaFetcher | None = None,
        media_max_bytes: int = DEFAULT_MEDIA_MAX_BYTES,
        media_timeout: float = DEFAULT_MEDIA_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.session = session
        self.timeout = timeout
        self.media_fetcher = media_fetcher
        self.media_max_bytes = media_max_bytes
        self.media_timeout = media_timeout

    def __repr__(self) -> str:  # never show credentials
        return f"{type(self).__name__}({self.base_url!r})"

    # --- outbound ---------------------------------------------------------------------------
    @abc.abstractmethod
    def external_user_upsert(self, user: ExternalUserSpec, *, role: str = "end-user") -> str:
        """Create or update the external user keyed by ``user.reference``; return its id."""

    @abc.abstractmethod
    def ticket_create(self, spec: TicketSpec, *, idempotency_key: str) -> TicketRef: ...

    @abc.abstractmethod
    def message_post(self, *, ticket_external_id: str, message: OutboundMessage) -> str:
        """Post one message (all parts of a bloc together); return the help desk's message id."""

    @abc.abstractmethod
    def ticket_close(self, *, ticket_external_id: str) -> None: ...

    def ticket_head_update(self, *, ticket_external_id: str, state: str, agent_name: str = "") -> None:
        """Show the session's state (``"assigned"``, ``"stopped"``) on the ticket's head, such as
        Slack's root message. Called only when ``updates_ticket_head`` is set; default no-op."""
        return None

    def ticket_stopped_reply(self, *, ticket_external_id: str, event: InboundEvent) -> None:
        """An agent wrote on the ticket of a session that is over (nothing is relayed): tell
        them, where the desk can (Slack's ephemeral note). Best effort, in the worker after the
        webhook is applied; raises ``outbound.http`` errors, which are logged. Default: nothing."""
        return None

    def _own_host(self, url: str) -> bool:
        """Whether ``url`` is on the account's own scheme and host: the only place credentials go."""
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        return (theirs.scheme, (theirs.netloc or "").lower()) == (ours.scheme, ours.netloc.lower())

    def _read_limited(self, response: requests.Response, deadline: float) -> bytes:
        """The body of an attachment download within ``media_max_bytes`` and before ``deadline``
        (``time.monotonic()``); too large is final, too slow or a broken stream is retried."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.media_max_bytes:
            raise AttachmentUnavailable("too large", link_ok=False)
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > self.media_max_bytes:
                    raise AttachmentUnavailable("too large", link_ok=False)
                if time.monotonic() > deadline:
                    raise RetryableError("attachment download took too long")
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise RetryableError(f"attachment download failed: {type(exc).__name__}") from exc
        return b"".join(chunks)

    def _attachment_download_own(
        self,
        *,
        url: str,
        authorization: str,
        describe_error: Callable[[requests.Response], tuple[str, str]],
        desk: str,
        redirects: int | None,
        refused: str = "too many redirects",
    ) -> MediaFile:
        """An agent's file for a desk that serves files behind authentication: ``authorization``
        (the ``Authorization`` header) goes only to the account's own host (``_own_host``); a file
        elsewhere is fetched through the guarded media fetcher without it.

        ``redirects``: how many redirects on the own host are followed; a redirect to another host
        is fetched there without credentials, and a refusal then is not a public link (the
        original URL needs our credentials). ``None``: no redirect is followed, one is refused
        with ``refused``, as is a redirect past the count. ``desk`` names the service in the
        refusal of an error answer. The name comes from ``Content-Disposition``, else the URL;
        the type from ``Content-Type``, else the name. Size and time are limited as in
        ``_read_limited``. Raises ``AttachmentUnavailable`` (final), ``RetryableError``.
        """
        if not self._own_host(url):
            return self._attachment_download_public(url=url, link_ok=True)
        deadline = time.monotonic() + self.media_timeout
        for _ in range((redirects or 0) + 1):
            try:
                response = http_request(
                    self.session,
                    "GET",
                    url,
                    timeout=(self.media_timeout, self.media_timeout),
                    describe_error=describe_error,
                    headers={"Authorization": authorization},
                    allow_redirects=False,
                    stream=True,
                )
            except PermanentError as exc:
                raise AttachmentUnavailable(f"{desk} answered {exc}", link_ok=False) from exc
            with response:
                if response.is_redirect:
                    if redirects is None:
                        raise AttachmentUnavailable(refused, link_ok=False)
                    url = urljoin(url, response.headers["Location"])
                    if not self._own_host(url):
                        return self._attachment_download_public(url=url, link_ok=False)
                    continue
                content = self._read_limited(response, deadline)
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
                filename = _attachment_filename(response, url)
            content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
            return MediaFile(filename=filename, content_type=content_type, content=content)
        raise AttachmentUnavailable(refused, link_ok=False)

    def _attachment_download_public(self, *, url: str, link_ok: bool) -> MediaFile:
        """``url`` through the guarded media fetcher, without credentials; a refusal says whether
        the link the agent gave opens without them (``link_ok``)."""
        try:
            return HelpDeskProvider.attachment_download(self, url=url)
        except AttachmentUnavailable as exc:
            if exc.link_ok == link_ok:
                raise
            raise AttachmentUnavailable(str(exc), link_ok=link_ok) from exc

    def attachment_download(self, *, url: str) -> MediaFile:
        """The bytes of a file an agent sent (inline image or attachment), to re-host for the end user.

        This default sends no credentials: it fetches through the guarded media fetcher (public
        addresses only, size and time limits). Adapters whose help desk serves files behind
        authentication override it, sending credentials only to their own host. Raises
        ``AttachmentUnavailable`` when the file cannot be had, ``outbound.http.RetryableError``
        when a later try may succeed.
        """
        if self.media_fetcher is None:
            raise AttachmentUnavailable("no media fetcher configured", link_ok=True)
        try:
            return self.media_fetcher(url)
        except MediaRefused as exc:
            raise AttachmentUnavailable(str(exc), link_ok=True) from exc

    def media_fetched(self, urls: Iterable[str], *, max_total_bytes: int | None = None) -> Iterator[MediaFile]:
        """The files of an outgoing message that can be sent as files, in order: fetched through
        the guarded media fetcher; a refused one (address, size, type) is skipped, as is one that
        would take the total over ``max_total_bytes`` (the desk's limit per message): its link
        stays in the text. Nothing without a media fetcher."""
        if self.media_fetcher is None:
            return
        total = 0
        for url in urls:
            try:
                media = self.media_fetcher(url)
            except MediaRefused:
                continue
            if max_total_bytes is not None and total + len(media.content) > max_total_bytes:
                continue
            total += len(media.content)
            yield media

    # --- reconciliation: only after an attempt whose outcome is unknown ---------------------
    @abc.abstractmethod
    def ticket_find(self, *, reference: str) -> TicketRef | None:
        """The ticket carrying ``reference`` (our conversation id), if a lost attempt created it."""

    @abc.abstractmethod
    def message_find(self, *, ticket_external_id: str, message: OutboundMessage, exclude: set[str]) -> str | None:
        """The id of a message a lost attempt posted, ignoring ids in ``exclude`` (already ours)."""

    # --- inbound ----------------------------------------------------------------------------
    # Class methods: the acknowledgement path needs no credentials and no HTTP session.
    @classmethod
    @abc.abstractmethod
    def webhook_verify(
        cls, *, headers: Mapping[str, str], body: bytes, secret: str, now: datetime, window: timedelta
    ) -> None:
        """Raise ``WebhookRejected`` unless the request is authentic and signed within ``window``."""

    @classmethod
    @abc.abstractmethod
    def webhook_parse(
        cls, *, headers: Mapping[str, str], body: bytes, installation: Mapping | None = None
    ) -> ParsedWebhook:
        """Turn an authenticated body into events; raise ``WebhookInvalid`` naming the bad field.

        Pure parsing, no I/O: it runs on the acknowledgement path. ``installation``: the
        integration's stored ``provider_installation`` (e.g. our own account id, to drop echoes).
        """

    def webhook_events_fetch(
        self, *, parsed: ParsedWebhook, installation: Mapping, known_message_ids: Collection[str]
    ) -> list[InboundEvent]:
        """The events a webhook stands for; runs in the worker, with credentials.

        A doorbell provider reads the ticket from its API and returns, in order: an
        ``agent_message`` for each public agent reply whose id is not in ``known_message_ids``
        (every message the gateway relayed or posted on that ticket, both directions), then
        ``assigned`` (the ticket has an assignee), then ``stopped`` (resolved or closed).
        The services dedupe again by message id. Raises ``outbound.http`` errors; the worker
        retries the webhook later. Default: the parsed events.
        """
        return list(parsed.events)

    def tickets_changed_list(self, *, since: datetime, limit: int) -> TicketChanges | None:
        """The tickets changed since ``since`` (any ticket of the account; at most about
        ``limit``, oldest change first), for the doorbell sweep: one listing call finds the
        tickets whose doorbell we may have missed. ``None`` when the desk cannot list changes:
        the sweep then re-reads recently active tickets on a slower timer. Raises
        ``outbound.http`` errors; the sweep tries again on its next run.
        """
        return None

    def agent_profile_fetch(self, *, external_id: str) -> AgentProfile | None:
        """An agent's name, email and picture, when a webhook named them by id only (Slack
        ``users.info``, Freshdesk's agents API); ``None`` when the desk has no such look-up."""
        return None

    @classmethod
    def webhook_replay_key(cls, *, headers: Mapping[str, str], body: bytes) -> str:
        """A key of what the help desk *signed* (at most 128 characters), or "" if it signs nothing
        more than the body the dedup key already covers.

        Stored unique per integration next to the dedup key: a dedup key taken from an unsigned
        header (a delivery or invocation id) lets a captured, still-fresh webhook be replayed
        under a new id, while the signed content cannot be changed. Called only after
        ``webhook_verify`` accepted the request. Not abstract, so an adapter without it loads.
        """
        return ""

    # --- set-up -----------------------------------------------------------------------------
    @abc.abstractmethod
    def webhook_install(self, *, url: str, previous_state: Mapping) -> WebhookInstallation:
        """Install (or reinstall) what makes the help desk call ``url``; remove ``previous_state``."""

    @abc.abstractmethod
    def webhook_uninstall(self, *, state: Mapping) -> None: ...

    def webhook_instructions(self, *, url: str, secret: str) -> str:
        """For ``WebhookInstall.MANUAL``: the exact rules an operator creates by hand (events,
        conditions, URL, header, body). Default: "" (nothing to do by hand)."""
        return ""

    # --- operators' console -----------------------------------------------------------------
    # Not abstract, so an adapter written before them still loads; each says what it lacks.
    def connection_check(self, *, installation: Mapping) -> ConnectionCheck:
        """Who the stored credentials authenticate as, and the state of our webhook there.

        Raises ``outbound.http`` errors; the caller reports them.
        """
        return ConnectionCheck(ok=False, summary=f"{self.kind}: connection check not implemented")

    def webhook_secret_rotate(self, *, state: Mapping) -> str:
        """Have the help desk issue a new signing secret for our webhook; return it."""
        raise NotImplementedError(f"{self.kind} cannot rotate its webhook secret")


def _attachment_filename(response: requests.Response, url: str) -> str:
    """A downloaded file's name: ``Content-Disposition``'s ``filename``, else the URL's."""
    disposition = response.headers.get("Content-Disposition", "")
    if "filename=" in disposition:
        return disposition.split("filename=", 1)[1].split(";")[0].strip().strip('"') or "attachment"
    return filename_from_url(url)


def filename_from_url(url: str) -> str:
    """A file name for a URL: its ``name=`` query value (Zendesk attachment URLs), else its path's last part."""
    parts = urlsplit(url)
    named = re.search(r"(?:^|&)name=([^&]+)", parts.query)
    name = unquote(named.group(1)) if named else posixpath.basename(unquote(parts.path))
    return name.strip() or "attachment"
