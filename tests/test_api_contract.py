"""The REST transport: credentials scoped to one integration, and 400s that name each bad field."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from sessions_app.models import EndUser, HitlSession, StoppedBy
from sessions_app.services.sessions import session_stop
from tests.conftest import integration_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def integration():
    return integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")


@pytest.fixture
def client(integration):
    obj, api_key = integration
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    api.base = f"/api/v1/integrations/{obj.pk}"
    return api


@pytest.fixture
def session(integration):
    obj, _ = integration
    end_user = EndUser.objects.create(integration=obj, botpress_user_id="user_01ENDUSER0000000000000000", name="Ada")
    return HitlSession.objects.create(
        integration=obj, end_user=end_user, botpress_conversation_id="conv_01X" + "0" * 24
    )


def _fields(response) -> dict:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_request"
    return body["fields"]


def test_wrong_credentials_and_unknown_integration_look_the_same(integration):
    obj, api_key = integration
    _other, other_key = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9", name="B")
    api = APIClient()
    answers = []
    for path, key in [
        (obj.pk, None),
        (obj.pk, "hitl_wrong"),
        (obj.pk, other_key),  # a real key, but for another integration
        ("2b1f0c7e-0000-4000-8000-000000000000", api_key),
        ("not-a-uuid", api_key),
    ]:
        api.credentials(**({"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}))
        response = api.post(f"/api/v1/integrations/{path}/actions/createUser", {"name": "A"}, format="json")
        answers.append((response.status_code, response.json()))
    assert {status for status, _ in answers} == {401}
    assert len({str(body) for _, body in answers}) == 1
    assert api_key not in str(answers)


def test_create_user_fields(client):
    assert _fields(client.post(f"{client.base}/actions/createUser", {}, format="json")) == {
        "name": ["This field is required."]
    }
    fields = _fields(client.post(f"{client.base}/actions/createUser", {"name": "", "email": "nope"}, format="json"))
    assert set(fields) == {"name", "email"}


def test_malformed_json_is_a_400_naming_the_body(client):
    response = client.post(f"{client.base}/actions/createUser", "{not json", content_type="application/json")
    assert _fields(response) == {"body": [response.json()["fields"]["body"][0]]}


def test_start_hitl_fields(client):
    body = {
        "userId": "",
        "hitlSession": {"priority": "asap", "ticketFormId": "12a", "requesterEmail": "x@example.com"},
        "messageHistory": [
            {"source": {"type": "user"}, "type": "text", "payload": {"text": "hi"}},
            {"source": {"type": "bot"}, "type": "image", "payload": {}},
            {"source": {"type": "bot"}, "type": "sticker", "payload": {}},
        ],
    }
    fields = _fields(client.post(f"{client.base}/actions/startHitl", body, format="json"))
    assert set(fields) == {
        "userId",
        "hitlSession.priority",
        "hitlSession.ticketFormId",
        "messageHistory[0].source.userId",
        "messageHistory[1].payload.imageUrl",
        "messageHistory[2].type",
    }
    assert _fields(client.post(f"{client.base}/actions/startHitl", {"userId": "u"}, format="json")) == {
        "messageHistory": ["This field is required."]
    }


def test_start_hitl_for_an_unknown_user(client):
    response = client.post(
        f"{client.base}/actions/startHitl", {"userId": "user_x", "messageHistory": []}, format="json"
    )
    assert _fields(response) == {"userId": ["Unknown user: call createUser first."]}


@pytest.mark.parametrize(
    ("message", "bad_field"),
    [
        ({"type": "text", "payload": {"text": ""}}, "payload.text"),
        ({"type": "text", "payload": {"text": "a", "additionalData": "x" * 501}}, "payload.additionalData"),
        ({"type": "image", "payload": {"title": "no url"}}, "payload.imageUrl"),
        ({"type": "audio", "payload": {"audioUrl": ""}}, "payload.audioUrl"),
        ({"type": "video", "payload": {}}, "payload.videoUrl"),
        ({"type": "file", "payload": {"fileUrl": "", "title": "t"}}, "payload.fileUrl"),
        ({"type": "bloc", "payload": {"items": []}}, "payload.items"),
        (
            {"type": "bloc", "payload": {"items": [{"type": "location", "payload": {"latitude": 1}}]}},
            "payload.items[0].payload.longitude",
        ),
        ({"type": "card", "payload": {}}, "type"),
        ({"payload": {"text": "a"}}, "type"),
        ({"type": "text"}, "payload"),
    ],
)
def test_channel_message_fields(client, session, message, bad_field):
    body = {"conversationId": session.botpress_conversation_id} | message
    assert bad_field in _fields(client.post(f"{client.base}/channels/hitl/messages", body, format="json"))


def test_channel_message_for_unknown_conversation_and_unknown_author(client, session):
    response = client.post(
        f"{client.base}/channels/hitl/messages",
        {"conversationId": "conv_nope", "type": "text", "payload": {"text": "a"}},
        format="json",
    )
    assert response.status_code == 404 and "conversationId" in response.json()["fields"]
    response = client.post(
        f"{client.base}/channels/hitl/messages",
        {"conversationId": session.botpress_conversation_id, "type": "text", "payload": {"text": "a", "userId": "x"}},
        format="json",
    )
    assert _fields(response) == {"payload.userId": ["Unknown user."]}


def test_the_same_botpress_message_twice_is_one_message(client, session, django_capture_on_commit_callbacks):
    body = {
        "conversationId": session.botpress_conversation_id,
        "messageId": "msg_1",
        "type": "text",
        "payload": {"text": "once"},
    }
    with django_capture_on_commit_callbacks() as callbacks:
        first = client.post(f"{client.base}/channels/hitl/messages", body, format="json")
        second = client.post(f"{client.base}/channels/hitl/messages", body, format="json")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] and second.json()["duplicate"] is True
    assert session.messages.count() == 1 and session.deliveries.count() == 1
    assert len(callbacks) == 1, "one delivery is enqueued"


def test_a_new_message_is_not_looked_up_first_and_one_sent_again_after_the_stop_is_the_duplicate(client, session):
    """The unique index answers "seen before?" (the insert skips a conflict), so a new message
    costs no read of the messages; after the stop the same message is still its duplicate (202),
    and only a new one is refused (409)."""
    body = {"conversationId": session.botpress_conversation_id, "messageId": "msg_7", "type": "text"}
    body["payload"] = {"text": "before the stop"}
    with CaptureQueriesContext(connection) as captured:
        first = client.post(f"{client.base}/channels/hitl/messages", body, format="json")
    assert first.status_code == 202 and first.json()["duplicate"] is False
    reads = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
    assert not [sql for sql in reads if 'FROM "sessions_app_message"' in sql], reads
    session_stop(session=session, stopped_by=StoppedBy.AGENT, close_ticket=False, notify_botpress=False)
    again = client.post(f"{client.base}/channels/hitl/messages", body, format="json")
    assert again.status_code == 202 and again.json() == {**first.json(), "duplicate": True}
    refused = client.post(f"{client.base}/channels/hitl/messages", {**body, "messageId": "msg_8"}, format="json")
    assert refused.status_code == 409
    assert session.messages.count() == 1


def test_a_bot_message_is_its_sessions_read_and_one_write(client, session):
    """On PostgreSQL a new message, its outbox row and the session's activity are one statement
    after the API key's and the session's reads (a transaction of their own took five round
    trips); a second message within the activity's resolution leaves the session alone."""
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement write is PostgreSQL's")
    payload = {"text": "one", "userId": session.end_user.botpress_user_id}
    body = {"conversationId": session.botpress_conversation_id, "type": "text", "payload": payload}
    HitlSession.objects.filter(pk=session.pk).update(last_activity_at=timezone.now() - timedelta(minutes=5))
    with CaptureQueriesContext(connection) as captured:
        response = client.post(f"{client.base}/channels/hitl/messages", {**body, "messageId": "msg_1"}, format="json")
    assert response.status_code == 202 and response.json()["duplicate"] is False
    statements = [q["sql"] for q in captured.captured_queries]
    assert len(statements) == 3, statements
    write = statements[-1]
    for part in ('INSERT INTO "sessions_app_message"', 'INSERT INTO "sessions_app_delivery"', "FOR NO KEY UPDATE"):
        assert part in write
    assert 'UPDATE "sessions_app_hitlsession"' in write  # the first message marks the activity
    message = session.messages.get()
    assert message.delivery.lane == f"session:{session.pk}:to_agent" and message.author_end_user == session.end_user
    session.refresh_from_db()
    assert timezone.now() - session.last_activity_at < timedelta(seconds=5)
    with CaptureQueriesContext(connection) as captured:
        client.post(f"{client.base}/channels/hitl/messages", {**body, "messageId": "msg_2"}, format="json")
    assert 'UPDATE "sessions_app_hitlsession"' not in captured.captured_queries[-1]["sql"]
    assert session.messages.count() == session.deliveries.count() == 2
    # Behind a pending head no worker runs, yet not parked: the statement's snapshot predates
    # its wait for the session's lock (``message_delivery_enqueue``).
    assert [d.parked for d in session.deliveries.order_by("pk")] == [False, False]


