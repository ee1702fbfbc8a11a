"""Nothing lost, nothing doubled: outages, refusals, retries and races.

The outage tests run end to end (live server, real worker, stand-ins injecting faults); the race
tests drive the services from concurrent threads on real PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connection, transaction

from providers.base import AgentProfile, InboundEvent
from sessions_app.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    EndUser,
    HitlSession,
    Message,
    SessionStatus,
    StoppedBy,
    Ticket,
)
from sessions_app.services import outbox
from sessions_app.services.errors import Conflict
from sessions_app.services.sessions import message_relay_to_agent, session_events_apply, session_stop
from tests.conftest import integration_for
from tests.e2e_desks import create_user as _create_user
from tests.e2e_desks import start_hitl as _start
from tests.e2e_desks import zendesk_ticket_for as _ticket_for


def _wait_settled(gateway, session, timeout=30):
    gateway.botpress.wait_for(
        lambda: not Delivery.objects.filter(session=session, status=DeliveryStatus.PENDING).exists(), timeout=timeout
    )


@pytest.mark.e2e
def test_start_hitl_succeeds_while_the_help_desk_is_down(gateway):
    zendesk = gateway.zendesk
    user_id = _create_user(gateway)
    zendesk.add_fault(method="POST", path=r"^/api/v2/tickets", kind="status", status=503)
    conversation_id = _start(gateway, user_id)
    for n in range(5):
        response = gateway.message(
            {"conversationId": conversation_id, "type": "text", "payload": {"text": f"m{n}", "userId": user_id}}
        )
        assert response.status_code == 202
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    head = zendesk.wait_for(
        lambda: (d := Delivery.objects.get(session=session, kind=DeliveryKind.TICKET_CREATE)).attempts >= 2 and d,
        timeout=20,
    )
    assert head.status == DeliveryStatus.PENDING and head.last_status_code == 503
    assert not zendesk.tickets() and Message.objects.filter(session=session).count() == 5

    zendesk.clear_faults()
    ticket = _ticket_for(gateway, conversation_id)
    comments = zendesk.wait_for(lambda: len(c := zendesk.comments(ticket["id"])) == 6 and c, timeout=30)
    assert [c["body"] for c in comments[1:]] == [f"m{n}" for n in range(5)], "the backlog follows, in order"
    assert len(zendesk.tickets()) == 1, "retries made one ticket (Idempotency-Key)"


@pytest.mark.e2e
def test_a_refused_ticket_ends_the_session_and_botpress_hears_it(gateway):
    user_id = _create_user(gateway)
    gateway.zendesk.add_fault(method="POST", path=r"^/api/v2/tickets", kind="status", status=422)
    conversation_id = _start(gateway, user_id)
    stopped = gateway.botpress.wait_for(lambda: gateway.botpress.events(type="hitlStopped"), timeout=20)
    assert stopped[0]["payload"] == {"conversationId": conversation_id}
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.HELPDESK_REFUSED
    assert "422" in session.stop_reason and session.needs_attention
    dead = Delivery.objects.get(session=session, kind=DeliveryKind.TICKET_CREATE)
    assert dead.status == DeliveryStatus.DEAD and dead.attempts == 1


@pytest.mark.e2e
def test_botpress_outage_delays_agent_replies_without_loss_or_reordering(gateway):
    botpress, zendesk = gateway.botpress, gateway.zendesk
    user_id = _create_user(gateway)
    conversation_id = _start(gateway, user_id)
    ticket = _ticket_for(gateway, conversation_id)
    agent_id = zendesk.add_agent("Grace Hopper", "grace@acme.test")
    zendesk.assign(ticket["id"], agent_id)
    botpress.wait_for(lambda: botpress.events(type="hitlAssigned"), timeout=20)

    botpress.add_fault(method="POST", path=r"^/v1/chat/messages", kind="rate_limit", retry_after=1, times=3)
    botpress.add_fault(method="POST", path=r"^/v1/chat/messages", kind="status", status=502, times=2)
    botpress.add_fault(method="POST", path=r"^/v1/chat/messages", kind="drop_after", times=1)
    for n in range(6):
        zendesk.agent_reply(ticket["id"], agent_id, f"reply {n}")
    texts = botpress.wait_for(
        lambda: len(m := botpress.messages(conversation_id=conversation_id)) >= 6 and [x["payload"]["text"] for x in m],
        timeout=45,
    )
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    _wait_settled(gateway, session)
    texts = [m["payload"]["text"] for m in botpress.messages(conversation_id=conversation_id)]
    assert texts == [f"reply {n}" for n in range(6)], "each reply once, in order, despite 429/502/lost answers"
    retried = Delivery.objects.filter(session=session, kind=DeliveryKind.MESSAGE_TO_USER, attempts__gt=1)
    assert retried.exists()


@pytest.mark.e2e
def test_lost_answers_from_zendesk_double_neither_ticket_nor_comment(gateway):
    """Zendesk stores the request but the answer is lost: the retry finds what was created."""
    zendesk = gateway.zendesk
    user_id = _create_user(gateway)
    zendesk.add_fault(method="POST", path=r"^/api/v2/tickets", kind="drop_after", times=1)
    conversation_id = _start(gateway, user_id)
    ticket = _ticket_for(gateway, conversation_id)
    zendesk.add_fault(method="PUT", path=rf"^/api/v2/tickets/{ticket['id']}", kind="drop_after", times=2)
    for n in range(4):
        gateway.message({"conversationId": conversation_id, "type": "text", "payload": {"text": f"m{n}"}})
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    _wait_settled(gateway, session)
    assert [c["body"] for c in zendesk.comments(ticket["id"])[1:]] == [f"m{n}" for n in range(4)]
    assert len([t for t in zendesk.tickets() if t["external_id"] == conversation_id]) == 1
    linked = Message.objects.filter(session=session).values_list("external_message_id", flat=True)
    assert sorted(linked) == sorted(str(c["id"]) for c in zendesk.comments(ticket["id"])[1:])


@pytest.mark.e2e
def test_steady_state_costs_one_call_each_way(gateway):
    """A known agent's reply costs one Botpress call; a bot text message one Zendesk call."""
    botpress, zendesk = gateway.botpress, gateway.zendesk
    user_id = _create_user(gateway)
    conversation_id = _start(gateway, user_id)
    ticket = _ticket_for(gateway, conversation_id)
    agent_id = zendesk.add_agent("Grace Hopper", "grace@acme.test")
    zendesk.agent_reply(ticket["id"], agent_id, "first reply creates the agent's Botpress user")
    botpress.wait_for(lambda: botpress.messages(conversation_id=conversation_id), timeout=20)
    gateway.message({"conversationId": conversation_id, "type": "text", "payload": {"text": "warm-up"}})
    zendesk.wait_for(lambda: len(zendesk.comments(ticket["id"])) == 3, timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    _wait_settled(gateway, session)

    botpress.clear_log()
    zendesk.clear_log()
    zendesk.agent_reply(ticket["id"], agent_id, "steady state")
    botpress.wait_for(lambda: len(botpress.messages(conversation_id=conversation_id)) == 2, timeout=20)
    _wait_settled(gateway, session)
    assert [(r["method"], r["path"]) for r in botpress.requests_log()] == [("POST", "/v1/chat/messages/get-or-create")]

    zendesk.clear_log()
    gateway.message({"conversationId": conversation_id, "type": "text", "payload": {"text": "bot says hi"}})
    zendesk.wait_for(lambda: len(zendesk.comments(ticket["id"])) == 5, timeout=20)
    _wait_settled(gateway, session)
    calls = [(r["method"], r["path"]) for r in zendesk.requests_log() if not r["path"].startswith("/__")]
    assert calls == [("PUT", f"/api/v2/tickets/{ticket['id']}.json")]


# --- races ----------------------------------------------------------------------------------
@pytest.fixture
def no_broker(monkeypatch):
    monkeypatch.setattr(outbox, "delivery_schedule", lambda **kwargs: None)
    monkeypatch.setattr(outbox, "_relay_send", lambda **kwargs: True)


@pytest.fixture
def live_session(transactional_db, no_broker):
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    end_user = EndUser.objects.create(integration=integration, botpress_user_id="user_1", name="Ada")
    session = HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id="conv_1")
    Ticket.objects.create(session=session, integration=integration, external_id="42")
    return session


