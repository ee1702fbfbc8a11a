"""What one relay costs the worker's executors in SQL (issue 16): upper bounds, and no second
decryption of the integration's secrets through a joined row."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from outbound.http import RetryableError
from providers.zendesk.provider import ZendeskProvider
from sessions_app.models import Delivery, DeliveryAttempt, DeliveryKind, HumanAgent, Message, WebhookEvent
from sessions_app.services import deliveries, outbox, webhooks
from sessions_app.services.outbox import DeliverySkipped
from sessions_app.services.sessions import message_relay_to_agent
from tests.test_inbound_webhooks import scene, send, trigger  # noqa: F401 - the fixture

INTEGRATION_TABLE = '"sessions_app_integration"'


def _bot_message(scene, monkeypatch) -> int:  # noqa: F811
    """A bot message of the end user's waiting for delivery (the desk's post answers "555"); its id."""
    monkeypatch.setattr(ZendeskProvider, "message_post", lambda self, *, ticket_external_id, message: "555")
    scene.end_user.external_user_id = "900"
    scene.end_user.save()
    message_relay_to_agent(
        integration=scene.integration,
        conversation_id="conv_1",
        type="text",
        payload={"text": "hi"},
        sender_user_id="user_1",
    )
    return Delivery.objects.get(kind=DeliveryKind.MESSAGE_TO_AGENT).pk


def test_a_bot_message_reads_its_ticket_session_and_author_in_one_statement(scene, monkeypatch):  # noqa: F811
    """A delivery read otherwise than by the outbox's claim (a tool, an operator) reads them itself."""
    delivery = Delivery.objects.select_related("message").get(pk=_bot_message(scene, monkeypatch))
    with CaptureQueriesContext(connection) as captured:
        assert deliveries.execute_message_to_agent(delivery) == {"external_message_id": "555"}
    statements = [query["sql"] for query in captured.captured_queries]
    assert len(statements) == 2, statements  # the ticket with all it needs, then the posted id
    assert statements[-1].startswith('UPDATE "sessions_app_message"')
    assert sum(INTEGRATION_TABLE in sql for sql in statements) == 1, "the integration is read (decrypted) once"


class _Sink:
    keeps_agent_users = False

    def message_send(self, **kwargs):
        return "msg_1"


def test_an_agent_reply_reads_the_agent_without_its_integration(scene, client, monkeypatch):  # noqa: F811
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    send(client, scene.integration, trigger("newMessage", comment="<p>hi</p>"))
    webhooks.webhook_queue_drain(webhook_event_id=WebhookEvent.objects.get().pk)
    monkeypatch.setattr(deliveries, "integration_botpress_sink", lambda **kw: _Sink())
    # As the outbox reads a claimed delivery (outbox._heads_claim).
    delivery = Delivery.objects.select_related("message__author_agent", "session__integration").get(
        kind=DeliveryKind.MESSAGE_TO_USER
    )
    with CaptureQueriesContext(connection) as captured:
        assert deliveries.execute_message_to_user(delivery) == {"botpress_message_id": "msg_1"}
    statements = [query["sql"] for query in captured.captured_queries]
    assert len(statements) == 1, statements  # the Botpress id (the agent came with the delivery)
    assert not any(INTEGRATION_TABLE in sql for sql in statements), "the session's integration is at hand"
    assert Message.objects.get(pk=delivery.message_id).botpress_message_id == "msg_1"
    assert HumanAgent.objects.count() == 1


def test_a_claimed_bot_message_costs_no_read_of_its_own(scene, monkeypatch):  # noqa: F811
    """The claim's read brings the ticket, session, end user and integration: the executor only
    writes the posted id."""
    delivery_id = _bot_message(scene, monkeypatch)
    (delivery,) = outbox._CLAIMED.fetch(ids=[delivery_id])
    with CaptureQueriesContext(connection) as captured:
        assert deliveries.execute_message_to_agent(delivery) == {"external_message_id": "555"}
    statements = [query["sql"] for query in captured.captured_queries]
    assert len(statements) == 1, statements
    assert statements[0].startswith('UPDATE "sessions_app_message"')


def test_the_hot_reads_leave_the_sessions_transcript_and_description_unread(scene, monkeypatch):  # noqa: F811
    """A session's transcript can be long: accepting a bot message, claiming its delivery and
    posting it read neither it nor the description (``HitlSession.COLD_FIELDS``)."""
    scene.message_history = [{"type": "text", "payload": {"text": "x" * 1000}}] * 50
    scene.description = "y" * 1000
    scene.save()
    with CaptureQueriesContext(connection) as captured:
        (delivery,) = outbox._CLAIMED.fetch(ids=[_bot_message(scene, monkeypatch)])
        assert deliveries.execute_message_to_agent(delivery) == {"external_message_id": "555"}
    reads = [query["sql"] for query in captured.captured_queries if query["sql"].startswith("SELECT")]
    assert len(reads) >= 2, reads  # the session (locked), the claim's read
    assert not [sql for sql in reads if '"message_history"' in sql or '"description"' in sql], reads


def test_a_claimed_delivery_of_a_session_without_a_ticket_is_skipped(scene, monkeypatch):  # noqa: F811
    """The claim's outer join finds no ticket: the delivery is skipped, as when it was read alone."""
    scene.ticket.delete()
    delivery_id = _bot_message(scene, monkeypatch)
    (delivery,) = outbox._CLAIMED.fetch(ids=[delivery_id])
    with pytest.raises(DeliverySkipped, match="no ticket"):
        deliveries.execute_message_to_agent(delivery)


