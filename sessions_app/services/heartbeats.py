"""Heartbeats of the background processes, so /health/ can tell a stopped worker or beat."""

from django.utils import timezone

from sessions_app.models import Heartbeat

SWEEPER = "sweeper"
WORKER_PREFIX = "worker:"


def heartbeat_record(*, name: str) -> None:
    """Record that ``name`` is alive now (one upsert: one row per name, whatever the rate)."""
    Heartbeat.objects.update_or_create(name=name[:255], defaults={"beat_at": timezone.now()})


def worker_heartbeat_record(*, hostname: str) -> None:
    """A Celery worker's heartbeat, written on a timer of its main process (``hitl_gateway.celery``)."""
    heartbeat_record(name=f"{WORKER_PREFIX}{hostname}")
