"""What each kind of outbox row does, one executor per ``DeliveryKind``.

Executors run holding the lane head's lease: they call one adapter, write what it returned
(ticket, message id, Botpress ids; a message's Botpress id with the attempt's record,
``outbox.attempt_write``) and raise ``outbound.http`` errors for the outbox to retry. Every
step is safe to repeat: ticket creation carries an idempotency key and is looked up by our
reference after a lost answer, user upserts are keyed by external id, Botpress messages are
get-or-create on the help desk's message id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from django.db import transaction

from botpress.sink import EXTERNAL_MESSAGE_TAG, MEDIA_URL_FIELDS, TICKET_TAG, AgentRef, BotpressSink
from hitl_gateway.compiled import CompiledQuery, row_update
from outbound.http import PermanentError, RetryableError
from providers.base import AttachmentUnavailable, ExternalUserSpec, OutboundMessage, TicketSpec
from providers.html_parts import media_kind
from providers.rendering import transcript_render
from sessions_app.models import (
    Delivery,
    DeliveryKind,
    Direction,
    EndUser,
    HitlSession,
    HumanAgent,
    Integration,
    Message,
    Ticket,
)
from sessions_app.services.integrations import (
    integration_bot_reference,
    integration_botpress_sink,
    integration_provider,
)
from sessions_app.services.outbox import DeliverySkipped, attempt_write, delivery_enqueue
from sessions_app.services.sessions import EVENT_ASSIGNED
from sessions_app.services.webhooks import webhook_doorbells_reread

DEFAULT_BOT_NAME = "Botpress"
# After this many attempts a download that keeps failing transiently is given up: the end user
# gets a note instead, and the messages after it in the session's lane are no longer held up.
MEDIA_MAX_DOWNLOAD_ATTEMPTS = 5


# --- help-desk side -------------------------------------------------------------------------
def _external_user_ensure(end_user: EndUser) -> str:
    if not end_user.external_user_id:
        spec = ExternalUserSpec(
            reference=end_user.botpress_user_id,
            name=end_user.name,
            email=end_user.email,
            picture_url=end_user.picture_url,
        )
        end_user.external_user_id = integration_provider(integration=end_user.integration).external_user_upsert(spec)
        end_user.save(update_fields=["external_user_id", "updated_at"])
    return end_user.external_user_id


def _helpdesk_bot_user_ensure(integration: Integration, *, name: str = "", picture_url: str = "") -> str:
    """The help desk's user for the bot; rewritten only when a session brings a new name or photo."""
    if integration.helpdesk_bot_user_id and not name and not picture_url:
        return integration.helpdesk_bot_user_id
    spec = ExternalUserSpec(
        reference=integration_bot_reference(integration=integration),
        name=name or DEFAULT_BOT_NAME,
        picture_url=picture_url,
    )
    integration.helpdesk_bot_user_id = integration_provider(integration=integration).external_user_upsert(spec)
    Integration.objects.filter(pk=integration.pk).update(helpdesk_bot_user_id=integration.helpdesk_bot_user_id)
    return integration.helpdesk_bot_user_id


def execute_external_user_sync(delivery: Delivery) -> dict:
    end_user = EndUser.objects.select_related("integration").get(pk=delivery.payload["end_user_id"])
    return {"external_user_id": _external_user_ensure(end_user)}


def _ticket_body(session: HitlSession, bot_name: str) -> str:
    intro = session.description.strip() or f"Someone opened a ticket using your {bot_name} chatbot."
    if not session.message_history:
        return intro
    names = dict(
        EndUser.objects.filter(integration_id=session.integration_id)
        .filter(botpress_user_id__in={h.get("source", {}).get("userId") for h in session.message_history})
        .values_list("botpress_user_id", "name")
    )
    transcript = transcript_render(
        session.message_history, user_name=lambda uid: names.get(uid, "User"), bot_name=bot_name
    )
    return f"{intro}\n\n---\n\n{transcript}"


