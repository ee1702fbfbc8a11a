"""Botpress Hub's "Human in the Loop API" contract, field for field against its two OpenAPI documents.

The gateway serves the external-service endpoints (`openapi/hitl-api-external-service.json`) and
calls the bot's webhook endpoints (`openapi/hitl-api-botpress-webhook.json`).
"""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from botpress.hitl_api import HitlApiWebhooks
from outbound.guard import allowances_parse
from sessions_app.api import hitl_api
from sessions_app.api.jsonschema import serializer_schema
from sessions_app.models import EndUser, HitlSession, Message, SessionStatus, StoppedBy
from sessions_app.services.integrations import (
    integration_api_key_rotate,
    integration_botpress_configure,
    integration_botpress_endpoints,
)
from standins.botpress_caller import RuntimeApi
from standins.hitl_api_bot import BOTPRESS_WEBHOOK, EXTERNAL_SERVICE, HitlApiBot, OpenApiContract, openapi_document
from tests.conftest import BOT_ID, BP_INTEGRATION_ID, BP_TOKEN, integration_for

EXTERNAL = openapi_document(EXTERNAL_SERVICE)
WEBHOOK = openapi_document(BOTPRESS_WEBHOOK)


# --- the serializers are the documents' schemas ---------------------------------------------------
def _shape(document: dict, schema: dict) -> dict:
    """What "field for field" compares: property names, required ones, types and enums, nested."""
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        return {
            "type": "object",
            "properties": {name: _shape(document, sub) for name, sub in schema["properties"].items()},
            "required": sorted(schema.get("required", [])),
        }
    if kind == "array":
        return {"type": "array", "items": _shape(document, schema["items"])}
    return {"type": kind} | ({"enum": schema["enum"]} if "enum" in schema else {})


@pytest.mark.parametrize(
    ("path", "request_serializer", "response_serializer"),
    [
        ("/createRemoteUser", hitl_api.CreateRemoteUserPayload, hitl_api.CreateRemoteUserResponse),
        (
            "/createRemoteConversation",
            hitl_api.CreateRemoteConversationPayload,
            hitl_api.CreateRemoteConversationResponse,
        ),
        ("/botSendsMessage", hitl_api.BotSendsMessagePayload, None),
        ("/closeRemoteTicket", hitl_api.CloseRemoteTicketPayload, None),
    ],
)
def test_our_serializers_are_the_external_service_documents_schemas(path, request_serializer, response_serializer):
    contract = OpenApiContract(EXTERNAL)
    assert _shape(EXTERNAL, serializer_schema(request_serializer)) == _shape(EXTERNAL, contract.request_schema(path))
    documented_response = contract.response_schema(path)
    if response_serializer is None:
        assert documented_response is None, "the document gives this answer no body"
    else:
        assert _shape(EXTERNAL, serializer_schema(response_serializer)) == _shape(EXTERNAL, documented_response)
    assert set(EXTERNAL["paths"]) == {"/ping", *(p for p in EXTERNAL["paths"] if p != "/ping")}


def test_the_webhook_calls_we_make_are_the_documents_bodies(httpserver):
    for path in ("/message-from-agent", "/agent-assigned", "/stop-hitl"):
        httpserver.expect_request(f"/wh_1{path}", method="POST").respond_with_json({})
    webhooks = HitlApiWebhooks(webhook_url=httpserver.url_for("/wh_1"), timeout=(2, 2))
    webhooks.message_from_agent(
        remote_conversation_id="c1", remote_user_id="42", message_type="text", payload={"text": "hi"}
    )
    webhooks.agent_assigned(remote_conversation_id="c1", remote_user_id="42")
    webhooks.stop_hitl(remote_conversation_id="c1")
    contract = OpenApiContract(WEBHOOK)
    sent = [(request.path.removeprefix("/wh_1"), json.loads(request.data)) for request, _ in httpserver.log]
    assert [path for path, _ in sent] == ["/message-from-agent", "/agent-assigned", "/stop-hitl"]
    for path, body in sent:
        assert contract.errors(contract.request_schema(path), body) == [], (path, body)
    assert "wh_1" not in repr(webhooks)


# --- the endpoints, through the test client --------------------------------------------------------
@pytest.fixture
def integration(db, settings):
    # A bot on loopback over http: allowed explicitly, as for local development.
    settings.HITL = {**settings.HITL, "BOTPRESS_ALLOW_INSECURE_URLS": allowances_parse("127.0.0.1")}
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    return integration_botpress_configure(
        integration=integration, transport="hitl_api", hitl_api_webhook_url="http://127.0.0.1:9/wh_1"
    )


