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

import random
import time
from collections.abc import Callable
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from hitl_gateway import metrics
from outbound.http import OutboundError, PermanentError, RetryableError
from sessions_app.models import Delivery, DeliveryAttempt, DeliveryKind, DeliveryStatus, HitlSession, Message

log = structlog.get_logger(__name__)

LANE_BUDGET = 50  # deliveries one task drains before handing the lane to a fresh task


class DeliverySkipped(Exception):
    """Nothing to do any more (for example, no ticket exists to close)."""


def lane_for(*, session: HitlSession | None, direction: str, key: str = "") -> str:
    return f"session:{session.pk}:{direction}" if session else f"{key}:{direction}"


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
    """Write an outbox row in the caller's transaction; its task is sent only after COMMIT, and
    only when the row is its lane's head (see ``_schedule_if_lane_head``).

    ``queue``: the Celery queue its tasks go to ('' = the default), chosen by the calling service.
    """
    delivery = Delivery.objects.create(
        integration_id=integration_id,
        session=session,
        message=message,
        lane=lane_for(session=session, direction=direction, key=lane_key),
        direction=direction,
        kind=kind,
        payload=payload or {},
        next_attempt_at=timezone.now(),
        retry_deadline=_retry_deadline(),
        queue=queue,
    )
    transaction.on_commit(lambda: _schedule_if_lane_head(delivery))
    return delivery


def _schedule_if_lane_head(delivery: Delivery) -> None:
    """Send a task for a committed row only if no earlier row of its lane is pending.

    Whoever holds an earlier pending row carries the lane on to this one: a drainer looks for
    the next head only after committing the previous outcome, and this check runs after this
    row's COMMIT, so a drainer that settled the earlier row after this check started sees this
    row. An earlier row waiting for a retry has its task scheduled; one whose task was lost is
    the sweeper's. One query here saves a broker message and a task that would find the lane
    busy (most rows of a busy lane).
    """
    try:
        earlier = Delivery.objects.filter(lane=delivery.lane, status=DeliveryStatus.PENDING, id__lt=delivery.pk)
        if earlier.exists():
            return
    except Exception as exc:  # noqa: BLE001 - when in doubt, send: a spare task only finds nothing
        log.warning("delivery.head_check_failed", delivery_id=delivery.pk, error=type(exc).__name__)
    delivery_schedule(delivery_id=delivery.pk)


def _retry_deadline():
    return timezone.now() + timedelta(seconds=settings.HITL["DELIVERY_RETRY_BUDGET_SECONDS"])


def delivery_schedule(*, delivery_id: int, countdown: float = 0) -> None:
    """Send the task; if the broker is down the row stays pending and the sweeper sends it later."""
    from sessions_app.tasks import delivery_run

    try:
        queue = Delivery.objects.filter(pk=delivery_id).values_list("queue", flat=True).first()
        # A hair late rather than early: a task that arrives before its row is due does nothing.
        delivery_run.apply_async((delivery_id,), countdown=countdown + 0.05 if countdown else None, queue=queue or None)
    except Exception as exc:  # noqa: BLE001 - any broker failure is recovered by the sweeper
        log.warning("delivery.enqueue_failed", delivery_id=delivery_id, error=type(exc).__name__)


def lane_drain(*, delivery_id: int) -> int:
    """Execute the lane of this delivery from its head, in order; return how many went out."""
    # The lane and its head in one statement (the lane is read from this row).
    found = (
        Delivery.objects.filter(
            lane=Subquery(Delivery.objects.filter(pk=delivery_id).values("lane")[:1]), status=DeliveryStatus.PENDING
        )
        .order_by("id")
        .values_list("id", "lane")
        .first()
    )
    if found is None:
        return 0
    head_id, lane = found
    done = 0
    while done < LANE_BUDGET:
        if head_id is None or not _lane_step(lane, head_id=head_id):
            return done
        done += 1
        # Read only after the previous outcome committed (``_schedule_if_lane_head`` relies on it).
        head_id = _lane_head_id(lane)
    if head_id is not None:
        delivery_schedule(delivery_id=head_id)
    return done


def _lane_head_id(lane: str) -> int | None:
    return (
        Delivery.objects.filter(lane=lane, status=DeliveryStatus.PENDING)
        .order_by("id")
        .values_list("id", flat=True)
        .first()
    )


