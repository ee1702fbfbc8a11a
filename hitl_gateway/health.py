"""The gateway's checks for ``/health/`` (django-health-check plugins).

Besides the database (the library's own check), a probe learns whether the gateway can do its
work in the background: the broker takes messages, a Celery worker is alive, beat keeps the
outbox sweeper running (the sweeper is what makes a lost broker message go out after all), and
the outbox is not backing up. A check raises ``ServiceUnavailable`` when that part is down and
``ServiceWarning`` when it is degraded; the view answers 500 for either, and names each in its
text (``?format=json`` or ``Accept: application/json`` for probes, ``?format=text``).

Thresholds: ``settings.HITL_HEALTH`` (README, "Health and metrics").
"""

from __future__ import annotations

import dataclasses
import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable, ServiceWarning


async def _in_request_thread(probe) -> None:
    """Run a database probe on the request's own thread and connection (closed with the request),
    not on an executor thread whose connection would stay open for good."""
    await sync_to_async(probe, thread_sensitive=True)()


def _seconds(age: datetime.timedelta) -> str:
    return f"{age.total_seconds():.0f} s"


@dataclasses.dataclass
class Broker(HealthCheck):
    """The Celery broker accepts a connection (any transport: RabbitMQ, Redis, the embedded folder)."""

    def run(self) -> None:
        from hitl_gateway.celery import app

        timeout = settings.HITL_HEALTH["BROKER_TIMEOUT_SECONDS"]
        try:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=timeout)
        except Exception as exc:  # kombu raises transport-specific errors
            # The URL may hold a password: name only the transport and the error's kind.
            raise ServiceUnavailable(
                f"broker unreachable ({app.conf.broker_url.split(':', 1)[0]}): {type(exc).__name__}"
            ) from exc


@dataclasses.dataclass
class Worker(HealthCheck):
    """A Celery worker wrote its heartbeat recently (each worker does, on a timer)."""

    async def run(self) -> None:
        await _in_request_thread(self.probe)

    def probe(self) -> None:
        from sessions_app.monitoring import heartbeat_ages

        age = heartbeat_ages()["worker"]
        limit = settings.HITL_HEALTH["WORKER_MAX_AGE_SECONDS"]
        if age is None:
            raise ServiceUnavailable("no Celery worker has ever reported")
        if age.total_seconds() > limit:
            raise ServiceUnavailable(f"no Celery worker reported for {_seconds(age)} (limit {limit:g} s)")


@dataclasses.dataclass
class Sweeper(HealthCheck):
    """Beat scheduled the outbox sweeper, and a worker ran it, recently."""

    async def run(self) -> None:
        await _in_request_thread(self.probe)

    def probe(self) -> None:
        from sessions_app.monitoring import heartbeat_ages

        age = heartbeat_ages()["sweeper"]
        limit = settings.HITL_HEALTH["SWEEPER_MAX_AGE_SECONDS"]
        if age is None:
            raise ServiceUnavailable("the outbox sweeper has never run: is beat running?")
        if age.total_seconds() > limit:
            raise ServiceUnavailable(
                f"the outbox sweeper last ran {_seconds(age)} ago (limit {limit:g} s): is beat running?"
            )


@dataclasses.dataclass
class PendingDeliveries(HealthCheck):
    """The oldest pending delivery is younger than the threshold; older means degraded, not down."""

    async def run(self) -> None:
        await _in_request_thread(self.probe)

    def probe(self) -> None:
        from sessions_app.monitoring import delivery_oldest_pending_age

        age = delivery_oldest_pending_age()
        limit = settings.HITL_HEALTH["PENDING_MAX_AGE_SECONDS"]
        if age is not None and age.total_seconds() > limit:
            raise ServiceWarning(f"the oldest pending delivery waits for {_seconds(age)} (limit {limit:g} s)")


CHECKS = [
    "health_check.checks.Database",
    Broker,
    Worker,
    Sweeper,
    PendingDeliveries,
]