def _concurrently(*calls):
    """Start the calls together (a barrier), each on its own connection, and wait for all."""
    barrier, errors = threading.Barrier(len(calls)), []

    def run(call):
        try:
            barrier.wait()
            call()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


GRACE = AgentProfile(external_id="7", name="Grace")


def _reply(comment_id="900", reference="conv_1", ticket="42"):
    return InboundEvent(
        kind="agent_message",
        ticket_external_id=ticket,
        reference=reference,
        agent=GRACE,
        message_external_id=comment_id,
        text="hello",
    )


@pytest.mark.parametrize("round_", range(5))
def test_stop_hitl_racing_an_agent_reply_ends_consistent(live_session, round_):
    integration = live_session.integration
    _concurrently(
        lambda: session_stop(
            session=live_session, stopped_by=StoppedBy.BOTPRESS, close_ticket=True, notify_botpress=False
        ),
        lambda: session_events_apply(integration=integration, events=[_reply()]),
    )
    session = HitlSession.objects.get(pk=live_session.pk)
    assert session.status == SessionStatus.STOPPED
    replies = Message.objects.filter(session=session, direction="to_user")
    closes = Delivery.objects.filter(session=session, kind=DeliveryKind.TICKET_CLOSE)
    assert closes.count() == 1
    if replies.exists():  # the reply won the race: it was accepted before the stop, and is delivered
        reply = replies.get()
        assert reply.created_at <= session.stopped_at and hasattr(reply, "delivery")
    # Either way nothing is relayed after the stop.
    assert not Delivery.objects.filter(
        session=session, kind=DeliveryKind.MESSAGE_TO_USER, created_at__gt=session.stopped_at
    ).exists()