def test_a_session_stopped_after_its_read_takes_no_new_message(client, session, monkeypatch):
    """The write checks the session again: a stop committed between the read and the write
    leaves the new message refused (409) and nothing written, and a message sent again after
    the stop is still its duplicate."""
    from sessions_app.services import sessions as services

    body = {"conversationId": session.botpress_conversation_id, "type": "text", "payload": {"text": "x"}}
    first = client.post(f"{client.base}/channels/hitl/messages", {**body, "messageId": "msg_1"}, format="json")
    read = services.session_for_conversation

    def read_then_stopped(**kwargs):
        found = read(**kwargs)
        HitlSession.objects.filter(pk=found.pk).update(status="stopped")  # a stop commits meanwhile
        return found

    monkeypatch.setattr(services, "session_for_conversation", read_then_stopped)
    if connection.vendor != "postgresql":  # elsewhere the read is locked: nothing can come between
        pytest.skip("the one-statement write is PostgreSQL's")
    refused = client.post(f"{client.base}/channels/hitl/messages", {**body, "messageId": "msg_2"}, format="json")
    assert refused.status_code == 409 and refused.json()["fields"] == {
        "conversationId": ["The HITL session is stopped."]
    }
    assert session.messages.count() == session.deliveries.count() == 1
    HitlSession.objects.filter(pk=session.pk).update(status="active")
    again = client.post(f"{client.base}/channels/hitl/messages", {**body, "messageId": "msg_1"}, format="json")
    assert again.status_code == 202 and again.json() == {**first.json(), "duplicate": True}