def execute_ticket_create(delivery: Delivery) -> dict:
    session = HitlSession.objects.select_related("integration", "end_user__integration").get(pk=delivery.session_id)
    if Ticket.objects.filter(session=session).exists():
        raise DeliverySkipped("the ticket already exists")
    extras = session.extras
    bot_name = extras.get("chatbotName") or DEFAULT_BOT_NAME
    if extras.get("chatbotName") or extras.get("chatbotPhotoUrl"):
        _helpdesk_bot_user_ensure(session.integration, name=bot_name, picture_url=extras.get("chatbotPhotoUrl", ""))
    spec = TicketSpec(
        requester_external_id=_external_user_ensure(session.end_user),
        subject=session.title or "Untitled Ticket",
        body=_ticket_body(session, bot_name),
        reference=session.botpress_conversation_id,
        extras=extras,
        requester_name=session.end_user.name,
        requester_email=session.end_user.email,
    )
    provider = integration_provider(integration=session.integration)
    # The desk's idempotency key (where it has one) covers quick retries; after an attempt with an unknown outcome
    # we also look the ticket up by our reference, which holds however long the outage lasted.
    ref = (delivery.maybe_delivered and provider.ticket_find(reference=spec.reference)) or provider.ticket_create(
        spec, idempotency_key=str(delivery.idempotency_key)
    )
    with transaction.atomic():
        Ticket.objects.create(
            session=session,
            integration=session.integration,
            external_id=ref.external_id,
            url=ref.url,
            status=ref.status,
            priority=ref.priority,
            initial_message_id=ref.initial_message_id,
        )
        webhook_doorbells_reread(integration=session.integration, ticket_external_id=ref.external_id)
        # The conversation carries the ticket id, as with Botpress's own help-desk integrations.
        if integration_botpress_sink(integration=session.integration, in_request=False).tags_conversations:
            delivery_enqueue(
                integration_id=session.integration_id,
                kind=DeliveryKind.CONVERSATION_TAG,
                direction=Direction.TO_USER,
                session=session,
            )
    return {"ticket_id": ref.external_id}


# The session's ticket with its integration, session and end user: one statement.
_TICKET = CompiledQuery(
    lambda session_id: (
        Ticket.objects.filter(session_id=session_id)
        .select_related("integration", "session", "session__end_user")
        .order_by("pk")[:1]
    )
)


def _ticket_of(delivery: Delivery) -> Ticket:
    """The session's ticket with its integration, session and end user.

    The outbox reads them with the claimed delivery (``outbox._CLAIMED``), so a bot message
    costs no read of its own; a delivery read otherwise (tests, tools) costs one statement.
    """
    session = Delivery.session.is_cached(delivery) and delivery.session
    if session and HitlSession.ticket.is_cached(session):
        ticket = getattr(session, "ticket", None)  # None: the reverse join found no ticket
        if ticket is not None:
            ticket.integration = session.integration  # the same row, decrypted once
    else:
        ticket = _TICKET.first(session_id=delivery.session_id)
    if ticket is None:
        raise DeliverySkipped("the session has no ticket (its creation failed)")
    return ticket


def execute_message_to_agent(delivery: Delivery) -> dict:
    ticket = _ticket_of(delivery)
    message = delivery.message
    if message.external_message_id:  # posted by an earlier attempt: only the acknowledgement is left
        return _message_acknowledge(delivery, message, ticket.integration)
    if message.author_end_user_id:
        end_user = ticket.session.end_user  # the author, read with the ticket
        if end_user.pk != message.author_end_user_id:  # (never seen: a session has one end user)
            end_user = EndUser.objects.get(pk=message.author_end_user_id)
        end_user.integration = ticket.integration  # the same row, decrypted once
        author, author_name = _external_user_ensure(end_user), end_user.name
        author_picture_url = end_user.picture_url
    else:
        author = _helpdesk_bot_user_ensure(ticket.integration)
        author_name = _bot_name(ticket.session)
        extras = ticket.session.extras if isinstance(ticket.session.extras, dict) else {}
        author_picture_url = str(extras.get("chatbotPhotoUrl") or "")
    provider = integration_provider(integration=ticket.integration)
    outbound = OutboundMessage(
        type=message.type,
        payload=message.payload,
        author_external_id=author,
        author_name=author_name,
        author_picture_url=author_picture_url,
    )
    posted_id = None
    if delivery.maybe_delivered:  # a lost attempt may have posted it: adopt that message
        known = set(
            Message.objects.filter(session_id=delivery.session_id, direction=Direction.TO_AGENT)
            .exclude(external_message_id="")
            .values_list("external_message_id", flat=True)
        )
        posted_id = provider.message_find(ticket_external_id=ticket.external_id, message=outbound, exclude=known)
    posted_id = posted_id or provider.message_post(ticket_external_id=ticket.external_id, message=outbound)
    message.external_message_id = posted_id
    # Written now, not with the attempt (``attempt_write``): were it lost (the worker killed before
    # its settle, the settle failing), only ``message_find`` would stand between a retry and a
    # second post, and it matches by content, which a desk may reformat.
    row_update(message, ["external_message_id"])
    return _message_acknowledge(delivery, message, ticket.integration)