def _bot_message(session, message_id):
    return message_relay_to_agent(
        integration=session.integration,
        conversation_id=session.botpress_conversation_id,
        type="text",
        payload={"text": message_id},
        botpress_message_id=message_id,
    )


def test_a_bot_message_waits_for_a_stop_holding_its_session_and_is_then_refused(live_session):
    """The bot message's one statement locks the session: while a stop holds it, the message
    waits, then sees the session stopped and is refused, and nothing of it is written."""
    locked = threading.Event()
    outcome = {}

    def stop():
        try:
            with transaction.atomic():
                HitlSession.objects.select_for_update().get(pk=live_session.pk)
                locked.set()
                time.sleep(0.5)  # the message's statement arrives meanwhile and waits
                session_stop(
                    session=live_session, stopped_by=StoppedBy.AGENT, close_ticket=False, notify_botpress=False
                )
        finally:
            connection.close()

    stopper = threading.Thread(target=stop)
    stopper.start()
    assert locked.wait(10)
    started = time.monotonic()
    try:
        _bot_message(live_session, "msg_late")
    except Conflict as exc:
        outcome["refused"] = exc.field
    stopper.join()
    assert outcome == {"refused": "conversationId"}
    if connection.vendor == "postgresql":  # the unlocked read went ahead; the write waited
        assert time.monotonic() - started >= 0.3
    assert not Message.objects.filter(session=live_session, direction="to_agent").exists()
    assert not Delivery.objects.filter(session=live_session, kind=DeliveryKind.MESSAGE_TO_AGENT).exists()


