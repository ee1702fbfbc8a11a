"""The outbox on real PostgreSQL: lane order under concurrent workers, retries, dead rows, sweeper.

Executors are replaced by recorders here (narrow tests of the mechanism); the end-to-end tests
run the real ones.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from outbound.http import PermanentError, RetryableError
from sessions_app.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Direction,
    EndUser,
    HitlSession,
    SessionStatus,
    StoppedBy,
)
from sessions_app.services import deliveries, outbox
from tests.conftest import integration_for


@pytest.fixture
def scheduled(monkeypatch):
    """Record what would be sent to the broker instead of sending it."""
    calls: list[tuple[int, float]] = []
    monkeypatch.setattr(
        outbox, "delivery_schedule", lambda *, delivery_id, countdown=0: calls.append((delivery_id, countdown))
    )
    return calls


@pytest.fixture
def session(db):
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    end_user = EndUser.objects.create(integration=integration, botpress_user_id="user_1", name="Ada")
    return HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id="conv_1")


def _enqueue(session, kind=DeliveryKind.MESSAGE_TO_AGENT, **payload):
    return outbox.delivery_enqueue(
        integration_id=session.integration_id, kind=kind, direction=Direction.TO_AGENT, session=session, payload=payload
    )


@pytest.fixture
def executor(monkeypatch):
    """A stand-in executor whose behaviour each delivery's payload chooses."""
    ran: list[int] = []

    def run(delivery):
        ran.append(delivery.payload.get("n"))
        behaviour = delivery.payload.get("fail")
        if behaviour == "retry":
            raise RetryableError("busy", 429, retry_after=delivery.payload.get("retry_after"))
        if behaviour == "permanent":
            raise PermanentError("Record validation errors", 422)
        if behaviour == "crash":
            raise KeyError("bug")
        return {"n": delivery.payload.get("n")}

    for kind in DeliveryKind.values:
        monkeypatch.setitem(deliveries.EXECUTORS, kind, run)
    return ran


def test_enqueue_sends_only_after_commit(session, scheduled, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        delivery = _enqueue(session, n=1)
        assert scheduled == []
    assert len(callbacks) == 1 and scheduled == [(delivery.pk, 0)]


def test_only_a_lane_head_sends_a_task(session, scheduled, executor, django_capture_on_commit_callbacks):
    """Rows behind a pending one are carried on by its drainer: no task each."""
    other = HitlSession.objects.create(
        integration=session.integration, end_user=session.end_user, botpress_conversation_id="conv_2"
    )
    with django_capture_on_commit_callbacks(execute=True):
        head, _behind, elsewhere = _enqueue(session, n=1), _enqueue(session, n=2), _enqueue(other, n=3)
    with django_capture_on_commit_callbacks(execute=True):
        later = _enqueue(session, n=4)
    assert [pk for pk, _ in scheduled] == [head.pk, elsewhere.pk]
    assert outbox.lane_drain(delivery_id=head.pk) == 3, "the head's drainer carries the lane on"
    assert executor == [1, 2, 4]
    with django_capture_on_commit_callbacks(execute=True):
        after = _enqueue(session, n=5)
    assert scheduled[-1] == (after.pk, 0), "a row enqueued into an idle lane is its head"
    assert later.pk < after.pk


def test_a_lane_drains_in_order(session, scheduled, executor):
    rows = [_enqueue(session, n=n) for n in range(5)]
    assert outbox.lane_drain(delivery_id=rows[3].pk) == 5, "any row of the lane drains it from its head"
    assert executor == [0, 1, 2, 3, 4]
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.SUCCEEDED}
    assert all(row.attempt_log.get().outcome == "succeeded" for row in Delivery.objects.all())


def test_a_failing_head_holds_back_only_its_own_lane(session, scheduled, executor):
    other = HitlSession.objects.create(
        integration=session.integration, end_user=session.end_user, botpress_conversation_id="conv_2"
    )
    head = _enqueue(session, n=1, fail="retry", retry_after=30)
    behind = _enqueue(session, n=2)
    elsewhere = _enqueue(other, n=3)
    outbox.lane_drain(delivery_id=behind.pk)
    outbox.lane_drain(delivery_id=elsewhere.pk)
    assert executor == [1, 3]
    head.refresh_from_db()
    behind.refresh_from_db()
    assert head.status == DeliveryStatus.PENDING and behind.status == DeliveryStatus.PENDING
    assert head.next_attempt_at >= timezone.now() + timedelta(seconds=29), "Retry-After is honoured"
    assert scheduled[-1][0] == head.pk and scheduled[-1][1] >= 30
    assert head.last_status_code == 429 and head.attempt_log.get().outcome == "retry"


def test_backoff_grows_and_the_budget_ends_in_a_dead_row(session, scheduled, executor, settings):
    settings.HITL = settings.HITL | {"DELIVERY_BACKOFF_BASE_SECONDS": 1, "DELIVERY_RETRY_BUDGET_SECONDS": 5}
    row = _enqueue(session, n=1, fail="retry")
    delays = []
    for _ in range(6):
        Delivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
        outbox.lane_drain(delivery_id=row.pk)
        if scheduled and scheduled[-1][0] == row.pk:
            delays.append(scheduled.pop()[1])
    row.refresh_from_db()
    assert row.status == DeliveryStatus.DEAD and 3 <= row.attempts <= 5
    assert all(0.5 * 2**i <= d <= 2**i for i, d in enumerate(delays)), delays
    session.refresh_from_db()
    assert session.needs_attention


