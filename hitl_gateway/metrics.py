"""The gateway's domain metrics (Prometheus) and the protected ``/metrics`` view.

Two kinds of figures, each counted where it is correct under several gunicorn workers and
several Celery workers:

- **Events** (webhooks, delivery attempts, time to assignment and to the first agent reply,
  relay latency) are counted by the process where they happen, with ``prometheus_client``.
  When ``PROMETHEUS_MULTIPROC_DIR`` is set (``make run``, the demo and chaos set it and empty it
  at start) every process writes its figures to files there and ``/metrics`` sums them all,
  whichever gunicorn worker answers; without it each process counts only its own.
  Counting at the event is exact and costs nothing at scrape time, where deriving these from
  the database would mean scanning ever-growing tables on every scrape.
- **States** (sessions waiting or assigned, pending and dead deliveries, the oldest pending
  delivery's age) are read from the database at scrape time (``DatabaseCollector``): the
  database is their source of truth, so every scrape agrees whichever process answers, and
  these queries touch only small, indexed sets.

The services call the helpers below (one call each), never the metric objects.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

# Seconds a person waits: from under a minute to hours.
WAIT_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# Seconds a relayed message takes: sub-second normally, minutes while a side is down.
RELAY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
MAX_LABEL = 64

WEBHOOKS = Counter(
    "hitl_webhooks",
    "Inbound help-desk webhooks, by provider, result (accepted, rejected) and reason.",
    ["provider", "result", "reason"],
)
DELIVERY_ATTEMPTS = Counter(
    "hitl_delivery_attempts",
    "Delivery attempts by kind and outcome (succeeded, skipped, retry, dead); retry = a failed try retried.",
    ["kind", "outcome"],
)
ASSIGNMENT_SECONDS = Histogram(
    "hitl_session_assignment_seconds",
    "From the session's start to its first assignment to an agent.",
    buckets=WAIT_BUCKETS,
)
FIRST_REPLY_SECONDS = Histogram(
    "hitl_session_first_agent_reply_seconds",
    "From the session's start to the first reply of an agent accepted from the help desk.",
    buckets=WAIT_BUCKETS,
)
RELAY_SECONDS = Histogram(
    "hitl_relay_latency_seconds",
    "From a message accepted (from Botpress or the help desk) to its delivery to the other side.",
    ["direction"],
    buckets=RELAY_BUCKETS,
)


def _label(value: str) -> str:
    return (value or "none")[:MAX_LABEL]


# --- The API the services call --------------------------------------------------------------
def webhook_counted(*, provider: str, result: str, reason: str = "") -> None:
    """Count one inbound webhook: ``result`` is "accepted" or "rejected"; ``reason`` a fixed phrase."""
    WEBHOOKS.labels(provider=_label(provider), result=result, reason=_label(reason)).inc()


def delivery_attempt_observe(*, delivery, outcome: str, at: datetime) -> None:
    """Count one attempt of ``delivery`` and, when a message's delivery succeeded, its relay latency.

    The delivery row is written in the transaction that accepted the message, so its
    ``created_at`` is the acceptance time; ``at`` is when the attempt ended.
    """
    DELIVERY_ATTEMPTS.labels(kind=_label(delivery.kind), outcome=_label(outcome)).inc()
    if outcome == "succeeded" and delivery.message_id is not None:
        RELAY_SECONDS.labels(direction=_label(delivery.direction)).observe(
            max(0.0, (at - delivery.created_at).total_seconds())
        )


def session_assignment_observe(*, session, at: datetime) -> None:
    """Observe the time to assignment, for the session's first assignment only (made at ``at``)."""
    if session.assigned_at == at:
        ASSIGNMENT_SECONDS.observe(max(0.0, (at - session.created_at).total_seconds()))


def agent_reply_observe(*, session, message, first: bool | None = None) -> None:
    """Observe the time to the first agent reply if ``message`` is the session's first one.

    ``first``: whether it is, when the caller knows already (no query); else it is looked up.
    """
    from sessions_app.models import Direction, Message

    if first is None:
        first = not Message.objects.filter(
            session_id=session.pk, direction=Direction.TO_USER, author_agent__isnull=False, pk__lt=message.pk
        ).exists()
    if first:
        FIRST_REPLY_SECONDS.observe(max(0.0, (message.created_at - session.created_at).total_seconds()))


# --- Scrape time ----------------------------------------------------------------------------
class DatabaseCollector:
    """The states, read from the database at each scrape (the same answer in every process)."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from sessions_app.monitoring import deliveries_open_counts, delivery_oldest_pending_age, sessions_open_counts

        sessions = GaugeMetricFamily(
            "hitl_sessions", "Open sessions by state (stopped ones are not counted).", labels=["state"]
        )
        for state, count in sessions_open_counts().items():
            sessions.add_metric([state], count)
        yield sessions
        deliveries = GaugeMetricFamily(
            "hitl_deliveries", "Deliveries not settled, by kind and status (pending, dead).", labels=["kind", "status"]
        )
        for (kind, status), count in deliveries_open_counts().items():
            deliveries.add_metric([kind, status], count)
        yield deliveries
        age = delivery_oldest_pending_age()
        yield GaugeMetricFamily(
            "hitl_delivery_oldest_pending_age_seconds",
            "Age of the oldest pending delivery (0 when none is pending).",
            value=age.total_seconds() if age is not None else 0.0,
        )


class _ProcessRegistry:
    """This process's own metrics, for a registry built per scrape."""

    def collect(self):
        return REGISTRY.collect()


def metrics_registry() -> CollectorRegistry:
    """All processes' event metrics (or this process's, without multiprocess mode) and the states.

    The per-process files hold only the metric objects' values, not what a collector computes at
    scrape time: the sessions ended by policy (``sessions_app`` registers their collector in this
    process's registry, which multiprocess mode does not read) are asked for here.
    """
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from sessions_app.services.lifecycle import PolicyEndsCollector

        MultiProcessCollector(registry)
        registry.register(PolicyEndsCollector())
    else:
        registry.register(_ProcessRegistry())
    registry.register(DatabaseCollector())
    return registry


# --- Access ---------------------------------------------------------------------------------
def metrics_access_allowed(request: HttpRequest) -> bool:
    """A matching ``Authorization: Bearer <HITL_METRICS_TOKEN>`` or a client in the allowed networks.

    The client is ``REMOTE_ADDR``: behind a proxy that is the proxy's address, so set a token.
    """
    token = settings.HITL_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    try:
        client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(client in network for network in settings.HITL_METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: Prometheus text format, or 403 for a client neither trusted nor holding the token."""
    if not metrics_access_allowed(request):
        response = HttpResponse("Forbidden: set Authorization: Bearer <HITL_METRICS_TOKEN>\n", status=403)
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