@pytest.fixture
def api(integration):
    client = APIClient()
    client.base = f"/hitl-api/{integration.pk}/{integration.botpress_url_secret}"
    return client


def _answer(response, path: str):
    """A 200 whose body is what the external-service document says for ``path``."""
    assert response.status_code == 200, response.content
    contract = OpenApiContract(EXTERNAL)
    body = response.json()
    assert contract.errors(contract.response_schema(path), body) == []
    return body


def test_a_session_through_the_external_service_endpoints(api, integration):
    assert _answer(api.post(f"{api.base}/ping", {"type": "ping"}, format="json"), "/ping") == {}
    assert api.post(f"{api.base}//ping", {"type": "ping"}, format="json").status_code == 200

    user = {"type": "createRemoteUser", "payload": {"role": "end-user", "name": "Ada", "email": "Ada@example.com"}}
    user_id = _answer(api.post(f"{api.base}/createRemoteUser", user, format="json"), "/createRemoteUser")["id"]
    again = _answer(api.post(f"{api.base}/createRemoteUser", user, format="json"), "/createRemoteUser")["id"]
    assert again == user_id, "the same email is the same remote user"
    end_user = EndUser.objects.get(integration=integration, botpress_user_id=user_id)
    assert (end_user.name, end_user.email) == ("Ada", "Ada@example.com")

    conversation = {
        "type": "createRemoteConversation",
        "payload": {
            "title": "Refund",
            "description": "Customer asks for a refund",
            "messages": [{"text": "I want a refund", "author": user_id}, {"text": "One moment.", "timestamp": "t"}],
        },
    }
    conversation_id = _answer(
        api.post(f"{api.base}/createRemoteConversation", conversation, format="json"), "/createRemoteConversation"
    )["id"]
    session = HitlSession.objects.get(integration=integration, botpress_conversation_id=conversation_id)
    assert str(session.pk) == conversation_id and session.title == "Refund"
    assert session.end_user.name == "Botpress", "the contract names no user: the bot requests the ticket"
    assert [item["source"] for item in session.message_history] == [
        {"type": "user", "userId": user_id},
        {"type": "bot"},
    ]

    def send(remote_user_id, payload):
        body = {"type": "botSendsMessage", "remoteConversationId": conversation_id, "remoteUserId": remote_user_id}
        return api.post(f"{api.base}/botSendsMessage", body | {"payload": payload}, format="json")

    assert (
        _answer(send(user_id, {"text": "Hello?", "userId": "user_01BOTPRESSOWNID00000000000"}), "/botSendsMessage")
        == {}
    )
    assert _answer(send(user_id, {"imageUrl": "https://cdn.example.com/r.png", "title": "r"}), "/botSendsMessage") == {}
    assert _answer(send("BOT", {"items": [{"type": "text", "payload": {"text": "a"}}]}), "/botSendsMessage") == {}
    messages = list(Message.objects.filter(session=session).order_by("id"))
    assert [(m.type, m.author_end_user_id) for m in messages] == [
        ("text", end_user.pk),
        ("image", end_user.pk),
        ("bloc", None),
    ]
    assert "userId" not in messages[0].payload, "Botpress's own user id means nothing to the help desk"

    close = {"type": "closeRemoteTicket", "payload": {"botpressConversationId": conversation_id}}
    assert _answer(api.post(f"{api.base}/closeRemoteTicket", close, format="json"), "/closeRemoteTicket") == {}
    session.refresh_from_db()
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.BOTPRESS
    late = send(user_id, {"text": "still there?"})
    assert late.status_code == 409


def _fields(response) -> dict:
    assert response.status_code == 400, response.content
    return response.json()["fields"]


