"""The operators' console says what matters in words (issue 14, "The console"): a session with
no ticket is a problem everywhere, deliveries say what is known, the ticket's status follows the
events, the conversation starts before the handoff, the integration page has its buttons, the
lock-out page is an admin page, the charts read at any count.

No outbound HTTP (``tests/test_admin.py``'s guard applies here too); the browser side of each
point is in ``tests/test_console_browser.py``.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from providers.base import AgentProfile, InboundEvent, WebhookInstallation
from providers.zendesk import ZendeskProvider
from sessions_app import charts, selectors
from sessions_app.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryKind,
    DeliveryStatus,
    Direction,
    HitlSession,
    SessionStatus,
    StoppedBy,
    Ticket,
)
from sessions_app.services.sessions import session_events_apply
from tests import test_admin
from tests.test_admin import html, make_integration, make_session, url

# The admin tests' fixtures: no outbound HTTP at all (autouse), a session with everything.
no_outbound_http = test_admin.no_outbound_http
world = test_admin.world

REFUSED = "could not reach http://127.0.0.1:9: connection refused"


def _ticket_create_failing(session: HitlSession, *, attempts: int = 4, next_in: float = 30, dead: bool = False):
    """The session's ticket creation as the outbox leaves it after ``attempts`` refused connections."""
    Ticket.objects.filter(session=session).delete()
    Delivery.objects.filter(session=session, kind=DeliveryKind.TICKET_CREATE).delete()
    now = timezone.now()
    delivery = Delivery.objects.create(
        integration=session.integration,
        session=session,
        lane=f"session:{session.pk}:to_agent",
        direction=Direction.TO_AGENT,
        kind=DeliveryKind.TICKET_CREATE,
        status=DeliveryStatus.DEAD if dead else DeliveryStatus.PENDING,
        attempts=attempts,
        maybe_delivered=True,  # what the outbox sets for any failure without an HTTP answer
        next_attempt_at=now + timedelta(seconds=next_in),
        retry_deadline=now + timedelta(days=1),
        last_error=REFUSED,
    )
    for number in range(1, attempts + 1):
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=now,
            duration_ms=3,
            outcome="dead" if dead and number == attempts else "retry",
            error=REFUSED,
        )
    return delivery


def _waiting_session(integration, n: int) -> HitlSession:
    session = make_session(integration, n)
    HitlSession.objects.filter(pk=session.pk).update(status=SessionStatus.PENDING, agent=None, assigned_at=None)
    Delivery.objects.filter(session=session, status=DeliveryStatus.DEAD).delete()
    session.refresh_from_db()
    return session


# --- words ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "status", "ms", "delivered", "reason"),
    [
        (REFUSED, None, 3, False, "connection refused"),
        ("could not reach https://acme.test: host name not found", None, 5, False, "host name not found"),
        ("timed out: ConnectTimeout", None, 5000, False, "could not connect after 5 s"),
        ("timed out: ReadTimeout", None, 10012, None, "timed out after 10 s"),
        ("HTTP 503: Service unavailable", 503, 40, False, "HTTP 503: Service unavailable"),
        ("Maintenance", 503, 40, False, "HTTP 503: Maintenance"),
        ("internal error: KeyError: 'x'", None, 1, None, "internal error: KeyError: 'x'"),
    ],
)
def test_a_failed_attempt_says_what_is_known(error, status, ms, delivered, reason):
    words = selectors.failure_words(error=error, status_code=status, duration_ms=ms)
    assert (words.delivered, words.reason) == (delivered, reason)


def test_delivery_outcomes_in_words(world):
    dead = world.dead
    assert selectors.delivery_outcome(delivery=dead) == "not delivered, gave up: HTTP 422: comment refused 1"
    assert selectors.delivery_outcome(delivery=world.succeeded) == "delivered"
    refused = _ticket_create_failing(world.session, attempts=2, next_in=30)
    now = timezone.now()
    assert selectors.delivery_outcome(delivery=refused, now=now).startswith(
        "not delivered yet: connection refused (help desk unreachable); next try in "
    )
    # A read timeout: the help desk may have done it.
    DeliveryAttempt.objects.filter(delivery=refused, number=2).update(error="timed out: ReadTimeout", duration_ms=10000)
    refused.last_error = "timed out: ReadTimeout"
    assert selectors.delivery_outcome(delivery=refused, now=refused.next_attempt_at) == (
        "outcome unknown: timed out after 10 s; next try in 0 s"
    )
    # Kinds in words, not ``ticket_create #2``.
    assert str(refused) == f"Create the ticket (delivery {refused.pk}, pending)"


