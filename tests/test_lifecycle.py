"""Lifecycle policies without a worker: the clock arithmetic, the sweep's decisions with time
moved forward, the API, and the races between a timer and a reply (threads on PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY, generate_latest
from rest_framework.test import APIClient

from providers.base import AgentProfile, InboundEvent
from sessions_app.models import (
    Delivery,
    DeliveryKind,
    Direction,
    EndUser,
    HitlSession,
    LifecyclePolicy,
    Message,
    OperatorAction,
    SessionStatus,
    StoppedBy,
    Ticket,
)
from sessions_app.selectors import dashboard_get
from sessions_app.services import lifecycle, outbox
from sessions_app.services.errors import InvalidInput
from sessions_app.services.lifecycle import (
    integration_policy_update,
    open_minutes_add,
    policy_is_open,
    session_lifecycle_start,
    session_timeouts_sweep,
)
from sessions_app.services.sessions import session_events_apply, session_stop
from tests.conftest import integration_for

PARIS = dt.timezone(dt.timedelta(hours=1))  # Paris in winter, to write the expected instants
GRACE = AgentProfile(external_id="7", name="Grace")


@pytest.fixture
def no_broker(monkeypatch):
    monkeypatch.setattr(outbox, "delivery_schedule", lambda **kwargs: None)


def _session(integration, conversation_id="conv_1", *, status=SessionStatus.PENDING) -> HitlSession:
    end_user, _ = EndUser.objects.get_or_create(integration=integration, botpress_user_id="user_1", name="Ada")
    session = HitlSession.objects.create(
        integration=integration, end_user=end_user, botpress_conversation_id=conversation_id, status=status
    )
    Ticket.objects.create(session=session, integration=integration, external_id=f"t-{conversation_id}")
    return session


@pytest.fixture
def integration(transactional_db, no_broker):
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    return integration


def _kinds(session, direction):
    return list(
        Delivery.objects.filter(session=session, direction=direction).order_by("id").values_list("kind", flat=True)
    )


def _ended_metric(reason: str) -> float:
    return REGISTRY.get_sample_value("hitl_sessions_ended_by_policy_total", {"reason": reason}) or 0.0


def _reply(session, comment_id="900"):
    ticket = session.ticket.external_id
    return InboundEvent(
        kind="agent_message",
        ticket_external_id=ticket,
        agent=GRACE,
        message_external_id=comment_id,
        text="I am here",
    )


# --- business hours arithmetic --------------------------------------------------------------
def _hours_policy(**extra) -> LifecyclePolicy:
    week = {day: [["09:00", "12:00"], ["13:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
    return LifecyclePolicy(business_hours=week, time_zone="Europe/Paris", holidays=["2026-12-25"], **extra)


def test_open_minutes_skip_lunch_nights_weekends_and_holidays():
    policy = _hours_policy()
    # Wednesday 11:50 + 20 open minutes: 10 before lunch, 10 after.
    start = dt.datetime(2026, 12, 2, 11, 50, tzinfo=PARIS)
    assert open_minutes_add(policy=policy, start=start, minutes=20) == dt.datetime(2026, 12, 2, 13, 10, tzinfo=PARIS)
    # Thursday 24 Dec 16:50 + 30: Friday is Christmas, then a weekend: Monday 09:20.
    start = dt.datetime(2026, 12, 24, 16, 50, tzinfo=PARIS)
    assert open_minutes_add(policy=policy, start=start, minutes=30) == dt.datetime(2026, 12, 28, 9, 20, tzinfo=PARIS)
    # Saturday night: the clock starts on Monday morning.
    start = dt.datetime(2026, 12, 5, 23, 0, tzinfo=PARIS)
    assert open_minutes_add(policy=policy, start=start, minutes=5) == dt.datetime(2026, 12, 7, 9, 5, tzinfo=PARIS)
    assert policy_is_open(policy=policy, at=dt.datetime(2026, 12, 2, 9, 0, tzinfo=PARIS))
    assert not policy_is_open(policy=policy, at=dt.datetime(2026, 12, 2, 12, 30, tzinfo=PARIS))
    assert not policy_is_open(policy=policy, at=dt.datetime(2026, 12, 25, 10, 0, tzinfo=PARIS))


def test_open_minutes_follow_the_wall_clock_across_dst():
    policy = LifecyclePolicy(business_hours={"sun": [["00:00", "24:00"]]}, time_zone="Europe/Paris", holidays=[])
    # 29 March 2026, 01:30 CET: at 02:00 clocks jump to 03:00 CEST, so one real hour later is 03:30.
    start = dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC)
    assert open_minutes_add(policy=policy, start=start, minutes=60) == dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)


def test_always_open_without_a_schedule():
    policy = LifecyclePolicy()
    now = timezone.now()
    assert policy_is_open(policy=policy, at=now)
    assert open_minutes_add(policy=policy, start=now, minutes=7) == now + dt.timedelta(minutes=7)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"business_hours": {"monday": [["09:00", "17:00"]]}}, "business_hours"),
        ({"business_hours": {"mon": [["17:00", "09:00"]]}}, "business_hours"),
        ({"business_hours": {"mon": []}}, "business_hours"),  # never opens
        ({"holidays": ["25/12/2026"]}, "holidays"),
        ({"assignment_timeout_minutes": 0}, "assignment_timeout_minutes"),
        ({"inactivity_warning_minutes": 5}, "inactivity_warning_minutes"),  # without a timeout
        ({"inactivity_timeout_minutes": 5, "inactivity_warning_minutes": 5}, "inactivity_warning_minutes"),
        ({"stop_reason": "x"}, "stop_reason"),
    ],
)
def test_policy_update_refuses_bad_settings(integration, changes, field):
    with pytest.raises(InvalidInput) as caught:
        integration_policy_update(integration=integration, changes=changes)
    assert caught.value.field == field
    assert not LifecyclePolicy.objects.exists()


# --- the API --------------------------------------------------------------------------------
def test_api_reads_and_changes_the_policy(transactional_db, no_broker):
    integration, api_key = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    client = APIClient()
    url = f"/api/v1/integrations/{integration.pk}/lifecycle"
    assert client.get(url).status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    default = client.get(url).json()
    assert default["assignmentTimeoutMinutes"] is None and default["timeZone"] == "UTC"
    waiting = _session(integration)
    response = client.patch(
        url,
        {
            "assignmentTimeoutMinutes": 15,
            "assignmentTimeoutKeepTicketOpen": True,
            "businessHours": {"mon": [["08:00", "18:00"]]},
            "timeZone": "Europe/Paris",
            "holidays": ["2026-12-25"],
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["assignmentTimeoutMinutes"] == 15
    assert response.json()["holidays"] == ["2026-12-25"]
    policy = LifecyclePolicy.objects.get(integration=integration)
    assert policy.assignment_timeout_keep_ticket_open and policy.business_hours == {"mon": [["08:00", "18:00"]]}
    # The waiting session is re-armed under the new settings.
    waiting.refresh_from_db()
    assert waiting.assignment_due_at == open_minutes_add(policy=policy, start=waiting.created_at, minutes=15)

    bad = client.patch(url, {"timeZone": "Nowhere/Land"}, format="json")
    assert bad.status_code == 400 and "timeZone" in bad.json()["fields"]
    bad = client.patch(url, {"inactivityTimeoutMinutes": -3}, format="json")
    assert bad.status_code == 400 and "inactivityTimeoutMinutes" in bad.json()["fields"]
    # Turning the timeout off disarms the waiting session.
    assert client.patch(url, {"assignmentTimeoutMinutes": None}, format="json").status_code == 200
    waiting.refresh_from_db()
    assert waiting.assignment_due_at is None


# --- the sweep, with time moved forward -----------------------------------------------------
def test_assignment_timeout_ends_the_session_once(integration):
    integration_policy_update(integration=integration, changes={"assignment_timeout_minutes": 10})
    session = _session(integration)
    session_lifecycle_start(session=session, now=session.created_at)
    before = _ended_metric("assignment_timeout")

    assert (
        session_timeouts_sweep(now=session.created_at + dt.timedelta(minutes=9, seconds=59))["assignment_timeout"] == 0
    )
    later = session.created_at + dt.timedelta(minutes=10)
    assert session_timeouts_sweep(now=later)["assignment_timeout"] == 1
    assert session_timeouts_sweep(now=later + dt.timedelta(hours=1))["assignment_timeout"] == 0

    session.refresh_from_db()
    assert session.status == SessionStatus.STOPPED and session.stopped_at == later
    assert (session.stopped_by, session.stop_reason) == (StoppedBy.POLICY, "assignment_timeout")
    # The agents' note before the close; the end user's message before hitlStopped.
    assert _kinds(session, Direction.TO_AGENT) == [DeliveryKind.MESSAGE_TO_AGENT, DeliveryKind.TICKET_CLOSE]
    assert _kinds(session, Direction.TO_USER) == [DeliveryKind.MESSAGE_TO_USER, DeliveryKind.EVENT_TO_USER]
    note = Message.objects.get(session=session, direction=Direction.TO_AGENT)
    assert "within 10 min" in note.payload["text"] and note.author_end_user is None
    told = Message.objects.get(session=session, direction=Direction.TO_USER)
    assert told.payload["text"] == LifecyclePolicy.objects.get().assignment_timeout_message
    assert told.author_agent is None
    action = OperatorAction.objects.get(session=session)
    assert (action.username, action.reason, action.user) == ("lifecycle policy", "assignment_timeout", None)
    assert _ended_metric("assignment_timeout") == before + 1
    assert dashboard_get(now=later).ended_by_policy_24h == 1


def test_assignment_timeout_can_keep_the_ticket_open(integration):
    integration_policy_update(
        integration=integration,
        changes={"assignment_timeout_minutes": 3, "assignment_timeout_keep_ticket_open": True},
    )
    session = _session(integration)
    session_lifecycle_start(session=session, now=session.created_at)
    assert session_timeouts_sweep(now=session.created_at + dt.timedelta(minutes=3))["assignment_timeout"] == 1
    assert _kinds(session, Direction.TO_AGENT) == [DeliveryKind.MESSAGE_TO_AGENT]  # a note, no close
    assert DeliveryKind.EVENT_TO_USER in _kinds(session, Direction.TO_USER)


def test_assigned_sessions_do_not_time_out_waiting(integration):
    integration_policy_update(integration=integration, changes={"assignment_timeout_minutes": 3})
    session = _session(integration)
    session_lifecycle_start(session=session, now=session.created_at)
    session_events_apply(integration=integration, events=[_reply(session)])
    assert session_timeouts_sweep(now=session.created_at + dt.timedelta(hours=2))["assignment_timeout"] == 0
    session.refresh_from_db()
    assert session.status == SessionStatus.ASSIGNED


def test_inactivity_warns_once_then_ends(integration):
    integration_policy_update(
        integration=integration, changes={"inactivity_timeout_minutes": 10, "inactivity_warning_minutes": 3}
    )
    session = _session(integration)
    session_events_apply(integration=integration, events=[_reply(session)])
    session.refresh_from_db()
    quiet = session.last_activity_at
    replies = Message.objects.filter(session=session, direction=Direction.TO_USER).count()

    assert session_timeouts_sweep(now=quiet + dt.timedelta(minutes=6, seconds=59)) == {
        "assignment_timeout": 0,
        "inactivity_timeout": 0,
        "inactivity_warning": 0,
    }
    assert session_timeouts_sweep(now=quiet + dt.timedelta(minutes=7))["inactivity_warning"] == 1
    assert session_timeouts_sweep(now=quiet + dt.timedelta(minutes=8))["inactivity_warning"] == 0  # once
    session.refresh_from_db()
    assert session.last_activity_at == quiet  # a warning is not activity
    warning = Message.objects.filter(session=session, direction=Direction.TO_USER).order_by("id").last()
    assert warning.payload["text"].startswith("Are you still there?")

    result = session_timeouts_sweep(now=quiet + dt.timedelta(minutes=10))
    assert result["inactivity_timeout"] == 1
    session.refresh_from_db()
    assert (session.stopped_by, session.stop_reason) == (StoppedBy.POLICY, "inactivity_timeout")
    assert Message.objects.filter(session=session, direction=Direction.TO_USER).count() == replies + 2
    assert _kinds(session, Direction.TO_USER)[-1] == DeliveryKind.EVENT_TO_USER
    assert _kinds(session, Direction.TO_AGENT)[-1] == DeliveryKind.TICKET_CLOSE


def test_a_message_after_the_warning_warns_again_later(integration):
    integration_policy_update(
        integration=integration, changes={"inactivity_timeout_minutes": 10, "inactivity_warning_minutes": 3}
    )
    session = _session(integration)
    session_events_apply(integration=integration, events=[_reply(session)])
    session.refresh_from_db()
    assert session_timeouts_sweep(now=session.last_activity_at + dt.timedelta(minutes=7))["inactivity_warning"] == 1
    session_events_apply(integration=integration, events=[_reply(session, comment_id="901")])  # silence broken
    session.refresh_from_db()
    assert session_timeouts_sweep(now=session.last_activity_at + dt.timedelta(minutes=6))["inactivity_warning"] == 0
    assert session_timeouts_sweep(now=session.last_activity_at + dt.timedelta(minutes=7))["inactivity_warning"] == 1
    assert session_timeouts_sweep(now=session.last_activity_at + dt.timedelta(minutes=8))["inactivity_warning"] == 0


def test_outside_business_hours_the_clock_waits_for_opening(integration):
    now = timezone.now()
    today = now.astimezone(dt.UTC).date()
    integration_policy_update(
        integration=integration,
        changes={
            "assignment_timeout_minutes": 30,
            "business_hours": {day: [["00:00", "24:00"]] for day in lifecycle.WEEKDAYS},
            "holidays": [today.isoformat()],
        },
    )
    session = _session(integration)
    session_lifecycle_start(session=session, now=now)
    opening = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    session.refresh_from_db()
    assert session.assignment_due_at == opening + dt.timedelta(minutes=30)
    # Told at once; still waiting.
    assert Message.objects.get(session=session, direction=Direction.TO_USER).payload["text"].startswith("Our agents")
    assert session.status == SessionStatus.PENDING
    assert session_timeouts_sweep(now=opening + dt.timedelta(minutes=29))["assignment_timeout"] == 0
    assert session_timeouts_sweep(now=opening + dt.timedelta(minutes=30))["assignment_timeout"] == 1


def test_outside_business_hours_can_end_at_once_keeping_the_ticket(integration):
    integration_policy_update(
        integration=integration,
        changes={"business_hours": {"mon": [["09:00", "09:01"]]}, "outside_hours_close": True},
    )
    session = _session(integration)
    monday_nine = dt.datetime(2026, 11, 30, 9, 0, 30, tzinfo=dt.UTC)
    session_lifecycle_start(session=session, now=monday_nine)  # open: nothing happens
    session.refresh_from_db()
    assert session.status == SessionStatus.PENDING and not Message.objects.filter(session=session).exists()

    other = _session(integration, "conv_2")
    session_lifecycle_start(session=other, now=monday_nine + dt.timedelta(minutes=1))
    other.refresh_from_db()
    assert (other.status, other.stopped_by, other.stop_reason) == (
        SessionStatus.STOPPED,
        StoppedBy.POLICY,
        "outside_business_hours",
    )
    assert _kinds(other, Direction.TO_AGENT) == [DeliveryKind.MESSAGE_TO_AGENT]  # a note, the ticket stays open
    assert _kinds(other, Direction.TO_USER) == [DeliveryKind.MESSAGE_TO_USER, DeliveryKind.EVENT_TO_USER]


def test_a_timer_due_while_the_gateway_was_down_is_ended_by_the_next_sweep(integration):
    """Durable timers: the due time is a column, so a sweep long after it (a restart) still ends it."""
    integration_policy_update(integration=integration, changes={"assignment_timeout_minutes": 5})
    sessions = [_session(integration, f"conv_{i}") for i in range(3)]
    for session in sessions:
        session_lifecycle_start(session=session, now=session.created_at)
    # Three days later, the first sweep after the restart ends them all, once.
    assert session_timeouts_sweep(now=timezone.now() + dt.timedelta(days=3))["assignment_timeout"] == 3
    assert session_timeouts_sweep(now=timezone.now() + dt.timedelta(days=3))["assignment_timeout"] == 0
    assert HitlSession.objects.filter(stopped_by=StoppedBy.POLICY).count() == 3


# --- cancel before assignment ---------------------------------------------------------------
def test_stop_hitl_while_waiting_leaves_a_note_before_closing(integration):
    waiting = _session(integration)
    session_stop(
        session=waiting, stopped_by=StoppedBy.BOTPRESS, reason="stopHitl", close_ticket=True, notify_botpress=False
    )
    assert _kinds(waiting, Direction.TO_AGENT) == [DeliveryKind.MESSAGE_TO_AGENT, DeliveryKind.TICKET_CLOSE]
    assert "user left" in Message.objects.get(session=waiting).payload["text"]

    assigned = _session(integration, "conv_2", status=SessionStatus.ASSIGNED)
    session_stop(
        session=assigned, stopped_by=StoppedBy.BOTPRESS, reason="stopHitl", close_ticket=True, notify_botpress=False
    )
    assert _kinds(assigned, Direction.TO_AGENT) == [DeliveryKind.TICKET_CLOSE]


# --- races (threads, PostgreSQL row locks) --------------------------------------------------
def _in_thread(call, errors):
    def run():
        try:
            call()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _hold_first(monkeypatch, target: str, holding: threading.Event, release: threading.Event):
    """Make ``target`` (a module attribute) pause once, in its transaction, until released."""
    module, name = target.rsplit(".", 1)
    import importlib

    owner = importlib.import_module(module)
    original = getattr(owner, name)
    state = {"first": True}

    def paused(*args, **kwargs):
        result = original(*args, **kwargs)
        if state.pop("first", False):
            holding.set()
            assert release.wait(10)
        return result

    monkeypatch.setattr(owner, name, paused)


@pytest.mark.parametrize("policy_kind", ["assignment", "inactivity"])
def test_reply_in_flight_wins_over_the_timer(integration, monkeypatch, policy_kind):
    """The reply holds the session's lock when the timer fires: the sweep waits, sees the
    reply, and ends nothing."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    status = SessionStatus.PENDING if policy_kind == "assignment" else SessionStatus.ASSIGNED
    session = _session(integration, status=status)
    if policy_kind == "assignment":
        integration_policy_update(integration=integration, changes={"assignment_timeout_minutes": 5})
        HitlSession.objects.filter(pk=session.pk).update(assignment_due_at=timezone.now() - dt.timedelta(minutes=1))
    else:
        integration_policy_update(integration=integration, changes={"inactivity_timeout_minutes": 5})
        old = timezone.now() - dt.timedelta(minutes=6)
        HitlSession.objects.filter(pk=session.pk).update(last_activity_at=old)
    holding, release, errors, results = threading.Event(), threading.Event(), [], []
    # The reply pauses after relaying, its transaction (and the row lock) still open.
    _hold_first(monkeypatch, "sessions_app.services.sessions.agent_reply_receive", holding, release)
    reply = _in_thread(lambda: session_events_apply(integration=integration, events=[_reply(session)]), errors)
    assert holding.wait(10)
    sweep = _in_thread(lambda: results.append(session_timeouts_sweep()), errors)
    sweep.join(0.5)
    assert sweep.is_alive()  # waiting for the reply's lock
    release.set()
    reply.join(10)
    sweep.join(10)
    assert not errors, errors
    assert results[0]["assignment_timeout"] == results[0]["inactivity_timeout"] == 0
    session.refresh_from_db()
    assert session.status == SessionStatus.ASSIGNED and not session.stopped_by
    assert Message.objects.filter(session=session, direction=Direction.TO_USER, author_agent__isnull=False).count() == 1
    assert not Delivery.objects.filter(session=session, kind=DeliveryKind.EVENT_TO_USER, payload__event="hitlStopped")


