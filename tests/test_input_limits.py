"""Bad Botpress input gets a 4xx naming the field, on every transport, before any outbound call.

Issue 9 item 5: over-long strings, JSON nested too deep, a wrong JSON type, bodies over the
size limit (413), and text PostgreSQL cannot store (NUL, unpaired surrogates).
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse
from rest_framework.test import APIClient

from hitl_gateway.limits import MAX_JSON_DEPTH, RequestBodyLimitMiddleware, json_loads_checked
from outbound.guard import allowances_parse
from sessions_app.models import EndUser, HitlSession, Message
from sessions_app.services.integrations import integration_botpress_configure
from tests.conftest import integration_for
from tests.test_wire_protocol import NAMES, _caller, _sdk_error

pytestmark = pytest.mark.django_db
CONVERSATION = "conv_01X" + "0" * 24
USER = "user_01ENDUSER0000000000000000"


@pytest.fixture
def rest(botpress):
    """REST client of an integration whose Botpress is the stand-in: an outbound call would show there."""
    integration, api_key = integration_for(botpress_url=botpress.base_url, zendesk_url="http://127.0.0.1:9")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    api.base = f"/api/v1/integrations/{integration.pk}"
    api.integration = integration
    end_user = EndUser.objects.create(integration=integration, botpress_user_id=USER, name="Ada")
    HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id=CONVERSATION)
    return api


@pytest.fixture
def hitl_api(db, settings):
    # A bot on loopback over http: allowed explicitly, as for local development.
    settings.HITL = {**settings.HITL, "BOTPRESS_ALLOW_INSECURE_URLS": allowances_parse("127.0.0.1")}
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    integration = integration_botpress_configure(
        integration=integration, transport="hitl_api", hitl_api_webhook_url="http://127.0.0.1:9/wh_1"
    )
    api = APIClient()
    api.base = f"/hitl-api/{integration.pk}/{integration.botpress_url_secret}"
    return api


@pytest.fixture
def wire(client, db):
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    integration = integration_botpress_configure(integration=integration, names=NAMES)
    end_user = EndUser.objects.create(integration=integration, botpress_user_id=USER, name="Ada")
    HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id=CONVERSATION)
    return _caller(client, integration)


def _fields(response) -> dict:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_request"
    return body["fields"]


def _deep(depth: int) -> object:
    value: object = "x"
    for _ in range(depth - 1):
        value = [value]
    return value


# --- string lengths: what is stored, checked before any outbound call ------------------------------
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("actions/createUser", {"name": "x" * 256}, "name"),
        ("actions/createUser", {"name": "A", "email": f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 63}.test"}, "email"),
        ("actions/createUser", {"name": "A", "pictureUrl": "https://x.test/" + "p" * 2040}, "pictureUrl"),
        ("actions/startHitl", {"userId": "u" * 65, "messageHistory": []}, "userId"),
        ("actions/startHitl", {"userId": USER, "title": "t" * 256, "messageHistory": []}, "title"),
        ("actions/startHitl", {"userId": USER, "description": "d" * 64_001, "messageHistory": []}, "description"),
        (
            "actions/startHitl",
            {
                "userId": USER,
                "messageHistory": [{"source": {"type": "user", "userId": "u" * 65}, "type": "text", "payload": {}}],
            },
            "messageHistory[0].source.userId",
        ),
        ("actions/stopHitl", {"conversationId": "c" * 65}, "conversationId"),
        (
            "channels/hitl/messages",
            {"conversationId": CONVERSATION, "messageId": "m" * 65, "type": "text", "payload": {"text": "a"}},
            "messageId",
        ),
        (
            "channels/hitl/messages",
            {"conversationId": CONVERSATION, "type": "text", "payload": {"text": "a" * 64_001}},
            "payload.text",
        ),
        (
            "channels/hitl/messages",
            {"conversationId": CONVERSATION, "type": "image", "payload": {"imageUrl": "https://x.test/" + "i" * 2040}},
            "payload.imageUrl",
        ),
    ],
)
def test_rest_strings_longer_than_stored_are_a_400_naming_the_field(rest, botpress, path, body, field):
    users_before = len(botpress.users())
    assert field in _fields(rest.post(f"{rest.base}/{path}", body, format="json"))
    assert len(botpress.users()) == users_before, "Botpress was called before the input was checked"


def test_create_user_at_the_limits_is_stored(rest, botpress):
    body = {"name": "x" * 255, "pictureUrl": "https://x.test/" + "p" * 2033}
    response = rest.post(f"{rest.base}/actions/createUser", body, format="json")
    assert response.status_code == 200, response.content
    assert EndUser.objects.get(botpress_user_id=response.json()["userId"]).name == "x" * 255


def test_the_openapi_lists_the_limits(client):
    schema = json.loads(client.get("/api/schema/", HTTP_ACCEPT="application/json").content)
    components = schema["components"]["schemas"]
    assert components["CreateUserInputRequest"]["properties"]["name"]["maxLength"] == 255
    assert components["CreateUserInputRequest"]["properties"]["email"]["maxLength"] == 254
    assert components["StartHitlInputRequest"]["properties"]["userId"]["maxLength"] == 64
    assert components["StartHitlInputRequest"]["properties"]["description"]["maxLength"] == 64_000
    assert components["ChannelMessageInputRequest"]["properties"]["conversationId"]["maxLength"] == 64
    assert components["BotSendsMessagePayloadRequest"]["properties"]["remoteConversationId"]["maxLength"] == 64


def test_wire_strings_longer_than_stored_are_invalid_payload(wire):
    body = _sdk_error(wire.action("createUser", {"name": "x" * 256}), 400, "InvalidPayload")
    assert body["metadata"]["fields"] == {"name": ["Ensure this field has no more than 255 characters."]}
    message = {"id": "m" * 65, "type": "text", "payload": {"text": "hi"}}
    response = wire.message_created(
        conversation={"id": CONVERSATION, "channel": NAMES["channel"]}, user={"id": USER}, message=message
    )
    assert "message.id" in _sdk_error(response, 400, "InvalidPayload")["message"]


@pytest.mark.parametrize("field", ["type", "conversation.channel"])
def test_wire_message_of_a_wrong_json_type_is_invalid_payload(wire, field):
    body = {
        "type": "text",
        "payload": {"text": "hi"},
        "conversation": {"id": CONVERSATION, "channel": NAMES["channel"]},
        "user": {"id": USER},
        "message": {"id": "msg_1"},
    }
    if field == "type":
        body["type"] = {"nested": "object"}
    else:
        body["conversation"]["channel"] = ["list"]
    _sdk_error(wire.send("message_created", body), 400, "InvalidPayload")
    _sdk_error(wire.send("action_triggered", {"type": {"x": 1}, "input": {}}), 400, "InvalidPayload")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("createRemoteUser", {"type": "createRemoteUser", "payload": {"name": "x" * 256}}, "payload.name"),
        (
            "createRemoteConversation",
            {"type": "createRemoteConversation", "payload": {"title": "t" * 256}},
            "payload.title",
        ),
        (
            "botSendsMessage",
            {"type": "botSendsMessage", "remoteConversationId": "c" * 65, "remoteUserId": "BOT", "payload": {}},
            "remoteConversationId",
        ),
        (
            "closeRemoteTicket",
            {"type": "closeRemoteTicket", "payload": {"botpressConversationId": "c" * 65}},
            "payload.botpressConversationId",
        ),
    ],
)
def test_hitl_api_strings_longer_than_stored_are_a_400_naming_the_field(hitl_api, path, body, field):
    assert field in _fields(hitl_api.post(f"{hitl_api.base}/{path}", body, format="json"))


# --- JSON nested too deep ------------------------------------------------------------------------------
def test_json_depth_limit():
    assert json_loads_checked(json.dumps(_deep(MAX_JSON_DEPTH))) == _deep(MAX_JSON_DEPTH)
    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        with pytest.raises(ValueError, match="nested deeper than 64"):
            json_loads_checked("[" * depth + "]" * depth)


def test_deep_json_is_a_400_on_every_transport(rest, hitl_api, wire):
    deep = "[" * 100_000 + "]" * 100_000
    for url in (f"{rest.base}/actions/createUser", f"{hitl_api.base}/createRemoteUser"):
        client = rest if url.startswith("/api") else hitl_api
        assert "nested deeper" in _fields(client.post(url, deep, content_type="application/json"))["body"][0]
    hitl_session = {"userId": USER, "messageHistory": [], "hitlSession": {"a": _deep(MAX_JSON_DEPTH + 2)}}
    assert (
        "nested deeper" in _fields(rest.post(f"{rest.base}/actions/startHitl", hitl_session, format="json"))["body"][0]
    )
    body = _sdk_error(wire.send("action_triggered", raw=deep.encode()), 400, "InvalidPayload")
    assert "nested deeper" in body["message"]


def test_not_a_json_number_is_a_400(rest):
    body = '{"name": "A", "age": NaN}'
    response = rest.post(f"{rest.base}/actions/createUser", body, content_type="application/json")
    assert "body" in _fields(response)


# --- text PostgreSQL cannot store -------------------------------------------------------------------------
def test_nul_and_lone_surrogates_are_sanitised_on_every_transport(rest, hitl_api, wire):
    raw = json.dumps(
        {
            "conversationId": CONVERSATION,
            "messageId": "msg_nul",
            "type": "text",
            "payload": {"text": "copy\u0000paste \ud800!"},
        }
    )
    response = rest.post(f"{rest.base}/channels/hitl/messages", raw, content_type="application/json")
    assert response.status_code == 202, response.content
    assert Message.objects.get(botpress_message_id="msg_nul").payload["text"] == "copypaste \ufffd!"
    message = {"id": "msg_wire", "type": "text", "payload": {"text": "a\u0000b"}}
    response = wire.message_created(
        conversation={"id": CONVERSATION, "channel": NAMES["channel"]}, user={"id": USER}, message=message
    )
    assert response.status_code == 200, response.content
    assert Message.objects.get(botpress_message_id="msg_wire").payload["text"] == "ab"
    title = json.dumps({"type": "createRemoteConversation", "payload": {"title": "T\u0000\udfff"}})
    response = hitl_api.post(f"{hitl_api.base}/createRemoteConversation", title, content_type="application/json")
    assert response.status_code == 200, response.content
    assert HitlSession.objects.get(botpress_conversation_id=response.json()["id"]).title == "T\ufffd"


def test_invalid_utf8_is_a_400(rest, hitl_api, wire):
    raw = b'{"name": "\xff\xfe"}'
    assert "body" in _fields(rest.post(f"{rest.base}/actions/createUser", raw, content_type="application/json"))
    assert "body" in _fields(hitl_api.post(f"{hitl_api.base}/createRemoteUser", raw, content_type="application/json"))
    _sdk_error(wire.send("action_triggered", raw=raw), 400, "InvalidPayload")


# --- body size: 413 before parsing, on every endpoint -----------------------------------------------------
@pytest.fixture
def small_limit(settings):
    settings.HITL = {**settings.HITL, "MAX_REQUEST_BODY_BYTES": 1000}
    return 1000


def test_bodies_over_the_limit_are_a_413_everywhere(small_limit, rest, hitl_api, wire, client):
    big = json.dumps({"name": "x" * 2000})
    for api, url in ((rest, f"{rest.base}/actions/createUser"), (hitl_api, f"{hitl_api.base}/createRemoteUser")):
        response = api.post(url, big, content_type="application/json")
        assert response.status_code == 413, response.content
        assert response.json()["error"] == "payload_too_large" and "body" in response.json()["fields"]
    response = wire.send("action_triggered", raw=big.encode())
    assert response.status_code == 413 and response.json()["type"] == "PayloadTooLarge"
    for url in (f"/webhooks/zendesk/{rest.integration.pk}/", "/admin/login/"):
        assert client.post(url, big, content_type="application/json").status_code == 413
    # Refused on the declared length alone, before any of the body is read.
    response = rest.post(
        f"{rest.base}/actions/createUser", b"{}", content_type="application/json", CONTENT_LENGTH="5000"
    )
    assert response.status_code == 413
    # Under the limit, still served.
    assert rest.post(f"{rest.base}/actions/stopHitl", {"conversationId": "c"}, format="json").status_code == 404


def _chunked_request(body: bytes) -> WSGIRequest:
    """What gunicorn hands Django for ``Transfer-Encoding: chunked``: no length, the de-chunked stream."""
    return WSGIRequest(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/api/v1/integrations/x/actions/createUser",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "HTTP_TRANSFER_ENCODING": "chunked",
            "CONTENT_TYPE": "application/json",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
        }
    )


def test_chunked_bodies_are_bounded_and_then_readable(small_limit):
    seen = {}

    def view(request):
        seen["body"] = request.body
        return HttpResponse("ok")

    middleware = RequestBodyLimitMiddleware(view)
    assert middleware(_chunked_request(b"x" * 1001)).status_code == 413
    assert "body" not in seen
    assert middleware(_chunked_request(b'{"name": "A"}')).status_code == 200
    assert seen["body"] == b'{"name": "A"}'


def test_a_content_length_that_is_not_a_length_is_a_400(rest):
    response = rest.post(f"{rest.base}/actions/createUser", b"{}", content_type="application/json", CONTENT_LENGTH="-5")
    assert response.status_code == 400