def test_the_delivery_page_shows_no_maybe_delivered_tick(admin_client, world):
    refused = _ticket_create_failing(world.session)
    content = html(admin_client.get(url("delivery", "change", refused.pk)))
    assert "not delivered yet: connection refused (help desk unreachable)" in content
    assert "Maybe delivered" not in content and "maybe delivered" not in content
    listing = html(admin_client.get(url("delivery")))
    assert "not delivered yet: connection refused" in listing and "Create the ticket" in listing


# --- a ticket that was never created ----------------------------------------------------------
def test_ticket_not_created_is_a_problem_everywhere_from_the_first_failure(admin_client, db):
    integration, _ = make_integration()
    session = _waiting_session(integration, 1)
    other = make_session(integration, 2)  # assigned, with a dead delivery: another problem
    HitlSession.objects.filter(pk=other.pk).update(needs_attention=True)  # as the outbox flags it
    delivery = _ticket_create_failing(session, attempts=1)

    # From the first failed attempt: the banner, the list badge, the dashboard.
    story = selectors.session_story(session=session)
    assert story.ticket_problem is not None and story.ticket_problem.attempts == 1
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(delivery=delivery, number=n, started_at=timezone.now(), duration_ms=2, outcome="retry")
        for n in (2, 3, 4)
    )
    Delivery.objects.filter(pk=delivery.pk).update(attempts=4)
    story = selectors.session_story(session=session)
    problem = selectors.ticket_problem(
        deliveries=story.deliveries, now=delivery.next_attempt_at - timedelta(seconds=30)
    )
    assert problem.banner == "ticket not created: help desk unreachable, 4 attempts, next in 30 s"

    page = html(admin_client.get(url("hitlsession", "change", session.pk)))
    assert 'id="ticket-problem"' in page and "ticket not created: help desk unreachable, 4 attempts, next in " in page
    assert REFUSED in page

    listing = admin_client.get(url("hitlsession"))
    badges = re.findall(r'<span class="problem-badge">([^<]*)</span>', html(listing))
    assert sorted(badges) == ["delivery failed (gave up)", "ticket not created"]
    only = admin_client.get(url("hitlsession"), {"problem": "ticket"})
    assert list(only.context["cl"].result_list) == [session]

    figures = selectors.dashboard_get()
    assert figures.tickets_not_created == 1
    assert figures.sessions_needing_attention == 2  # the flagged one and the one with no ticket
    dashboard = html(admin_client.get(reverse("admin:sessions_app_hitlsession_dashboard")))
    card = re.search(r'data-figure="tickets-not-created">\s*<div class="value">(\d+)</div>', dashboard)
    assert card and card.group(1) == "1"
    assert 'class="dash-card alert" href="/admin/sessions_app/hitlsession/?problem=ticket"' in dashboard

    # Once the ticket exists the problem is gone.
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SUCCEEDED, last_error="")
    assert selectors.dashboard_get().tickets_not_created == 0
    assert 'id="ticket-problem"' not in html(admin_client.get(url("hitlsession", "change", session.pk)))


def test_an_attempt_in_flight_is_not_a_problem_yet(db):
    integration, _ = make_integration()
    session = _waiting_session(integration, 1)
    delivery = _ticket_create_failing(session, attempts=1)
    Delivery.objects.filter(pk=delivery.pk).update(last_error="")
    DeliveryAttempt.objects.filter(delivery=delivery).delete()
    assert selectors.session_story(session=session).ticket_problem is None
    assert selectors.dashboard_get().tickets_not_created == 0


def test_a_ticket_the_desk_gave_up_on_says_so(admin_client, db):
    integration, _ = make_integration()
    session = _waiting_session(integration, 1)
    _ticket_create_failing(session, attempts=5, dead=True)
    story = selectors.session_story(session=session)
    assert story.ticket_problem.banner == "ticket not created: help desk unreachable, 5 attempts, gave up"


# --- the session list -------------------------------------------------------------------------
def test_the_list_has_seven_columns_and_no_yes_no_icons(admin_client, db):
    integration, _ = make_integration()
    healthy = make_session(integration, 1)
    Delivery.objects.filter(session=healthy, status=DeliveryStatus.DEAD).update(status=DeliveryStatus.SUCCEEDED)
    response = admin_client.get(url("hitlsession"))
    content = html(response)
    headers = re.findall(r'<th scope="col" class="([^"]*)"', content)
    assert len(headers) == 8  # the checkbox and seven columns
    assert "icon-no.svg" not in content and "icon-yes.svg" not in content
    assert "problem-badge" not in content  # a healthy session shows no problem at all
    assert re.search(r"assigned after \d+ s", content)
    assert "Help 1" in content and "open" in content  # the title, the ticket's status


