"""Selectors for /health/ and /metrics: the gateway's state as operators watch it.

Each reads a small, indexed set (open sessions, unsettled deliveries, heartbeats), so they can
run on every probe and every scrape.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Max, Min
from django.utils import timezone

from sessions_app.models import Delivery, DeliveryStatus, Heartbeat, HitlSession, SessionStatus
from sessions_app.services.heartbeats import SWEEPER, WORKER_PREFIX

OPEN_STATES = (SessionStatus.PENDING, SessionStatus.ASSIGNED)


def sessions_open_counts() -> dict[str, int]:
    """``{"pending": n, "assigned": n, "needs_attention": n}`` over sessions not stopped."""
    counts = dict.fromkeys([*OPEN_STATES, "needs_attention"], 0)
    rows = HitlSession.objects.filter(status__in=OPEN_STATES).values_list("status").annotate(n=Count("id"))
    counts.update({status: n for status, n in rows})
    counts["needs_attention"] = HitlSession.objects.filter(status__in=OPEN_STATES, needs_attention=True).count()
    return {str(state): n for state, n in counts.items()}


def deliveries_open_counts() -> dict[tuple[str, str], int]:
    """``{(kind, status): n}`` for pending and dead deliveries (settled ones are counted as events)."""
    rows = (
        Delivery.objects.filter(status__in=(DeliveryStatus.PENDING, DeliveryStatus.DEAD))
        .values_list("kind", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {(kind, status): n for kind, status, n in rows}


def delivery_oldest_pending_age() -> timedelta | None:
    """How long the oldest pending delivery has waited, or None when none is pending."""
    oldest = Delivery.objects.filter(status=DeliveryStatus.PENDING).aggregate(at=Min("created_at"))["at"]
    return None if oldest is None else max(timedelta(0), timezone.now() - oldest)


def heartbeat_ages() -> dict[str, timedelta | None]:
    """Age of the newest worker heartbeat and of the sweeper's last run (None: never seen)."""
    now = timezone.now()
    worker = Heartbeat.objects.filter(name__startswith=WORKER_PREFIX).aggregate(at=Max("beat_at"))["at"]
    sweeper = Heartbeat.objects.filter(name=SWEEPER).values_list("beat_at", flat=True).first()
    return {
        "worker": None if worker is None else now - worker,
        "sweeper": None if sweeper is None else now - sweeper,
    }
