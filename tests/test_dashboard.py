"""The operators' dashboard and the session list at scale.

- The figures are right (percentiles as PostgreSQL's ``percentile_cont``, and the portable
  fallback gives the same), and each links to a list showing exactly that many rows.
- Queries do not grow with the data, and with 100,000 sessions the list's main query is an
  index scan and the pages answer well within a generous bound (timings are printed and saved
  to ``artifacts/perf/admin-100k.txt``, not asserted tightly).
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sessions_app import selectors
from sessions_app.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Direction,
    EndUser,
    HitlSession,
    HumanAgent,
    Integration,
    Message,
    SessionStatus,
    Ticket,
    WebhookEvent,
    WebhookRejection,
    WebhookStatus,
)
from sessions_app.services.integrations import integration_create

PERF_REPORT = Path(__file__).resolve().parent.parent / "artifacts" / "perf" / "admin-100k.txt"
postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL features")


@pytest.fixture(autouse=True)
def no_outbound_http(monkeypatch):
    def refuse(self, request, *args, **kwargs):
        raise AssertionError(f"outbound HTTP attempted: {request.method} {request.url}")

    monkeypatch.setattr("requests.adapters.HTTPAdapter.send", refuse)


def _integration() -> Integration:
    integration, _ = integration_create(
        name="Acme support",
        provider_base_url="http://127.0.0.1:9",
        provider_credentials={"email": "gateway@acme.test", "api_token": "zd-dashboard-token-1"},
        botpress_api_url="http://127.0.0.1:9",
        botpress_token="bp-dashboard-token-1",
        botpress_bot_id="bot_dash",
        botpress_integration_id="intg_dash",
    )
    return integration


def _session(integration, n, *, created_ago, assigned_after=None, reply_after=None, stopped_ago=None):
    now = timezone.now()
    end_user = EndUser.objects.create(
        integration=integration, botpress_user_id=f"user_{n}", name=f"User {n}", email=f"u{n}@example.com"
    )
    session = HitlSession.objects.create(
        integration=integration, end_user=end_user, botpress_conversation_id=f"conv_{n}"
    )
    created = now - created_ago
    fields = {"created_at": created, "status": SessionStatus.PENDING}
    if assigned_after is not None:
        fields |= {"assigned_at": created + assigned_after, "status": SessionStatus.ASSIGNED}
    if stopped_ago is not None:
        fields |= {"stopped_at": now - stopped_ago, "status": SessionStatus.STOPPED}
    HitlSession.objects.filter(pk=session.pk).update(**fields)
    if reply_after is not None:
        agent = HumanAgent.objects.create(integration=integration, external_user_id=f"agent_{n}", name=f"Agent {n}")
        for offset in (reply_after, reply_after + timedelta(minutes=5)):  # only the first counts
            message = Message.objects.create(
                session=session, direction=Direction.TO_USER, type="text", payload={"text": "hi"}, author_agent=agent
            )
            Message.objects.filter(pk=message.pk).update(created_at=created + offset)
    return session


@pytest.fixture
def scene(db):
    """A day of work whose figures are known in advance."""
    integration = _integration()
    s = timedelta(seconds=1)
    _session(integration, 1, created_ago=timedelta(minutes=30))  # waiting 30 min
    _session(integration, 2, created_ago=timedelta(minutes=5))  # waiting 5 min
    _session(integration, 3, created_ago=timedelta(hours=2), assigned_after=60 * s, reply_after=90 * s)
    _session(integration, 4, created_ago=timedelta(hours=3), assigned_after=120 * s, reply_after=300 * s)
    _session(integration, 5, created_ago=timedelta(hours=4), assigned_after=600 * s)
    _session(integration, 6, created_ago=timedelta(days=3), assigned_after=1200 * s, stopped_ago=timedelta(days=2))
    stopped_today = _session(integration, 7, created_ago=timedelta(minutes=50), stopped_ago=timedelta(minutes=1))
    HitlSession.objects.filter(pk=stopped_today.pk).update(needs_attention=True)
    now = timezone.now()
    for status, attempts, error in [
        (DeliveryStatus.DEAD, 3, "HTTP 422: refused"),
        (DeliveryStatus.PENDING, 2, "HTTP 503: unavailable"),  # failing
        (DeliveryStatus.PENDING, 0, ""),  # just queued
        (DeliveryStatus.SUCCEEDED, 1, ""),
    ]:
        Delivery.objects.create(
            integration=integration,
            session=stopped_today,
            lane="l",
            direction=Direction.TO_AGENT,
            kind=DeliveryKind.MESSAGE_TO_AGENT,
            status=status,
            attempts=attempts,
            last_error=error,
            next_attempt_at=now,
            retry_deadline=now + timedelta(days=1),
        )
    for status, ago in [(WebhookStatus.FAILED, timedelta(hours=1)), (WebhookStatus.PROCESSED, timedelta(hours=1))]:
        event = WebhookEvent.objects.create(integration=integration, provider="zendesk", status=status)
        WebhookEvent.objects.filter(pk=event.pk).update(received_at=now - ago)
    # Rejected webhooks are hourly counters: 2 an hour ago, 1 three days ago, 4 eight days ago.
    for count, ago in [(2, timedelta(hours=1)), (1, timedelta(days=3)), (4, timedelta(days=8))]:
        bucket = (now - ago).replace(minute=0, second=0, microsecond=0)
        counter = {"reason": "signature mismatch", "count": count, "first_at": bucket, "last_at": bucket}
        WebhookRejection.objects.create(integration=integration, bucket=bucket, **counter)
    return integration


def _seconds(value):
    return round(value.total_seconds(), 3) if value is not None else None


@pytest.mark.parametrize("force_python", [False, True], ids=["database", "python"])
def test_dashboard_figures(scene, force_python):
    d = selectors.dashboard_get(force_python=force_python)
    assert (d.waiting, d.assigned, d.stopped_today, d.sessions_needing_attention) == (2, 3, 1, 1)
    assert timedelta(minutes=29) < d.longest_wait < timedelta(minutes=31)
    assert (d.deliveries_dead, d.deliveries_failing) == (1, 1)
    assert (d.webhooks_rejected_24h, d.webhooks_rejected_7d, d.webhooks_failed) == (2, 3, 1)
    got = {
        (metric, window): (p.count, _seconds(p.median), _seconds(p.p90))
        for metric, windows in d.durations.items()
        for window, p in windows.items()
    }
    # percentile_cont: linear interpolation between closest ranks.
    assert got == {
        ("assignment", "24h"): (3, 120.0, 504.0),
        ("assignment", "7d"): (4, 360.0, 1020.0),
        ("first_reply", "24h"): (2, 195.0, 279.0),
        ("first_reply", "7d"): (2, 195.0, 279.0),
    }
    assert sum(n for _, n in d.started_per_hour) == 6  # the 3-day-old session is outside
    medians = [m for _, m in d.assignment_median_per_day if m is not None]
    assert len(d.assignment_median_per_day) == selectors.TREND_DAYS and len(medians) in (2, 3)


def test_percentile_fallback_matches_the_definition():
    assert selectors.percentile([], 0.5) is None
    assert selectors.percentile([7], 0.9) == 7
    assert selectors.percentile([1, 2, 3, 4], 0.5) == 2.5
    assert selectors.percentile([10, 20, 30, 40, 50], 0.9) == pytest.approx(46)


@postgres_only
def test_percentile_fallback_matches_postgres(db):
    values = [random.uniform(0, 5000) for _ in range(257)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v), percentile_cont(0.9) WITHIN GROUP (ORDER BY v) "
            "FROM unnest(%s::float8[]) AS v",
            [values],
        )
        p50, p90 = cursor.fetchone()
    assert selectors.percentile(values, 0.5) == pytest.approx(p50)
    assert selectors.percentile(values, 0.9) == pytest.approx(p90)


def test_every_figure_links_to_a_list_of_that_many(admin_client, scene):
    response = admin_client.get(reverse("admin:sessions_app_hitlsession_dashboard"))
    assert response.status_code == 200
    content = response.content.decode()
    checked = 0
    for card in response.context["cards"]:
        listed = admin_client.get(card["url"])
        assert listed.status_code == 200, card
        if card["label"].startswith("Webhooks rejected"):  # counters: the figure is the sum of the rows' counts
            assert sum(r.count for r in listed.context["cl"].queryset) == card["value"], card["label"]
        else:
            assert listed.context["cl"].result_count == card["value"], card["label"]
        assert f'href="{card["url"]}"'.replace("&", "&amp;") in content
        checked += 1
    for row in response.context["durations"]:
        assert admin_client.get(row["url"]).context["cl"].result_count == row["count"], row
        checked += 1
    assert checked == 14
    # The longest wait links to the waiting sessions, oldest first.
    waiting = admin_client.get(response.context["cards"][0]["url"]).context["cl"].result_list
    assert [s.botpress_conversation_id for s in waiting] == ["conv_1", "conv_2"]
    # One bar per hour or day that has one (an empty slot keeps its place on the axis).
    d = response.context["d"]
    bars = sum(1 for _, n in d.started_per_hour if n) + sum(1 for _, m in d.assignment_median_per_day if m)
    assert bars and content.count('<rect class="bar"') == bars
    assert "longest wait 30 min" in content or "longest wait 29 min" in content


def test_dashboard_query_count_does_not_grow(admin_client, scene):
    page = reverse("admin:sessions_app_hitlsession_dashboard")
    admin_client.get(page)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(page)
    for n in range(100, 140):
        _session(scene, n, created_ago=timedelta(hours=n % 30), assigned_after=timedelta(seconds=n), reply_after=None)
    with CaptureQueriesContext(connection) as many:
        admin_client.get(page)
    assert len(many.captured_queries) == len(few.captured_queries)


def test_dashboard_on_the_embedded_default_path(admin_client, scene, monkeypatch):
    """What SQLite runs: the same page through the Python percentiles."""
    original = selectors.dashboard_get
    monkeypatch.setattr(selectors, "dashboard_get", lambda **kw: original(force_python=True))
    response = admin_client.get(reverse("admin:sessions_app_hitlsession_dashboard"))
    assert response.status_code == 200 and "504" not in response.content.decode()
    assert response.context["durations"][0]["median"] == "2 min 00 s"
    assert response.context["durations"][0]["p90"] == "8 min 24 s"


# --- 100,000 sessions ---------------------------------------------------------------------------
N = 100_000
MAIN_QUERY = 'SELECT "sessions_app_hitlsession"."id"'


def _bulk_sessions(integration: Integration) -> None:
    """100,000 sessions with an end user, a ticket and a message each, spread over 30 days."""
    batch = 10_000
    EndUser.objects.bulk_create(
        (
            EndUser(
                integration=integration, botpress_user_id=f"user_{i}", name=f"Person {i}", email=f"p{i}@example.com"
            )
            for i in range(N)
        ),
        batch_size=batch,
    )
    agents = HumanAgent.objects.bulk_create(
        HumanAgent(integration=integration, external_user_id=f"agent_{i}", name=f"Agent {i}") for i in range(50)
    )
    users = list(EndUser.objects.filter(integration=integration).order_by("id").values_list("id", flat=True))
    statuses = [SessionStatus.PENDING] + [SessionStatus.ASSIGNED] * 2 + [SessionStatus.STOPPED] * 7
    HitlSession.objects.bulk_create(
        (
            HitlSession(
                integration=integration,
                end_user_id=user_id,
                agent=None if i % 10 == 0 else agents[i % 50],
                botpress_conversation_id=f"conv_{i}",
                status=statuses[i % 10],
            )
            for i, user_id in enumerate(users)
        ),
        batch_size=batch,
    )
    sessions = list(HitlSession.objects.filter(integration=integration).values_list("id", "botpress_conversation_id"))
    Ticket.objects.bulk_create(
        (Ticket(session_id=pk, integration=integration, external_id=conv[5:]) for pk, conv in sessions),
        batch_size=batch,
    )
    Message.objects.bulk_create(
        (
            Message(session_id=pk, direction=Direction.TO_AGENT, type="text", payload={"text": f"order {conv} is late"})
            for pk, conv in sessions
        ),
        batch_size=batch,
    )
    now = timezone.now()
    Delivery.objects.bulk_create(
        Delivery(
            integration=integration,
            session_id=pk,
            lane="l",
            direction=Direction.TO_AGENT,
            kind=DeliveryKind.MESSAGE_TO_AGENT,
            status=DeliveryStatus.DEAD,
            next_attempt_at=now,
            retry_deadline=now,
        )
        for pk, _ in sessions[::100]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE sessions_app_hitlsession SET created_at = now() - random() * interval '30 days', "
            "last_activity_at = now() - random() * interval '30 days'"
        )
        cursor.execute(
            "UPDATE sessions_app_hitlsession SET assigned_at = created_at + random() * interval '20 minutes' "
            "WHERE status <> 'pending'"
        )
        cursor.execute(
            "UPDATE sessions_app_hitlsession SET stopped_at = assigned_at + interval '30 minutes' "
            "WHERE status = 'stopped'"
        )
        for table in ("hitlsession", "enduser", "ticket", "message", "delivery", "humanagent"):
            cursor.execute(f"ANALYZE sessions_app_{table}")


def _explain(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


@postgres_only
def test_100k_sessions_list_uses_indexes_and_answers_quickly(admin_client, db):
    started = time.monotonic()
    _bulk_sessions(_integration())
    report = [f"setup: {N} sessions, end users, tickets, messages in {time.monotonic() - started:.1f} s"]
    pages = {
        "list (default order)": {},
        "list, waiting, oldest first": {"status__exact": "pending", "o": "7"},
        "list, failed deliveries": {"failed_deliveries": "dead"},
        "list, one agent": {"agent__id__exact": HumanAgent.objects.order_by("id").values_list("id", flat=True)[3]},
        "search, end-user email": {"q": "p77777@example.com"},
        "search, name": {"q": "Person 99999"},
        "search, ticket id": {"q": "31337"},
        "search, message text": {"q": "conv_55555 is late"},
    }
    url = reverse("admin:sessions_app_hitlsession_changelist")
    main_queries = {}
    for label, query in pages.items():
        admin_client.get(url, query)  # warm
        with CaptureQueriesContext(connection) as queries:
            clock = time.monotonic()
            response = admin_client.get(url, query)
            elapsed = time.monotonic() - clock
        assert response.status_code == 200
        cl = response.context["cl"]
        if label.startswith("search"):
            assert cl.result_count == 1, label
        main = next(q["sql"] for q in queries.captured_queries if q["sql"].startswith(MAIN_QUERY))
        main_queries[label] = main
        report.append(
            f"{label}: {elapsed * 1000:.0f} ms, {len(queries.captured_queries)} queries, {cl.result_count} rows"
        )
        assert elapsed < 10, f"{label} took {elapsed:.1f} s"  # generous: CI machines vary

    plans = {label: _explain(sql) for label, sql in main_queries.items()}
    default = plans["list (default order)"]
    assert "session_created" in default and "Seq Scan on sessions_app_hitlsession" not in default, default
    waiting = plans["list, waiting, oldest first"]
    assert "Seq Scan on sessions_app_hitlsession" not in waiting, waiting
    for label in ("search, end-user email", "search, name"):
        assert "trgm" in plans[label], plans[label]
    assert "message_text_trgm" in plans["search, message text"], plans["search, message text"]
    assert "ticket_external_id" in plans["search, ticket id"], plans["search, ticket id"]

    clock = time.monotonic()
    dashboard = admin_client.get(reverse("admin:sessions_app_hitlsession_dashboard"))
    elapsed = time.monotonic() - clock
    assert dashboard.status_code == 200
    report.append(f"dashboard: {elapsed * 1000:.0f} ms")
    assert elapsed < 10
    for label, plan in plans.items():
        report.append(f"\n--- EXPLAIN {label}\n{plan}")
    PERF_REPORT.parent.mkdir(parents=True, exist_ok=True)
    PERF_REPORT.write_text("\n".join(report) + "\n")
    print("\n".join(report[:11]))
