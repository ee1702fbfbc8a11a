"""The gateway side of the provider boundary: doorbell webhooks, synchronous replies, agent
profiles, the ticket head, the author's name, and credentials declared by the spec."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from outbound.http import RetryableError
from providers.base import AgentProfile, InboundEvent, ParsedWebhook
from providers.registry import provider_spec
from providers.zendesk import ZendeskProvider
from sessions_app.models import (
    Delivery,
    DeliveryKind,
    HitlSession,
    HumanAgent,
    Message,
    SessionStatus,
    Ticket,
    WebhookEvent,
    WebhookStatus,
)
from sessions_app.services import webhooks
from sessions_app.services.deliveries import execute_message_to_agent
from sessions_app.services.sessions import message_relay_to_agent, session_assign
from tests.test_inbound_webhooks import apply_accepted, send
from tests.test_inbound_webhooks import scene as inbound_scene

scene = inbound_scene  # the same fixture: ticket 42 of conversation conv_1

GRACE = AgentProfile(external_id="7", name="Grace", email="grace@acme.test")


def _doorbell(monkeypatch, fetch, *, ticket="42"):
    """Zendesk's adapter turned into a doorbell desk: its webhooks name ticket 42, ``fetch`` reads it."""

    def parse(cls, *, headers, body, installation=None):
        data = json.loads(body)
        return ParsedWebhook(
            dedup_key=f"bell:{data['n']}",
            event_type="bell",
            ticket_external_id=data.get("t", ticket),
            events=[],
            doorbell=True,
        )

    monkeypatch.setattr(ZendeskProvider, "webhook_parse", classmethod(parse))
    monkeypatch.setattr(ZendeskProvider, "webhook_events_fetch", fetch)


def test_a_doorbell_is_answered_by_reading_the_ticket_with_the_known_message_ids(scene, client, monkeypatch):
    Ticket.objects.filter(session=scene).update(initial_message_id="100")
    Message.objects.create(session=scene, direction="to_agent", type="text", payload={}, external_message_id="101")
    seen = {}

    def fetch(self, *, parsed, installation, known_message_ids):
        seen["known"], seen["ticket"] = set(known_message_ids), parsed.ticket_external_id
        reply = InboundEvent(
            kind="agent_message", ticket_external_id="42", agent=GRACE, message_external_id="102", text="On it"
        )
        return [reply, InboundEvent(kind="stopped", ticket_external_id="42", agent=GRACE)]

    _doorbell(monkeypatch, fetch)
    assert send(client, scene.integration, {"n": 1}).status_code == 200
    apply_accepted()
    assert seen == {"known": {"100", "101"}, "ticket": "42"}
    assert Message.objects.get(session=scene, external_message_id="102").payload == {"text": "On it"}
    scene.refresh_from_db()
    assert scene.status == SessionStatus.STOPPED
    assert WebhookEvent.objects.get().status == WebhookStatus.PROCESSED


def test_a_failing_doorbell_read_is_retried_with_backoff_and_blocks_only_its_ticket(scene, client, monkeypatch):
    scheduled = []
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: scheduled.append(kw))
    other = HitlSession.objects.create(
        integration=scene.integration, end_user=scene.end_user, botpress_conversation_id="conv_2"
    )
    Ticket.objects.create(session=other, integration=scene.integration, external_id="43")
    down = {"42": True}

    def fetch(self, *, parsed, installation, known_message_ids):
        if down.get(parsed.ticket_external_id):
            raise RetryableError("help desk answered HTTP 503")
        return [InboundEvent(kind="stopped", ticket_external_id=parsed.ticket_external_id, agent=GRACE)]

    _doorbell(monkeypatch, fetch)
    send(client, scene.integration, {"n": 1, "t": "42"})
    send(client, scene.integration, {"n": 2, "t": "42"})
    send(client, scene.integration, {"n": 3, "t": "43"})
    apply_accepted()
    first, second, third = WebhookEvent.objects.order_by("id")
    first.refresh_from_db()
    assert (first.status, first.attempts) == (WebhookStatus.ACCEPTED, 1) and "retrying in 2 s" in first.detail
    assert first.retry_at > timezone.now() and {"webhook_event_id": first.pk, "countdown": 2.0} in scheduled
    assert WebhookEvent.objects.get(pk=second.pk).status == WebhookStatus.ACCEPTED  # waits behind it, in order
    assert WebhookEvent.objects.get(pk=third.pk).status == WebhookStatus.PROCESSED  # another ticket goes on
    # Not due yet: nothing happens, and the sweeper leaves it to its scheduled retry.
    webhooks.webhook_queue_drain(webhook_event_id=first.pk)
    assert WebhookEvent.objects.get(pk=first.pk).attempts == 1
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(hours=1))
    scheduled.clear()
    webhooks.webhook_events_sweep(older_than_seconds=60)
    assert [kw["webhook_event_id"] for kw in scheduled] == [second.pk]  # only the due one (its retry_at is unset)

    WebhookEvent.objects.filter(pk=first.pk).update(retry_at=timezone.now() - timedelta(seconds=1))
    down["42"] = False
    webhooks.webhook_queue_drain(webhook_event_id=first.pk)
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {WebhookStatus.PROCESSED}