@pytest.mark.parametrize("round_", range(5))
def test_stop_hitl_racing_a_bot_message_ends_consistent(live_session, round_):
    """Either the message was accepted before the stop (and is delivered) or it is refused."""
    refused = []

    def message():
        try:
            _bot_message(live_session, "msg_race")
        except Conflict:
            refused.append(True)

    _concurrently(
        lambda: session_stop(
            session=live_session, stopped_by=StoppedBy.BOTPRESS, close_ticket=True, notify_botpress=False
        ),
        message,
    )
    session = HitlSession.objects.get(pk=live_session.pk)
    messages = Message.objects.filter(session=session, botpress_message_id="msg_race")
    assert session.status == SessionStatus.STOPPED and len(refused) + messages.count() == 1
    if messages.exists():
        assert messages.get().created_at <= session.stopped_at and hasattr(messages.get(), "delivery")


@pytest.mark.parametrize("round_", range(5))
def test_two_assignment_webhooks_at_once_assign_once(live_session, round_):
    integration = live_session.integration
    assigned = InboundEvent(kind="assigned", ticket_external_id="42", reference="conv_1", agent=GRACE)
    _concurrently(*[lambda: session_events_apply(integration=integration, events=[assigned])] * 3)
    session = HitlSession.objects.get(pk=live_session.pk)
    assert session.status == SessionStatus.ASSIGNED and session.agent.external_user_id == "7"
    assert Delivery.objects.filter(session=session, kind=DeliveryKind.EVENT_TO_USER).count() == 1
    assert session.integration.agents.count() == 1


@pytest.mark.parametrize("round_", range(3))
def test_the_same_comment_from_concurrent_webhooks_is_relayed_once(live_session, round_):
    integration = live_session.integration
    applied = []
    _concurrently(*[lambda: applied.append(session_events_apply(integration=integration, events=[_reply("901")]))] * 3)
    assert [a.failures for a in applied] == [[], [], []], "a copy that lost the race is no failure"
    assert sorted(a.detail for a in applied).count("agent_message: relayed") == 1
    assert Message.objects.filter(session=live_session, direction="to_user").count() == 1
    assert Delivery.objects.filter(session=live_session, kind=DeliveryKind.MESSAGE_TO_USER).count() == 1


def test_a_copy_stored_between_the_check_and_the_insert_reads_as_already_relayed(live_session, monkeypatch):
    """The unique index, not the read before it, is what keeps a message single: a copy that
    wins between the two (another process's re-apply) makes this event "already relayed"."""
    from sessions_app.services import sessions as session_services

    integration = live_session.integration
    first = session_events_apply(integration=integration, events=[_reply("905")])
    assert first.failures == [] and first.detail == "agent_message: relayed"
    # The check before the insert answers "not known" (it ran before the copy committed).
    monkeypatch.setattr(session_services._REPLY_KNOWN, "first", lambda **values: (False, True))
    again = session_events_apply(integration=integration, events=[_reply("905"), _reply("906")])
    assert again.failures == [] and again.detail == "agent_message: already relayed; agent_message: relayed"
    assert Message.objects.filter(session=live_session, direction="to_user").count() == 2
    assert Delivery.objects.filter(session=live_session, kind=DeliveryKind.MESSAGE_TO_USER).count() == 2


def test_a_webhook_before_the_ticket_row_is_committed_finds_its_session(live_session):
    """The ticket exists in Zendesk before our Ticket row commits; the reference finds the session."""
    Ticket.objects.filter(session=live_session).delete()
    applied = session_events_apply(
        integration=live_session.integration, events=[_reply("902", reference="conv_1", ticket="43")]
    )
    assert applied.session.pk == live_session.pk and "relayed" in applied.detail
    unrelated = session_events_apply(
        integration=live_session.integration, events=[_reply("903", reference="", ticket="44")]
    )
    assert unrelated.session is None and "not a gateway ticket" in unrelated.detail


