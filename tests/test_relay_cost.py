"""What one relay costs the worker's executors in SQL (issue 16): upper bounds, and no second
decryption of the integration's secrets through a joined row."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from providers.zendesk.provider import ZendeskProvider
from sessions_app.models import Delivery, DeliveryKind, HumanAgent, Message, WebhookEvent
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


def test_a_claimed_delivery_of_a_session_without_a_ticket_is_skipped(scene, monkeypatch):  # noqa: F811
    """The claim's outer join finds no ticket: the delivery is skipped, as when it was read alone."""
    scene.ticket.delete()
    delivery_id = _bot_message(scene, monkeypatch)
    (delivery,) = outbox._CLAIMED.fetch(ids=[delivery_id])
    with pytest.raises(DeliverySkipped, match="no ticket"):
        deliveries.execute_message_to_agent(delivery)
