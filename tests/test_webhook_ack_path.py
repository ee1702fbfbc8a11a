"""The webhook acknowledgement's hot path (issue 16): verify + one insert, and nothing else.

No broker round trip per webhook (the stored row is the hand-off, announced by a coalesced
"ready" signal off the request thread), no session/CSRF/auth/messages/axes middleware, and a
ready task that applies every ticket's queue in order, respecting a head waiting for its retry.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from sessions_app.models import Message, WebhookEvent, WebhookStatus
from sessions_app.services import webhooks
from sessions_app.services.relay import ReadySignal
from tests.test_inbound_webhooks import scene, send, trigger  # noqa: F401 - the fixture


def test_the_ack_is_two_statements_and_no_task(scene, client, monkeypatch, django_assert_max_num_queries):  # noqa: F811
    """The integration's row, then one INSERT (no savepoint, no queue-head check, no broker call)."""
    sent = []
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: sent.append(kw))
    with django_assert_max_num_queries(2) as captured:
        response = send(client, scene.integration, trigger("newMessage", comment="<p>hi</p>"))
    assert response.status_code == 200 and response.json() == {"status": "accepted"}
    assert captured.captured_queries[-1]["sql"].startswith("INSERT INTO")
    assert "ON CONFLICT DO NOTHING" in captured.captured_queries[-1]["sql"]
    assert sent == [], "no task is sent inside the request (the signal follows the commit)"


def test_a_warm_ack_is_one_insert_the_integration_kept_in_memory(scene, client, django_assert_max_num_queries):  # noqa: F811
    webhooks.ACK_INTEGRATIONS.clear()
    send(client, scene.integration, trigger("newMessage", comment="<p>first</p>", comment_id="1"))
    with django_assert_max_num_queries(1) as captured:
        response = send(client, scene.integration, trigger("newMessage", comment="<p>second</p>", comment_id="2"))
    assert response.json() == {"status": "accepted"}
    assert captured.captured_queries[0]["sql"].startswith("INSERT INTO")


def _reply(client, scene_, n: str) -> int:
    return send(client, scene_.integration, trigger("newMessage", comment=f"<p>c{n}</p>", comment_id=n)).status_code


def test_a_new_secret_works_at_once_and_a_deactivation_within_the_ttl(scene, client, settings):  # noqa: F811
    from sessions_app.models import Integration
    from sessions_app.services.integrations import integration_signing_secret_replace
    from tests import test_inbound_webhooks

    settings.HITL = settings.HITL | {"ACK_INTEGRATION_SECONDS": 0.3}
    webhooks.ACK_INTEGRATIONS.clear()
    assert _reply(client, scene, "1") == 200
    # The secret changes under the kept row (as another process's re-install would do it).
    integration = Integration.objects.get(pk=scene.integration.pk)
    integration.save(update_fields=integration_signing_secret_replace(integration=integration, secret="n" * 40))
    old, test_inbound_webhooks.SECRET = test_inbound_webhooks.SECRET, "n" * 40
    try:
        assert _reply(client, scene, "2") == 200
    finally:
        test_inbound_webhooks.SECRET = old
    Integration.objects.filter(pk=scene.integration.pk).update(is_active=False)
    time.sleep(0.35)
    assert _reply(client, scene, "3") == 401
    assert WebhookEvent.objects.filter(status=WebhookStatus.ACCEPTED).count() == 2


def test_unknown_integrations_are_not_kept(client, db):
    webhooks.ACK_INTEGRATIONS.clear()
    for _ in range(3):
        response = client.post(f"/webhooks/zendesk/{uuid.uuid4()}/", data=b"{}", content_type="application/json")
        assert response.status_code == 401
    assert webhooks.ACK_INTEGRATIONS._kept == {}