def _accepted_webhook(session, comment_id: str, text: str, ticket: str = "42"):
    from sessions_app.models import WebhookEvent, WebhookStatus
    from tests.test_zendesk_webhooks import AGENT, _render

    body = _render(
        "newMessage",
        **{**AGENT, "ticket.id": ticket, "ticket.external_id": session.botpress_conversation_id},
        **{"ticket.public_comments[0].id": comment_id, "ticket.latest_public_comment_html": f"<p>{text}</p>"},
    )
    return WebhookEvent.objects.create(
        integration=session.integration,
        provider="zendesk",
        dedup_key=f"k{comment_id}",
        event_type="newMessage",
        ticket_external_id=ticket,
        body=body.decode(),
        status=WebhookStatus.ACCEPTED,
    )


def test_webhooks_of_a_ticket_apply_in_arrival_order_whichever_task_runs(live_session):
    from sessions_app.services.webhooks import webhook_queue_drain

    events = [_accepted_webhook(live_session, str(900 + n), f"reply {n}") for n in range(6)]
    # Tasks arrive out of order and concurrently (a killed worker's task is redelivered late).
    _concurrently(*[lambda e=e: webhook_queue_drain(webhook_event_id=e.pk) for e in reversed(events)])
    texts = list(
        Message.objects.filter(session=live_session, direction="to_user")
        .order_by("id")
        .values_list("payload__text", flat=True)
    )
    assert texts == [f"reply {n}" for n in range(6)]
    lanes = Delivery.objects.filter(session=live_session, kind=DeliveryKind.MESSAGE_TO_USER).order_by("id")
    assert [d.message.payload["text"] for d in lanes] == texts


def test_two_webhook_relays_apply_each_ticket_once_in_order(live_session, monkeypatch):
    """Two relays (two worker processes) over the same tickets: each webhook applied once, each ticket in order."""
    from sessions_app.models import WebhookEvent, WebhookStatus
    from sessions_app.services import relay, webhooks

    other = HitlSession.objects.create(
        integration=live_session.integration, end_user=live_session.end_user, botpress_conversation_id="conv_2"
    )
    Ticket.objects.create(session=other, integration=live_session.integration, external_id="43")
    events = [_accepted_webhook(live_session, str(900 + n), f"reply {n}") for n in range(6)]
    events += [_accepted_webhook(other, str(950 + n), f"other {n}", ticket="43") for n in range(6)]
    calls: list[int] = []
    original = webhooks._webhook_event_apply
    monkeypatch.setattr(
        webhooks, "_webhook_event_apply", lambda event, **kw: calls.append(event.pk) or original(event, **kw)
    )
    try:
        _concurrently(webhooks.webhook_relay, webhooks.webhook_relay)
    finally:
        relay.relay_threads_stop()
    assert sorted(calls) == sorted(WebhookEvent.objects.values_list("pk", flat=True)), "each applied exactly once"
    for session, prefix in ((live_session, "reply"), (other, "other")):
        texts = list(
            Message.objects.filter(session=session, direction="to_user")
            .order_by("id")
            .values_list("payload__text", flat=True)
        )
        assert texts == [f"{prefix} {n}" for n in range(6)]
    assert len(events) == 12 and not WebhookEvent.objects.filter(status=WebhookStatus.ACCEPTED).exists()


def test_a_webhook_that_fails_to_apply_does_not_block_its_ticket(live_session, monkeypatch):
    from sessions_app.models import WebhookEvent, WebhookStatus
    from sessions_app.services import webhooks

    first, second = _accepted_webhook(live_session, "910", "boom"), _accepted_webhook(live_session, "911", "fine")
    original = webhooks.session_events_apply

    def flaky(*, integration, events, **kw):
        if events and events[0].text == "boom":
            raise RuntimeError("bug")
        return original(integration=integration, events=events, **kw)

    monkeypatch.setattr(webhooks, "session_events_apply", flaky)
    assert webhooks.webhook_queue_drain(webhook_event_id=second.pk) == 2
    assert WebhookEvent.objects.get(pk=first.pk).status == WebhookStatus.FAILED
    assert WebhookEvent.objects.get(pk=second.pk).status == WebhookStatus.PROCESSED