def test_bodies_are_checked_field_by_field(api, integration):
    post = lambda path, body: api.post(f"{api.base}{path}", body, format="json")  # noqa: E731
    assert set(_fields(post("/createRemoteUser", {"type": "ping", "payload": []}))) == {"type", "payload"}
    assert set(_fields(post("/createRemoteUser", {"type": "createRemoteUser", "payload": {}}))) == {"payload.name"}
    assert set(_fields(post("/createRemoteConversation", {"type": "createRemoteConversation"}))) == {"payload"}
    bad_messages = {"type": "createRemoteConversation", "payload": {"messages": [{"author": "x"}]}}
    assert set(_fields(post("/createRemoteConversation", bad_messages))) == {"payload.messages[0].text"}
    assert set(_fields(post("/botSendsMessage", {"type": "botSendsMessage", "payload": {"text": "a"}}))) == {
        "remoteConversationId",
        "remoteUserId",
    }
    unknown = {"type": "botSendsMessage", "remoteConversationId": "c", "remoteUserId": "u", "payload": {"card": 1}}
    assert set(_fields(post("/botSendsMessage", unknown))) == {"payload"}
    empty = {"type": "botSendsMessage", "remoteConversationId": "c", "remoteUserId": "u", "payload": {"text": ""}}
    assert set(_fields(post("/botSendsMessage", empty))) == {"payload.text"}
    assert set(_fields(post("/closeRemoteTicket", {"type": "closeRemoteTicket", "payload": {}}))) == {
        "payload.botpressConversationId"
    }
    missing = post("/botSendsMessage", {**unknown, "payload": {"text": "a"}})
    assert missing.status_code == 404 and "conversationId" in missing.json()["fields"]


def test_wrong_secret_and_unknown_integration_look_the_same(api, integration):
    bodies = {
        APIClient().post(url, {"type": "ping"}, format="json").content
        for url in (
            f"/hitl-api/{integration.pk}/{'x' * 43}/ping",
            f"/hitl-api/7d0f5a8e-0000-4000-8000-000000000000/{integration.botpress_url_secret}/ping",
            f"/hitl-api/nope/{integration.botpress_url_secret}/ping",
        )
    }
    assert len(bodies) == 1 and json.loads(bodies.pop())["error"] == "unauthorized"
    other = APIClient().post(f"{api.base}/nothingHere", {}, format="json")
    assert other.status_code == 404
    integration_botpress_configure(integration=integration, transport="runtime_api")
    refused = api.post(f"{api.base}/ping", {"type": "ping"}, format="json")
    assert refused.status_code == 403 and "hitl_api" in refused.json()["message"]


def test_the_connection_endpoint_gives_the_base_url(integration, settings):
    settings.PUBLIC_BASE_URL = "https://hitl.example.com"
    client = APIClient()
    assert client.get(f"/api/v1/integrations/{integration.pk}/botpress").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {integration_api_key_rotate(integration=integration)}")
    body = client.get(f"/api/v1/integrations/{integration.pk}/botpress").json()
    assert body["transport"] == "hitl_api" and body["hitlApiWebhookUrlSet"] is True
    assert (
        body["hitlApiBaseUrl"]
        == f"https://hitl.example.com/hitl-api/{integration.pk}/{integration.botpress_url_secret}"
    )
    assert "wh_1" not in json.dumps(body), "the bot's webhook URL is write-only"
    refused = client.patch(f"/api/v1/integrations/{integration.pk}/botpress", {"hitlApiWebhookUrl": ""}, format="json")
    assert refused.status_code == 400 and "hitlApiWebhookUrl" in refused.json()["fields"]
    rotated = client.post(f"/api/v1/integrations/{integration.pk}/botpress/url-secret").json()
    assert rotated["hitlApiBaseUrl"] != body["hitlApiBaseUrl"]
    old = APIClient().post(f"{body['hitlApiBaseUrl'].removeprefix('https://hitl.example.com')}/ping")
    assert old.status_code == 401


# --- one whole session with the Hub integration, agent included --------------------------------------
@pytest.fixture
def hitl_bot(gateway, settings):
    """A bot with plus/hitl-api installed, configured with the gateway's base URL, and vice versa."""
    settings.HITL = {**settings.HITL, "BOTPRESS_ALLOW_INSECURE_URLS": allowances_parse("127.0.0.1")}
    runtime = RuntimeApi(gateway.botpress.base_url, token=BP_TOKEN, bot_id=BOT_ID, integration_id=BP_INTEGRATION_ID)
    bot = HitlApiBot(runtime=runtime).start()
    integration_botpress_configure(
        integration=gateway.integration, transport="hitl_api", hitl_api_webhook_url=bot.webhook_url
    )
    bot.endpoint_base_url = integration_botpress_endpoints(integration=gateway.integration)["hitl_api_base_url"]
    yield bot
    bot.stop()