def test_status_words_and_how_a_session_ended():
    now = timezone.now()
    waiting = HitlSession(status=SessionStatus.PENDING, created_at=now - timedelta(seconds=24))
    assert selectors.session_status_text(waiting, now=now) == "waiting 24 s"
    user_ended = HitlSession(
        status=SessionStatus.STOPPED,
        created_at=now - timedelta(minutes=4, seconds=12),
        stopped_at=now,
        stopped_by=StoppedBy.BOTPRESS,
        stop_reason="stopHitl",
    )
    assert selectors.session_end_text(user_ended) == "ended by the end user (stopHitl), after 4 min 12 s"
    closed = HitlSession(
        status=SessionStatus.STOPPED,
        created_at=now - timedelta(hours=1),
        stopped_at=now,
        stopped_by=StoppedBy.OPERATOR,
        stop_reason="phoned",
    )
    assert selectors.session_end_text(closed) == "closed by an operator: phoned, after 1 h 00 min"


# --- the session page -------------------------------------------------------------------------
def test_history_title_priority_and_the_end_on_the_session_page(admin_client, world):
    session = world.session
    HitlSession.objects.filter(pk=session.pk).update(
        extras={"priority": "urgent"},
        message_history=[
            {"source": {"type": "user", "userId": "user_1"}, "type": "text", "payload": {"text": "where is my parcel"}},
            {"source": {"type": "bot"}, "type": "text", "payload": {"text": "Let me get a human"}},
        ],
        status=SessionStatus.STOPPED,
        stopped_at=session.created_at + timedelta(minutes=3),
        stopped_by=StoppedBy.BOTPRESS,
        stop_reason="stopHitl",
    )
    content = html(admin_client.get(url("hitlsession", "change", session.pk)))
    assert '<h2 class="session-title">Help 1</h2>' in content
    assert "priority: urgent" in content
    assert content.count("before handoff") >= 2
    # Before the handoff, then the handoff line, then the relayed conversation.
    assert content.index("where is my parcel") < content.index("Let me get a human") < content.index("handoff to a")
    assert content.index("handoff to a") < content.index("hello from user 1")
    assert "&quot;source&quot;" not in content and '"source"' not in content  # no raw JSON line
    assert "ended by the end user (stopHitl), after 3 min 00 s" in content
    assert "waited -" not in content


def test_resend_only_on_delivered_messages(admin_client, world):
    first = world.session.messages.get(botpress_message_id="msg_1_1")  # its delivery is dead
    image = world.session.messages.get(type="image")
    Delivery.objects.create(
        integration=world.integration,
        session=world.session,
        message=image,
        lane="x",
        direction=Direction.TO_AGENT,
        kind=DeliveryKind.MESSAGE_TO_AGENT,
        status=DeliveryStatus.SUCCEEDED,
        attempts=1,
        next_attempt_at=timezone.now(),
        retry_deadline=timezone.now(),
    )
    content = html(admin_client.get(url("hitlsession", "change", world.session.pk)))
    assert url("hitlsession", "resend", world.session.pk, image.pk) in content
    assert url("hitlsession", "resend", world.session.pk, first.pk) not in content


def test_ticket_status_follows_assigned_and_solved_events(world):
    session = world.session
    HitlSession.objects.filter(pk=session.pk).update(status=SessionStatus.PENDING, agent=None)
    ticket = Ticket.objects.get(session=session)
    Ticket.objects.filter(pk=ticket.pk).update(status="new")
    agent = AgentProfile(external_id="agent_9", name="Grace")
    session_events_apply(
        integration=world.integration,
        events=[InboundEvent(kind="assigned", ticket_external_id=ticket.external_id, agent=agent)],
    )
    assert Ticket.objects.get(pk=ticket.pk).status == "assigned"
    session_events_apply(
        integration=world.integration,
        events=[InboundEvent(kind="stopped", ticket_external_id=ticket.external_id, agent=agent)],
    )
    assert Ticket.objects.get(pk=ticket.pk).status == "solved"
    session.refresh_from_db()
    assert session.stopped_by == StoppedBy.AGENT


