"""Doorbell webhooks (Freshdesk) in the worker: one read answers the ticket's queued doorbells,
and a rate-limited desk is retried when it says, without counting toward giving up."""

from __future__ import annotations

import json

import pytest
import requests

from providers.freshdesk import SECRET_HEADER
from providers.freshdesk import provider as freshdesk_provider
from sessions_app.models import WebhookEvent, WebhookStatus
from sessions_app.services import webhooks
from sessions_app.services.integrations import integration_create
from standins.freshdesk import FreshdeskStandin
from tests.conftest import BOT_ID, BP_INTEGRATION_ID, BP_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)
KEY = "fd-doorbell-key"


@pytest.fixture
def desk():
    freshdesk_provider.RATE_PACER.reset()
    with FreshdeskStandin(api_key=KEY) as server:
        yield server
    freshdesk_provider.RATE_PACER.reset()


@pytest.fixture
def integration(desk):
    created, _ = integration_create(
        name="Doorbells",
        provider="freshdesk",
        provider_base_url=desk.base_url,
        provider_credentials={"api_key": KEY},
        botpress_api_url="https://api.botpress.cloud",
        botpress_token=BP_TOKEN,
        botpress_bot_id=BOT_ID,
        botpress_integration_id=BP_INTEGRATION_ID,
        webhook_signing_secret="doorbell-secret",
    )
    return created


def _ticket(desk) -> str:
    auth = (KEY, "X")
    made = requests.post(f"{desk.base_url}/api/v2/contacts", json={"name": "Ada", "email": "ada@x.test"}, auth=auth)
    ticket = requests.post(
        f"{desk.base_url}/api/v2/tickets",
        json={"requester_id": made.json()["id"], "subject": "s", "description": "d", "status": 2, "priority": 1},
        auth=auth,
    )
    return str(ticket.json()["id"])


def _doorbell(integration, ticket_id: str, n: int) -> WebhookEvent:
    body = json.dumps({"ticket_id": ticket_id, "status": "2", "agent_id": "", "performer": "agent", "n": n})
    return WebhookEvent.objects.create(
        integration=integration,
        provider="freshdesk",
        dedup_key=f"freshdesk:{ticket_id}:{n}",
        event_type="ticketUpdated",
        ticket_external_id=ticket_id,
        headers={SECRET_HEADER: "doorbell-secret"},
        body=body,
        status=WebhookStatus.ACCEPTED,
    )


def test_one_read_answers_the_doorbells_queued_behind_it(desk, integration, monkeypatch):
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    ticket_id = _ticket(desk)
    first, *queued = [_doorbell(integration, ticket_id, n) for n in range(4)]
    desk.clear_log()

    assert webhooks.webhook_queue_drain(webhook_event_id=first.pk) == 1
    reads = desk.requests_log("GET")
    assert len(reads) == 2, "the ticket and its conversations, once for four doorbells"
    for event in WebhookEvent.objects.filter(pk__in=[e.pk for e in queued]):
        assert event.status == WebhookStatus.IGNORED  # the outcome of the read (no gateway session)
        assert event.detail == f"answered by the read of webhook #{first.pk}"


def test_a_doorbell_stored_after_the_read_began_gets_a_read_of_its_own(desk, integration, monkeypatch):
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    ticket_id = _ticket(desk)
    first = _doorbell(integration, ticket_id, 0)
    later = []
    original = webhooks.integration_provider

    def provider_then_a_doorbell(*, integration):
        if not later:
            later.append(_doorbell(integration, ticket_id, 1))  # arrives while the first is being read
        return original(integration=integration)

    monkeypatch.setattr(webhooks, "integration_provider", provider_then_a_doorbell)
    assert webhooks.webhook_queue_drain(webhook_event_id=first.pk) == 2
    later_event = WebhookEvent.objects.get(pk=later[0].pk)
    assert later_event.detail != f"answered by the read of webhook #{first.pk}"
    assert len(desk.requests_log("GET", r"/conversations$")) == 2, "it was read on its own"


def test_a_rate_limited_read_waits_as_told_and_is_not_counted(desk, integration, monkeypatch):
    scheduled = []
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: scheduled.append(kw))
    ticket_id = _ticket(desk)
    event = _doorbell(integration, ticket_id, 0)
    for _ in range(webhooks.FETCH_RETRY_MAX_ATTEMPTS + 1):
        desk.add_fault("GET", rf"^/api/v2/tickets/{ticket_id}$", kind="rate_limit", retry_after=7, times=1)
        freshdesk_provider.RATE_PACER.reset()
        WebhookEvent.objects.filter(pk=event.pk).update(retry_at=None)
        assert webhooks.webhook_queue_drain(webhook_event_id=event.pk) == 0
    event.refresh_from_db()
    assert event.status == WebhookStatus.ACCEPTED and event.attempts == 0, "a busy desk is not a failing one"
    assert event.detail.startswith("rate limited: retrying in 7 s")
    assert scheduled[-1] == {"webhook_event_id": event.pk, "countdown": 7.0}
