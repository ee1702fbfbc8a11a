"""The one small interface every help desk implements.

Shaped to fit Zendesk tickets, Freshdesk tickets, Jira Service Management requests and Slack
threads alike: a *ticket* is whatever holds one session's conversation, an *external user* is
the end user's record there (Slack has none and returns a stable pseudo id). Adapters take and
return plain data, never Django models, and raise ``outbound.http`` errors.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

import requests

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


@dataclass(frozen=True)
class TicketRef:
    external_id: str
    url: str = ""
    status: str = ""
    priority: str = ""
    initial_message_id: str = ""  # the ticket's first message (our transcript), never relayed back


@dataclass(frozen=True)
class OutboundMessage:
    """A Botpress ``hitl`` channel message, to be posted by ``author_external_id``."""

    type: str
    payload: Mapping
    author_external_id: str
    author_name: str = ""  # the real author's display name, for desks that post as one API account


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
    dedup_key: str
    event_type: str
    ticket_external_id: str  # webhooks about one ticket are applied in the order they arrived
    events: list[InboundEvent]
    # The webhook only names the ticket; the worker asks ``webhook_events_fetch`` for the events.
    doorbell: bool = False
    # A body to answer synchronously instead of storing (Slack's ``url_verification``).
    reply: Mapping | None = None


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

        Pure parsing, no I/O: it runs on the acknowledgement path. ``installation`` is the
        integration's stored ``provider_installation`` state (e.g. our own account id).
        """

    def webhook_events_fetch(
        self, *, parsed: ParsedWebhook, installation: Mapping, known_message_ids: Collection[str]
    ) -> list[InboundEvent]:
        """The events of a webhook, read in the worker with credentials; by default those parsed.

        A doorbell provider reads the ticket from its API and returns, in order: ``agent_message``
        for public agent replies whose id is not in ``known_message_ids``, then ``assigned``, then
        ``stopped``.
        """
        return list(parsed.events)

    def agent_profile_fetch(self, *, external_id: str) -> AgentProfile | None:
        """An agent's name, e-mail and picture when an event names the agent only by id."""
        return None

    def ticket_head_update(self, *, ticket_external_id: str, state: str, agent_name: str = "") -> None:
        """Show ``state`` ("assigned", "stopped") on the ticket's head; most desks need nothing."""
        return None

    def webhook_instructions(self, *, url: str, secret: str) -> str:
        """For ``WebhookInstall.MANUAL``: the exact rules an operator creates by hand."""
        return ""

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