def _bot_name(session: HitlSession) -> str:
    """The bot's display name in this session: the ``chatbotName`` it gave, else the default."""
    extras = session.extras if isinstance(session.extras, dict) else {}
    name = extras.get("chatbotName")
    return name if isinstance(name, str) and name.strip() else DEFAULT_BOT_NAME


def _message_acknowledge(delivery: Delivery, message: Message, integration: Integration) -> dict:
    """Tag the Botpress message with the help desk's message id, as Botpress's integrations acknowledge.

    Only for messages handed over by the wire protocol. The message id is saved first (the
    executor runs outside a transaction), so a failed acknowledgement is retried on its own
    and never posts the message twice.
    """
    result = {"external_message_id": message.external_message_id}
    if delivery.payload.get("acknowledge") and message.botpress_message_id:
        integration_botpress_sink(integration=integration, in_request=False).message_acknowledge(
            message_id=message.botpress_message_id, tags={EXTERNAL_MESSAGE_TAG: message.external_message_id}
        )
        result["acknowledged"] = message.botpress_message_id
    return result


def execute_ticket_close(delivery: Delivery) -> dict:
    ticket = _ticket_of(delivery)
    integration_provider(integration=ticket.integration).ticket_close(ticket_external_id=ticket.external_id)
    ticket.status = "closed"
    ticket.save(update_fields=["status", "updated_at"])
    return {"ticket_id": ticket.external_id}


def execute_ticket_head_update(delivery: Delivery) -> dict:
    """Show the session's state on the ticket's head (enqueued only for adapters that have one)."""
    ticket = _ticket_of(delivery)
    state, agent_name = delivery.payload["state"], delivery.payload.get("agent_name", "")
    integration_provider(integration=ticket.integration).ticket_head_update(
        ticket_external_id=ticket.external_id, state=state, agent_name=agent_name
    )
    return {"ticket_id": ticket.external_id, "state": state}


# --- Botpress side --------------------------------------------------------------------------
def _agent_ref(sink: BotpressSink, agent: HumanAgent) -> AgentRef:
    """The agent as the sink names them; their Botpress user is written the first time and when
    the profile changed, else no call."""
    profile = {"name": agent.name, "email": agent.email, "picture_url": agent.picture_url}
    ref = AgentRef(
        external_id=agent.external_user_id,
        name=agent.name,
        email=agent.email,
        picture_url=agent.picture_url,
        botpress_user_id=agent.botpress_user_id,
    )
    if sink.keeps_agent_users and not (agent.botpress_user_id and agent.synced_profile == profile):
        agent.botpress_user_id, agent.synced_profile = sink.agent_user_sync(ref), profile
        agent.save(update_fields=["botpress_user_id", "synced_profile", "updated_at"])
        ref = replace(ref, botpress_user_id=agent.botpress_user_id)
    return ref


def execute_message_to_user(delivery: Delivery) -> dict:
    """Relay one part of an agent's message; a media part is first re-hosted in Botpress.

    Only media parts (``delivery.payload["media"]``) download and upload; a text reply costs
    the one Botpress call.
    """
    message, session = delivery.message, delivery.session  # read with the lease (outbox)
    sink = integration_botpress_sink(integration=session.integration, in_request=False)
    media = delivery.payload.get("media")
    if media and not media.get("done"):
        _media_rehost(delivery, message, session, sink)
    if message.author_agent_id:
        author = _agent_ref(sink, message.author_agent)  # read with the lease, without its integration
    else:  # the gateway speaking as the bot (a lifecycle policy's message)
        author = sink.bot_author(bot_user_id=session.integration.botpress_bot_user_id, name=DEFAULT_BOT_NAME)
    botpress_message_id = sink.message_send(
        conversation_id=session.botpress_conversation_id,
        author=author,
        type=message.type,
        payload=message.payload,
        # The bot's messages have no help-desk id: the delivery's key makes the send repeatable.
        external_message_id=message.external_message_id or f"gateway:{delivery.idempotency_key}",
    )
    if botpress_message_id:
        message.botpress_message_id = botpress_message_id
        attempt_write(row=message, fields=["botpress_message_id"])
    return {"botpress_message_id": botpress_message_id}


