"""A ticket's queued webhooks applied in batches, one transaction each (issue 16): the same
outcome as one by one (order, per-event isolation, failures retried or recorded), fewer
statements, one relay ring per batch, and no help-desk call made twice."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, reset_queries
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from providers.base import AgentProfile
from sessions_app.models import Delivery, DeliveryKind, HitlSession, Message, WebhookEvent, WebhookStatus
from sessions_app.services import outbox, webhooks
from tests.test_inbound_webhooks import scene, send, trigger  # noqa: F401 - the fixture


def _queue(client, scene, count: int, *, start: int = 0) -> list[WebhookEvent]:  # noqa: F811
    for n in range(start, start + count):
        send(client, scene.integration, trigger("newMessage", comment=f"<p>reply {n}</p>", comment_id=str(900 + n)))
    return list(
        WebhookEvent.objects.filter(integration=scene.integration, status=WebhookStatus.ACCEPTED).order_by("id")
    )


def _relayed(scene) -> list[str]:  # noqa: F811
    return [m.payload["text"] for m in Message.objects.filter(session=scene).order_by("id")]


def test_a_queue_is_applied_in_batches_in_order_with_fewer_statements(
    scene,  # noqa: F811
    client,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    rings: list[str] = []
    monkeypatch.setattr(outbox, "outbox_ring", lambda *, queue: rings.append(queue))
    events = _queue(client, scene, webhooks.APPLY_BATCH + 4)
    reset_queries()  # the log keeps at most 9,000 statements (the capture reads its tail)
    with CaptureQueriesContext(connection) as batched, django_capture_on_commit_callbacks(execute=True):
        assert webhooks.webhook_queue_drain(webhook_event_id=events[0].pk) == len(events)
    per_batched = len(batched.captured_queries) / len(events)  # (read before the log is reset)
    assert _relayed(scene) == [f"reply {n}" for n in range(len(events))]
    mine = WebhookEvent.objects.filter(integration=scene.integration)
    assert set(mine.values_list("status", flat=True)) == {WebhookStatus.PROCESSED}
    assert Delivery.objects.filter(session=scene, kind=DeliveryKind.MESSAGE_TO_USER).count() == len(events)
    assert rings == [""] * 2, "one ring per batch, not one per reply"

    # The same replies applied one by one cost more statements per webhook.
    monkeypatch.setattr(webhooks, "APPLY_BATCH", 1)
    more = _queue(client, scene, 4, start=100)
    reset_queries()
    with CaptureQueriesContext(connection) as single:
        assert webhooks.webhook_queue_drain(webhook_event_id=more[0].pk) == 4
    if connection.vendor == "postgresql":
        per_single = len(single.captured_queries) / 4
        assert per_batched <= per_single - 3, (per_batched, per_single)


def test_a_database_failure_behind_the_head_applies_those_before_it_then_retries_it(scene, client, monkeypatch):  # noqa: F811
    scheduled: list[dict] = []
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: scheduled.append(kw))
    events = _queue(client, scene, 5)
    original, failing = webhooks._webhook_event_apply, {events[2].pk}

    def apply(event, **kw):
        if event.pk in failing:
            raise OperationalError("server closed the connection unexpectedly")
        return original(event, **kw)

    monkeypatch.setattr(webhooks, "_webhook_event_apply", apply)
    assert webhooks.webhook_queue_drain(webhook_event_id=events[0].pk) == 2
    assert _relayed(scene) == ["reply 0", "reply 1"], "the batch before the failure, once"
    statuses = dict(WebhookEvent.objects.filter(integration=scene.integration).values_list("pk", "status"))
    assert [statuses[e.pk] for e in events] == ["processed"] * 2 + ["accepted"] * 3, "order kept: nothing overtook"
    assert scheduled == [{"webhook_event_id": events[2].pk, "countdown": 1.0}]
    failing.clear()
    assert webhooks.webhook_queue_drain(webhook_event_id=events[2].pk) == 3
    assert _relayed(scene) == [f"reply {n}" for n in range(5)]


def test_a_bug_in_a_later_webhook_is_recorded_on_it_and_the_queue_goes_on(scene, client, monkeypatch):  # noqa: F811
    events = _queue(client, scene, 4)
    original = webhooks._webhook_event_apply

    def apply(event, **kw):
        if event.pk == events[1].pk:
            raise KeyError("bug")
        return original(event, **kw)

    monkeypatch.setattr(webhooks, "_webhook_event_apply", apply)
    assert webhooks.webhook_queue_drain(webhook_event_id=events[0].pk) == 4
    failed = WebhookEvent.objects.get(pk=events[1].pk)
    assert failed.status == WebhookStatus.FAILED and "KeyError" in failed.detail
    assert _relayed(scene) == ["reply 0", "reply 2", "reply 3"]


@pytest.mark.parametrize("outcome", ["ok", "desk_down"])
def test_a_webhook_that_calls_the_desk_heads_a_batch_of_its_own(scene, client, monkeypatch, outcome):  # noqa: F811
    """An agent named by id only is looked up at the desk: once per webhook, even when it fails."""
    scheduled: list[dict] = []
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: scheduled.append(kw))
    events = _queue(client, scene, 3)
    parse = webhooks._stored_parse

    def parsed(event, installation):  # the second webhook names its agent by id only
        found = parse(event, installation)
        if event.pk != events[1].pk:
            return found
        nameless = [dataclasses.replace(e, agent=AgentProfile(external_id="8", name="")) for e in found.events]
        return dataclasses.replace(found, events=nameless)

    monkeypatch.setattr(webhooks, "_stored_parse", parsed)
    calls: list[str] = []

    def fetch(self, *, external_id):
        calls.append(external_id)
        if outcome == "desk_down":
            from outbound.http import RetryableError

            raise RetryableError("Service Unavailable", 503)
        return AgentProfile(external_id=external_id, name="Linus")

    from providers.zendesk.provider import ZendeskProvider

    monkeypatch.setattr(ZendeskProvider, "agent_profile_fetch", fetch)
    applied = webhooks.webhook_queue_drain(webhook_event_id=events[0].pk)
    assert calls == ["8"], "the desk is asked once"
    if outcome == "ok":
        assert applied == 3 and _relayed(scene) == ["reply 0", "reply 1", "reply 2"]
    else:
        assert applied == 1 and _relayed(scene) == ["reply 0"]
        retried = WebhookEvent.objects.get(pk=events[1].pk)
        assert retried.status == WebhookStatus.ACCEPTED and retried.attempts == 1 and retried.retry_at
        assert scheduled and scheduled[-1]["webhook_event_id"] == events[1].pk


def test_a_burst_of_replies_writes_the_sessions_last_activity_once_a_second(scene, client):  # noqa: F811
    from datetime import timedelta

    from sessions_app.models import HitlSession

    events = _queue(client, scene, 3)
    reset_queries()
    with CaptureQueriesContext(connection) as captured:
        webhooks.webhook_queue_drain(webhook_event_id=events[0].pk)
    writes = [q for q in captured.captured_queries if q["sql"].startswith('UPDATE "sessions_app_hitlsession"')]
    assert len(writes) == 1, "three replies within a second: one write"
    first = HitlSession.objects.get(pk=scene.pk).last_activity_at
    assert first is not None
    earlier = first - timedelta(seconds=2)  # a second later, the next message moves it again
    HitlSession.objects.filter(pk=scene.pk).update(last_activity_at=earlier)
    events = _queue(client, scene, 2, start=10)
    webhooks.webhook_queue_drain(webhook_event_id=events[0].pk)
    assert HitlSession.objects.get(pk=scene.pk).last_activity_at > first
    assert _relayed(scene)[-2:] == ["reply 10", "reply 11"]


def test_an_unparseable_webhook_fails_alone_and_the_one_before_it_is_applied(scene, client, monkeypatch):  # noqa: F811
    events = _queue(client, scene, 4)
    parse = webhooks._stored_parse

    def parsed(event, installation):
        if event.pk == events[2].pk:
            raise ValueError("the stored body no longer parses")
        return parse(event, installation)

    monkeypatch.setattr(webhooks, "_stored_parse", parsed)
    assert webhooks.webhook_queue_drain(webhook_event_id=events[0].pk) == 4
    statuses = dict(WebhookEvent.objects.filter(integration=scene.integration).values_list("pk", "status"))
    assert [statuses[e.pk] for e in events] == ["processed", "processed", "failed", "processed"]
    assert "no longer parses" in WebhookEvent.objects.get(pk=events[2].pk).detail
    assert _relayed(scene) == ["reply 0", "reply 1", "reply 3"]


@pytest.mark.django_db(transaction=True)
def test_a_batch_stops_before_rows_another_worker_holds(monkeypatch):
    """An older webhook accepted again becomes the head while the next rows are held elsewhere:
    the batch from it must not jump over them."""
    import threading
    from datetime import timedelta

    from django.db import connections, transaction
    from django.utils import timezone

    from tests.test_inbound_webhooks import scene as scene_fixture

    session = scene_fixture.__wrapped__(None, monkeypatch)
    # Committed rows are any relay's to apply (a worker a browser test left running, say): a
    # retry time ahead holds the queue back from them, and ``_queue_locked`` does not look at it.
    later = timezone.now() + timedelta(hours=1)
    with transaction.atomic():
        events = [
            WebhookEvent.objects.create(
                integration=session.integration,
                provider="zendesk",
                dedup_key=f"held-{n}",
                event_type="newMessage",
                ticket_external_id="42",
                status=WebhookStatus.ACCEPTED,
                retry_at=later,
            )
            for n in range(5)
        ]
    held, release = threading.Event(), threading.Event()

    def other_worker():
        with transaction.atomic():
            list(WebhookEvent.objects.select_for_update().filter(pk__in=[events[2].pk, events[3].pk]))
            held.set()
            release.wait(10)
        connections.close_all()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert held.wait(10)
        with transaction.atomic():
            locked = webhooks._queue_locked(
                session.integration_id, "42", head_id=events[0].pk, size=webhooks.APPLY_BATCH
            )
            assert [e.pk for e in locked] == [events[0].pk, events[1].pk]
    finally:
        release.set()
        thread.join()


def _second_batch_statements(client, scene, count: int) -> list[str]:  # noqa: F811
    """The statements of applying ``count`` queued replies, after a first one recorded the agent."""
    first = _queue(client, scene, 1)
    assert webhooks.webhook_queue_drain(webhook_event_id=first[0].pk) == 1
    events = _queue(client, scene, count, start=1)
    reset_queries()
    with CaptureQueriesContext(connection) as captured:
        assert webhooks.webhook_queue_drain(webhook_event_id=events[0].pk) == count
    return [query["sql"] for query in captured.captured_queries]


def test_events_of_a_batch_are_applied_without_savepoints_until_one_fails(scene, client, monkeypatch):  # noqa: F811
    """A batch first applies its events without a savepoint each; an event that fails spoils the
    transaction, so the batch is rolled back and applied again with savepoints: the failure is
    recorded on its own webhook, the others are relayed once, as when every event was isolated."""
    from sessions_app.services import sessions

    savepoints = [sql for sql in _second_batch_statements(client, scene, 3) if sql.startswith("SAVEPOINT")]
    assert len(savepoints) <= 1, "the batch's transaction only (a savepoint inside the test's), none per event"

    more = _queue(client, scene, 4, start=10)
    original = sessions.agent_reply_receive

    def receive(*, session, agent, event):
        if event.text == "reply 12":
            raise ValueError("a bug in the third reply")
        return original(session=session, agent=agent, event=event)

    monkeypatch.setattr(sessions, "agent_reply_receive", receive)
    assert webhooks.webhook_queue_drain(webhook_event_id=more[0].pk) == 4
    statuses = dict(WebhookEvent.objects.filter(pk__in=[e.pk for e in more]).values_list("pk", "status"))
    assert [statuses[e.pk] for e in more] == ["processed", "processed", "failed", "processed"]
    failed = WebhookEvent.objects.get(pk=more[2].pk)
    assert failed.failed_events[0]["reason"].startswith("ValueError: a bug in the third reply")
    assert _relayed(scene) == [f"reply {n}" for n in (0, 1, 2, 3, 10, 11, 13)], "each once, in order"
    assert Delivery.objects.filter(session=scene, kind=DeliveryKind.MESSAGE_TO_USER).count() == 7


def test_a_batch_reads_its_session_and_agent_once_and_again_after_a_stop(scene, client):  # noqa: F811
    """Within a batch applied without savepoints, the replies share one read of the locked
    session and of the agent (``sessions.BatchReads``); an event of another kind drops the
    session, so a reply after a stop in the same batch sees the session stopped."""
    selects = [sql for sql in _second_batch_statements(client, scene, 4) if sql.startswith("SELECT")]
    session_reads = [sql for sql in selects if 'FROM "sessions_app_hitlsession"' in sql and "FOR NO KEY UPDATE" in sql]
    agent_reads = [sql for sql in selects if 'FROM "sessions_app_humanagent"' in sql]
    if connection.vendor == "postgresql":  # (SQLite has no row locks to tell the read by)
        assert len(session_reads) == 1, session_reads
    assert len(agent_reads) == 1, agent_reads

    send(client, scene.integration, trigger("newMessage", comment="<p>reply 5</p>", comment_id="905"))
    send(client, scene.integration, trigger("ticketSolved"))
    send(client, scene.integration, trigger("newMessage", comment="<p>reply 6</p>", comment_id="906"))
    queued = WebhookEvent.objects.filter(integration=scene.integration, status=WebhookStatus.ACCEPTED).order_by("id")
    assert webhooks.webhook_queue_drain(webhook_event_id=queued.first().pk) == 3
    assert _relayed(scene) == [f"reply {n}" for n in range(6)], "nothing relayed after the stop"
    scene.refresh_from_db()
    assert scene.status == "stopped"


def _head_reads(captured) -> int:
    """Statements that read a ticket queue's head (``_QUEUE_HEAD``: one id, the queue's first)."""
    return sum(
        1
        for query in captured.captured_queries
        if query["sql"].startswith('SELECT "sessions_app_webhookevent"."id" AS "id" FROM') and "LIMIT 1" in query["sql"]
    )


def test_a_relayed_drain_that_empties_its_queue_reads_no_next_head(scene, client):  # noqa: F811
    """The relay claims the queues' heads again once a drain is settled: a drain whose batch
    held the whole queue leaves a webhook accepted since to that claim, and reads no head of
    its own (it nearly always finds none). A drain outside the relay (a task) still does."""
    events = _queue(client, scene, 2)
    head = (events[0].pk, scene.integration.pk, "42")
    later: list[WebhookEvent] = []
    original = webhooks._webhook_event_apply

    def apply_then_accept_another(event, **kwargs):
        original(event, **kwargs)
        if not later:  # accepted after the batch was locked
            later.extend(_queue(client, scene, 1, start=50)[-1:])

    webhooks._webhook_event_apply = apply_then_accept_another
    try:
        with CaptureQueriesContext(connection) as relayed:
            assert webhooks._queue_drain(head, relayed=True) == 2
    finally:
        webhooks._webhook_event_apply = original
    assert _head_reads(relayed) == 0
    assert WebhookEvent.objects.get(pk=later[0].pk).status == WebhookStatus.ACCEPTED
    source = webhooks.webhook_source()
    assert [claimed[0] for claimed in source.claim(4, set())] == [later[0].pk], "the relay's next claim finds it"
    assert source.execute(source.claim(4, set())[0]) is True, "it wrote an outbox row"
    assert _relayed(scene) == ["reply 0", "reply 1", "reply 50"]
    send(client, scene.integration, trigger("newMessage", comment="<p>?</p>", ticket="77", reference="nowhere"))
    assert source.execute(source.claim(4, set())[0]) is False, "a webhook about no session wrote none"

    more = _queue(client, scene, 1, start=60)
    with CaptureQueriesContext(connection) as task:
        assert webhooks.webhook_queue_drain(webhook_event_id=more[-1].pk) == 1
    assert _head_reads(task) == 1, "the task reads the queue's next head"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement write needs PostgreSQL")
def test_an_agent_reply_marks_the_session_activity_in_its_own_insert(scene, client):  # noqa: F811
    first = _queue(client, scene, 1)
    assert webhooks.webhook_queue_drain(webhook_event_id=first[0].pk) == 1  # assigns the agent
    HitlSession.objects.filter(pk=scene.pk).update(last_activity_at=timezone.now() - timedelta(hours=1))
    events = _queue(client, scene, 1, start=1)
    with CaptureQueriesContext(connection) as captured:
        assert webhooks.webhook_queue_drain(webhook_event_id=events[-1].pk) == 1
    scene.refresh_from_db()
    message = Message.objects.filter(session=scene).latest("id")
    assert abs(scene.last_activity_at - message.created_at) < timedelta(seconds=1), "marked with the reply"
    session_writes = [q["sql"] for q in captured.captured_queries if 'UPDATE "sessions_app_hitlsession"' in q["sql"]]
    assert len(session_writes) == 1 and session_writes[0].startswith("WITH parent AS (INSERT"), session_writes