# --- what an executor learned is recorded with the attempt (outbox.attempt_write) -------------
class _LaneSink(_Sink):
    """The sink of a whole to-user lane: the assignment's event, then the reply."""

    def event_emit(self, **kwargs):
        return "evt_1"


def test_a_relayed_reply_records_its_botpress_id_in_the_settle_statement(scene, client, monkeypatch):  # noqa: F811
    """Run by the outbox, the delivery's only write is the settle's one statement: the Botpress
    id rides in it instead of an UPDATE (and a commit) of its own."""
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    send(client, scene.integration, trigger("newMessage", comment="<p>hi</p>"))
    webhooks.webhook_queue_drain(webhook_event_id=WebhookEvent.objects.get().pk)
    monkeypatch.setattr(deliveries, "integration_botpress_sink", lambda **kw: _LaneSink())
    delivery = Delivery.objects.get(kind=DeliveryKind.MESSAGE_TO_USER)
    with CaptureQueriesContext(connection) as captured:
        assert outbox.lane_drain(delivery_id=delivery.pk) == 2  # the assignment's event, then the reply
    statements = [query["sql"] for query in captured.captured_queries]
    assert not any(sql.startswith('UPDATE "sessions_app_message"') for sql in statements), statements
    assert Message.objects.get(pk=delivery.message_id).botpress_message_id == "msg_1"
    assert Delivery.objects.get(pk=delivery.pk).status == "succeeded"


def test_a_write_of_an_attempt_whose_lease_was_taken_over_is_dropped(scene, client, monkeypatch):  # noqa: F811
    """Another worker took the row over mid-call (ours expired): the row is theirs to record, as
    ``maybe_delivered``, and so is what the call returned; ours writes neither."""
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    send(client, scene.integration, trigger("newMessage", comment="<p>hi</p>"))
    webhooks.webhook_queue_drain(webhook_event_id=WebhookEvent.objects.get().pk)
    delivery = Delivery.objects.get(kind=DeliveryKind.MESSAGE_TO_USER)
    theirs = timezone.now() + timedelta(minutes=5)

    class TakenOver(_LaneSink):
        def message_send(self, **kwargs):
            Delivery.objects.filter(pk=delivery.pk).update(lease_until=theirs)
            return "msg_1"

    monkeypatch.setattr(deliveries, "integration_botpress_sink", lambda **kw: TakenOver())
    outbox.lane_drain(delivery_id=delivery.pk)
    assert Message.objects.get(pk=delivery.message_id).botpress_message_id == ""
    row = Delivery.objects.get(pk=delivery.pk)
    assert (row.status, row.lease_until) == ("pending", theirs)
    assert not DeliveryAttempt.objects.filter(delivery=row).exclude(outcome="succeeded").exists()


def test_an_acknowledgement_that_fails_after_the_post_is_retried_alone(scene, monkeypatch):  # noqa: F811
    """A wire-protocol message posted, then its acknowledgement to Botpress refused for now: the
    desk's id is recorded with the failed attempt, so the retry acknowledges without posting
    the message again."""
    posts, acks = [], []
    monkeypatch.setattr(
        ZendeskProvider, "message_post", lambda self, *, ticket_external_id, message: posts.append(1) or "555"
    )

    class Acknowledging(_LaneSink):
        def message_acknowledge(self, *, message_id, tags):
            acks.append((message_id, tags))
            if len(acks) == 1:
                raise RetryableError("Botpress answered 503", status_code=503)

    monkeypatch.setattr(deliveries, "integration_botpress_sink", lambda **kw: Acknowledging())
    scene.end_user.external_user_id = "900"
    scene.end_user.save()
    message, _ = message_relay_to_agent(
        integration=scene.integration,
        conversation_id="conv_1",
        type="text",
        payload={"text": "hi"},
        sender_user_id="user_1",
        botpress_message_id="msg_9",
        acknowledge=True,
    )
    delivery = Delivery.objects.get(kind=DeliveryKind.MESSAGE_TO_AGENT)
    assert outbox.lane_drain(delivery_id=delivery.pk) == 0  # the attempt failed: retried later
    message.refresh_from_db()
    assert message.external_message_id == "555", "recorded with the failed attempt"
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert outbox.lane_drain(delivery_id=delivery.pk) == 1
    assert len(posts) == 1, "posted once"
    assert [message_id for message_id, _ in acks] == ["msg_9", "msg_9"]
    assert Delivery.objects.get(pk=delivery.pk).status == "succeeded"


def test_a_botpress_id_longer_than_its_column_fails_its_attempt_not_the_settle(scene, client, monkeypatch):  # noqa: F811
    """Refused when the executor hands it over, as ``save`` would refuse it: the attempt is
    recorded as failed (and retried), and the settle of the batch goes through."""
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    send(client, scene.integration, trigger("newMessage", comment="<p>hi</p>"))
    webhooks.webhook_queue_drain(webhook_event_id=WebhookEvent.objects.get().pk)
    delivery = Delivery.objects.get(kind=DeliveryKind.MESSAGE_TO_USER)

    class Overlong(_LaneSink):
        def message_send(self, **kwargs):
            return "m" * 500

    monkeypatch.setattr(deliveries, "integration_botpress_sink", lambda **kw: Overlong())
    assert outbox.lane_drain(delivery_id=delivery.pk) == 1  # the assignment's event; the reply waits
    row = Delivery.objects.get(pk=delivery.pk)
    assert (row.status, row.lease_until) == ("pending", None)
    assert "botpress_message_id" in row.last_error
    assert Message.objects.get(pk=delivery.message_id).botpress_message_id == ""
