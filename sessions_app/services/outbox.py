"""The outbox: deliveries are rows written with the change that caused them; tasks execute them.

Guarantees:
- *Nothing lost*: a row is committed before anything is enqueued (``on_commit``), and the
  sweeper re-enqueues due rows, so a lost broker message or a killed worker only delays work.
- *In order*: rows of one lane (a session and a direction) go out strictly by ``id``. Only the
  lane's head is ever executed, claimed with a lease taken under SKIP LOCKED, so a second
  worker backs off instead of overtaking. A failing head holds back only its own lane.
- *Not doubled*: a lease that expired, or an error without an answer, marks the row
  ``maybe_delivered``; its executor then looks for what the lost attempt may have created.
- *Retries*: exponential backoff with full jitter, at least what Retry-After asks, until the
  retry budget is spent; permanent refusals (4xx) are dead at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, Model, OuterRef, Q
from django.utils import timezone

from hitl_gateway import metrics
from hitl_gateway.compiled import (
    CompiledQuery,
    row_insert,
    row_update,
    rows_insert_linked,
    rows_update_params,
    rows_update_sql,
)
from outbound.http import OutboundError, PermanentError, RetryableError
from sessions_app.models import Delivery, DeliveryAttempt, DeliveryKind, DeliveryStatus, HitlSession, Message
from sessions_app.services.relay import ReadySignal, Source, relay_doorbell, relay_run, relay_send, relay_wake

log = structlog.get_logger(__name__)

LANE_BUDGET = 50  # deliveries ``lane_drain`` runs before handing the lane to a relay task
RELAY_MAX_SECONDS = 20.0  # a relay task claims for this long, then hands over to a fresh task


class DeliverySkipped(Exception):
    """Nothing to do any more (for example, no ticket exists to close)."""


def lane_for(*, session: HitlSession | None, direction: str, key: str = "") -> str:
    return f"session:{session.pk}:{direction}" if session else f"{key}:{direction}"


def _delivery_build(
    *,
    integration_id,
    kind: str,
    direction: str,
    session: HitlSession | None,
    message: Message | None,
    payload: dict | None,
    lane_key: str,
    queue: str,
) -> tuple[Delivery, dict]:
    """An unsaved outbox row and what its INSERT computes (``parked``: see ``_lane_waiting_sql``)."""
    now = timezone.now()
    delivery = Delivery(
        integration_id=integration_id,
        session=session,
        message=message,
        lane=lane_for(session=session, direction=direction, key=lane_key),
        direction=direction,
        kind=kind,
        payload=payload or {},
        next_attempt_at=now,
        retry_deadline=_retry_deadline(),
        queue=queue,
    )
    return delivery, {"parked": (_lane_waiting_sql(), [delivery.lane, now])}


def delivery_enqueue(
    *,
    integration_id,
    kind: str,
    direction: str,
    session: HitlSession | None = None,
    message: Message | None = None,
    payload: dict | None = None,
    lane_key: str = "",
    queue: str = "",
) -> Delivery:
    """Write an outbox row in the caller's transaction; the relay is woken only after COMMIT.

    ``queue``: the Celery queue whose relay runs it ('' = the default), chosen by the calling service.
    """
    delivery, computed = _delivery_build(
        integration_id=integration_id,
        kind=kind,
        direction=direction,
        session=session,
        message=message,
        payload=payload,
        lane_key=lane_key,
        queue=queue,
    )
    row_insert(delivery, computed=computed)
    _ready_after_commit(delivery)
    return delivery


def message_delivery_enqueue(
    *,
    message: Message,
    kind: str,
    payload: dict | None = None,
    queue: str = "",
    skip_conflicts: bool = False,
    guard: tuple[str, Sequence] | None = None,
    then: tuple[str, Sequence] | None = None,
) -> bool | None:
    """Write a new message and its outbox row in one statement (``rows_insert_linked``); the
    relay is woken after COMMIT. The row's lane is the message's session and direction.

    Returns True when both were written, False when ``skip_conflicts`` and the message's unique
    index was taken (nothing written), None when ``guard`` found no row (nothing written).
    ``guard`` and ``then`` need PostgreSQL: the caller states what the write depends on.

    With a ``guard`` the row is never parked: the statement's snapshot is taken before the
    guard waits for its lock, so "a pending head no worker runs" could be seen of a head that
    is settled by the time this row commits, unable to unpark a row it cannot see, which would
    then wait for the sweeper. Unparked, the row is only passed over by the claim's scan until
    it is its lane's head (``_lane_waiting_sql``).
    """
    delivery, computed = _delivery_build(
        integration_id=message.session.integration_id,
        kind=kind,
        direction=message.direction,
        session=message.session,
        message=None,
        payload=payload,
        lane_key="",
        queue=queue,
    )
    written = rows_insert_linked(
        message,
        delivery,
        link="message",
        skip_conflicts=skip_conflicts,
        computed={} if guard else computed,
        guard=guard,
        then=then,
    )
    if written:
        _ready_after_commit(delivery)
    return written


@functools.cache
def _lane_waiting_sql() -> str:
    """Whether the lane has a pending row that no worker runs now: the new row is parked behind
    it (one probe of ``delivery_lane_head`` inside the INSERT; it sees the caller's own rows).

    Why not behind a running head: its settle may be committing now, unable to see this row to
    unpark it, and the row would wait for the sweeper. So the first row behind a running head
    stays due (the scan passes over at most one row per running lane), and the rows after it
    park behind that one, which no worker holds: for it to settle unseen, a worker would have
    to claim it, call out and record the call while this row's transaction commits.
    """
    table = connection.ops.quote_name(Delivery._meta.db_table)
    return (
        f"SELECT EXISTS (SELECT 1 FROM {table} WHERE lane = %s AND status = 'pending' "  # noqa: S608 - names from the model
        "AND (lease_until IS NULL OR lease_until <= %s))"
    )


def _ready_after_commit(delivery: Delivery) -> None:
    _written.count = getattr(_written, "count", 0) + 1
    queues = getattr(_coalesced, "queues", None)
    if queues is None:
        transaction.on_commit(lambda: _delivery_ready(delivery))
    else:
        queues.setdefault(delivery.queue, delivery)


_coalesced = threading.local()


@contextlib.contextmanager
def outbox_rings_coalesced() -> Iterator[None]:
    """Inside the caller's transaction: the rows written in the block wake their queue's relay
    once per queue after COMMIT, however many there are.

    Why: a batch of webhooks applied in one transaction writes a row per agent reply, and each
    row's own ring would be one more statement after the commit, where one ring wakes the relay
    for all of them. The rings are registered when the block ends, outside any savepoint inside
    it: a row rolled back with its savepoint costs at most a ring for nothing, never a lost one.
    """
    if getattr(_coalesced, "queues", None) is not None:
        yield  # an outer block coalesces
        return
    _coalesced.queues = {}
    try:
        yield
        queues = _coalesced.queues
    finally:
        _coalesced.queues = None
    for delivery in queues.values():
        transaction.on_commit(functools.partial(_delivery_ready, delivery))


def _delivery_ready(delivery: Delivery) -> None:
    """A row committed: wake its queue's relay (coalesced by the doorbell)."""
    outbox_ring(queue=delivery.queue)


_written = threading.local()


def outbox_rows_written() -> int:
    """How many outbox rows this thread has written so far, committed or not (a counter: compare
    two readings). Why: a relay source whose items may write outbox rows (applied webhooks)
    tells the engine whether they did, so the outbox is asked again only then; a row rolled
    back costs at most one claim for nothing."""
    return getattr(_written, "count", 0)


def _retry_deadline():
    return timezone.now() + timedelta(seconds=settings.HITL["DELIVERY_RETRY_BUDGET_SECONDS"])


def outbox_ring(*, queue: str) -> None:
    """Tell the relay of ``queue`` that committed work is ready: one message per burst (doorbell).

    The doorbell's statement (and the message, when it turns the doorbell on) runs on the
    process's signal thread for that queue, at most once per ``HITL["OUTBOX_RING_SECONDS"]``
    (``ReadySignal``; 0: at once, in the caller's thread). Why: on the web tier it was the bot
    message's fourth round trip, on the request's thread, though the doorbell is on nearly
    always under load; a burst of writes now rings once.
    """
    _ring_signal(queue).ring()


@functools.cache
def _ring_signal(queue: str) -> ReadySignal:
    """The process's signal for ``queue`` (two made at once by a race would both ring right)."""
    return ReadySignal(send=lambda: _ring_now(queue=queue), interval=lambda: settings.HITL["OUTBOX_RING_SECONDS"])


def _ring_now(*, queue: str) -> None:
    relay_wake(name=relay_doorbell(queue), send=lambda: _relay_send(queue=queue))


def _relay_send(*, queue: str, countdown: float | None = None) -> bool:
    return relay_send(queue=queue, countdown=countdown)


def delivery_schedule(*, delivery_id: int, countdown: float = 0) -> None:
    """Wake the relay of this row's queue now or after ``countdown`` seconds (retries, sweeper,
    an operator's retry). If the broker is down the row stays pending and the sweeper wakes it."""
    try:
        queue = Delivery.objects.filter(pk=delivery_id).values_list("queue", flat=True).first()
    except Exception as exc:  # noqa: BLE001 - the sweeper finds the row again
        log.warning("delivery.enqueue_failed", delivery_id=delivery_id, error=type(exc).__name__)
        return
    # A hair late rather than early: a relay that arrives before its row is due does nothing.
    _relay_send(queue=queue or "", countdown=countdown + 0.05 if countdown else None)


# --- Claiming ---------------------------------------------------------------------------------
# One statement claims up to ``limit`` lane heads: a head is the lowest pending id of its lane,
# due and not leased by a live worker. The lock (SKIP LOCKED) keeps two claims from taking the
# same row at once; the lease, set in the same statement, keeps it from later claims while the
# call runs with no transaction open. A lease found expired means the worker holding it died or
# stalled mid-call: the row is claimed again as ``maybe_delivered``. Plans: delivery_due (by
# queue, oldest due first) or delivery_lane_head (one lane), each head checked by an index probe
# of delivery_lane_head (bench/plans). Rows parked behind an earlier one of their lane are not in
# delivery_due, so a backlog behind running or retrying heads costs the scan nothing; a parked
# row found at the head of its lane is claimed all the same when one lane is asked for.
_CLAIM_SQL = """
WITH heads AS (
    SELECT d.id, d.lease_until IS NOT NULL AS expired FROM {table} d
    WHERE d.status = 'pending' AND d.next_attempt_at <= %(now)s
      AND (d.lease_until IS NULL OR d.lease_until <= %(now)s) AND {where}
      AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.lane = d.lane AND e.status = 'pending' AND e.id < d.id)
    ORDER BY d.next_attempt_at LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED
)
UPDATE {table} SET lease_until = %(lease)s, attempts = {table}.attempts + 1,
    maybe_delivered = {table}.maybe_delivered OR heads.expired, updated_at = %(now)s
FROM heads WHERE {table}.id = heads.id
RETURNING {table}.id, heads.expired
"""


def _heads_claim(*, limit: int, queue: str | None = None, lane: str | None = None) -> list[Delivery]:
    """Lease up to ``limit`` due lane heads of ``queue`` (or of one ``lane``), oldest due first.

    Two statements whatever ``limit``: the claim, then one read of what the executors need
    (the row, its message, its session and integration), by primary key.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.HITL["DELIVERY_LEASE_SECONDS"])
    where, params = (
        ("d.lane = %(lane)s", {"lane": lane})
        if lane is not None
        else ("d.queue = %(queue)s AND NOT d.parked", {"queue": queue})
    )
    if connection.vendor == "postgresql":
        sql = _CLAIM_SQL.format(table=connection.ops.quote_name(Delivery._meta.db_table), where=where)
        with connection.cursor() as cursor:
            cursor.execute(sql, {**params, "now": now, "lease": lease, "limit": limit})
            claimed = dict(cursor.fetchall())
    else:  # the embedded SQLite default: one writer at a time, so a plain read then writes
        claimed = _heads_claim_serial(limit=limit, lane=lane, queue=queue, now=now, lease=lease)
    if not claimed:
        return []
    heads = _CLAIMED.fetch(ids=list(claimed))
    for head in heads:
        if claimed[head.pk]:
            log.warning("delivery.lease_expired", delivery_id=head.pk, kind=head.kind)
    return heads


# The message with its author (an agent reply names them to Botpress), without the author's
# integration: the session's is at hand (its secrets decrypted once); and the session's ticket
# and end user, which a bot message's executor needs (``deliveries._ticket_of``): one statement.
# Not the session's transcript and description (``HitlSession.COLD_FIELDS``).
_CLAIMED = CompiledQuery(
    lambda ids: (
        Delivery.objects.select_related(
            "message__author_agent", "session__integration", "session__ticket", "session__end_user"
        )
        .defer(*(f"session__{name}" for name in HitlSession.COLD_FIELDS))
        .filter(pk__in=ids)
        .order_by("id")
    )
)


def _heads_claim_serial(*, limit: int, lane: str | None, queue: str | None, now, lease) -> dict[int, bool]:
    earlier = Delivery.objects.filter(lane=OuterRef("lane"), status=DeliveryStatus.PENDING, id__lt=OuterRef("id"))
    rows = Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
    rows = rows.filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now)).exclude(Exists(earlier))
    rows = rows.filter(lane=lane) if lane is not None else rows.filter(queue=queue, parked=False)
    claimed = {}
    with transaction.atomic():
        for pk, held in rows.order_by("next_attempt_at").values_list("id", "lease_until")[:limit]:
            expired = held is not None
            Delivery.objects.filter(pk=pk).update(
                lease_until=lease,
                attempts=F("attempts") + 1,
                updated_at=now,
                **({"maybe_delivered": True} if expired else {}),
            )
            claimed[pk] = expired
    return claimed


def _lane_claim(lane: str, *, head_id: int | None = None) -> Delivery | None:
    """Lease the lane's head if it is due and free (``head_id`` is accepted for callers of old)."""
    heads = _heads_claim(limit=1, lane=lane)
    return heads[0] if heads else None


# --- Running ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ran:
    """What one attempt returned, before it is recorded (built on a relay thread)."""

    started_at: datetime
    duration_ms: int
    result: dict
    error: OutboundError | None
    skipped: bool
    writes: tuple[tuple[Model, tuple[str, ...]], ...] = ()  # ``attempt_write``: (row, fields)


_running = threading.local()  # the writes of the attempt running on this thread (``attempt_write``)


def attempt_write(*, row: Model, fields: Sequence[str]) -> None:
    """Have these fields of ``row`` written with the record of the attempt running on this
    thread: in the settle's one statement, and only if the delivery is still ours then.

    Why: what an executor learned from its call (the id Botpress gave a message) was one more
    statement and commit per delivery; recorded with the attempt it costs nothing of its own.
    Only for what a repeated attempt gets back the same without doing anything twice (Botpress
    creates a message once per external id): if the worker dies before the settle, the settle
    fails, or the lease was taken over, the write is lost and the row retried. The write is
    kept whatever the attempt's outcome. Outside an attempt the outbox runs (a tool or test
    calling an executor), written now.
    """
    writes = getattr(_running, "writes", None)
    if writes is None:
        row_update(row, fields)
        return
    for name in fields:  # refused here, as ``save`` would, not by the settle of a whole batch
        field, value = row._meta.get_field(name), getattr(row, name)
        if field.max_length is not None and isinstance(value, str) and len(value) > field.max_length:
            raise ValueError(
                f"{type(row).__name__}.{name}: {len(value)} characters, the column holds {field.max_length}"
            )
    writes.append((row, tuple(fields)))


def _run(delivery: Delivery) -> _Ran:
    started_at, clock = timezone.now(), time.monotonic()
    outer, _running.writes = getattr(_running, "writes", None), []
    try:
        result, error, skipped = _execute(delivery)
        writes = tuple(_running.writes)
    finally:
        _running.writes = outer
    return _Ran(started_at, int((time.monotonic() - clock) * 1000), result, error, skipped, writes)


def _execute(delivery: Delivery) -> tuple[dict, OutboundError | None, bool]:
    """Run the executor: (result, error, skipped). Unexpected exceptions become retryable errors."""
    from sessions_app.services.deliveries import EXECUTORS

    try:
        return EXECUTORS[delivery.kind](delivery) or {}, None, False
    except DeliverySkipped as exc:
        return {"skipped": str(exc)}, None, True
    except OutboundError as exc:
        return {}, exc, False
    except Exception as exc:
        log.exception("delivery.executor_crashed", delivery_id=delivery.pk, kind=delivery.kind)
        return {}, RetryableError(f"internal error: {type(exc).__name__}: {exc}"), False


def _outcome_apply(delivery: Delivery, ran: _Ran, now: datetime) -> tuple[str, float | None]:
    """Set the row's new state from its attempt; return (outcome, seconds until its retry)."""
    hitl, error = settings.HITL, ran.error
    delivery.lease_until = None
    if error is None:
        delivery.status = DeliveryStatus.SKIPPED if ran.skipped else DeliveryStatus.SUCCEEDED
        delivery.result, delivery.completed_at, delivery.last_status_code = ran.result, now, None
        delivery.maybe_delivered, delivery.last_error = False, ran.result.get("skipped", "")
        return delivery.status, None
    delivery.last_error, delivery.last_status_code = str(error)[:2000], error.status_code
    # No status code: the request may have been processed before the connection failed.
    delivery.maybe_delivered = delivery.maybe_delivered or error.status_code is None
    backoff = min(
        hitl["DELIVERY_BACKOFF_MAX_SECONDS"],
        hitl["DELIVERY_BACKOFF_BASE_SECONDS"] * 2 ** (delivery.attempts - 1),
    ) * random.uniform(0.5, 1.0)
    if error.status_code == 429 and error.retry_after is not None:
        # A rate limit (the desk's 429, or our own pacing of a Slack channel) is not a failure:
        # its waits still spread the lanes out (processes pace on their own), but however many
        # there were, a row comes back within this cap rather than after minutes of backoff.
        backoff = min(backoff, hitl["DELIVERY_RATE_LIMIT_BACKOFF_MAX_SECONDS"])
    delay = max(backoff, error.retry_after or 0.0)
    if isinstance(error, PermanentError) or now + timedelta(seconds=delay) > delivery.retry_deadline:
        delivery.status, delivery.completed_at = DeliveryStatus.DEAD, now
        return "dead", None
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    return "retry", delay


_SETTLE_FIELDS = (
    ("status", "varchar"),
    ("result", "jsonb"),
    ("completed_at", "timestamptz"),
    ("last_status_code", "integer"),
    ("last_error", "text"),
    ("maybe_delivered", "boolean"),
    ("next_attempt_at", "timestamptz"),
)


def _rows_settle(
    deliveries: list[Delivery],
    leases: dict[int, datetime],
    now: datetime,
    attempts: list[DeliveryAttempt],
    writes: list[tuple[int, Model, tuple[str, ...]]],
) -> set[int]:
    """Write the new state of every row still under the lease we took, the attempt log, and the
    executors' writes (delivery id, row, fields: ``attempt_write``) of those rows; return the
    ids written.

    A row whose lease another worker took over (ours expired mid-call) is left to that worker,
    which treats it as ``maybe_delivered``; its attempt is logged all the same (it ran). A row
    that left ``pending`` unparks the next row of its lane, the lane's new head. On PostgreSQL
    one statement for the batch, a data-modifying ``WITH`` (PostgreSQL runs each of them exactly
    once, read or not): no transaction of its own, so the batch costs one round trip instead of
    four (BEGIN, UPDATE, INSERT, COMMIT).
    """
    if connection.vendor != "postgresql":
        written = set()
        for d in deliveries:
            values = {name: getattr(d, name) for name, _ in _SETTLE_FIELDS}
            if Delivery.objects.filter(pk=d.pk, lease_until=leases[d.pk]).update(
                lease_until=None, updated_at=now, **values
            ):
                written.add(d.pk)
                if d.status != DeliveryStatus.PENDING:
                    following = Delivery.objects.filter(lane=d.lane, status=DeliveryStatus.PENDING, id__gt=d.pk)
                    following = following.order_by("id").values("id")[:1]
                    Delivery.objects.filter(pk__in=following, parked=True).update(parked=False)
        DeliveryAttempt.objects.bulk_create(attempts)
        for delivery_id, row, fields in writes:
            if delivery_id in written:
                row_update(row, fields)
        return written
    params: list = []  # in the statement's order: the log rows, the delivery rows, the time, the writes
    for a in attempts:
        params += [a.delivery_id, a.number, a.started_at, a.duration_ms, a.status_code, a.outcome, a.error]
    for d in deliveries:
        params += [d.pk, leases[d.pk], d.status, json.dumps(d.result), d.completed_at, d.last_status_code]
        params += [d.last_error, d.maybe_delivered, d.next_attempt_at]
    params.append(now)
    groups: dict[tuple, list[tuple[int, Model]]] = {}  # the writes by model and fields, in order
    for delivery_id, row, fields in writes:
        groups.setdefault((type(row), fields), []).append((delivery_id, row))
    for (_, fields), rows in groups.items():
        params += rows_update_params([row for _, row in rows], fields, guards=[pk for pk, _ in rows])
    shape = tuple((model, fields, len(rows)) for (model, fields), rows in groups.items())
    with connection.cursor() as cursor:
        cursor.execute(_settle_sql(len(deliveries), len(attempts), shape), params)
        return {row[0] for row in cursor.fetchall()}


@functools.cache
def _settle_sql(rows: int, attempts: int, writes: tuple = ()) -> str:
    """The settle statement for ``rows`` deliveries, ``attempts`` log rows and ``writes`` (model,
    fields, row count per group of executors' writes), built once per shape."""
    quote = connection.ops.quote_name
    table, log_table = quote(Delivery._meta.db_table), quote(DeliveryAttempt._meta.db_table)
    casts = ", ".join(f"%s::{cast}" for _, cast in _SETTLE_FIELDS)
    values = ", ".join(f"(%s::bigint, %s::timestamptz, {casts})" for _ in range(rows))
    names = ", ".join(name for name, _ in _SETTLE_FIELDS)
    sets = ", ".join(f"{name} = v.{name}" for name, _ in _SETTLE_FIELDS)
    log_columns = ", ".join(quote(DeliveryAttempt._meta.get_field(name).column) for name, _ in _ATTEMPT_FIELDS)
    log_values = ", ".join("(" + ", ".join(f"%s::{cast}" for _, cast in _ATTEMPT_FIELDS) + ")" for _ in range(attempts))
    log_names = ", ".join(name for name, _ in _ATTEMPT_FIELDS)
    # A delivery deleted meanwhile (its session's cascade) gets no log row rather than failing
    # the whole batch's statement. Every part sees the rows as they were before the statement,
    # so the next row of a lane whose head leaves ``pending`` is the lowest pending id above it.
    return (
        f"WITH logged AS (INSERT INTO {log_table} ({log_columns}) "  # noqa: S608 - names from the models; values bound
        f"SELECT * FROM (VALUES {log_values}) AS a({log_names}) "
        f"WHERE EXISTS (SELECT 1 FROM {table} WHERE {table}.id = a.delivery)), "
        f"v AS (SELECT * FROM (VALUES {values}) AS v(id, lease, {names})), "
        f"unparked AS (UPDATE {table} SET parked = false WHERE parked AND id IN ("
        f"SELECT (SELECT min(e.id) FROM {table} e WHERE e.lane = d.lane AND e.status = 'pending' AND e.id > d.id) "
        f"FROM v JOIN {table} d ON d.id = v.id AND d.lease_until IS NOT DISTINCT FROM v.lease "
        f"WHERE v.status <> 'pending')), "
        f"settled AS (UPDATE {table} SET {sets}, lease_until = NULL, updated_at = %s FROM v "
        f"WHERE {table}.id = v.id AND {table}.lease_until IS NOT DISTINCT FROM v.lease RETURNING {table}.id)"
        + "".join(
            f", w{n} AS ({rows_update_sql(model, fields, count, guard='SELECT id FROM settled')})"  # noqa: S608
            for n, (model, fields, count) in enumerate(writes)
        )
        + " SELECT id FROM settled"
    )


_ATTEMPT_FIELDS = (
    ("delivery", "bigint"),
    ("number", "integer"),
    ("started_at", "timestamptz"),
    ("duration_ms", "integer"),
    ("status_code", "integer"),
    ("outcome", "varchar"),
    ("error", "text"),
)


def _attempts_record(ran: list[tuple[Delivery, _Ran]]) -> list[tuple[bool, float | None]]:
    """Record a batch of attempts: rows, attempt log, dead rows' consequences.

    One statement when no row died (``_rows_settle``); a transaction around it and the dead
    rows' consequences otherwise. Returns (settled, seconds until retry) per attempt; retries
    are scheduled once the outcome is committed.
    """
    if not ran:
        return []
    now = timezone.now()
    leases = {delivery.pk: delivery.lease_until for delivery, _ in ran}
    outcomes = [_outcome_apply(delivery, attempt, now) for delivery, attempt in ran]
    attempts = [
        DeliveryAttempt(
            delivery=delivery,
            number=delivery.attempts,
            started_at=attempt.started_at,
            duration_ms=attempt.duration_ms,
            status_code=attempt.error.status_code if attempt.error else None,
            outcome=outcome,
            error=str(attempt.error)[:2000] if attempt.error else "",
        )
        for (delivery, attempt), (outcome, _) in zip(ran, outcomes, strict=True)
    ]
    writes = [(delivery.pk, row, fields) for delivery, attempt in ran for row, fields in attempt.writes]
    dead = any(outcome == "dead" for outcome, _ in outcomes)
    with transaction.atomic() if dead or connection.vendor != "postgresql" else contextlib.nullcontext():
        written = _rows_settle([delivery for delivery, _ in ran], leases, now, attempts, writes)
        for (delivery, _), (outcome, _) in zip(ran, outcomes, strict=True):
            if outcome == "dead" and delivery.pk in written:
                _delivery_dead(delivery)
    results = []
    for (delivery, attempt), (outcome, retry_in) in zip(ran, outcomes, strict=True):
        if delivery.pk not in written:
            log.warning("delivery.lease_lost", delivery_id=delivery.pk, kind=delivery.kind)
            results.append((False, None))
            continue
        metrics.delivery_attempt_observe(delivery=delivery, outcome=outcome, at=now)
        log.info(
            "delivery.attempt",
            delivery_id=delivery.pk,
            kind=delivery.kind,
            outcome=outcome,
            attempt=delivery.attempts,
            status_code=attempt.error.status_code if attempt.error else None,
        )
        if retry_in is not None:
            delivery_schedule(delivery_id=delivery.pk, countdown=retry_in)
        results.append((retry_in is None, retry_in))
    return results


def _attempt(delivery: Delivery) -> tuple[bool, float | None]:
    """Run the leased delivery once and record the attempt; return (settled, seconds until retry)."""
    return _attempts_record([(delivery, _run(delivery))])[0]


def lane_drain(*, delivery_id: int) -> int:
    """Execute the lane of this delivery from its head, in order, on this thread; return how many
    were settled. (The relay, ``outbox_relay``, runs many lanes at once; this runs one.)"""
    lane = Delivery.objects.filter(pk=delivery_id).values_list("lane", flat=True).first()
    done = 0
    while lane is not None and done < LANE_BUDGET:
        head = _lane_claim(lane)
        if head is None or not _attempt(head)[0]:
            return done
        done += 1
    if done == LANE_BUDGET:
        delivery_schedule(delivery_id=delivery_id)
    return done


def outbox_source(*, queue: str) -> Source:
    """The outbox rows of ``queue`` as a source of the relay engine (``services.relay``).

    Lanes run side by side on the relay's threads, each strictly in order: a lane's next row is
    claimable only once its previous one was recorded (a leased head holds its lane, whoever
    holds it), so the claim needs no knowledge of what this process runs.
    """
    return Source(
        name=f"outbox:{queue}",
        claim=lambda limit, _running: _heads_claim(limit=limit, queue=queue),
        lane_of=lambda delivery: delivery.lane,
        execute=_run,
        settle=_attempts_record,
    )


def outbox_relay(*, queue: str = "") -> int:
    """Run the due lane heads of ``queue`` until none is left; return how many attempts ran.

    The outbox alone (tests, tools): workers run ``relays.relay_queue_serve``, which also
    answers the doorbell.
    """
    return relay_run(sources=[outbox_source(queue=queue)], max_seconds=RELAY_MAX_SECONDS)[0]


def _delivery_dead(delivery: Delivery) -> None:
    """Flag the session; a ticket the help desk refuses for good ends the session."""
    if delivery.session_id is None:
        return
    HitlSession.objects.filter(pk=delivery.session_id).update(needs_attention=True)
    if delivery.kind == DeliveryKind.TICKET_CREATE:
        from sessions_app.models import StoppedBy
        from sessions_app.services.sessions import session_stop

        session = HitlSession.objects.get(pk=delivery.session_id)
        session_stop(
            session=session,
            stopped_by=StoppedBy.HELPDESK_REFUSED,
            reason=f"the help desk did not create the ticket: {delivery.last_error}",
            close_ticket=False,
            notify_botpress=True,
        )


def delivery_retry(*, delivery: Delivery) -> Delivery:
    """Give a dead delivery a fresh retry budget (operator action)."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        if delivery.status != DeliveryStatus.DEAD:
            return delivery
        delivery.status, delivery.completed_at, delivery.lease_until = DeliveryStatus.PENDING, None, None
        delivery.next_attempt_at, delivery.retry_deadline = timezone.now(), _retry_deadline()
        delivery.save()
        transaction.on_commit(lambda: delivery_schedule(delivery_id=delivery.pk))
    return delivery


def outbox_sweep(*, schedule: Callable[..., None] | None = None) -> int:
    """Wake the relays of lane heads that are due but idle: the safety net under every doorbell.

    Returns how many such heads there were. One relay task per queue that has any (whatever the
    doorbells say: a message they promised may have been lost); ``schedule(delivery_id=...)``
    instead is called per head when given.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.HITL["DELIVERY_STALE_SECONDS"])
    earlier = Delivery.objects.filter(lane=OuterRef("lane"), status=DeliveryStatus.PENDING, id__lt=OuterRef("id"))
    # A row parked behind one that left ``pending`` without unparking it (written while that
    # one settled, or the earlier row deleted): due again now.
    stranded = list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, parked=True)
        .exclude(Exists(earlier))
        .values_list("id", "queue")[:1000]
    )
    if stranded:
        Delivery.objects.filter(pk__in=[pk for pk, _ in stranded], parked=True).update(parked=False)
        log.info("delivery.unparked", count=len(stranded))
    idle = (
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now, updated_at__lte=stale)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .exclude(Exists(earlier))
        .values_list("id", "queue")[:1000]
    )
    heads = list(dict([*stranded, *idle]).items())
    if schedule is not None:
        for delivery_id, _ in heads:
            schedule(delivery_id=delivery_id)
    else:
        for queue in {queue for _, queue in heads}:
            _relay_send(queue=queue)
    return len(heads)