def test_a_doorbell_read_that_keeps_failing_ends_failed_with_its_reason(scene, client, monkeypatch):
    def fetch(self, *, parsed, installation, known_message_ids):
        raise RetryableError("help desk answered HTTP 503")

    _doorbell(monkeypatch, fetch)
    send(client, scene.integration, {"n": 1})
    event = WebhookEvent.objects.get()
    WebhookEvent.objects.filter(pk=event.pk).update(attempts=webhooks.FETCH_RETRY_MAX_ATTEMPTS - 1)
    webhooks.webhook_queue_drain(webhook_event_id=event.pk)
    event.refresh_from_db()
    assert event.status == WebhookStatus.FAILED and "HTTP 503" in event.detail


def test_a_synchronous_reply_is_answered_and_nothing_is_stored(scene, client, monkeypatch):
    def parse(cls, *, headers, body, installation=None):
        return ParsedWebhook(
            dedup_key="x", event_type="url_verification", ticket_external_id="", events=[], reply={"challenge": "c-1"}
        )

    monkeypatch.setattr(ZendeskProvider, "webhook_parse", classmethod(parse))
    response = send(client, scene.integration, {"type": "url_verification"})
    assert (response.status_code, response.json()) == (200, {"challenge": "c-1"})
    assert not WebhookEvent.objects.exists()


def test_an_agent_named_by_id_only_is_looked_up_once(scene, client, monkeypatch):
    calls = []

    def profile(self, *, external_id):
        calls.append(external_id)
        return AgentProfile(external_id="ignored", name="Grace Hopper", email="grace@acme.test")

    def fetch(self, *, parsed, installation, known_message_ids):
        return [InboundEvent(kind="assigned", ticket_external_id="42", agent=AgentProfile(external_id="7"))]

    monkeypatch.setattr(ZendeskProvider, "agent_profile_fetch", profile)
    _doorbell(monkeypatch, fetch)
    send(client, scene.integration, {"n": 1})
    send(client, scene.integration, {"n": 2})
    apply_accepted()
    agent = HumanAgent.objects.get(external_user_id="7")
    assert (agent.name, agent.email) == ("Grace Hopper", "grace@acme.test")
    assert calls == ["7"]  # the second webhook finds the agent known by name


def test_the_ticket_head_is_updated_only_for_adapters_that_have_one(scene, monkeypatch):
    agent = HumanAgent.objects.create(integration=scene.integration, external_user_id="7", name="Grace")
    session_assign(session=HitlSession.objects.get(pk=scene.pk), agent=agent)
    assert not Delivery.objects.filter(kind=DeliveryKind.TICKET_HEAD_UPDATE).exists()

    monkeypatch.setattr(ZendeskProvider, "updates_ticket_head", True)
    other = HumanAgent.objects.create(integration=scene.integration, external_user_id="8", name="Alan")
    session_assign(session=HitlSession.objects.get(pk=scene.pk), agent=other)
    [head] = Delivery.objects.filter(kind=DeliveryKind.TICKET_HEAD_UPDATE)
    assert head.direction == "to_agent" and head.payload == {"state": "assigned", "agent_name": "Alan"}


def test_the_message_carries_its_authors_name(scene, monkeypatch):
    posted = []
    monkeypatch.setattr(
        ZendeskProvider, "message_post", lambda self, *, ticket_external_id, message: posted.append(message) or "555"
    )
    scene.end_user.external_user_id = "900"
    scene.end_user.save()
    message_relay_to_agent(
        integration=scene.integration,
        conversation_id="conv_1",
        type="text",
        payload={"text": "hi"},
        sender_user_id="user_1",
    )
    execute_message_to_agent(Delivery.objects.get(kind=DeliveryKind.MESSAGE_TO_AGENT))
    assert (posted[0].author_external_id, posted[0].author_name) == ("900", "Ada")


# --- credentials declared by the spec ----------------------------------------------------------
CLI = (
    *("--name", "Spec", "--provider-url", "http://127.0.0.1:9", "--botpress-url", "http://127.0.0.1:9"),
    *("--botpress-token", "bp", "--bot-id", "bot_1", "--integration-id", "intg_1"),
)


def test_cli_takes_generic_credentials(db):
    out = io.StringIO()
    call_command(
        "create_integration", *CLI, "--credential", "email=a@acme.test", "--credential", "api_token=t-1", stdout=out
    )
    assert json.loads(out.getvalue())["created"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--zendesk-email", "a@acme.test"), "--zendesk-api-token"),
        (("--credential", "email=a@acme.test", "--credential", "api_token=t", "--credential", "pin=1"), "pin"),
        (("--credential", "nonsense"), "NAME=VALUE"),
    ],
)
def test_cli_refuses_missing_or_unknown_credentials(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_integration", *CLI, *args, stdout=io.StringIO())


def test_the_spec_declares_zendesk_secrets_and_logs_redact_them():
    from hitl_gateway.logging import redact_secrets

    assert [f.name for f in provider_spec("zendesk").secret_fields] == ["api_token"]
    assert redact_secrets(None, None, {"desk": {"api_token": "t-1", "email": "a"}})["desk"] == {
        "api_token": "[redacted]",
        "email": "a",
    }