def test_a_permanent_refusal_is_dead_at_once(session, scheduled, executor):
    row = _enqueue(session, n=1, fail="permanent")
    following = _enqueue(session, n=2)
    outbox.lane_drain(delivery_id=row.pk)
    row.refresh_from_db()
    following.refresh_from_db()
    assert row.status == DeliveryStatus.DEAD and row.attempts == 1 and "422" in row.last_error
    assert following.status == DeliveryStatus.SUCCEEDED, "a dead row does not block the lane forever"


def test_a_refused_ticket_ends_the_session_and_tells_botpress(session, scheduled, executor):
    row = _enqueue(session, kind=DeliveryKind.TICKET_CREATE, n=1, fail="permanent")
    outbox.lane_drain(delivery_id=row.pk)
    session.refresh_from_db()
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.HELPDESK_REFUSED
    assert "422" in session.stop_reason
    event = Delivery.objects.get(session=session, kind=DeliveryKind.EVENT_TO_USER)
    assert event.payload == {"event": "hitlStopped"}


def test_a_crashing_executor_is_retried_not_lost(session, scheduled, executor):
    row = _enqueue(session, n=1, fail="crash")
    outbox.lane_drain(delivery_id=row.pk)
    row.refresh_from_db()
    assert row.status == DeliveryStatus.PENDING and "KeyError" in row.last_error


def test_retry_of_a_dead_delivery(session, scheduled, executor, django_capture_on_commit_callbacks):
    row = _enqueue(session, n=1, fail="permanent")
    outbox.lane_drain(delivery_id=row.pk)
    with django_capture_on_commit_callbacks(execute=True):
        outbox.delivery_retry(delivery=row)
    row.refresh_from_db()
    assert row.status == DeliveryStatus.PENDING and row.retry_deadline > timezone.now() + timedelta(hours=23)


def test_sweeper_resends_only_idle_due_lane_heads(session, scheduled, executor, settings):
    settings.HITL = settings.HITL | {"DELIVERY_STALE_SECONDS": 0}
    head, behind = _enqueue(session, n=1), _enqueue(session, n=2)
    later = _enqueue(
        HitlSession.objects.create(
            integration=session.integration, end_user=session.end_user, botpress_conversation_id="conv_3"
        ),
        n=3,
    )
    Delivery.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    sent: list[int] = []
    assert outbox.outbox_sweep(schedule=lambda *, delivery_id: sent.append(delivery_id)) == 1
    assert sent == [head.pk] and behind.pk not in sent


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_overtake_each_other(scheduled, monkeypatch):
    """Four threads drain one lane at once; the executor must see strict order and no overlap."""
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    end_user = EndUser.objects.create(integration=integration, botpress_user_id="user_1", name="Ada")
    session = HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id="c")
    rows = [_enqueue(session, n=n) for n in range(40)]
    seen, active, overlaps = [], [0], []
    lock = threading.Lock()

    def run(delivery):
        with lock:
            active[0] += 1
            overlaps.append(active[0])
        time.sleep(0.002)
        seen.append(delivery.payload["n"])
        with lock:
            active[0] -= 1
        return {}

    monkeypatch.setitem(deliveries.EXECUTORS, DeliveryKind.MESSAGE_TO_AGENT, run)

    def worker(start):
        try:
            for row in rows[start::4]:
                outbox.lane_drain(delivery_id=row.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == list(range(40))
    assert max(overlaps) == 1
    assert Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 40


def test_a_worker_that_died_mid_call_leaves_a_lease_that_marks_the_retry(session, scheduled, monkeypatch):
    seen = []
    monkeypatch.setitem(
        deliveries.EXECUTORS, DeliveryKind.MESSAGE_TO_AGENT, lambda d: seen.append(d.maybe_delivered) or {}
    )
    row = _enqueue(session, n=1)
    assert outbox._lane_claim(row.lane).pk == row.pk  # claimed, then the worker is "killed"
    assert outbox.lane_drain(delivery_id=row.pk) == 0, "a live lease is respected"
    Delivery.objects.filter(pk=row.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert outbox.lane_drain(delivery_id=row.pk) == 1
    row.refresh_from_db()
    assert seen == [True] and row.attempts == 2 and row.status == DeliveryStatus.SUCCEEDED
    assert not row.maybe_delivered and row.lease_until is None


def test_an_error_without_an_answer_marks_the_retry(session, scheduled, monkeypatch):
    calls = []

    def run(delivery):
        calls.append(delivery.maybe_delivered)
        if len(calls) == 1:
            raise RetryableError("timed out: ReadTimeout")
        return {}

    monkeypatch.setitem(deliveries.EXECUTORS, DeliveryKind.MESSAGE_TO_AGENT, run)
    row = _enqueue(session, n=1)
    outbox.lane_drain(delivery_id=row.pk)
    Delivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    outbox.lane_drain(delivery_id=row.pk)
    assert calls == [False, True]


def test_sweeper_resends_a_head_whose_lease_expired(session, scheduled, executor, settings):
    settings.HITL = settings.HITL | {"DELIVERY_STALE_SECONDS": 0}
    row = _enqueue(session, n=1)
    outbox._lane_claim(row.lane)
    sent: list[int] = []
    assert outbox.outbox_sweep(schedule=lambda *, delivery_id: sent.append(delivery_id)) == 0
    Delivery.objects.filter(pk=row.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert outbox.outbox_sweep(schedule=lambda *, delivery_id: sent.append(delivery_id)) == 1