def _lane_claim(lane: str, *, head_id: int | None = None) -> Delivery | None:
    """Lease the lane's head if it is due and free; the lease, not a held transaction, guards it.

    No transaction stays open during the remote call, so a killed worker leaves its lease
    behind: the next claim after it expires knows the call's outcome is unknown.
    """
    now = timezone.now()
    if head_id is None:
        head_id = _lane_head_id(lane)  # a plain read: the lock below checks the row again
    if head_id is None:
        return None
    with transaction.atomic():
        # What every executor reads comes with the lock (the row only is locked: ``of``).
        head = (
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("message", "session__integration")
            .filter(pk=head_id, status=DeliveryStatus.PENDING)
            .first()
        )
        # Locked or leased: another worker runs the head and carries on with the lane after it.
        if head is None or head.next_attempt_at > now or (head.lease_until and head.lease_until > now):
            return None
        if head.lease_until is not None:
            head.maybe_delivered = True
            log.warning("delivery.lease_expired", delivery_id=head.pk, kind=head.kind)
        head.lease_until = now + timedelta(seconds=settings.HITL["DELIVERY_LEASE_SECONDS"])
        head.attempts += 1
        head.save(update_fields=["lease_until", "maybe_delivered", "attempts", "updated_at"])
    return head


def _lane_step(lane: str, *, head_id: int | None = None) -> bool:
    """Execute the lane's head once; True when it was settled (succeeded, skipped or dead)."""
    head = _lane_claim(lane, head_id=head_id)
    if head is None:
        return False
    settled, retry_in = _attempt(head)
    if retry_in is not None:
        delivery_schedule(delivery_id=head.pk, countdown=retry_in)
    return settled


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


def _attempt(delivery: Delivery) -> tuple[bool, float | None]:
    """Run the leased delivery once and record the attempt; return (settled, seconds until retry)."""
    hitl = settings.HITL
    started_at, clock = timezone.now(), time.monotonic()
    result, error, skipped = _execute(delivery)
    now = timezone.now()
    retry_in: float | None = None
    delivery.lease_until = None
    if error is None:
        delivery.status = DeliveryStatus.SKIPPED if skipped else DeliveryStatus.SUCCEEDED
        delivery.result, delivery.completed_at, delivery.last_status_code = result, now, None
        delivery.maybe_delivered, delivery.last_error = False, result.get("skipped", "")
        outcome = delivery.status
    else:
        delivery.last_error, delivery.last_status_code = str(error)[:2000], error.status_code
        # No status code: the request may have been processed before the connection failed.
        delivery.maybe_delivered = delivery.maybe_delivered or error.status_code is None
        backoff = min(
            hitl["DELIVERY_BACKOFF_MAX_SECONDS"],
            hitl["DELIVERY_BACKOFF_BASE_SECONDS"] * 2 ** (delivery.attempts - 1),
        ) * random.uniform(0.5, 1.0)
        delay = max(backoff, error.retry_after or 0.0)
        if isinstance(error, PermanentError) or now + timedelta(seconds=delay) > delivery.retry_deadline:
            delivery.status, delivery.completed_at, outcome = DeliveryStatus.DEAD, now, "dead"
        else:
            delivery.next_attempt_at, outcome, retry_in = now + timedelta(seconds=delay), "retry", delay
    with transaction.atomic():
        delivery.save(
            update_fields=[
                "status",
                "result",
                "completed_at",
                "last_status_code",
                "last_error",
                "maybe_delivered",
                "lease_until",
                "next_attempt_at",
                "updated_at",
            ]
        )
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            started_at=started_at,
            duration_ms=int((time.monotonic() - clock) * 1000),
            status_code=error.status_code if error else None,
            outcome=outcome,
            error=str(error)[:2000] if error else "",
        )
        if outcome == "dead":
            _delivery_dead(delivery)
    metrics.delivery_attempt_observe(delivery=delivery, outcome=outcome, at=now)
    log.info(
        "delivery.attempt",
        delivery_id=delivery.pk,
        kind=delivery.kind,
        outcome=outcome,
        attempt=delivery.attempts,
        status_code=error.status_code if error else None,
    )
    return retry_in is None, retry_in


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


def outbox_sweep(*, schedule: Callable[..., None] = delivery_schedule) -> int:
    """Re-enqueue lane heads that are due but idle: the safety net under every enqueue."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.HITL["DELIVERY_STALE_SECONDS"])
    earlier = Delivery.objects.filter(lane=OuterRef("lane"), status=DeliveryStatus.PENDING, id__lt=OuterRef("id"))
    heads = (
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now, updated_at__lte=stale)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .exclude(Exists(earlier))
        .values_list("id", flat=True)[:1000]
    )
    count = 0
    for delivery_id in heads:
        schedule(delivery_id=delivery_id)
        count += 1
    return count