@pytest.mark.e2e
@pytest.mark.parametrize("last_comment", ["end user", "transcript"])
def test_solving_without_a_comment_echoes_nothing_back(gateway, last_comment):
    """A "solved" webhook carries the latest public comment, whoever wrote it; ours never go back."""
    botpress, zendesk = gateway.botpress, gateway.zendesk
    user_id = _create_user(gateway)
    conversation_id = _start(gateway, user_id)
    ticket = _ticket_for(gateway, conversation_id)
    agent_id = zendesk.add_agent("Grace Hopper", "grace@acme.test")
    if last_comment == "end user":
        gateway.message(
            {"conversationId": conversation_id, "type": "text", "payload": {"text": "Thank you!", "userId": user_id}}
        )
        zendesk.wait_for(lambda: len(zendesk.comments(ticket["id"])) == 2, timeout=20)
    zendesk.solve(ticket["id"], agent_id)
    botpress.wait_for(lambda: botpress.events(type="hitlStopped"), timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    _wait_settled(gateway, session)
    assert botpress.messages(conversation_id=conversation_id) == []
    assert not Message.objects.filter(session=session, direction="to_user").exists()


def test_a_transient_database_error_retries_the_webhook_instead_of_failing_it(live_session, monkeypatch):
    from django.db import OperationalError

    from sessions_app.models import WebhookEvent, WebhookStatus
    from sessions_app.services import webhooks

    event = _accepted_webhook(live_session, "920", "after a deadlock")
    retries, original, calls = [], webhooks.session_events_apply, []

    def deadlock_once(*, integration, events, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("deadlock detected")
        return original(integration=integration, events=events, **kw)

    monkeypatch.setattr(webhooks, "session_events_apply", deadlock_once)
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: retries.append(kw))
    assert webhooks.webhook_queue_drain(webhook_event_id=event.pk) == 0
    assert WebhookEvent.objects.get(pk=event.pk).status == WebhookStatus.ACCEPTED
    assert retries == [{"webhook_event_id": event.pk, "countdown": 1.0}]
    assert webhooks.webhook_queue_drain(webhook_event_id=event.pk) == 1
    assert Message.objects.filter(session=live_session, external_message_id="920").exists()


@pytest.mark.django_db
def test_the_previous_signing_secret_is_accepted_only_during_its_grace(settings, monkeypatch):
    """Webhooks Zendesk signed just before a rotation or reinstall are still in flight."""
    from datetime import UTC, datetime, timedelta

    from django.utils import timezone

    from providers.zendesk.webhooks import signature_compute
    from sessions_app.services import webhooks
    from sessions_app.services.integrations import integration_signing_secret_replace

    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    # The grace's end as the database has it at once (the ack keeps a row up to 2 s otherwise).
    settings.HITL = settings.HITL | {"ACK_INTEGRATION_SECONDS": 0}
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    integration.save(update_fields=integration_signing_secret_replace(integration=integration, secret="old-secret"))
    integration.save(update_fields=integration_signing_secret_replace(integration=integration, secret="new-secret"))

    def receive(secret: str, n: int):
        body = json.dumps({"type": "ticketAssigned", "ticketId": str(n), "externalId": ""}).encode()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "X-Zendesk-Webhook-Signature": signature_compute(secret=secret, timestamp=stamp, body=body),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        }
        return webhooks.webhook_receive(
            integration_id=str(integration.pk), provider="zendesk", headers=headers, body=body, remote_addr="127.0.0.1"
        ).status_code

    assert (receive("new-secret", 1), receive("old-secret", 2), receive("other", 3)) == (200, 200, 401)
    integration.webhook_signing_secret_changed_at = timezone.now() - timedelta(seconds=601)
    integration.save(update_fields=["webhook_signing_secret_changed_at"])
    assert (receive("new-secret", 4), receive("old-secret", 5)) == (200, 401)
