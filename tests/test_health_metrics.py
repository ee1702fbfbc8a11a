"""/health/ (broker, worker, beat's sweeper, outbox backlog; JSON for probes) and /metrics
(domain figures, protected by a token or an allowed network, summed over processes)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from hitl_gateway import health
from hitl_gateway.celery import app
from providers.base import AgentProfile, InboundEvent
from sessions_app.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Direction,
    EndUser,
    Heartbeat,
    HitlSession,
    HumanAgent,
    SessionStatus,
)
from sessions_app.services import outbox
from sessions_app.services import sessions as session_services
from sessions_app.services.heartbeats import SWEEPER, heartbeat_record, worker_heartbeat_record
from tests.conftest import ROOT, integration_for

CHECK_NAMES = ("Database", "Broker", "Worker", "Sweeper", "PendingDeliveries")


def _session(integration, conversation="conv_1", **fields) -> HitlSession:
    end_user, _ = EndUser.objects.get_or_create(integration=integration, botpress_user_id="user_1", name="Ada")
    return HitlSession.objects.create(
        integration=integration, end_user=end_user, botpress_conversation_id=conversation, **fields
    )


@pytest.fixture
def integration(db):
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    return integration


def _health(client, **extra) -> tuple[int, dict]:
    response = client.get("/health/?format=json", **extra)
    body = response.json()
    # The library names a check by its repr, e.g. "Worker()"; keep the class name.
    return response.status_code, {name.split("(")[0]: value for name, value in body.items()}


# --- /health/ ---------------------------------------------------------------------------------
# These run in the test's transaction (the checks read on the request's thread, so they see it):
# the heartbeats a real worker of the end-to-end tests may be writing wait on its row locks.
@pytest.fixture
def no_heartbeats(db):
    Heartbeat.objects.all().delete()


def test_health_is_ok_when_workers_beat_and_the_outbox_are_fine(client, no_heartbeats):
    worker_heartbeat_record(hostname="w1@host")
    heartbeat_record(name=SWEEPER)
    status, checks = _health(client)
    assert status == 200, checks
    assert checks == dict.fromkeys(CHECK_NAMES, "OK")


def test_health_names_a_missing_worker_and_a_stopped_beat(client, no_heartbeats):
    status, checks = _health(client)
    assert status == 500
    assert checks["Worker"] == "Unavailable: no Celery worker has ever reported"
    assert checks["Sweeper"] == "Unavailable: the outbox sweeper has never run: is beat running?"
    assert checks["Database"] == checks["Broker"] == checks["PendingDeliveries"] == "OK"

    old = timezone.now() - timedelta(minutes=10)
    Heartbeat.objects.create(name="worker:w1@host", beat_at=old)
    Heartbeat.objects.create(name=SWEEPER, beat_at=old)
    status, checks = _health(client)
    assert status == 500
    assert checks["Worker"].startswith("Unavailable: no Celery worker reported for 600 s (limit 60 s)")
    assert checks["Sweeper"].startswith("Unavailable: the outbox sweeper last ran 600 s ago")


def test_an_old_pending_delivery_is_degraded_and_json_is_served_on_accept(client, settings, no_heartbeats):
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    worker_heartbeat_record(hostname="w1@host")
    heartbeat_record(name=SWEEPER)
    delivery = outbox.delivery_enqueue(
        integration_id=integration.pk, kind=DeliveryKind.TICKET_CLOSE, direction=Direction.TO_AGENT, payload={}
    )
    Delivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - timedelta(seconds=400))
    response = client.get("/health/", HTTP_ACCEPT="application/json")
    assert response.status_code == 500
    checks = {name.split("(")[0]: value for name, value in response.json().items()}
    assert checks["PendingDeliveries"].startswith("Warning: the oldest pending delivery waits for 400 s")
    assert checks["Worker"] == checks["Sweeper"] == "OK"

    settings.HITL_HEALTH = {**settings.HITL_HEALTH, "PENDING_MAX_AGE_SECONDS": 3600}
    assert _health(client)[0] == 200


def test_an_unreachable_broker_is_unavailable_without_its_password(monkeypatch):
    from kombu import Connection

    monkeypatch.setattr(app, "connection_for_write", lambda: Connection("amqp://guest:s3cret@127.0.0.1:9//"))
    with pytest.raises(health.ServiceUnavailable) as failure:
        health.Broker().run()
    assert str(failure.value).startswith("Unavailable: broker unreachable (amqp): ")
    assert "s3cret" not in str(failure.value)


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_writes_its_heartbeat_and_runs_the_sweeper(celery_worker):
    deadline = time.monotonic() + 20
    names: set[str] = set()
    while time.monotonic() < deadline:
        names = set(Heartbeat.objects.values_list("name", flat=True))
        if SWEEPER in names and f"worker:{celery_worker.queue}" in "".join(names):
            break
        time.sleep(0.5)
    assert SWEEPER in names
    assert any(name.startswith(f"worker:{celery_worker.queue}@") for name in names), names


# --- /metrics: access -------------------------------------------------------------------------
@pytest.mark.django_db
def test_metrics_answer_loopback_and_refuse_other_networks(client):
    assert client.get("/metrics").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert refused.status_code == 403
    assert b"hitl_" not in refused.content and b"django_" not in refused.content


@pytest.mark.django_db
def test_metrics_with_the_bearer_token_from_anywhere(client, settings):
    settings.HITL_METRICS_TOKEN = "metrics-token-123"
    far = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-123", **far).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-124", **far).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic metrics-token-123", **far).status_code == 403
    assert client.get("/metrics", **far).status_code == 403


@pytest.mark.django_db
def test_metrics_allowed_networks_are_configurable(client, settings):
    settings.HITL_METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    assert client.get("/metrics", REMOTE_ADDR="10.2.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


# --- /metrics: figures ------------------------------------------------------------------------
def _value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def test_states_are_read_from_the_database_at_scrape_time(client, integration):
    _session(integration, "c1")
    _session(integration, "c2", needs_attention=True)
    _session(integration, "c3", status=SessionStatus.ASSIGNED)
    _session(integration, "c4", status=SessionStatus.STOPPED)
    outbox.delivery_enqueue(
        integration_id=integration.pk, kind=DeliveryKind.TICKET_CLOSE, direction=Direction.TO_AGENT, payload={}
    )
    dead = outbox.delivery_enqueue(
        integration_id=integration.pk, kind=DeliveryKind.MESSAGE_TO_USER, direction=Direction.TO_USER, payload={}
    )
    Delivery.objects.filter(pk=dead.pk).update(status=DeliveryStatus.DEAD)
    text = _scrape(client)
    assert 'hitl_sessions{state="pending"} 2.0' in text
    assert 'hitl_sessions{state="assigned"} 1.0' in text
    assert 'hitl_sessions{state="needs_attention"} 1.0' in text
    assert 'hitl_deliveries{kind="ticket_close",status="pending"} 1.0' in text
    assert 'hitl_deliveries{kind="message_to_user",status="dead"} 1.0' in text
    assert "hitl_delivery_oldest_pending_age_seconds " in text
    # The generic figures are still there.
    assert "django_http_requests_total_by_method_total" in text


def test_time_to_assignment_is_observed_once_per_session(integration, django_capture_on_commit_callbacks):
    """Observed once committed (a batch of webhooks rolled back and applied again counts once)."""
    session = _session(integration)
    HitlSession.objects.filter(pk=session.pk).update(created_at=timezone.now() - timedelta(seconds=90))
    session.refresh_from_db()
    grace = HumanAgent.objects.create(integration=integration, external_user_id="7", name="Grace")
    alan = HumanAgent.objects.create(integration=integration, external_user_id="8", name="Alan")
    count, total = _value("hitl_session_assignment_seconds_count"), _value("hitl_session_assignment_seconds_sum")
    with django_capture_on_commit_callbacks(execute=True):
        assert session_services.session_assign(session=session, agent=grace)
    assert _value("hitl_session_assignment_seconds_count") == count + 1
    assert 90 <= _value("hitl_session_assignment_seconds_sum") - total < 100
    assert _value("hitl_session_assignment_seconds_bucket", le="120.0") >= 1
    # A reassignment is not a new time to assignment.
    with django_capture_on_commit_callbacks(execute=True):
        assert session_services.session_assign(session=session, agent=alan)
    assert _value("hitl_session_assignment_seconds_count") == count + 1


def test_time_to_first_agent_reply_is_observed_for_the_first_reply_only(
    integration, django_capture_on_commit_callbacks
):
    session = _session(integration, status=SessionStatus.ASSIGNED)
    grace = HumanAgent.objects.create(integration=integration, external_user_id="7", name="Grace")
    profile = AgentProfile(external_id="7", name="Grace")

    def reply(comment_id: str):
        event = InboundEvent(
            kind="agent_message", ticket_external_id="42", agent=profile, message_external_id=comment_id, text="hi"
        )
        with django_capture_on_commit_callbacks(execute=True):
            return session_services.agent_reply_receive(session=session, agent=grace, event=event)

    count = _value("hitl_session_first_agent_reply_seconds_count")
    assert reply("900") is not None
    assert _value("hitl_session_first_agent_reply_seconds_count") == count + 1
    assert reply("901") is not None
    assert _value("hitl_session_first_agent_reply_seconds_count") == count + 1


def test_attempts_retries_and_relay_latency_are_counted(integration, monkeypatch):
    from sessions_app.services import deliveries
    from sessions_app.services.sessions import message_relay_to_agent

    session = _session(integration)
    monkeypatch.setattr(outbox, "delivery_schedule", lambda **kw: None)
    message, _ = message_relay_to_agent(
        integration=integration, conversation_id=session.botpress_conversation_id, type="text", payload={"text": "hi"}
    )
    delivery = Delivery.objects.get(message=message)
    Delivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - timedelta(seconds=3))
    labels = {"kind": "message_to_agent"}
    retries, successes = (
        _value("hitl_delivery_attempts_total", outcome="retry", **labels),
        _value("hitl_delivery_attempts_total", outcome="succeeded", **labels),
    )
    latency = _value("hitl_relay_latency_seconds_count", direction="to_agent")

    calls = iter([outbox.RetryableError("connection refused"), None])

    def executor(_delivery):
        error = next(calls)
        if error:
            raise error
        return {"ok": True}

    monkeypatch.setitem(deliveries.EXECUTORS, DeliveryKind.MESSAGE_TO_AGENT, executor)
    for _ in range(2):
        head = Delivery.objects.get(pk=delivery.pk)
        head.attempts += 1
        outbox._attempt(head)
    assert _value("hitl_delivery_attempts_total", outcome="retry", **labels) == retries + 1
    assert _value("hitl_delivery_attempts_total", outcome="succeeded", **labels) == successes + 1
    assert _value("hitl_relay_latency_seconds_count", direction="to_agent") == latency + 1
    assert _value("hitl_relay_latency_seconds_bucket", direction="to_agent", le="5.0") >= 1


def test_webhooks_are_counted_by_result_and_reason(client, integration, monkeypatch):
    from sessions_app.services import webhooks

    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    rejected = {"provider": "zendesk", "result": "rejected"}
    no_secret = "no signing secret configured for this integration"
    before_missing = _value("hitl_webhooks_total", reason=no_secret, **rejected)
    before_unknown = _value("hitl_webhooks_total", reason="unknown integration", **rejected)
    client.post(f"/webhooks/zendesk/{integration.pk}/", data=b"{}", content_type="application/json")
    client.post("/webhooks/zendesk/00000000-0000-0000-0000-000000000000/", data=b"{}", content_type="application/json")
    assert _value("hitl_webhooks_total", reason=no_secret, **rejected) == before_missing + 1
    assert _value("hitl_webhooks_total", reason="unknown integration", **rejected) == before_unknown + 1


def test_event_metrics_are_summed_over_processes(db, tmp_path):
    """Two processes count in PROMETHEUS_MULTIPROC_DIR; a third's /metrics registry sums them."""
    from django.db import connection

    database = connection.settings_dict
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}",
    }
    setup = "import django; django.setup(); from hitl_gateway import metrics; "
    count = setup + "metrics.webhook_counted(provider='zendesk', result='accepted')"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], cwd=ROOT, env=env, check=True, timeout=60)
    labels = {"provider": "zendesk", "result": "accepted", "reason": "none"}
    read = setup + f"print(metrics.metrics_registry().get_sample_value('hitl_webhooks_total', {labels!r}))"
    out = subprocess.run([sys.executable, "-c", read], cwd=ROOT, env=env, check=True, timeout=60, capture_output=True)
    assert out.stdout.decode().strip() == "2.0"


def test_the_grafana_dashboard_uses_only_exported_metrics(client, integration):
    """Every metric the dashboard queries is in a scrape (once each labelled metric has a sample)."""
    import re

    from hitl_gateway import metrics

    metrics.webhook_counted(provider="zendesk", result="accepted")
    metrics.RELAY_SECONDS.labels(direction="to_user")
    metrics.DELIVERY_ATTEMPTS.labels(kind="ticket_create", outcome="retry")
    outbox.delivery_enqueue(
        integration_id=integration.pk, kind=DeliveryKind.TICKET_CLOSE, direction=Direction.TO_AGENT, payload={}
    )
    _scrape(client)  # the request figures (django_prometheus) have a sample once a request was served
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b((?:hitl|django)_\w+)", expr)}
    text = _scrape(client)
    exported = set(re.findall(r"^(\w+)(?:\{| )", text, re.MULTILINE))
    assert used and used <= exported, used - exported