def test_a_duplicate_is_answered_without_an_error_path(scene, client, django_assert_max_num_queries):  # noqa: F811
    payload = trigger("newMessage", comment="<p>hi</p>")
    assert send(client, scene.integration, payload, invocation="inv-1").json() == {"status": "accepted"}
    with django_assert_max_num_queries(2):  # no savepoint and rollback around a failed INSERT
        assert send(client, scene.integration, payload, invocation="inv-1").json() == {"status": "duplicate"}
    assert WebhookEvent.objects.count() == 1


def test_the_webhook_skips_the_session_csrf_and_csp_middleware(scene, client):  # noqa: F811
    response = send(client, scene.integration, trigger("newMessage", comment="<p>hi</p>"))
    assert response.status_code == 200
    assert "Content-Security-Policy" not in response.headers, "the CSP middleware did not run"
    assert not response.cookies, "no session or CSRF cookie"
    assert response.headers["X-Content-Type-Options"] == "nosniff", "the security middleware did run"
    other = client.get("/admin/login/")
    assert "Content-Security-Policy" in other.headers, "every other path keeps the whole stack"


def test_an_oversized_webhook_is_still_refused_before_it_is_read(scene, client, settings):  # noqa: F811
    settings.HITL = settings.HITL | {"MAX_REQUEST_BODY_BYTES": 100}
    response = send(client, scene.integration, trigger("newMessage", comment="<p>" + "x" * 500 + "</p>"))
    assert response.status_code == 413
    assert WebhookEvent.objects.count() == 0


def test_the_ready_signal_coalesces_a_burst_and_never_drops_the_last_ring():
    sends: list[float] = []
    signal = ReadySignal(send=lambda: sends.append(time.monotonic()), interval=lambda: 0.05)
    started = time.monotonic()
    while time.monotonic() - started < 0.3:  # a ring every millisecond for 0.3 s
        last_ring = time.monotonic()  # just before the ring: a send may follow it at once
        signal.ring()
        time.sleep(0.001)
    deadline = last_ring + 2
    while (not sends or sends[-1] < last_ring) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert 1 <= len(sends) <= 10, f"about one send per interval, not one per ring: {len(sends)}"
    assert sends[-1] >= last_ring, "a send started after the last ring"
    quiet = len(sends)
    time.sleep(0.15)
    assert len(sends) == quiet, "no ring, no send"
    signal.ring()
    deadline = time.monotonic() + 2
    while len(sends) == quiet and time.monotonic() < deadline:
        time.sleep(0.002)
    assert len(sends) == quiet + 1, "a ring after a quiet spell is sent at once"


def test_the_ready_signal_with_no_interval_sends_in_the_callers_thread():
    threads = []
    signal = ReadySignal(send=lambda: threads.append(threading.current_thread()), interval=lambda: 0)
    signal.ring()
    assert threads == [threading.current_thread()]