# --- the integration page ---------------------------------------------------------------------
def test_integration_page_has_the_buttons_and_consistent_labels(admin_client, world, monkeypatch):
    page = html(admin_client.get(url("integration", "change", world.integration.pk)))
    install = url("integration", "install_webhook", world.integration.pk)
    rotate = url("integration", "rotate_api_key", world.integration.pk)
    assert f'action="{install}"' in page and f'href="{rotate}"' in page
    for label in ("API key prefix", "Botpress API URL", "Help-desk bot user id", "Botpress bot id"):
        assert f"{label}:" in page, label
    assert "Api key prefix" not in page and "Helpdesk bot user id" not in page

    monkeypatch.setattr(
        ZendeskProvider,
        "webhook_install",
        lambda self, *, url, previous_state: WebhookInstallation(signing_secret="whsec-9", state={"webhook_id": "w"}),
    )
    assert admin_client.get(install).status_code == 405
    done = admin_client.post(install, follow=True)
    assert any("help-desk webhook installed" in str(m) for m in done.context["messages"])
    world.integration.refresh_from_db()
    assert world.integration.provider_installation == {"webhook_id": "w"}

    old_hash = world.integration.api_key_hash
    asked = admin_client.get(rotate)
    assert asked.status_code == 200 and "stops working at once" in html(asked)
    world.integration.refresh_from_db()
    assert world.integration.api_key_hash == old_hash  # asking changes nothing
    rotated = admin_client.post(rotate, follow=True)
    keys = re.findall(r"<code>(hitl_[A-Za-z0-9_-]+)</code>", html(rotated))
    world.integration.refresh_from_db()
    assert len(keys) == 1 and hashlib.sha256(keys[0].encode()).hexdigest() == world.integration.api_key_hash


def test_integration_buttons_need_the_change_permission(db, world):
    from django.contrib.auth.models import Group

    from sessions_app.services.operators import OPERATORS_GROUP, operator_groups_ensure

    operator_groups_ensure()
    user = User.objects.create_user("watcher", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATORS_GROUP))
    client = Client()
    client.force_login(user)
    assert client.post(url("integration", "install_webhook", world.integration.pk)).status_code == 403
    assert client.post(url("integration", "rotate_api_key", world.integration.pk)).status_code == 403


# --- lock-out page, favicon -------------------------------------------------------------------
def test_lockout_page_is_an_admin_page_saying_how_long(db, settings):
    User.objects.create_user("ops", password="right-password-123", is_staff=True)
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("admin:login"), {"username": "ops", "password": "wrong"})
    locked = client.post(reverse("admin:login"), {"username": "ops", "password": "wrong"})
    assert locked.status_code == 429
    content = html(locked)
    assert "HITL gateway" in content and "admin/css/base.css" in content  # the admin's look
    assert '<strong id="lockout-duration">15 minutes</strong>' in content
    assert "After 5 failed attempts" in content


def test_favicon(client, admin_client):
    answer = client.get("/favicon.ico")
    assert answer.status_code == 302 and answer["Location"].endswith("sessions_app/favicon.svg")
    assert 'rel="icon"' in html(admin_client.get(url("delivery")))  # Django's own admin pages too


# --- charts -----------------------------------------------------------------------------------
def test_a_chart_reads_at_any_count():
    points = [charts.Point(f"{h:02d}:00", 0, "") for h in range(24)]
    empty = charts.bar_chart(points, title="t", y_label="sessions", x_label="hour", empty_text="Nothing yet.")
    assert empty["empty"] and empty["bars"] == []

    points[-1] = charts.Point("23:00", 1, "23:00: 1 session")
    one = charts.bar_chart(points, title="t", y_label="sessions", x_label="hour", empty_text="")
    assert [t["label"] for t in one["y_ticks"]] == ["0", "1"]  # whole numbers only
    (bar,) = one["bars"]
    assert bar["value"] == "1" and bar["w"] < 25  # a bar in its hour's slot, not the width
    assert len(one["x_labels"]) <= charts.MAX_X_LABELS and one["x_labels"][0]["label"] == "00:00"

    many = charts.bar_chart(
        [charts.Point(str(i), 1000 + i, "") for i in range(24)], title="t", y_label="", x_label="", empty_text=""
    )
    assert [t["label"] for t in many["y_ticks"]] == ["0", "500", "1000", "1500", "2000"]
    assert all(b["value"] == "" for b in many["bars"])  # too many values to write over the bars
    assert charts.nice_top(7) == 10 and charts.nice_top(1.2) == 2 and charts.nice_top(230) == 250


def test_dashboard_charts_empty_state(admin_client, db):
    content = html(admin_client.get(reverse("admin:sessions_app_hitlsession_dashboard")))
    assert "No session started in the last 24 hours." in content
    assert "No session was assigned to an agent in the last 14 days." in content
    assert '<svg role="img"' not in content
