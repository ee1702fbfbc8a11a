"""The Botpress conversation carries the help desk's ticket id (tag ``id``, as Botpress's own
Zendesk integration sets it), written through the outbox once the ticket exists."""

from __future__ import annotations

import uuid

import pytest
import requests

from botpress.sink import SESSION_TAG, TICKET_TAG
from providers.base import TicketRef
from sessions_app.api.definition import definition_build
from sessions_app.models import BotpressTransport, Delivery, DeliveryKind, Direction, EndUser, HitlSession, Ticket
from sessions_app.services import deliveries
from sessions_app.services.integrations import integration_botpress_sink
from sessions_app.services.outbox import delivery_enqueue, lane_for
from tests.conftest import BOT_ID, BP_INTEGRATION_ID, BP_TOKEN, integration_for


class _Zendesk:
    """Only what ticket creation calls; the Zendesk side is tested elsewhere."""

    def ticket_create(self, spec, *, idempotency_key):
        return TicketRef(external_id="4242", url="https://acme.zendesk.test/agent/tickets/4242")

    def ticket_find(self, *, reference):
        return None


def _session(integration, conversation_id: str) -> HitlSession:
    end_user = EndUser.objects.create(
        integration=integration, botpress_user_id="user_1", name="Ada", external_user_id="501"
    )
    return HitlSession.objects.create(
        integration=integration, end_user=end_user, botpress_conversation_id=conversation_id
    )


def _create_ticket(session, monkeypatch) -> None:
    monkeypatch.setattr(deliveries, "integration_provider", lambda integration: _Zendesk())
    monkeypatch.setattr("sessions_app.services.outbox.delivery_schedule", lambda **kw: None)
    created = delivery_enqueue(
        integration_id=session.integration_id,
        kind=DeliveryKind.TICKET_CREATE,
        direction=Direction.TO_AGENT,
        session=session,
    )
    deliveries.execute_ticket_create(created)


def test_the_ticket_id_is_tagged_on_the_conversation_through_the_outbox(db, botpress, monkeypatch):
    integration, _ = integration_for(botpress_url=botpress.base_url, zendesk_url="http://127.0.0.1:9")
    session_id = str(uuid.uuid4())
    sink = integration_botpress_sink(integration=integration, in_request=False)
    session = _session(integration, sink.conversation_open(session_id=session_id))
    _create_ticket(session, monkeypatch)

    tag = Delivery.objects.get(session=session, kind=DeliveryKind.CONVERSATION_TAG)
    assert tag.lane == lane_for(session=session, direction=Direction.TO_USER), "the session's to_user lane"
    assert Ticket.objects.get(session=session).external_id == "4242"
    for _ in range(2):  # a retried delivery changes nothing
        assert deliveries.execute_conversation_tag(tag) == {"tags": {TICKET_TAG: "4242"}}
    (conversation,) = botpress.conversations()
    assert conversation["tags"] == {SESSION_TAG: session_id, TICKET_TAG: "4242"}, "a partial update"


def test_no_tag_with_the_hitl_api_transport(db, monkeypatch):
    """The hitl-api has no call that tags a conversation (and the conversation is not ours)."""
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    integration.botpress_transport = BotpressTransport.HITL_API
    integration.hitl_api_webhook_url = "http://127.0.0.1:9/hook"
    integration.save()
    session = _session(integration, str(uuid.uuid4()))
    _create_ticket(session, monkeypatch)
    assert Ticket.objects.filter(session=session).exists()
    assert not Delivery.objects.filter(session=session, kind=DeliveryKind.CONVERSATION_TAG).exists()


def test_the_definition_declares_the_tag(db):
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    channel = definition_build(integration=integration)["channels"]["hitl"]
    assert set(channel["conversation"]["tags"]) == {SESSION_TAG, TICKET_TAG}


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"undeclared": "1"}, "Tag 'undeclared' is not declared"),
        ({TICKET_TAG: 4242}, "'tags.id' must be a string"),
        ({TICKET_TAG: "x" * 501}, "at most 500 characters"),
    ],
)
def test_the_stand_in_refuses_tags_as_botpress_does(botpress, tags, message):
    headers = {"Authorization": f"Bearer {BP_TOKEN}", "x-bot-id": BOT_ID, "x-integration-id": BP_INTEGRATION_ID}
    base = f"{botpress.base_url}/v1/chat/conversations"
    created = requests.post(
        f"{base}/get-or-create", json={"channel": "hitl", "tags": {SESSION_TAG: "s1"}}, headers=headers, timeout=5
    )
    assert created.status_code == 200, created.text
    conversation_id = created.json()["conversation"]["id"]
    refused = requests.put(f"{base}/{conversation_id}", json={"tags": tags}, headers=headers, timeout=5)
    assert refused.status_code == 400 and refused.json()["type"] == "InvalidPayload"
    assert message in refused.json()["message"]
    accepted = requests.put(
        f"{base}/{conversation_id}", json={"tags": {TICKET_TAG: "4242"}}, headers=headers, timeout=5
    )
    assert accepted.status_code == 200 and accepted.json()["conversation"]["tags"][TICKET_TAG] == "4242"