def _wait(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_the_ready_signal_opens_a_new_connection_after_one_the_server_dropped():
    """The signal's thread outlives any request: a connection the server dropped (a restart)
    fails one send, and the next send opens a new one instead of failing for good."""
    backends: list[int] = []

    def send():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backends.append(cursor.fetchone()[0])
        if len(backends) == 2:
            connection.close()  # the test database is dropped at the end

    signal = ReadySignal(send=send, interval=lambda: 0.01)
    signal.ring()
    assert _wait(lambda: len(backends) == 1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [backends[0]])  # waits for its end
    signal.ring()  # fails on the dropped connection (logged)
    time.sleep(0.1)
    signal.ring()
    assert _wait(lambda: len(backends) == 2), "a new connection after the failed send"
    assert backends[1] != backends[0]


def test_a_flush_waits_for_a_send_under_way():
    """A process ending right after its ring finds the thread sending already: the flush waits
    for that send rather than letting the exit cut it off."""
    sends: list[str] = []
    started = threading.Event()

    def send():
        started.set()
        time.sleep(0.3)
        sends.append("sent")

    signal = ReadySignal(send=send, interval=lambda: 30)
    signal.ring()
    assert started.wait(5)
    signal.flush()  # what the interpreter's exit runs
    assert sends == ["sent"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_ready_signal_whose_thread_ended_starts_another_on_the_next_ring():
    sends: list[str] = []

    def send():
        sends.append(threading.current_thread().name)
        if len(sends) == 1:
            raise SystemExit  # past the thread's own error handling: the thread ends

    signal = ReadySignal(send=send, interval=lambda: 0.01)
    signal.ring()
    assert _wait(lambda: len(sends) == 1 and signal._thread_pid is None)
    signal.ring()
    assert _wait(lambda: len(sends) == 2)


def test_a_ring_still_pending_at_exit_is_sent_then():
    sends: list[str] = []
    signal = ReadySignal(send=lambda: sends.append(threading.current_thread().name), interval=lambda: 30)
    signal.ring()
    assert _wait(lambda: len(sends) == 1)  # at once; the thread then rests 30 s
    signal.ring()
    time.sleep(0.05)
    assert len(sends) == 1
    signal.flush()  # what the interpreter's exit runs
    assert sends[1] == threading.current_thread().name
    signal.flush()
    assert len(sends) == 2, "nothing pending, nothing sent"


def test_the_relay_sees_every_queue_head_but_one_waiting_for_its_retry(scene, client, monkeypatch):  # noqa: F811
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    for n in range(3):
        send(client, scene.integration, trigger("newMessage", comment=f"<p>n{n}</p>", comment_id=str(900 + n)))
    held = send(client, scene.integration, trigger("newMessage", comment="<p>x</p>", comment_id="950", ticket="43"))
    assert held.status_code == 200
    first_43 = WebhookEvent.objects.get(ticket_external_id="43")
    send(client, scene.integration, trigger("newMessage", comment="<p>y</p>", comment_id="951", ticket="43"))
    WebhookEvent.objects.filter(pk=first_43.pk).update(retry_at=timezone.now() + timedelta(minutes=5))

    heads = webhooks._queue_heads(10, set())
    assert [ticket for _, _, ticket in heads] == ["42"], "ticket 43 waits behind its head's retry"
    assert webhooks.webhook_queue_drain(webhook_event_id=heads[0][0]) == 3
    texts = [m.payload["text"] for m in Message.objects.filter(session=scene, direction="to_user").order_by("id")]
    assert texts == ["n0", "n1", "n2"]
    assert WebhookEvent.objects.filter(ticket_external_id="43", status=WebhookStatus.ACCEPTED).count() == 2


def test_applying_an_agent_reply_costs_at_most_14_statements(scene, client, monkeypatch, django_assert_max_num_queries):  # noqa: F811
    """Was 21 (issue 16): the ticket's session in one locked join, one statement for "already
    relayed?" and "first reply?", no savepoint around the events' own nor around the message's
    insert (its unique index is the check), secrets left unread."""
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    send(client, scene.integration, trigger("newMessage", comment="<p>first</p>", comment_id="900"))
    webhooks.webhook_queue_drain(webhook_event_id=WebhookEvent.objects.get().pk)
    send(client, scene.integration, trigger("newMessage", comment="<p>second</p>", comment_id="901"))
    event = WebhookEvent.objects.get(status=WebhookStatus.ACCEPTED)
    with django_assert_max_num_queries(14):
        assert webhooks.webhook_queue_drain(webhook_event_id=event.pk) == 1
    texts = [m.payload["text"] for m in Message.objects.filter(session=scene, direction="to_user").order_by("id")]
    assert texts == ["first", "second"]


def test_a_forged_webhook_on_a_cold_read_reads_the_integration_once(scene, client, monkeypatch):  # noqa: F811
    """Only a row kept in memory is read again after a bad signature (it may predate the secret)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests import test_inbound_webhooks

    webhooks.ACK_INTEGRATIONS.clear()
    monkeypatch.setattr(test_inbound_webhooks, "SECRET", "forged-secret")
    with CaptureQueriesContext(connection) as captured:
        assert _reply(client, scene, "1") == 401
    reads = [q for q in captured.captured_queries if '"sessions_app_integration"' in q["sql"]]
    assert len(reads) == 1, [q["sql"][:80] for q in captured.captured_queries]