def _media_rehost(delivery: Delivery, message: Message, session: HitlSession, sink: BotpressSink) -> None:
    """Put an agent's file where the end user can open it without help-desk credentials.

    Downloaded by the help-desk adapter (credentials only to its own host), stored public in
    the bot's Files API, and the message rewritten to point there. A file that cannot be
    transferred keeps its link when that link is public, else becomes a note naming it. The
    outcome is saved on the message and marked on the delivery, so a retry of the send does
    not transfer again. Transient failures raise for the outbox to retry.
    """
    media = delivery.payload["media"]
    filename = media.get("filename") or "attachment"
    try:
        file = integration_provider(integration=session.integration).attachment_download(url=media["url"])
        kind = media_kind(file.content_type, filename)
        key = f"hitl-gateway/{session.pk}/{message.pk}/{_safe_key(filename)}"
        url = sink.file_publish(key=key, content=file.content, content_type=file.content_type)
        message.type, message.payload = kind, _media_payload(kind, url, media)
    except AttachmentUnavailable as exc:
        _media_unavailable(message, media, link_ok=exc.link_ok)
    except PermanentError:  # Botpress refused to store it (or no token to store it with)
        _media_unavailable(message, media, link_ok=False)
    except RetryableError:
        if delivery.attempts < MEDIA_MAX_DOWNLOAD_ATTEMPTS:
            raise
        _media_unavailable(message, media, link_ok=False)
    message.save(update_fields=["type", "payload"])
    delivery.payload = {**delivery.payload, "media": {**media, "done": True}}
    Delivery.objects.filter(pk=delivery.pk).update(payload=delivery.payload)


def _media_unavailable(message: Message, media: dict, *, link_ok: bool) -> None:
    if link_ok:  # the original URL is public: the end user opens it there
        return
    kind = message.type if message.type in MEDIA_URL_FIELDS else "file"
    message.type = "text"
    message.payload = {"text": f"[{kind}: {media.get('filename') or 'attachment'} — could not be transferred]"}


def _media_payload(kind: str, url: str, media: dict) -> dict:
    title = media.get("alt") or media.get("filename") or ""
    return {MEDIA_URL_FIELDS[kind]: url} | ({"title": title} if title else {})


def _safe_key(filename: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", filename).strip("._")[:100] or "file"


def execute_conversation_tag(delivery: Delivery) -> dict:
    """Tag the Botpress conversation with the ticket id (tag ``id``); repeating it changes nothing."""
    ticket = _ticket_of(delivery)
    session = HitlSession.objects.select_related("integration").get(pk=delivery.session_id)
    sink = integration_botpress_sink(integration=session.integration, in_request=False)
    sink.conversation_tag(conversation_id=session.botpress_conversation_id, tags={TICKET_TAG: ticket.external_id})
    return {"tags": {TICKET_TAG: ticket.external_id}}


def execute_event_to_user(delivery: Delivery) -> dict:
    """Emit ``hitlAssigned``/``hitlStopped``; the sink names them as the integration does."""
    session = HitlSession.objects.select_related("integration").get(pk=delivery.session_id)
    event = delivery.payload["event"]
    sink = integration_botpress_sink(integration=session.integration, in_request=False)
    agent = None
    if event == EVENT_ASSIGNED:
        agent = _agent_ref(sink, HumanAgent.objects.select_related("integration").get(pk=delivery.payload["agent_id"]))
    event_id = sink.event_emit(event=event, conversation_id=session.botpress_conversation_id, agent=agent)
    return {"botpress_event_id": event_id}


EXECUTORS: dict[str, Callable[[Delivery], dict]] = {
    DeliveryKind.EXTERNAL_USER_SYNC: execute_external_user_sync,
    DeliveryKind.TICKET_CREATE: execute_ticket_create,
    DeliveryKind.MESSAGE_TO_AGENT: execute_message_to_agent,
    DeliveryKind.TICKET_CLOSE: execute_ticket_close,
    DeliveryKind.MESSAGE_TO_USER: execute_message_to_user,
    DeliveryKind.EVENT_TO_USER: execute_event_to_user,
    DeliveryKind.CONVERSATION_TAG: execute_conversation_tag,
    DeliveryKind.TICKET_HEAD_UPDATE: execute_ticket_head_update,
}