@pytest.mark.e2e
def test_whole_session_with_the_hitl_api_integration(gateway, hitl_bot):
    zendesk, botpress, runtime = gateway.zendesk, gateway.botpress, hitl_bot.runtime
    assert hitl_bot.register().status_code == 200

    user_id = hitl_bot.create_user(name="Ada Lovelace", email="ada@example.com")
    remote_user_id = runtime.user_get(user_id)["tags"]["externalId"]
    history = [{"source": {"type": "user", "userId": user_id}, "type": "text", "payload": {"text": "refund?"}}]
    conversation_id = hitl_bot.start_hitl(
        user_id=user_id,
        title="Refund",
        description="Customer asks for a refund",
        hitlSession={"priority": "high"},
        messageHistory=history,
    )
    remote_conversation_id = runtime.conversation_get(conversation_id)["tags"]["externalId"]
    started = hitl_bot.calls("/createRemoteConversation")[0]["body"]
    assert started["payload"] == {"title": "Refund", "description": "Customer asks for a refund"}
    ticket = zendesk.wait_for(
        lambda: next((t for t in zendesk.tickets() if t.get("external_id") == remote_conversation_id), None),
        timeout=20,
    )
    bot_user = next(u for u in zendesk.users() if u["id"] == ticket["requester_id"])
    assert bot_user["name"] == "Botpress" and ticket["subject"] == "Refund"

    for payload in (
        {"text": "Hello?", "userId": user_id},
        {"imageUrl": "https://cdn.example.com/r.png", "title": "receipt", "userId": user_id},
        {"text": "( The user is waiting. )"},
    ):
        assert hitl_bot.send_message(conversation_id, payload).status_code == 200
    comments = zendesk.wait_for(lambda: (c := zendesk.comments(ticket["id"])) and len(c) == 4 and c, timeout=30)
    requester = next(u for u in zendesk.users() if u.get("external_id") == remote_user_id)
    assert requester["name"] == "Ada Lovelace"
    assert [c["author_id"] for c in comments[1:]] == [requester["id"], requester["id"], bot_user["id"]]

    agent_id = zendesk.add_agent("Grace Hopper", "grace@acme.test")
    zendesk.assign(ticket["id"], agent_id)
    assigned = botpress.wait_for(lambda: botpress.events(type="hitlAssigned"), timeout=20)
    agent_user = runtime.user_get(assigned[0]["payload"]["userId"])
    assert assigned[0]["payload"]["conversationId"] == conversation_id
    assert agent_user["tags"]["externalId"] == str(agent_id)
    zendesk.agent_reply(ticket["id"], agent_id, "Hi Ada, I am on it.")
    zendesk.agent_reply(ticket["id"], agent_id, "Refund done.", solve=True)
    stopped = botpress.wait_for(lambda: botpress.events(type="hitlStopped"), timeout=20)
    assert stopped[0]["payload"] == {"conversationId": conversation_id}
    replies = [m["payload"]["text"] for m in botpress.messages(conversation_id) if m["userId"] == agent_user["id"]]
    assert replies == ["Hi Ada, I am on it.", "Refund done."]

    to_bot = hitl_bot.calls(direction="to_bot")
    assert [c["endpoint"] for c in to_bot] == [
        "/agent-assigned",
        "/message-from-agent",
        "/message-from-agent",
        "/stop-hitl",
    ]
    assert to_bot[0]["body"] == {"remoteConversationId": remote_conversation_id, "remoteUserId": str(agent_id)}
    assert to_bot[1]["body"] == {
        "remoteConversationId": remote_conversation_id,
        "remoteUserId": str(agent_id),
        "messageType": "text",
        "payload": {"text": "Hi Ada, I am on it."},
    }
    assert to_bot[3]["body"] == {"remoteConversationId": remote_conversation_id}
    assert hitl_bot.violations() == [], "every body, both ways, is exactly what the documents say"
    assert all(c["status"] == 200 for c in hitl_bot.calls())

    # stopHitl from the bot: closeRemoteTicket names Botpress's conversation id, which the gateway resolves.
    second = hitl_bot.start_hitl(user_id=user_id, title="Another one")
    remote_second = runtime.conversation_get(second)["tags"]["externalId"]
    second_ticket = zendesk.wait_for(
        lambda: next((t for t in zendesk.tickets() if t.get("external_id") == remote_second), None), timeout=20
    )
    assert hitl_bot.stop_hitl(second).status_code == 200
    zendesk.wait_for(lambda: zendesk.ticket(second_ticket["id"])["status"] == "closed", timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=remote_second)
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.BOTPRESS
    unknown = hitl_bot.stop_hitl("conv_01UNKNOWN000000000000000000")
    assert unknown.status_code == 404 and "payload.botpressConversationId" in unknown.json()["fields"]
    assert [v["endpoint"] for v in hitl_bot.violations()] == []
