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
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from outbound.http import PermanentError, RetryableError
from sessions_app.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryKind,
    DeliveryStatus,
    Direction,
    EndUser,
    HitlSession,
    SessionStatus,
    StoppedBy,
)
from sessions_app.services import deliveries, outbox, relay, relays
from tests.conftest import integration_for


@pytest.fixture
def scheduled(monkeypatch):
    """Record the rows whose relay would be woken (retries, sweeper) instead of sending a task."""
    calls: list[tuple[int, float]] = []
    monkeypatch.setattr(
        outbox, "delivery_schedule", lambda *, delivery_id, countdown=0: calls.append((delivery_id, countdown))
    )
    return calls


@pytest.fixture
def relayed(monkeypatch):
    """Record the relay tasks that would be sent (queue, countdown) instead of sending them."""
    calls: list[tuple[str, float | None]] = []

    def send(*, queue, countdown=None):
        calls.append((queue, countdown))
        return True

    monkeypatch.setattr(outbox, "_relay_send", send)
    monkeypatch.setattr(relays, "relay_send", send)
    return calls


@pytest.fixture
def relay_threads():
    """The relay's pool threads hold connections of their own: closed after the test."""
    yield
    relay.relay_threads_stop()


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


def test_enqueue_wakes_the_relay_only_after_commit(session, relayed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        _enqueue(session, n=1)
        assert relayed == []
    assert len(callbacks) == 1 and relayed == [("", None)]


def test_a_burst_across_sessions_rings_the_relay_once(session, relayed, executor, django_capture_on_commit_callbacks):
    """The doorbell: one message until the relay answers it; after that the next write rings again."""
    other = HitlSession.objects.create(
        integration=session.integration, end_user=session.end_user, botpress_conversation_id="conv_2"
    )
    for n, target in enumerate([session, session, other, other]):
        with django_capture_on_commit_callbacks(execute=True):
            _enqueue(target, n=n)
    assert relayed == [("", None)], "one message for the burst"
    assert relays.relay_queue_serve(queue="") == 4
    assert sorted(executor) == [0, 1, 2, 3]
    with django_capture_on_commit_callbacks(execute=True):
        _enqueue(other, n=4)
    assert relayed == [("", None), ("", None)], "the relay answered: the next row rings again"


def test_a_relay_out_of_time_hands_over_to_a_fresh_task(session, relayed, executor, monkeypatch):
    _enqueue(session, n=1)
    relayed.clear()
    monkeypatch.setattr(relays, "RELAY_MAX_SECONDS", 0.0)
    assert relays.relay_queue_serve(queue="") == 0
    assert relayed == [("", None)], "the rest is handed to a fresh relay task"
    assert executor == [] and Delivery.objects.get().status == DeliveryStatus.PENDING


def test_a_lost_relay_message_lets_the_next_write_ring(session, monkeypatch, django_capture_on_commit_callbacks):
    sent = []

    def broker_down(*, queue, countdown=None):
        sent.append(queue)
        return False

    monkeypatch.setattr(outbox, "_relay_send", broker_down)
    for n in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            _enqueue(session, n=n)
    assert sent == ["", ""], "a ring whose message failed is reset, not left on"


def test_a_burst_of_outbox_rows_rings_once_per_interval_off_the_writers_thread(
    session, monkeypatch, settings, django_capture_on_commit_callbacks
):
    """Each committed row asks its queue's relay to be rung; the process's signal thread rings
    at most once per ``OUTBOX_RING_SECONDS``, and a ring always follows the last commit."""
    settings.HITL = settings.HITL | {"OUTBOX_RING_SECONDS": 0.05}
    rings: list[tuple[str, float, str]] = []
    outbox._ring_signal.cache_clear()
    monkeypatch.setattr(
        outbox, "_ring_now", lambda *, queue: rings.append((queue, time.monotonic(), threading.current_thread().name))
    )
    started = time.monotonic()
    while time.monotonic() - started < 0.25:
        last_commit = time.monotonic()  # just before the commit: a ring may follow it at once
        with django_capture_on_commit_callbacks(execute=True):
            _enqueue(session)
        time.sleep(0.002)
    deadline = time.monotonic() + 2
    while (not rings or rings[-1][1] < last_commit) and time.monotonic() < deadline:
        time.sleep(0.005)
    writes = Delivery.objects.count()
    assert writes > 10 and 1 <= len(rings) <= 10, (writes, len(rings))
    assert rings[-1][1] >= last_commit, "a ring started after the last commit"
    assert {queue for queue, _, _ in rings} == {""}
    assert threading.current_thread().name not in {name for _, _, name in rings}


def test_one_claim_takes_the_heads_of_many_lanes(session, relayed):
    sessions = [session] + [
        HitlSession.objects.create(
            integration=session.integration, end_user=session.end_user, botpress_conversation_id=f"conv_{i}"
        )
        for i in range(2, 5)
    ]
    rows = {s.pk: [_enqueue(s, n=n) for n in range(3)] for s in sessions}
    waiting = _enqueue(sessions[3], n=9)  # a head that is not due holds its lane
    Delivery.objects.filter(lane=waiting.lane).update(next_attempt_at=timezone.now() + timedelta(minutes=1))
    media = outbox.delivery_enqueue(
        integration_id=session.integration_id,
        kind=DeliveryKind.MESSAGE_TO_USER,
        direction=Direction.TO_USER,
        session=session,
        queue="media",
    )
    with CaptureQueriesContext(connection) as queries:
        claimed = outbox._heads_claim(limit=10, queue="")
    assert len(queries) == 2, "one claim statement and one read, whatever the batch"
    assert sorted(d.pk for d in claimed) == sorted(rows[s.pk][0].pk for s in sessions[:3])
    assert all(d.lease_until and d.attempts == 1 and d.session.integration for d in claimed)
    assert outbox._heads_claim(limit=10, queue="") == [], "leased heads hold their lanes"
    assert [d.pk for d in outbox._heads_claim(limit=10, queue="media")] == [media.pk]


def test_rows_behind_a_pending_row_are_parked_out_of_the_due_scan(session, relayed, executor, scheduled):
    """A lane's backlog is parked: the claim's scan of due rows does not walk it while its head
    runs or waits for a retry, and each settled head unparks the next row, whatever the outcome."""
    other = HitlSession.objects.create(
        integration=session.integration, end_user=session.end_user, botpress_conversation_id="conv_2"
    )
    head = _enqueue(session, n=1, fail="retry", retry_after=30)
    behind = [_enqueue(session, n=n) for n in (2, 3)]
    elsewhere = _enqueue(other, n=9)
    assert [head.parked, elsewhere.parked] == [False, False] and all(row.parked for row in behind)
    due = Delivery.objects.filter(status=DeliveryStatus.PENDING, parked=False)
    assert set(due.values_list("pk", flat=True)) == {head.pk, elsewhere.pk}, "only lane heads are scanned"

    assert sorted(d.pk for d in outbox._heads_claim(limit=10, queue="")) == sorted([head.pk, elsewhere.pk])
    Delivery.objects.filter(pk__in=[head.pk, elsewhere.pk]).update(lease_until=None)
    outbox.lane_drain(delivery_id=head.pk)  # the head is retried later: its lane stays parked
    assert Delivery.objects.get(pk=behind[0].pk).parked
    Delivery.objects.filter(pk=head.pk).update(payload={"n": 1}, next_attempt_at=timezone.now())
    assert outbox.outbox_relay(queue="") == 4, "the relay's claims reach each unparked follower"
    assert [n for n in executor if n != 9] == [1, 1, 2, 3] and 9 in executor

    dead = _enqueue(other, n=10, fail="permanent")
    after_dead = _enqueue(other, n=11)
    assert after_dead.parked
    assert outbox.outbox_relay(queue="") == 2
    dead.refresh_from_db()
    after_dead.refresh_from_db()
    assert dead.status == DeliveryStatus.DEAD
    assert after_dead.status == DeliveryStatus.SUCCEEDED, "a dead head unparks its follower too"


def test_the_first_row_behind_a_running_head_stays_due(session, relayed, executor):
    """A running head may be settling this moment, unable to see a row written now: that row
    stays due (the claim's guard keeps it in order), and the rows after it park behind it."""
    head = _enqueue(session, n=1)
    (claimed,) = outbox._heads_claim(limit=1, queue="")
    first, second = _enqueue(session, n=2), _enqueue(session, n=3)
    assert not first.parked and second.parked
    assert outbox._heads_claim(limit=10, queue="") == [], "the due follower waits for its head"
    assert outbox._attempt(claimed) == (True, None) and claimed.pk == head.pk
    assert outbox.outbox_relay(queue="") == 2 and executor == [1, 2, 3]


def test_the_sweeper_unparks_a_row_whose_earlier_one_left_without_it(session, relayed, executor):
    """A row written while its lane's head settled (the settle could not see it) is parked with
    nothing before it: the sweeper makes it due and wakes its relay."""
    row = _enqueue(session, n=1)
    Delivery.objects.filter(pk=row.pk).update(parked=True)
    assert outbox._heads_claim(limit=10, queue="") == [], "a parked row is not in the due scan"
    relayed.clear()
    assert outbox.outbox_sweep() == 1
    assert relayed == [("", None)] and not Delivery.objects.get(pk=row.pk).parked
    assert relays.relay_queue_serve(queue="") == 1 and executor == [1]


def test_a_record_after_the_lease_was_taken_over_writes_nothing(session, relayed, executor):
    row = _enqueue(session, n=1)
    (mine,) = outbox._heads_claim(limit=1, queue="")
    # Our lease expired mid-call and another worker claimed the row again.
    Delivery.objects.filter(pk=row.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    (theirs,) = outbox._heads_claim(limit=1, queue="")
    assert theirs.maybe_delivered and theirs.attempts == 2
    assert outbox._attempt(mine) == (False, None)
    row.refresh_from_db()
    assert row.status == DeliveryStatus.PENDING and row.lease_until == theirs.lease_until
    assert outbox._attempt(theirs) == (True, None)
    row.refresh_from_db()
    assert row.status == DeliveryStatus.SUCCEEDED and row.lease_until is None


def test_a_batch_is_recorded_in_one_statement_with_its_attempt_log(session, relayed, executor, scheduled):
    sessions = [session] + [
        HitlSession.objects.create(
            integration=session.integration, end_user=session.end_user, botpress_conversation_id=f"conv_{i}"
        )
        for i in range(2, 5)
    ]
    rows = [_enqueue(s, n=n, **({"fail": "retry"} if n == 1 else {})) for n, s in enumerate(sessions)]
    claimed = outbox._heads_claim(limit=10, queue="")
    # The last row's lease expired mid-call and another worker took it over.
    Delivery.objects.filter(pk=rows[3].pk).update(lease_until=timezone.now() + timedelta(minutes=5))
    ran = [(delivery, outbox._run(delivery)) for delivery in claimed]
    with CaptureQueriesContext(connection) as queries:
        results = outbox._attempts_record(ran)
    if connection.vendor == "postgresql":
        assert len(queries) == 1, [q["sql"] for q in queries]  # no BEGIN/COMMIT: one statement
    assert results[0] == (True, None) and results[2] == (True, None) and results[3] == (False, None)
    assert results[1][0] is False and results[1][1] > 0
    assert scheduled == [(rows[1].pk, results[1][1])]
    statuses = dict(Delivery.objects.values_list("pk", "status"))
    assert [statuses[row.pk] for row in rows] == ["succeeded", "pending", "succeeded", "pending"]
    logged = {a.delivery_id: a for a in DeliveryAttempt.objects.all()}
    assert sorted(logged) == sorted(row.pk for row in rows), "every attempt that ran is logged, a lost lease's too"
    assert logged[rows[1].pk].outcome == "retry" and logged[rows[1].pk].status_code == 429
    assert logged[rows[1].pk].error == "HTTP 429: busy" and logged[rows[0].pk].number == 1
    assert all(a.started_at and a.duration_ms >= 0 for a in logged.values())


def test_a_delivery_deleted_mid_call_does_not_stop_its_batch_being_recorded(session, relayed, executor):
    other = HitlSession.objects.create(
        integration=session.integration, end_user=session.end_user, botpress_conversation_id="conv_2"
    )
    rows = [_enqueue(session, n=1), _enqueue(other, n=2)]
    ran = [(delivery, outbox._run(delivery)) for delivery in outbox._heads_claim(limit=10, queue="")]
    Delivery.objects.filter(pk=rows[1].pk).delete()  # e.g. its session's cascade
    assert outbox._attempts_record(ran) == [(True, None), (False, None)]
    assert Delivery.objects.get(pk=rows[0].pk).status == DeliveryStatus.SUCCEEDED
    assert list(DeliveryAttempt.objects.values_list("delivery_id", flat=True)) == [rows[0].pk]


def _sessions(count: int) -> list[HitlSession]:
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    end_user = EndUser.objects.create(integration=integration, botpress_user_id="user_1", name="Ada")
    return [
        HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id=f"c{i}")
        for i in range(count)
    ]


class _Recorder:
    """An executor that notes, per lane, the order of calls and whether two ever overlapped."""

    def __init__(self, pause: float) -> None:
        self.pause, self.lock = pause, threading.Lock()
        self.seen: dict[str, list[int]] = {}
        self.calls: dict[int, int] = {}
        self.active: dict[str, int] = {}
        self.overlap_in_lane = False
        self.running = self.most_running = 0

    def __call__(self, delivery):
        with self.lock:
            self.active[delivery.lane] = self.active.get(delivery.lane, 0) + 1
            self.overlap_in_lane |= self.active[delivery.lane] > 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.calls[delivery.pk] = self.calls.get(delivery.pk, 0) + 1
        time.sleep(self.pause)
        with self.lock:
            self.seen.setdefault(delivery.lane, []).append(delivery.payload["n"])
            self.active[delivery.lane] -= 1
            self.running -= 1
        return {}


@pytest.mark.django_db(transaction=True)
def test_the_relay_runs_lanes_side_by_side_each_in_order(relayed, monkeypatch, relay_threads, settings):
    settings.HITL = settings.HITL | {"RELAY_THREADS": 4}
    sessions = _sessions(6)
    for n in range(8):
        for s in sessions:
            _enqueue(s, n=n)
    recorder = _Recorder(pause=0.02)
    monkeypatch.setitem(deliveries.EXECUTORS, DeliveryKind.MESSAGE_TO_AGENT, recorder)
    assert outbox.outbox_relay(queue="") == 48
    assert all(order == list(range(8)) for order in recorder.seen.values()) and len(recorder.seen) == 6
    assert not recorder.overlap_in_lane, "a lane never runs two rows at once"
    assert recorder.most_running == 4, "lanes ran side by side, as many as the relay's threads"
    assert Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 48
    assert DeliveryAttempt.objects.count() == 48


@pytest.mark.django_db(transaction=True)
def test_two_relays_on_the_same_lanes_never_both_send(relayed, monkeypatch, relay_threads, settings):
    """Two relays (two worker processes, or machines) at once: each row sent once, each lane in order."""
    settings.HITL = settings.HITL | {"RELAY_THREADS": 3}
    sessions = _sessions(4)
    for n in range(15):
        for s in sessions:
            _enqueue(s, n=n)
    recorder = _Recorder(pause=0.003)
    monkeypatch.setitem(deliveries.EXECUTORS, DeliveryKind.MESSAGE_TO_AGENT, recorder)
    counts = []

    def worker():
        try:
            counts.append(outbox.outbox_relay(queue=""))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 60 and set(recorder.calls.values()) == {1}, "every row sent exactly once"
    assert all(order == list(range(15)) for order in recorder.seen.values())
    assert not recorder.overlap_in_lane
    assert Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 60


def test_the_relay_retries_and_kills_like_a_drain(session, relayed, scheduled, executor):
    """Outcomes recorded in a batch keep their rules: Retry-After, dead rows, the lane behind."""
    other = HitlSession.objects.create(
        integration=session.integration, end_user=session.end_user, botpress_conversation_id="conv_2"
    )
    waiting = _enqueue(session, n=1, fail="retry", retry_after=30)
    _enqueue(session, n=2)
    dead = _enqueue(other, n=3, fail="permanent")
    after_dead = _enqueue(other, n=4)
    outbox.outbox_relay(queue="")
    assert sorted(executor) == [1, 3, 4]
    waiting.refresh_from_db()
    dead.refresh_from_db()
    after_dead.refresh_from_db()
    assert waiting.status == DeliveryStatus.PENDING and waiting.next_attempt_at >= timezone.now() + timedelta(
        seconds=29
    )
    assert scheduled == [(waiting.pk, pytest.approx(scheduled[0][1]))] and scheduled[0][1] >= 30
    assert dead.status == DeliveryStatus.DEAD and after_dead.status == DeliveryStatus.SUCCEEDED
    other.refresh_from_db()
    assert other.needs_attention


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


def test_sweeper_wakes_one_relay_per_queue(session, relayed, settings):
    settings.HITL = settings.HITL | {"DELIVERY_STALE_SECONDS": 0}
    _enqueue(session, n=1)
    _enqueue(HitlSession.objects.create(integration=session.integration, end_user=session.end_user), n=2)
    relayed.clear()
    assert outbox.outbox_sweep() == 2
    assert relayed == [("", None)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_overtake_each_other(scheduled, relayed, monkeypatch):
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


def test_rate_limit_waits_do_not_grow_the_backoff(session, scheduled, executor, settings):
    """A row paced or rate limited many times (Slack's channel pacing) comes back within the
    rate-limit cap, not after the exponential backoff its earlier waits grew; a failure still
    backs off in full."""
    settings.HITL = settings.HITL | {"DELIVERY_BACKOFF_BASE_SECONDS": 2.0, "DELIVERY_BACKOFF_MAX_SECONDS": 600.0}
    paced = _enqueue(session, n=1, fail="retry", retry_after=1)
    Delivery.objects.filter(pk=paced.pk).update(attempts=12)  # eleven waits so far
    outbox.lane_drain(delivery_id=paced.pk)
    paced.refresh_from_db()
    assert paced.status == DeliveryStatus.PENDING
    assert 1.0 <= scheduled[-1][1] <= 30.0, "at most the rate-limit cap, not 2 s x 2^12"
    Delivery.objects.filter(pk=paced.pk).update(payload={"n": 1, "fail": "retry"}, next_attempt_at=timezone.now())
    outbox.lane_drain(delivery_id=paced.pk)
    assert scheduled[-1][1] >= 300, "without Retry-After the backoff applies"


@pytest.mark.parametrize(("fed", "did_something"), [(True, 1), (False, 1), (True, 0)])
def test_a_source_that_feeds_another_has_it_asked_again_at_once(
    fed, did_something, monkeypatch, relay_threads, settings
):
    """An applied webhook is an outbox row: the outbox is asked right after the apply settles,
    not after its rest, even while other items run (``Source.feeds``); an item that did
    nothing (a false outcome) leaves the fed source resting."""
    settings.HITL = settings.HITL | {"RELAY_THREADS": 4}
    monkeypatch.setattr(relay, "IDLE_SOURCE_SECONDS", 5.0)  # a rest far longer than the test
    fed_work, slow_may_end, asked = threading.Event(), threading.Event(), []

    def once(item):
        taken = []
        return lambda limit, running: [] if taken else (taken.append(item) or [item])

    def fed_claim(limit, running):
        asked.append(time.monotonic())
        if fed_work.is_set() and not slow_may_end.is_set():
            slow_may_end.set()  # claimed: the slow item may end
            return ["x"]
        return []

    def feeder_run(item):
        fed_work.set()  # what the feeder committed is the fed source's work
        return did_something

    noop = lambda finished: None  # noqa: E731
    sources = [
        relay.Source(name="fed", claim=fed_claim, lane_of=str, execute=lambda item: True, settle=noop),
        relay.Source(name="slow", claim=once("s"), lane_of=str, execute=lambda item: slow_may_end.wait(3), settle=noop),
        relay.Source(
            name="feeder", claim=once("f"), lane_of=str, execute=feeder_run, settle=noop, feeds=("fed",) if fed else ()
        ),
    ]
    started = time.monotonic()
    settled, _ = relay.relay_run(sources=sources, max_seconds=30)
    assert settled == 3
    if fed and did_something:
        assert time.monotonic() - started < 2, "the fed source was asked as soon as the feeder settled"
    else:
        assert time.monotonic() - started >= 3, "it rested until the slow item gave up"


def test_the_default_relay_has_applied_webhooks_feed_its_outbox(monkeypatch):
    served = {}
    monkeypatch.setattr(relays, "relay_serve", lambda **kwargs: served.update(kwargs) or 0)
    relays.relay_queue_serve(queue="")
    outbox_source, webhook_source = served["sources"]
    assert webhook_source.feeds == (outbox_source.name,) == ("outbox:",)
    relays.relay_queue_serve(queue="media")
    assert [source.name for source in served["sources"]] == ["outbox:media"]