@pytest.mark.parametrize("policy_kind", ["assignment", "inactivity"])
def test_timer_in_flight_wins_over_the_reply(integration, monkeypatch, policy_kind):
    """The sweep holds the lock when the reply arrives: the reply waits, finds the session
    stopped, and relays nothing (the agent's comment stays in the ticket only)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    status = SessionStatus.PENDING if policy_kind == "assignment" else SessionStatus.ASSIGNED
    session = _session(integration, status=status)
    if policy_kind == "assignment":
        integration_policy_update(integration=integration, changes={"assignment_timeout_minutes": 5})
        HitlSession.objects.filter(pk=session.pk).update(assignment_due_at=timezone.now() - dt.timedelta(minutes=1))
    else:
        integration_policy_update(integration=integration, changes={"inactivity_timeout_minutes": 5})
        old = timezone.now() - dt.timedelta(minutes=6)
        HitlSession.objects.filter(pk=session.pk).update(last_activity_at=old)
    holding, release, errors, results = threading.Event(), threading.Event(), [], []
    # The sweep pauses after writing the agents' note, holding the session's lock.
    _hold_first(monkeypatch, "sessions_app.services.lifecycle.session_bot_note", holding, release)
    sweep = _in_thread(lambda: results.append(session_timeouts_sweep()), errors)
    assert holding.wait(10)
    reply = _in_thread(lambda: session_events_apply(integration=integration, events=[_reply(session)]), errors)
    reply.join(0.5)
    assert reply.is_alive()  # waiting for the sweep's lock
    release.set()
    sweep.join(10)
    reply.join(10)
    assert not errors, errors
    assert results[0][f"{policy_kind}_timeout"] == 1
    session.refresh_from_db()
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.POLICY
    assert not Message.objects.filter(session=session, author_agent__isnull=False).exists()
    stopped = Delivery.objects.filter(session=session, kind=DeliveryKind.EVENT_TO_USER, payload__event="hitlStopped")
    assert stopped.count() == 1


# --- the admin ------------------------------------------------------------------------------
def _admin_form(integration, **changes) -> dict:
    data = {
        "integration": str(integration.pk),
        "assignment_timeout_minutes": "20",
        "assignment_timeout_message": "Nobody is free.",
        "inactivity_timeout_minutes": "",
        "inactivity_timeout_message": "Closed.",
        "inactivity_warning_minutes": "",
        "inactivity_warning_message": "Still there?",
        "business_hours": '{"mon": [["09:00", "17:00"]]}',
        "time_zone": "Europe/Paris",
        "holidays": "[]",
        "outside_hours_message": "Closed now.",
    }
    return data | changes


def test_admin_edits_the_policy_through_the_service(integration, admin_client):
    waiting = _session(integration)
    add = "/admin/sessions_app/lifecyclepolicy/add/"
    refused = admin_client.post(add, _admin_form(integration, time_zone="Atlantis/Capital"))
    assert refused.status_code == 200 and "IANA time zone" in refused.content.decode()
    assert not LifecyclePolicy.objects.exists()
    response = admin_client.post(add, _admin_form(integration))
    assert response.status_code == 302, response.content.decode()[:2000]
    policy = LifecyclePolicy.objects.get(integration=integration)
    assert policy.assignment_timeout_minutes == 20 and policy.business_hours == {"mon": [["09:00", "17:00"]]}
    waiting.refresh_from_db()  # armed by the service
    assert waiting.assignment_due_at == open_minutes_add(policy=policy, start=waiting.created_at, minutes=20)
    change = f"/admin/sessions_app/lifecyclepolicy/{policy.pk}/change/"
    response = admin_client.post(change, _admin_form(integration, assignment_timeout_minutes=""))
    assert response.status_code == 302
    waiting.refresh_from_db()
    assert waiting.assignment_due_at is None


def test_dashboard_shows_sessions_ended_by_timeout(integration, admin_client):
    integration_policy_update(integration=integration, changes={"assignment_timeout_minutes": 1})
    session = _session(integration)
    HitlSession.objects.filter(pk=session.pk).update(assignment_due_at=timezone.now() - dt.timedelta(seconds=1))
    assert session_timeouts_sweep()["assignment_timeout"] == 1
    page = admin_client.get("/admin/sessions_app/hitlsession/dashboard/").content.decode()
    assert "Ended by timeout, 24 h" in page
    # What /metrics serves, from any process: counted from the audit trail, not in the worker's memory.
    exposed = generate_latest(REGISTRY).decode()
    assert 'hitl_sessions_ended_by_policy_total{reason="assignment_timeout"} 1.0' in exposed
    assert 'hitl_sessions_ended_by_policy_total{reason="inactivity_timeout"} 0.0' in exposed
    listing = admin_client.get("/admin/sessions_app/hitlsession/", {"stopped_by__exact": "policy"})
    assert listing.status_code == 200 and "conv_1" in listing.content.decode()
    # The session's page: the transition and the audit entry name the policy and the reason.
    detail = admin_client.get(f"/admin/sessions_app/hitlsession/{session.pk}/change/").content.decode()
    assert "Lifecycle policy (timeout, business hours): assignment_timeout" in detail
    assert "lifecycle policy" in detail and "Ended the session by a lifecycle policy" in detail
