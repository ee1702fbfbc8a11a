"""Doorbell webhooks (Freshdesk) in the worker: one read answers the ticket's queued doorbells,
and a rate-limited desk is retried when it says, without counting toward giving up."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from providers.freshdesk import SECRET_HEADER
from providers.freshdesk import provider as freshdesk_provider
from sessions_app.models import (
    Direction,
    EndUser,
    Heartbeat,
    HitlSession,
    Message,
    SessionStatus,
    Ticket,
    WebhookEvent,
    WebhookStatus,
)
from sessions_app.services import outbox, webhooks
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


def _ticket(desk, n: int = 0) -> str:
    auth = (KEY, "X")
    made = requests.post(f"{desk.base_url}/api/v2/contacts", json={"name": "Ada", "email": f"ada{n}@x.test"}, auth=auth)
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


# --- the doorbell sweep: a doorbell that never arrives ------------------------------------------
@pytest.fixture
def sweep_settings(settings):
    settings.HITL = {
        **settings.HITL,
        "DOORBELL_SWEEP_SECONDS": 60.0,
        "DOORBELL_GRACE_SECONDS": 0.0,
        "DOORBELL_REREAD_CAP": 50,
        "DOORBELL_IDLE_REREAD_SECONDS": 600.0,
    }
    return settings


@pytest.fixture
def quiet_queues(monkeypatch):
    """Nothing goes to the broker: the test drains the queues itself."""
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    monkeypatch.setattr(outbox, "delivery_schedule", lambda **kw: None)


def _session(integration, desk, n: int = 0) -> tuple[str, HitlSession]:
    """A session whose ticket exists on the desk and in the gateway (no rules: no doorbell ever)."""
    ticket_id = _ticket(desk, n)
    user = EndUser.objects.create(integration=integration, botpress_user_id=f"user-{n}", name="Ada")
    session = HitlSession.objects.create(
        integration=integration, end_user=user, botpress_conversation_id=f"conv-{n}", status=SessionStatus.ASSIGNED
    )
    Ticket.objects.create(session=session, integration=integration, external_id=ticket_id)
    return ticket_id, session


def _sweep(*, after: float = 0.0) -> int:
    """The sweep as beat runs it, ``after`` seconds from now.

    The desk stamps changes to the whole second, so a change is "made by" the end of its second:
    the first sweep of a test waits for that second to pass, as the grace period does in a real run.
    """
    time.sleep(1.05)
    return webhooks.webhook_doorbells_sweep(now=timezone.now() + timedelta(seconds=after))


def _drain_rereads() -> None:
    for event in WebhookEvent.objects.filter(event_type=webhooks.REREAD_EVENT_TYPE, status=WebhookStatus.ACCEPTED):
        webhooks.webhook_queue_drain(webhook_event_id=event.pk)


def _relayed(session) -> list[str]:
    return list(
        Message.objects.filter(session=session, direction=Direction.TO_USER).values_list(
            "external_message_id", flat=True
        )
    )


# Not committed: a session's real worker (its beat sweeps every integration it sees) must not
# sweep this test's integration too.
@pytest.mark.django_db
def test_an_agent_reply_whose_doorbell_never_came_is_relayed_by_the_sweep(
    desk, integration, sweep_settings, quiet_queues
):
    ticket_id, session = _session(integration, desk)
    agent = desk.add_agent("Grace", "grace@acme.test")
    reply = desk.agent_reply(int(ticket_id), agent, "Here is your answer")
    assert not WebhookEvent.objects.exists(), "no rule: the desk never rang"

    assert _sweep() == 1
    _drain_rereads()
    assert _relayed(session) == [str(reply["id"])]
    listings = desk.requests_log("GET", r"^/api/v2/tickets$")
    assert len(listings) == 1 and listings[0]["query"]["order_by"] == "updated_at"

    # Heard of since: later sweeps list again but read nothing (and are spaced by the interval).
    assert _sweep(after=3) == 0, "within DOORBELL_SWEEP_SECONDS: not even listed"
    assert len(desk.requests_log("GET", r"^/api/v2/tickets$")) == 1
    assert _sweep(after=120) == 0
    assert len(desk.requests_log("GET", r"/conversations$")) == 1, "one read for one missed reply"
    assert _relayed(session) == [str(reply["id"])]


@pytest.mark.django_db
def test_a_ticket_whose_doorbell_arrived_is_not_read_again(desk, integration, sweep_settings, quiet_queues):
    ticket_id, _ = _session(integration, desk)
    agent = desk.add_agent("Grace", "grace@acme.test")
    desk.agent_reply(int(ticket_id), agent, "Rang as usual")
    time.sleep(1.05)  # the doorbell came after the second the desk stamped the change with
    rang = _doorbell(integration, ticket_id, 0)
    webhooks.webhook_queue_drain(webhook_event_id=rang.pk)
    desk.clear_log()

    assert _sweep() == 0
    assert not desk.requests_log("GET", r"/conversations$")


@pytest.mark.django_db
def test_no_open_active_session_costs_no_call(desk, integration, sweep_settings, quiet_queues):
    ticket_id, session = _session(integration, desk)
    HitlSession.objects.filter(pk=session.pk).update(status=SessionStatus.STOPPED)
    desk.agent_reply(int(ticket_id), desk.add_agent("Grace", "grace@acme.test"), "too late")
    desk.clear_log()
    assert _sweep() == 0
    assert not desk.requests_log(), "the desk was not called"


@pytest.mark.django_db
def test_a_run_rereads_at_most_the_cap_and_the_next_run_takes_the_rest(desk, integration, sweep_settings, quiet_queues):
    sweep_settings.HITL = {**sweep_settings.HITL, "DOORBELL_REREAD_CAP": 2, "DOORBELL_SWEEP_SECONDS": 0.0}
    agent = desk.add_agent("Grace", "grace@acme.test")
    sessions = []
    for n in range(3):
        ticket_id, session = _session(integration, desk, n)
        desk.agent_reply(int(ticket_id), agent, f"reply {n}")
        sessions.append(session)
    assert _sweep() == 2
    _drain_rereads()
    assert _sweep() == 1
    _drain_rereads()
    assert all(len(_relayed(s)) == 1 for s in sessions)


@pytest.mark.django_db
def test_a_desk_that_cannot_list_changes_gets_quiet_tickets_reread_on_the_slow_timer(
    desk, integration, sweep_settings, quiet_queues, monkeypatch
):
    monkeypatch.setattr(freshdesk_provider.FreshdeskProvider, "tickets_changed_list", lambda self, **kw: None)
    ticket_id, session = _session(integration, desk)
    rang = _doorbell(integration, ticket_id, 0)
    webhooks.webhook_queue_drain(webhook_event_id=rang.pk)
    reply = desk.agent_reply(int(ticket_id), desk.add_agent("Grace", "grace@acme.test"), "unheard")

    assert _sweep() == 0, "heard of a second ago: not idle yet"
    Heartbeat.objects.filter(name__startswith="doorbell-").delete()
    assert _sweep(after=601) == 1
    _drain_rereads()
    assert str(reply["id"]) in _relayed(session)
