"""The HITL use cases: end users, sessions, messages both ways, assignment, stop.

Each runs in one transaction, records the change, and writes the outbox rows that carry it to
the help desk or to Botpress. Only ``end_user_create`` and ``session_start`` call Botpress
inline, because their answer must contain the id Botpress gives. Every transport (REST, the
wire protocol, the hitl-api) calls these same functions; how Botpress is reached is the
integration's ``BotpressSink``.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from botpress.sink import MEDIA_URL_FIELDS
from hitl_gateway import metrics
from hitl_gateway.compiled import CompiledQuery, row_update
from outbound.http import UNREACHABLE, OutboundError
from providers import provider_class
from providers.base import AgentProfile, InboundEvent, MessagePart
from providers.html_parts import media_kind
from providers.text import text_sanitize, value_sanitize
from sessions_app.models import (
    DeliveryKind,
    Direction,
    EndUser,
    HitlSession,
    HumanAgent,
    Integration,
    Message,
    SessionStatus,
    StoppedBy,
    Ticket,
)
from sessions_app.services.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from sessions_app.services.integrations import (
    integration_bot_reference,
    integration_botpress_sink,
    integration_provider,
)
from sessions_app.services.outbox import delivery_enqueue, message_delivery_enqueue

log = structlog.get_logger(__name__)

EVENT_ASSIGNED, EVENT_STOPPED = "hitlAssigned", "hitlStopped"
# Failures worth retrying the whole webhook for: the database or the broker, not the input.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, BrokerError)
BOT_NAME = "Botpress"
USER_LEFT_NOTE = "The user left the chat before an agent took this ticket: the ticket is closed."


def _botpress_call(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except OutboundError as exc:
        if exc.error_type == UNREACHABLE:  # "could not reach <url>: connection refused"
            raise UpstreamUnavailable(str(exc).replace("could not reach", "could not reach Botpress at", 1)) from exc
        raise UpstreamUnavailable(f"Botpress answered: {exc}") from exc


# --- Botpress → gateway ---------------------------------------------------------------------
def end_user_create(*, integration: Integration, name: str, email: str = "", picture_url: str = "") -> EndUser:
    """Create (or find, by email) the end user in Botpress, link it, and sync the external user."""
    sink = integration_botpress_sink(integration=integration, in_request=True)
    user_id = _botpress_call(sink.user_register, name=name, email=email, picture_url=picture_url)
    with transaction.atomic():
        end_user, _ = EndUser.objects.update_or_create(
            integration=integration,
            botpress_user_id=user_id,
            defaults={"name": name, "email": email, "picture_url": picture_url},
        )
        delivery_enqueue(
            integration_id=integration.pk,
            kind=DeliveryKind.EXTERNAL_USER_SYNC,
            direction=Direction.TO_AGENT,
            payload={"end_user_id": end_user.pk},
            lane_key=f"end_user:{end_user.pk}",
        )
    return end_user


def session_start(
    *,
    integration: Integration,
    user_id: str = "",
    title: str = "",
    description: str = "",
    extras: dict | None = None,
    message_history: list[dict] | None = None,
) -> HitlSession:
    """Open the Botpress conversation now and the ticket through the outbox.

    The ticket is created by a delivery, so a help-desk outage delays it instead of failing
    the session; everything sent meanwhile follows it in order. Without ``user_id`` (the
    hitl-api opens a conversation without naming its user) the bot requests the ticket.
    """
    if user_id:
        end_user = EndUser.objects.filter(integration=integration, botpress_user_id=user_id).first()
        if end_user is None:
            raise InvalidInput("Unknown user: call createUser first.", field="userId")
    else:
        end_user, _ = EndUser.objects.get_or_create(
            integration=integration,
            botpress_user_id=integration_bot_reference(integration=integration),
            defaults={"name": BOT_NAME},
        )
    session_id = uuid.uuid4()
    sink = integration_botpress_sink(integration=integration, in_request=True)
    conversation_id = _botpress_call(sink.conversation_open, session_id=str(session_id))
    with transaction.atomic():
        session = HitlSession.objects.create(
            id=session_id,
            integration=integration,
            end_user=end_user,
            botpress_conversation_id=conversation_id,
            title=title,
            description=description,
            extras=extras or {},
            message_history=message_history or [],
        )
        delivery_enqueue(
            integration_id=integration.pk,
            kind=DeliveryKind.TICKET_CREATE,
            direction=Direction.TO_AGENT,
            session=session,
        )
        from sessions_app.services.lifecycle import session_lifecycle_start

        session_lifecycle_start(session=session)
    return session


def locked_sessions():
    """Sessions locked for a state change, and nothing else (``HitlSession.COLD_FIELDS`` deferred).

    FOR NO KEY UPDATE of this table only: rows inserted elsewhere that reference the session
    (messages, deliveries) or the integration are not blocked, so no lock cycle can form.
    """
    return HitlSession.objects.select_for_update(no_key=True, of=("self",)).defer(*HitlSession.COLD_FIELDS)


def _conversation_session(lock: bool, with_end_user: bool) -> CompiledQuery:
    def build(integration_id, conversation_id):
        sessions = locked_sessions() if lock else HitlSession.objects.defer(*HitlSession.COLD_FIELDS)
        if with_end_user:
            sessions = sessions.select_related("end_user")
        return sessions.filter(integration_id=integration_id, botpress_conversation_id=conversation_id).order_by("pk")[
            :1
        ]

    return CompiledQuery(build)


_CONVERSATION_SESSION = {
    (lock, end_user): _conversation_session(lock, end_user) for lock in (False, True) for end_user in (False, True)
}


def session_for_conversation(
    *, integration: Integration, conversation_id: str, lock: bool = False, with_end_user: bool = False
) -> HitlSession:
    """The session of one of our conversation ids (``NotFound`` naming ``conversationId``);
    ``lock``: locked for a state change (the session's row only); ``with_end_user``: its end
    user read in the same statement."""
    session = _CONVERSATION_SESSION[lock, with_end_user].first(
        integration_id=integration.pk, conversation_id=conversation_id
    )
    if session is None:
        raise NotFound("No HITL session has this conversation id.", field="conversationId")
    return session


def session_for_botpress_conversation(*, integration: Integration, conversation_id: str) -> HitlSession:
    """The session of a conversation named by Botpress's own id.

    That is our id of it, except with the hitl-api, whose ``closeRemoteTicket`` sends Botpress's
    id of a conversation we know by the remote id we issued: the sink resolves it.
    """
    session = HitlSession.objects.filter(integration=integration, botpress_conversation_id=conversation_id).first()
    if session is not None:
        return session
    sink = integration_botpress_sink(integration=integration, in_request=True)
    resolved = _botpress_call(sink.conversation_resolve, conversation_id)
    return session_for_conversation(integration=integration, conversation_id=resolved or conversation_id)


@transaction.atomic
def session_stop(
    *,
    session: HitlSession,
    stopped_by: str,
    reason: str = "",
    close_ticket: bool,
    notify_botpress: bool,
    now: datetime | None = None,
) -> HitlSession:
    """End the session once; later stops (a duplicate webhook, a racing stopHitl) change nothing.

    Botpress stopping a session no agent took yet (the user left) leaves a note on the ticket
    before it is closed, so the agents know why it closed unanswered.
    """
    session = locked_sessions().get(pk=session.pk)
    if session.status == SessionStatus.STOPPED:
        return session
    if stopped_by == StoppedBy.BOTPRESS and close_ticket and session.status == SessionStatus.PENDING:
        session_bot_note(session=session, text=USER_LEFT_NOTE)
    now = now or timezone.now()
    session.status, session.stopped_at, session.last_activity_at = SessionStatus.STOPPED, now, now
    session.stopped_by, session.stop_reason = stopped_by, reason
    session.save(update_fields=["status", "stopped_at", "last_activity_at", "stopped_by", "stop_reason"])
    ticket_head_update_enqueue(session=session, state=SessionStatus.STOPPED)
    if close_ticket:
        delivery_enqueue(
            integration_id=session.integration_id,
            kind=DeliveryKind.TICKET_CLOSE,
            direction=Direction.TO_AGENT,
            session=session,
        )
    if notify_botpress:
        delivery_enqueue(
            integration_id=session.integration_id,
            kind=DeliveryKind.EVENT_TO_USER,
            direction=Direction.TO_USER,
            session=session,
            payload={"event": EVENT_STOPPED},
        )
    return session


# Botpress message types whose URL the help-desk adapter may fetch (to attach the file).
MEDIA_TYPES = frozenset({"image", "audio", "video", "file"})


def _carries_media(type: str, payload: dict) -> bool:
    """Whether relaying this message may fetch media (slow, user-chosen hosts): it gets its own queue."""
    if type == "bloc":
        return any(isinstance(item, dict) and item.get("type") in MEDIA_TYPES for item in payload.get("items") or [])
    return type in MEDIA_TYPES


def _bot_text(*, session: HitlSession, text: str, direction: str, kind: str) -> Message:
    message = Message.objects.create(session=session, direction=direction, type="text", payload={"text": text})
    delivery_enqueue(
        integration_id=session.integration_id, kind=kind, direction=direction, session=session, message=message
    )
    return message


def session_bot_note(*, session: HitlSession, text: str) -> Message:
    """Post ``text`` to the ticket as the bot, after what the lane already holds (the ticket
    creation, earlier messages) and before any close: why the gateway did something."""
    return _bot_text(session=session, text=text, direction=Direction.TO_AGENT, kind=DeliveryKind.MESSAGE_TO_AGENT)


def session_bot_message_to_user(*, session: HitlSession, text: str) -> Message:
    """Send ``text`` to the end user as the bot (a to-user message without an agent author).

    It does not count as activity (``last_activity_at`` stays): a warning must not put off the
    timeout it warns of.
    """
    return _bot_text(session=session, text=text, direction=Direction.TO_USER, kind=DeliveryKind.MESSAGE_TO_USER)


# "Is this Botpress message stored already?" (the partial unique index of that pair answers it),
# compiled once per thread: built per call, it was a fifth of the web tier's CPU per bot message.
_BOT_MESSAGE = CompiledQuery(
    lambda session_id, botpress_message_id: Message.objects.filter(
        session_id=session_id, direction=Direction.TO_AGENT, botpress_message_id=botpress_message_id
    ).order_by("pk")[:1]
)


def message_relay_to_agent(
    *,
    integration: Integration,
    conversation_id: str,
    type: str,
    payload: dict,
    botpress_message_id: str = "",
    sender_user_id: str = "",
    acknowledge: bool = False,
) -> tuple[Message, bool]:
    """Accept a channel message for the agent; the same Botpress message twice is one message.

    The author is ``payload.userId`` (the plugin's "real author"), else the sender, else the bot.
    ``acknowledge``: once posted, tag the Botpress message with the help desk's id, as
    Botpress's integrations acknowledge the messages Botpress hands them (the wire protocol).
    Returns the message and whether it was new.

    A message is written only while its session is open, as a stop sees it. On PostgreSQL the
    message, its outbox row and the session's activity are one statement that locks the session
    and checks its status again (``_open_session_sql``): two round trips in all with the session's
    read, where a transaction of its own took five. Elsewhere the same, in a transaction that
    reads the session locked.
    """
    one_statement = connection.vendor == "postgresql"
    with contextlib.nullcontext() if one_statement else transaction.atomic():
        session = session_for_conversation(
            integration=integration, conversation_id=conversation_id, lock=not one_statement, with_end_user=True
        )
        if session.status == SessionStatus.STOPPED:
            return _message_after_stop(session=session, botpress_message_id=botpress_message_id)
        author, author_id = None, payload.get("userId") or sender_user_id
        if author_id and author_id == session.end_user.botpress_user_id:
            author = session.end_user  # the usual author: the session's own end user, already read
        elif author_id:
            author = EndUser.objects.filter(integration=integration, botpress_user_id=author_id).first()
        if author is None and payload.get("userId"):
            raise InvalidInput("Unknown user.", field="payload.userId")
        message = Message(
            session=session,
            direction=Direction.TO_AGENT,
            type=type,
            payload=payload,
            author_end_user=author,
            botpress_message_id=botpress_message_id,
        )
        activity = _activity_then(session)
        # The same Botpress message again finds the unique index taken: no statement to look first.
        written = message_delivery_enqueue(
            message=message,
            kind=DeliveryKind.MESSAGE_TO_AGENT,
            payload={"acknowledge": True} if acknowledge and botpress_message_id else None,
            queue=settings.HITL["MEDIA_QUEUE"] if _carries_media(type, payload) else "",
            skip_conflicts=bool(botpress_message_id),
            guard=(_open_session_sql(), [session.pk, SessionStatus.STOPPED]) if one_statement else None,
            then=activity,
        )
        if written is None:  # stopped since it was read
            return _message_after_stop(session=session, botpress_message_id=botpress_message_id)
        if not written:
            return _BOT_MESSAGE.first(session_id=session.pk, botpress_message_id=botpress_message_id), False
        _activity_written(session, activity)
        return message, True


def _message_after_stop(*, session: HitlSession, botpress_message_id: str) -> tuple[Message, bool]:
    """A bot message for a stopped session: the same Botpress message sent again after the stop
    was accepted before (that message, not new); any other is refused (``Conflict``)."""
    existing = botpress_message_id and _BOT_MESSAGE.first(
        session_id=session.pk, botpress_message_id=botpress_message_id
    )
    if existing:
        return existing, False
    raise Conflict("The HITL session is stopped.", field="conversationId")


@functools.cache
def _open_session_sql() -> str:
    """A bot message's guard (``rows_insert_linked``): its session, locked, if not stopped.
    Parameters: the session's key and the stopped status. A stop locks the same row."""
    quote = connection.ops.quote_name
    meta = HitlSession._meta
    table, key, status = quote(meta.db_table), quote(meta.pk.column), quote(meta.get_field("status").column)
    return f"SELECT {key} FROM {table} WHERE {key} = %s AND {status} <> %s FOR NO KEY UPDATE"  # noqa: S608


def _activity_then(session: HitlSession) -> tuple[str, list] | None:
    """On PostgreSQL, the ``then`` of a message's insert (``rows_insert_linked``) that marks the
    session's last activity in the same statement, only if the message is written; None when
    it is not due (``_activity_due``) or elsewhere. Why: it was a statement of its own after the
    message's. Once the message is written, ``_activity_written``."""
    at = _activity_due(session) if connection.vendor == "postgresql" else None
    return (_activity_touch_sql(), [at, session.pk]) if at else None


def _activity_written(session: HitlSession, then: tuple[str, list] | None) -> None:
    """After a message's write: the session in memory as ``then`` marked it, or, where none
    could (the embedded SQLite), the activity recorded by a statement of its own."""
    if then:
        session.last_activity_at = then[1][0]
    elif connection.vendor != "postgresql":
        _activity_record(session)


@functools.cache
def _activity_touch_sql() -> str:
    quote = connection.ops.quote_name
    meta = HitlSession._meta
    table, key, column = quote(meta.db_table), quote(meta.pk.column), quote(meta.get_field("last_activity_at").column)
    # GREATEST: two messages at once read the session unlocked; the later time stays.
    return (
        f"UPDATE {table} SET {column} = GREATEST({column}, %s) WHERE {key} = %s "  # noqa: S608
        "AND EXISTS (SELECT 1 FROM parent)"
    )


# --- help desk → gateway --------------------------------------------------------------------
@dataclass
class BatchReads:
    """The rows a batch of webhooks applied in one transaction without savepoints reads once
    (``session_events_apply(isolated=False, reads=...)``): sessions by ticket, agents by id.

    Why: each agent reply of a ticket's batch read the same locked session and the same agent
    again, two of its five statements. Sound only there: the session's row stays locked from
    its first read to the commit, what an agent reply changes in it goes through the object kept
    here (``session_assign``, ``_activity_record``), and a failure rolls the whole batch back,
    these objects with it (``EventFailed``). Any other kind of event (a stop re-reads and
    rewrites the session) drops its session, which the next event reads again.
    """

    sessions: dict[tuple, HitlSession] = field(default_factory=dict)
    agents: dict[tuple, HumanAgent] = field(default_factory=dict)


# The ticket's session, locked, in one statement (the lock is taken on the session only).
# (At most one row: the ticket's id is unique per integration, so no ORDER BY.)
_TICKET_SESSION = CompiledQuery(
    lambda integration_id, ticket: (
        locked_sessions().filter(ticket__integration_id=integration_id, ticket__external_id=ticket).order_by()[:1]
    )
)


def session_for_ticket(
    *, integration: Integration, event: InboundEvent, reads: BatchReads | None = None
) -> HitlSession | None:
    """The session a ticket belongs to, or None when it is not a gateway ticket.

    Looked up by ticket id, else by the reference we stored on the ticket (the conversation
    id): a webhook can arrive before the delivery that created the ticket has committed.
    The fallback serves only that race, a session without a Ticket row: once a session has its
    ticket, another ticket naming its conversation (any provider, any event kind) is foreign,
    and must neither relay into, assign nor stop it. ``reads``: see ``BatchReads``.
    """
    key = (integration.pk, event.ticket_external_id)
    if reads is not None and key in reads.sessions:
        return reads.sessions[key]
    found = _TICKET_SESSION.first(integration_id=integration.pk, ticket=event.ticket_external_id)
    if found is not None:
        if reads is not None:  # (not a session found by reference: its ticket may commit meanwhile)
            reads.sessions[key] = found
        return found
    if event.reference:
        return (
            locked_sessions()
            .filter(integration=integration, botpress_conversation_id=event.reference)
            .exclude(Exists(Ticket.objects.filter(session=OuterRef("pk"))))
            .first()
        )
    return None


def _profile_fitted(profile: AgentProfile) -> AgentProfile:
    """The profile within the columns: a long name is cut, a long email or picture URL dropped.

    A help desk may describe its agents with longer values than we store; a cut address would
    be a wrong one, and failing on it would lose the agent's message.
    """
    columns = {name: HumanAgent._meta.get_field(name).max_length for name in ("name", "email", "picture_url")}
    return AgentProfile(
        external_id=profile.external_id,
        name=profile.name[: columns["name"]],
        email=profile.email if len(profile.email) <= columns["email"] else "",
        picture_url=profile.picture_url if len(profile.picture_url) <= columns["picture_url"] else "",
    )


_AGENT = CompiledQuery(
    lambda integration_id, external_id: HumanAgent.objects.filter(
        integration_id=integration_id, external_user_id=external_id
    ).order_by()[:1]
)


def human_agent_upsert(
    *, integration: Integration, profile: AgentProfile, reads: BatchReads | None = None
) -> HumanAgent:
    """Record the agent as the help desk describes them now; Botpress is updated on delivery.
    ``reads``: see ``BatchReads``."""
    profile = _profile_fitted(profile)
    key = (integration.pk, profile.external_id)
    agent = reads.agents.get(key) if reads is not None else None
    agent = agent or _AGENT.first(integration_id=integration.pk, external_id=profile.external_id)
    created = False
    if agent is None:  # a new agent (get_or_create: a concurrent webhook may be adding them too)
        agent, created = HumanAgent.objects.get_or_create(
            integration=integration,
            external_user_id=profile.external_id,
            defaults={"name": profile.name, "email": profile.email, "picture_url": profile.picture_url},
        )
    changed = {
        field: value
        for field, value in (("name", profile.name), ("email", profile.email), ("picture_url", profile.picture_url))
        if value and getattr(agent, field) != value
    }
    if changed and not created:
        for field, value in changed.items():
            setattr(agent, field, value)
        agent.save(update_fields=[*changed, "updated_at"])
    if reads is not None:
        reads.agents[key] = agent
    return agent


def ticket_head_update_enqueue(*, session: HitlSession, state: str, agent: HumanAgent | None = None) -> bool:
    """Have the ticket's head show ``state`` ("assigned", "stopped"), through the session's
    to-agent lane (so after the ticket exists); only for desks whose adapter has a head
    (``updates_ticket_head``, such as Slack's root message), so others pay nothing."""
    if not provider_class(session.integration.provider).updates_ticket_head:
        return False
    delivery_enqueue(
        integration_id=session.integration_id,
        kind=DeliveryKind.TICKET_HEAD_UPDATE,
        direction=Direction.TO_AGENT,
        session=session,
        payload={"state": str(state), "agent_name": agent.name if agent else ""},
    )
    return True


# The ticket's state as the help desk's events tell it, in the gateway's words (every desk's
# "assigned" and "solved"/"resolved"/"closed" events are ``InboundEvent`` kinds "assigned" and
# "stopped"); a close the gateway asks for writes "closed" (``deliveries``).
TICKET_ASSIGNED, TICKET_SOLVED = "assigned", "solved"


def ticket_status_record(*, session: HitlSession, status: str) -> None:
    """Keep the stored ticket status current from the events we receive (the operators' page
    shows it), instead of the status the desk answered when the ticket was created."""
    Ticket.objects.filter(session=session).exclude(status=status).update(status=status, updated_at=timezone.now())


def session_assign(*, session: HitlSession, agent: HumanAgent) -> bool:
    """Assign the agent and tell Botpress, unless nothing changes (concurrent or repeated webhooks)."""
    if session.status == SessionStatus.STOPPED or (
        session.status == SessionStatus.ASSIGNED and session.agent_id == agent.pk
    ):
        return False
    now = timezone.now()
    session.agent, session.status, session.last_activity_at = agent, SessionStatus.ASSIGNED, now
    session.assigned_at = session.assigned_at or now
    session.save(update_fields=["agent", "status", "assigned_at", "last_activity_at"])
    ticket_head_update_enqueue(session=session, state=SessionStatus.ASSIGNED, agent=agent)
    # Once committed: a batch of webhooks rolled back and applied again observes it once.
    transaction.on_commit(lambda: metrics.session_assignment_observe(session=session, at=now))
    delivery_enqueue(
        integration_id=session.integration_id,
        kind=DeliveryKind.EVENT_TO_USER,
        direction=Direction.TO_USER,
        session=session,
        payload={"event": EVENT_ASSIGNED, "agent_id": agent.pk},
    )
    return True


# Whether an agent's message is one we know (relayed, or posted by us: a message or the
# transcript), and whether an agent replied in the session before.
_REPLY_KNOWN = CompiledQuery(
    lambda session_id, message_id: (
        HitlSession.objects.filter(pk=session_id)
        .annotate(
            known=Exists(Message.objects.filter(session=OuterRef("pk"), external_message_id=message_id))
            | Exists(Ticket.objects.filter(session=OuterRef("pk"), initial_message_id=message_id)),
            replied=Exists(
                Message.objects.filter(session=OuterRef("pk"), direction=Direction.TO_USER, author_agent__isnull=False)
            ),
        )
        .values_list("known", "replied")
        .order_by()[:1]
    )
)


ACTIVITY_RESOLUTION = timedelta(seconds=1)


def _activity_due(session: HitlSession) -> datetime | None:
    """The time to record as the session's last activity for a message now, or None when it
    need not be written (see ``_activity_record``)."""
    now, last, warned = timezone.now(), session.last_activity_at, session.inactivity_warned_for
    if last and timedelta(0) <= now - last < ACTIVITY_RESOLUTION and not (warned and warned >= last):
        return None
    return now


def _activity_record(session: HitlSession) -> None:
    """A message went through the session now (the inactivity timers count from here).

    ``session`` is the row as read under its lock. Written at most once a second: the timers
    count minutes, and a burst of messages would otherwise write the session row for each. Always
    written after an inactivity warning for the last activity, which this message answers.
    """
    now = _activity_due(session)
    if now is not None:
        session.last_activity_at = now
        row_update(session, ["last_activity_at"])


def agent_reply_receive(*, session: HitlSession, agent: HumanAgent, event: InboundEvent) -> Message | None:
    """Relay an agent's message once, whatever number of webhooks carry it; return its first message.

    Each part (text, image, file...) becomes one message, in the agent's order, with its own
    external id: the help desk's message id for the first, ``<message id>:<n>`` after, so the unique index
    dedups a re-sent webhook part by part. A media part's delivery re-hosts the file first.
    A reply before any assignment assigns the agent first, so Botpress always knows who speaks.
    """
    if session.status == SessionStatus.STOPPED:
        return None
    # A "solved" webhook may carry the ticket's latest public message whoever wrote it: it may be
    # one we posted (an end-user or bot message, or the transcript), or one already relayed.
    # One statement answers that and whether an agent replied before (the first-reply metric).
    known, replied_before = _REPLY_KNOWN.first(session_id=session.pk, message_id=event.message_external_id)
    if known:
        return None
    parts = event.parts or ((MessagePart(kind="text", text=event.text),) if event.text else ())
    if not parts:
        return None
    if session.status == SessionStatus.PENDING:
        session_assign(session=session, agent=agent)
    # No savepoint of its own: the same message committed meanwhile by a concurrent webhook
    # (an operator's re-apply) breaks the unique index, which rolls back the caller's savepoint
    # for this event (``session_events_apply``), and that event reads as already relayed.
    messages = [
        (
            Message(
                session=session,
                direction=Direction.TO_USER,
                type=message_type,
                payload=payload,
                author_agent=agent,
                external_message_id=event.message_external_id + (f":{index}" if index else ""),
            ),
            media,
        )
        for index, (message_type, payload, media) in enumerate(map(_part_message, parts))
    ]
    # Each part and its outbox row in one statement; on PostgreSQL the first also marks the
    # session's activity when due (elsewhere a statement of its own).
    activity = _activity_then(session)
    for index, (message, media) in enumerate(messages):
        message_delivery_enqueue(
            message=message,
            kind=DeliveryKind.MESSAGE_TO_USER,
            payload={"media": media} if media else None,
            then=None if index else activity,
        )
    _activity_written(session, activity)
    first = messages[0][0]
    transaction.on_commit(lambda: metrics.agent_reply_observe(session=session, message=first, first=not replied_before))
    return first


def _part_message(part: MessagePart) -> tuple[str, dict, dict | None]:
    """A part as a Botpress message (type, payload) and, for media, what its delivery re-hosts.

    A media part's URL is the help desk's until the delivery replaces it with the re-hosted one;
    its type is guessed from the name here and corrected from the downloaded content type.
    """
    if part.kind != "media":
        return "text", {"text": part.text}, None
    kind = media_kind(part.content_type, part.filename)
    media = {"url": part.url, "filename": part.filename, "content_type": part.content_type, "alt": part.alt}
    title = part.alt or part.filename
    return kind, {MEDIA_URL_FIELDS[kind]: part.url} | ({"title": title} if title else {}), media


@dataclass(frozen=True)
class EventsApplied:
    """What applying one webhook's events did.

    ``session``: the (last) session they concerned; ``detail``: one outcome per event;
    ``failures``: ``[{"index", "kind", "reason"}]``, the events that failed for good.
    """

    session: HitlSession | None
    detail: str
    failures: list[dict] = field(default_factory=list)


def _stopped_reply_tell(*, integration: Integration, event: InboundEvent) -> None:
    """An agent replied on the ticket of a stopped session: let the desk tell them, once this
    webhook's changes are committed. Best effort: a courtesy note, logged when it fails."""

    def tell() -> None:
        try:
            integration_provider(integration=integration).ticket_stopped_reply(
                ticket_external_id=event.ticket_external_id, event=event
            )
        except OutboundError as exc:
            log.warning("webhook.stopped_reply_note_failed", ticket=event.ticket_external_id, error=str(exc)[:200])

    transaction.on_commit(tell)


def _agent_message_committed_meanwhile(exc: Exception) -> bool:
    """Whether ``exc`` is the unique index on an agent's message id: the same message was
    stored by a concurrent apply of another webhook carrying it (nothing failed)."""
    cause = exc.__cause__ if isinstance(exc, IntegrityError) else None
    diag = getattr(cause, "diag", None)
    return getattr(diag, "constraint_name", None) == "message_unique_external_to_user" or (
        isinstance(exc, IntegrityError) and connection.vendor != "postgresql" and "external_message_id" in str(exc)
    )


def _event_apply(
    *, integration: Integration, session: HitlSession, event: InboundEvent, reads: BatchReads | None
) -> str:
    if event.kind == "agent_message":
        agent = human_agent_upsert(integration=integration, profile=event.agent, reads=reads)
        if session.status == SessionStatus.STOPPED:
            _stopped_reply_tell(integration=integration, event=event)
        relayed = agent_reply_receive(session=session, agent=agent, event=event)
        return f"agent_message: {'relayed' if relayed else 'already relayed or session stopped'}"
    if event.kind == "assigned":
        agent = human_agent_upsert(integration=integration, profile=event.agent, reads=reads)
        changed = session_assign(session=session, agent=agent)
        if changed:
            ticket_status_record(session=session, status=TICKET_ASSIGNED)
        return f"assigned: {'changed' if changed else 'no change'}"
    if event.kind == "stopped":
        ticket_status_record(session=session, status=TICKET_SOLVED)
        session_stop(
            session=session,
            stopped_by=StoppedBy.AGENT,
            reason="ticket solved in the help desk",
            close_ticket=False,
            notify_botpress=True,
        )
        return "stopped"
    raise ValueError(f"unknown event kind {event.kind!r}")


class EventFailed(Exception):
    """An event failed while applied without a savepoint of its own
    (``session_events_apply(isolated=False)``): the caller's transaction is spoiled and must be
    rolled back, then applied again isolated, where the failure is recorded as usual."""


# No savepoint of its own inside a caller's transaction (the webhook's): an exception leaving
# here leaves that transaction too, and each event has its savepoint below (when isolated).
@transaction.atomic(savepoint=False)
def session_events_apply(
    *,
    integration: Integration,
    events: list[InboundEvent],
    only: Collection[int] | None = None,
    isolated: bool = True,
    reads: BatchReads | None = None,
) -> EventsApplied:
    """Apply what one webhook said, in order (a solve relays its last message before stopping).

    Each event is sanitised (``providers.text``) and applied in its own savepoint, so one that
    fails cannot drop the others nor block a stop. A transient failure (database connection,
    deadlock, broker) is raised, so the whole webhook is retried; any other is recorded in
    ``failures`` and flags the session as needing attention. ``only``: the indexes of the
    events to apply (an operator's re-apply of those that failed); the others are skipped.

    ``isolated=False`` applies the events without their savepoints (two statements each,
    SAVEPOINT and RELEASE: 7.5 → 5.5 statements per agent reply applied in batches of 16, and
    about a tenth of their CPU, measured) and raises
    ``EventFailed`` instead of recording a failure: for a caller that then rolls back and
    applies again isolated, which is only safe when nothing here called anyone but the database.
    ``reads``: rows kept across the webhooks of such a batch (``BatchReads``); ignored isolated.
    """
    session, outcomes, failures, flagged = None, [], [], set()
    reads = None if isolated else reads
    for index, event in enumerate(events):
        if only is not None and index not in only:
            continue
        event, found = value_sanitize(event), None
        try:
            with transaction.atomic() if isolated else contextlib.nullcontext():
                found = session_for_ticket(integration=integration, event=event, reads=reads)
                outcome = (
                    _event_apply(integration=integration, session=found, event=event, reads=reads)
                    if found
                    else f"{event.kind}: not a gateway ticket"
                )
                if reads is not None and event.kind != "agent_message":
                    reads.sessions.clear()  # its session may have been re-read and rewritten
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # recorded with its reason (isolated), re-appliable from the admin
            if not isolated:
                raise EventFailed(f"event {index} ({event.kind})") from exc
            if _agent_message_committed_meanwhile(exc):
                outcomes.append(f"{event.kind}: already relayed")
                session = found or session
                continue
            reason = text_sanitize(f"{type(exc).__name__}: {exc}")[:500]
            log.warning("webhook.event_failed", kind=event.kind, index=index, reason=reason)
            failures.append({"index": index, "kind": event.kind, "reason": reason})
            outcome = f"{event.kind}: failed: {reason}"
            if found is not None:
                flagged.add(found.pk)
        session = found or session
        outcomes.append(outcome)
    if flagged:
        HitlSession.objects.filter(pk__in=flagged).update(needs_attention=True)
    return EventsApplied(session, "; ".join(outcomes) or "nothing to relay", failures)
