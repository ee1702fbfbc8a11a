"""Compiled read queries (``hitl_gateway.compiled``): the same rows as the queryset, built once.

The relay's hot reads must be compiled on PostgreSQL (a rebuild each time is what the module
exists to avoid), give what the plain queryset gives for every value, and see rows committed
after they were compiled.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import DataError, IntegrityError, close_old_connections, connection, connections, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl_gateway.compiled import CompiledQuery, row_insert, row_update, rows_insert_linked, rows_update
from sessions_app.models import (
    Delivery,
    EndUser,
    HitlSession,
    HumanAgent,
    Integration,
    Message,
    WebhookEvent,
    WebhookStatus,
)
from sessions_app.services import deliveries, integrations, outbox, sessions, webhooks

pytestmark = pytest.mark.django_db(transaction=True)


def _integration() -> Integration:
    return Integration.objects.create(name=f"compiled {uuid.uuid4()}", provider="zendesk")


def _agent(integration: Integration, external_id: str, name: str = "Grace") -> HumanAgent:
    return HumanAgent.objects.create(integration=integration, external_user_id=external_id, name=name)


AGENTS = CompiledQuery(
    lambda integration_id, ids: (
        HumanAgent.objects.filter(integration_id=integration_id, external_user_id__in=ids)
        .select_related("integration")
        .order_by("external_user_id")
    )
)
NAMES = CompiledQuery(
    lambda integration_id, since: (
        HumanAgent.objects.filter(integration_id=integration_id, created_at__gte=since)
        .order_by("id")
        .values_list("name", flat=True)
    )
)


def test_the_relays_hot_reads_are_compiled_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the embedded SQLite default rebuilds them (UUIDs and times are text there)")
    integration_id = uuid.uuid4()
    assert outbox._CLAIMED.compiles(ids=[1, 2])
    assert webhooks._QUEUE_HEAD.compiles(integration_id=integration_id, ticket="1")
    assert webhooks._QUEUE_HEADS.compiles()
    with transaction.atomic():  # the locking reads compile inside a transaction, as they run
        assert webhooks._QUEUE_BATCH_LOCKED.compiles(integration_id=integration_id, ticket="1", head_id=1)
        assert sessions._TICKET_SESSION.compiles(integration_id=integration_id, ticket="1")
    assert sessions._AGENT.compiles(integration_id=integration_id, external_id="1")
    assert sessions._REPLY_KNOWN.compiles(session_id=uuid.uuid4(), message_id="1")
    assert sessions._BOT_MESSAGE.compiles(session_id=uuid.uuid4(), botpress_message_id="m")
    assert deliveries._TICKET.compiles(session_id=uuid.uuid4())
    assert integrations._ACTIVE.compiles(pk=integration_id)
    for (lock, _), query in sessions._CONVERSATION_SESSION.items():
        with transaction.atomic():
            assert query.compiles(integration_id=integration_id, conversation_id="c"), lock


def test_the_same_rows_and_related_objects_as_the_queryset_each_time():
    one, two = _integration(), _integration()
    for external_id in ("b", "a", "c"):
        _agent(one, external_id, name=f"Agent {external_id}")
    _agent(two, "a", name="Other")
    first = AGENTS.fetch(integration_id=one.pk, ids=["a", "c"])
    assert [(agent.external_user_id, agent.name) for agent in first] == [("a", "Agent a"), ("c", "Agent c")]
    with CaptureQueriesContext(connection) as queries:
        assert first[0].integration.name == one.name  # select_related: no query
    assert not queries.captured_queries
    assert [a.name for a in AGENTS.fetch(integration_id=two.pk, ids=["a", "c"])] == ["Other"]
    assert [a.name for a in AGENTS.fetch(integration_id=one.pk, ids=["b"])] == ["Agent b"]  # another length
    assert AGENTS.fetch(integration_id=one.pk, ids=["zz", "yy"]) == []
    # A row committed after the query was compiled is seen: nothing is cached but the SQL.
    _agent(one, "d", name="Agent d")
    assert [a.name for a in AGENTS.fetch(integration_id=one.pk, ids=["a", "d"])] == ["Agent a", "Agent d"]
    assert NAMES.fetch(integration_id=one.pk, since=timezone.now() - timezone.timedelta(hours=1)) == [
        "Agent b",
        "Agent a",
        "Agent c",
        "Agent d",
    ]
    assert NAMES.fetch(integration_id=one.pk, since=timezone.now() + timezone.timedelta(hours=1)) == []


def test_a_locking_read_outside_a_transaction_is_refused_as_django_refuses_it():
    integration_id = uuid.uuid4()
    with transaction.atomic():
        assert webhooks._QUEUE_BATCH_LOCKED.first(integration_id=integration_id, ticket="1", head_id=1) is None
    with pytest.raises(TransactionManagementError):
        webhooks._QUEUE_BATCH_LOCKED.first(integration_id=integration_id, ticket="1", head_id=1)


def test_a_none_value_runs_the_plain_queryset():
    query = CompiledQuery(lambda ticket: WebhookEvent.objects.filter(ticket_external_id=ticket).order_by("id"))
    integration = _integration()
    WebhookEvent.objects.create(integration=integration, status=WebhookStatus.ACCEPTED, ticket_external_id="7")
    assert len(query.fetch(ticket="7")) == 1
    assert query.fetch(ticket=None) == []
    assert AGENTS.fetch(integration_id=integration.pk, ids=[]) == []


def test_each_thread_compiles_its_own_on_its_own_connection():
    integration = _integration()
    _agent(integration, "a", name="Ada")

    def read(_) -> list[str]:
        try:
            return [AGENTS.fetch(integration_id=integration.pk, ids=["a"])[0].name for _ in range(20)]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(4) as pool:
        found = [name for names in pool.map(read, range(4)) for name in names]
    assert found == ["Ada"] * 80


@settings(max_examples=40, deadline=None)
@given(
    ids=st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
        min_size=1,
        max_size=4,
    )
)
def test_any_text_values_give_the_querysets_answer(ids):
    integration = Integration.objects.first() or _integration()
    stored = {external_id for external_id in ids[:2]}
    HumanAgent.objects.filter(integration=integration).delete()
    for external_id in stored:
        _agent(integration, external_id)
    expected = list(
        HumanAgent.objects.filter(integration_id=integration.pk, external_user_id__in=ids)
        .order_by("external_user_id")
        .values_list("pk", flat=True)
    )
    assert [agent.pk for agent in AGENTS.fetch(integration_id=integration.pk, ids=ids)] == expected


# --- single-row writes ------------------------------------------------------------------------
def _webhook_fields(integration: Integration, key: str) -> dict:
    return {
        "integration": integration,
        "provider": "zendesk",
        "status": WebhookStatus.ACCEPTED,
        "dedup_key": key,
        "ticket_external_id": "42",
        "headers": {"x-zendesk-webhook-invocation-id": key},
        "body": '{"a": 1}',
    }


def test_row_insert_and_row_update_write_what_save_would():
    integration = _integration()
    event = WebhookEvent(**_webhook_fields(integration, "k1"))
    pk = row_insert(event)
    assert pk == event.pk and not event._state.adding
    stored = WebhookEvent.objects.get(pk=pk)
    assert stored.headers == {"x-zendesk-webhook-invocation-id": "k1"}
    assert (stored.body, stored.dedup_key) == ('{"a": 1}', "k1")
    assert stored.received_at is not None and stored.failed_events == []
    assert row_insert(WebhookEvent(**_webhook_fields(integration, "k1")), skip_conflicts=True) is None
    with pytest.raises(IntegrityError), transaction.atomic():
        row_insert(WebhookEvent(**_webhook_fields(integration, "k1")))
    event.status, event.failed_events, event.processed_at = WebhookStatus.FAILED, [{"index": 0}], timezone.now()
    assert row_update(event, ["status", "failed_events", "processed_at"]) == 1
    stored = WebhookEvent.objects.get(pk=pk)
    assert (stored.status, stored.failed_events) == (WebhookStatus.FAILED, [{"index": 0}])
    agent = _agent(integration, "a")
    before = agent.updated_at
    agent.name = "Grace Hopper"
    assert row_update(agent, ["name", "updated_at"]) == 1  # auto_now is set, as save sets it
    stored = HumanAgent.objects.get(pk=agent.pk)
    assert stored.name == "Grace Hopper" and stored.updated_at > before
    HumanAgent.objects.filter(pk=agent.pk).delete()
    assert row_update(agent, ["name"]) == 0


def _linked_pair(session: HitlSession, **message) -> tuple[Message, Delivery]:
    now = timezone.now()
    return (
        Message(session=session, direction="to_agent", type="text", payload={"text": "hi"}, **message),
        Delivery(
            integration=session.integration,
            session=session,
            lane=f"session:{session.pk}:to_agent",
            direction="to_agent",
            kind="message_to_agent",
            payload={"acknowledge": True},
            next_attempt_at=now,
            retry_deadline=now,
        ),
    )


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_rows_insert_linked_writes_a_message_and_its_delivery_in_one_statement_or_neither():
    integration = _integration()
    end_user = EndUser.objects.create(integration=integration, botpress_user_id="user_linked", name="Ada")
    session = HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id="c")
    message, delivery = _linked_pair(session, botpress_message_id="msg_1")
    computed = {"parked": ("SELECT %s::text = 'x'", ["x"])}
    with CaptureQueriesContext(connection) as captured:
        assert rows_insert_linked(message, delivery, link="message", skip_conflicts=True, computed=computed) is True
    assert len(captured) == 1
    stored = Delivery.objects.select_related("message").get(pk=delivery.pk)
    assert stored.message_id == message.pk and stored.message.botpress_message_id == "msg_1"
    assert stored.parked is True and delivery.parked is True  # computed by the database, returned
    assert stored.payload == {"acknowledge": True} and stored.created_at == delivery.created_at
    assert not message._state.adding and not delivery._state.adding

    # The message's unique index taken: neither row is written.
    again, again_delivery = _linked_pair(session, botpress_message_id="msg_1")
    assert rows_insert_linked(again, again_delivery, link="message", skip_conflicts=True) is False
    assert again.pk is None and again_delivery.pk is None and Delivery.objects.count() == 1
    # Without skip_conflicts it raises as save would, and the statement wrote nothing.
    with pytest.raises(IntegrityError), transaction.atomic():
        rows_insert_linked(*_linked_pair(session, botpress_message_id="msg_1"), link="message")

    # A guard that finds no row: nothing is written, and ``then`` does not run either.
    table = HitlSession._meta.db_table
    guard = (f'SELECT id FROM "{table}" WHERE id = %s AND status <> %s FOR NO KEY UPDATE', [session.pk, "pending"])
    then = (
        f'UPDATE "{table}" SET title = %s WHERE id IN (SELECT id FROM guard) AND EXISTS (SELECT 1 FROM parent)',
        ["t"],
    )
    refused = _linked_pair(session, botpress_message_id="msg_2")
    assert session.status == "pending"
    with transaction.atomic():
        assert rows_insert_linked(*refused, link="message", guard=guard, then=then) is None
    assert Message.objects.count() == 1 and HitlSession.objects.get(pk=session.pk).title == ""
    # The guard's row found: both rows and ``then`` in the one statement.
    guard = (guard[0], [session.pk, "stopped"])
    message, delivery = _linked_pair(session, botpress_message_id="msg_2")
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        assert rows_insert_linked(message, delivery, link="message", guard=guard, then=then) is True
    assert len([q for q in captured.captured_queries if "INSERT" in q["sql"]]) == 1
    assert HitlSession.objects.get(pk=session.pk).title == "t" and Message.objects.count() == 2
    # A conflict behind the guard: the guard held, the message was not new, ``then`` did not run.
    HitlSession.objects.filter(pk=session.pk).update(title="")
    with transaction.atomic():
        duplicate = _linked_pair(session, botpress_message_id="msg_2")
        assert rows_insert_linked(*duplicate, link="message", skip_conflicts=True, guard=guard, then=then) is False
    assert HitlSession.objects.get(pk=session.pk).title == ""


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_rows_insert_linked_refuses_an_over_long_value_as_save_does():
    """The values are cast to their column's type without its length, so a string longer than
    its column is refused (not cut) and nothing is written."""
    integration = _integration()
    end_user = EndUser.objects.create(integration=integration, botpress_user_id="user_long", name="Ada")
    session = HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id="c")
    with pytest.raises(DataError), transaction.atomic():
        rows_insert_linked(*_linked_pair(session, botpress_message_id="m" * 65), link="message")
    assert not Message.objects.exists() and not Delivery.objects.exists()


def test_rows_update_writes_each_row_its_own_values_in_one_statement():
    integration = _integration()
    events = [WebhookEvent(**_webhook_fields(integration, f"r{n}")) for n in range(3)]
    for event in events:
        row_insert(event)
    untouched = WebhookEvent(**_webhook_fields(integration, "other"))
    row_insert(untouched)
    now = timezone.now()
    events[0].status, events[0].failed_events, events[0].processed_at = WebhookStatus.FAILED, [{"index": 1}], now
    events[1].status, events[1].detail, events[1].processed_at = WebhookStatus.PROCESSED, "it's 'quoted'", None
    events[2].status, events[2].detail, events[2].retry_at = WebhookStatus.IGNORED, "", now
    fields = ["status", "detail", "failed_events", "processed_at", "retry_at"]
    with CaptureQueriesContext(connection) as captured:
        assert rows_update(events, fields) == 3
    if connection.vendor == "postgresql":
        assert len(captured) == 1
    stored = {e.pk: e for e in WebhookEvent.objects.all()}
    for event in events:
        assert [getattr(stored[event.pk], name) for name in fields] == [getattr(event, name) for name in fields]
    assert stored[untouched.pk].status == WebhookStatus.ACCEPTED
    assert rows_update([events[0]], ["status"]) == 1 and rows_update([], ["status"]) == 0


def test_the_acks_insert_skips_the_ping_and_survives_a_connection_the_server_dropped():
    """Django pings a kept connection before a request's first query (CONN_HEALTH_CHECKS); the
    ack skips that round trip, and a dropped connection costs a retry, not a failed webhook."""
    if connection.vendor != "postgresql" or not connection.settings_dict.get("CONN_HEALTH_CHECKS"):
        pytest.skip("health checks are a PostgreSQL deployment's setting")
    integration = _integration()
    close_old_connections()  # as a request's start does
    pings = []
    wrapper = type(connections["default"])
    real = wrapper.is_usable
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wrapper, "is_usable", lambda self: pings.append(1) or real(self))
        assert webhooks.webhook_event_insert(fields=_webhook_fields(integration, "p1"))
        assert pings == []
        close_old_connections()
        backend = connection.connection.info.backend_pid
        with connections.create_connection("default").cursor() as other:
            other.execute("SELECT pg_terminate_backend(%s)", [backend])
        close_old_connections()  # the next request: the connection looks fine until used
        assert webhooks.webhook_event_insert(fields=_webhook_fields(integration, "p2"))
        assert connection.connection.info.backend_pid != backend
        # The API's first statement, the key's integration, does the same for Botpress's calls.
        close_old_connections()
        backend = connection.connection.info.backend_pid
        with connections.create_connection("default").cursor() as other:
            other.execute("SELECT pg_terminate_backend(%s)", [backend])
        close_old_connections()
        assert integrations.integration_authenticate(integration_id=str(integration.pk), api_key="wrong") is None
        assert connection.connection.info.backend_pid != backend
        assert pings == []
    assert sorted(WebhookEvent.objects.values_list("dedup_key", flat=True)) == ["p1", "p2"]