def test_openapi_schema_is_served(client):
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    assert "/api/v1/integrations/{integration_id}/actions/startHitl" in paths
    operation_ids = {op["operationId"] for item in paths.values() for op in item.values()}
    assert {"createUser", "startHitl", "stopHitl", "hitlMessage"} <= operation_ids


def test_botpress_calls_take_the_lean_path_and_keep_their_view_metrics(client, session):
    """No session, CSRF, auth, messages, CSP or axes middleware for a bearer-key API call
    (hitl_gateway/lean.py); django-prometheus still counts and times it by view."""
    from prometheus_client import REGISTRY

    labels = {"view": "api:hitlMessage", "transport": "http", "method": "POST"}
    name = "django_http_requests_total_by_view_transport_method_total"
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    body = {"conversationId": session.botpress_conversation_id, "type": "text", "payload": {"text": "hi"}}
    response = client.post(f"{client.base}/channels/hitl/messages", body, format="json")
    assert response.status_code == 202
    assert "Content-Security-Policy" not in response.headers and not response.cookies
    assert response.headers["X-Content-Type-Options"] == "nosniff", "the security middleware did run"
    assert REGISTRY.get_sample_value(name, labels) == before + 1
    latency = "django_http_requests_latency_seconds_by_view_method_count"
    assert REGISTRY.get_sample_value(latency, {"view": "api:hitlMessage", "method": "POST"}) >= 1


def test_a_failing_call_on_the_lean_path_keeps_its_headers_and_metrics(client, session, monkeypatch):
    from prometheus_client import REGISTRY

    from sessions_app.api import views

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views, "message_relay_to_agent", broken)
    client.raise_request_exception = False
    name, labels = "django_http_exceptions_total_by_view_total", {"view": "api:hitlMessage"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    body = {"conversationId": session.botpress_conversation_id, "type": "text", "payload": {"text": "hi"}}
    response = client.post(f"{client.base}/channels/hitl/messages", body, format="json")
    assert response.status_code == 500
    assert response.headers["X-Content-Type-Options"] == "nosniff", "the 500 went out through the security middleware"
    assert REGISTRY.get_sample_value(name, labels) == before + 1


def test_serializer_instances_stay_independent_with_shallow_field_copies():
    """Each instance gets its own bound copies: a field changed on one (as DRF lets a view do)
    leaves the next alone, and the copies validate as DRF's deep copies would, across threads."""
    from concurrent.futures import ThreadPoolExecutor

    from sessions_app.api.contract import ChannelMessageInput

    first, second = ChannelMessageInput(data={}), ChannelMessageInput(data={})
    first.fields["conversationId"].required = False
    assert second.fields["conversationId"].required is True
    assert first.fields["conversationId"] is not second.fields["conversationId"]
    assert second.fields["conversationId"].parent is second
    assert set(ChannelMessageInput._declared_fields) == {"conversationId", "messageId", "userId"}

    cases = [
        ({"conversationId": "c", "type": "text", "payload": {"text": "hi"}}, {}),
        (
            {"conversationId": "c" * 65, "type": "text", "payload": {"text": "hi"}},
            {"conversationId": ["Ensure this field has no more than 64 characters."]},
        ),
        (
            {"conversationId": "c", "type": "bloc", "payload": {"text": "hi"}},
            {"payload": {"items": ["This field is required."]}},
        ),
        (
            {"conversationId": "c", "type": "text", "payload": {"text": ""}},
            {"payload": {"text": ["This field may not be blank."]}},
        ),
    ]

    def errors_of(data: dict) -> dict:
        serializer = ChannelMessageInput(data=data)
        serializer.is_valid()
        return json.loads(json.dumps(serializer.errors))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(errors_of, [cases[i % len(cases)][0] for i in range(400)]))
    assert results == [cases[i % len(cases)][1] for i in range(400)]
