"""The integration wire protocol: Botpress calling the gateway as its HITL integration.

Requests are sent by `standins.botpress_caller.BotpressCaller`, exactly as Botpress sends them;
answers are checked against the SDK's (shared/reference/botpress-api.md A.2-A.4).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

import pytest

from botpress.wire import REQUIRED_HEADERS, UNEXPECTED
from sessions_app.models import (
    HitlSession,
    Integration,
    Message,
    SessionStatus,
    WebhookEvent,
    WebhookRejection,
    WebhookStatus,
)
from sessions_app.services.integrations import integration_botpress_configure, integration_botpress_endpoints
from standins.botpress_caller import BotpressCaller, BotpressWebhookRelay, RuntimeApi
from tests.conftest import BOT_ID, BP_INTEGRATION_ID, BP_TOKEN, integration_for

NAMES = {
    "actions": {"startHitl": "createTicket", "stopHitl": "closeTicket"},
    "events": {"hitlAssigned": "agentAssigned", "hitlStopped": "ticketClosed"},
    "channel": "supportTicket",
}
ERROR_ID = re.compile(r"^err_\d{14}x[0-9A-F]{8}$")
BOT_USER_ID = "user_01HITLBOTUSER000000000000000"


def _sdk_error(response, status: int, type_: str, message: str | None = None) -> dict:
    """The SDK's error answer: `status`, and a body of exactly {id, code, type, message[, metadata]}."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) - {"metadata"} == {"id", "code", "type", "message"}, body
    assert ERROR_ID.match(body["id"]) and body["type"] == type_
    assert body["code"] == {"InvalidPayload": 400, "Runtime": 400, "Unauthorized": 401, "Forbidden": 403}[type_]
    if message is not None:
        assert body["message"] == message
    return body


# --- protocol and error shapes, through Django's test client ----------------------------------------
class _DjangoHttp:
    """`requests.Session.post` on Django's test client, so BotpressCaller needs no live server."""

    def __init__(self, client):
        self.client = client

    def post(self, url, data=None, headers=None, timeout=None):
        headers = dict(headers or {})
        content_type = headers.pop("content-type", "application/octet-stream")
        return self.client.generic("POST", url, data or b"", content_type=content_type, headers=headers)


@pytest.fixture
def integration(db):
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    return integration_botpress_configure(integration=integration, names=NAMES)


def _caller(client, integration, **overrides) -> BotpressCaller:
    path = f"/botpress/{integration.pk}/{integration.botpress_url_secret}/"
    options = {"bot_id": BOT_ID, "bot_user_id": BOT_USER_ID, "integration_id": BP_INTEGRATION_ID} | overrides
    caller = BotpressCaller(path, integration_alias="zendesk-hitl", **options)
    caller.http = _DjangoHttp(client)
    return caller


@pytest.fixture
def caller(client, integration):
    return _caller(client, integration)


def test_ping_and_the_operations_without_a_handler(caller):
    assert caller.ping().status_code == 200 and caller.ping().json() == {}
    for operation in ("message_updated", "conversation_updated", "create_user", "create_conversation"):
        response = caller.send(operation, {"anything": True})
        assert (response.status_code, response.json()) == (200, {}), operation
    health = caller.http.client.get(f"{caller.url}health")
    assert health.status_code == 200 and health.content == b"ok"


def test_wrong_secret_and_unknown_integration_look_the_same(client, integration, caller):
    urls = [
        f"/botpress/{integration.pk}/{'x' * 43}/",
        f"/botpress/{integration.pk}/{integration.botpress_url_secret[:-1]}/",
        f"/botpress/7d0f5a8e-0000-4000-8000-000000000000/{integration.botpress_url_secret}/",
        f"/botpress/not-a-uuid/{integration.botpress_url_secret}/",
    ]
    bodies = [_sdk_error(caller.send("ping", url=url), 401, "Unauthorized") for url in urls]
    assert len({(b["code"], b["type"], b["message"]) for b in bodies}) == 1
    assert integration.botpress_url_secret not in json.dumps(bodies)
    Integration.objects.filter(pk=integration.pk).update(is_active=False)
    _sdk_error(caller.ping(), 401, "Unauthorized", bodies[0]["message"])


@pytest.mark.parametrize("header", ["x-bot-id", "x-integration-id"])
def test_another_bot_or_integration_is_forbidden(client, integration, header):
    caller = _caller(client, integration)
    response = caller.send("ping", headers={header: "bot_01SOMEONEELSE0000000000000"})
    _sdk_error(response, 403, "Forbidden", "x-bot-id and x-integration-id are not this integration's.")


@pytest.mark.parametrize(("header", "message"), REQUIRED_HEADERS)
def test_a_missing_header_is_answered_as_the_sdk_does(caller, header, message):
    response = caller.send("ping", omit=(header,))
    assert response.status_code == 500 and response.json() == {"error": message}


def test_an_unreadable_configuration_is_a_500(caller):
    response = caller.send("ping", headers={"x-bp-configuration": base64.b64encode(b"{nope").decode()})
    assert response.status_code == 500 and response.json()["error"].startswith("Invalid configuration header")


def test_unknown_operation_missing_and_invalid_bodies(caller):
    _sdk_error(caller.send("frobnicate", {}), 400, "InvalidPayload", "Unknown operation frobnicate")
    _sdk_error(caller.send("action_triggered"), 400, "InvalidPayload", "Missing body")
    _sdk_error(caller.send("register"), 400, "InvalidPayload", "Missing body")
    body = _sdk_error(caller.send("action_triggered", raw=b"{not json"), 400, "InvalidPayload")
    assert body["message"].startswith("Invalid JSON body")


def test_actions_under_the_integrations_names(caller):
    _sdk_error(caller.send("action_triggered", {"input": {}}), 400, "InvalidPayload", "Missing action type")
    # Renamed: Botpress sends createTicket; the interface's own name is not an action any more.
    _sdk_error(caller.action("startHitl", {}), 400, "InvalidPayload", "Action startHitl not found")
    _sdk_error(caller.action("deleteEverything", {}), 400, "InvalidPayload", "Action deleteEverything not found")
    _sdk_error(caller.action("createTicket", "nope"), 400, "InvalidPayload", "input: must be an object")


def test_invalid_input_names_each_field(caller):
    body = {
        "userId": "",
        "hitlSession": {"priority": "asap", "ticketFormId": "12a", "requesterEmail": "x@example.com"},
    }
    error = _sdk_error(caller.action("createTicket", body), 400, "InvalidPayload")
    fields = error["metadata"]["fields"]
    assert set(fields) == {
        "userId",
        "messageHistory",
        "hitlSession.priority",
        "hitlSession.ticketFormId",
    }
    for field in fields:
        assert f"{field}: " in error["message"]
    error = _sdk_error(caller.action("createUser", {"email": "nope"}), 400, "InvalidPayload")
    assert set(error["metadata"]["fields"]) == {"name", "email"}


def test_service_refusals_are_runtime_errors(caller):
    error = _sdk_error(caller.action("createTicket", {"userId": "user_x", "messageHistory": []}), 400, "InvalidPayload")
    assert error["message"] == "userId: Unknown user: call createUser first."
    error = _sdk_error(caller.action("closeTicket", {"conversationId": "conv_nope"}), 400, "Runtime")
    assert error["message"] == "conversationId: No HITL session has this conversation id."


def _message_body(channel="supportTicket", type_="text", payload=None, conversation_id="conv_nope"):
    payload = {"text": "hi"} if payload is None else payload
    return {
        "conversation": {"id": conversation_id, "channel": channel, "tags": {}},
        "user": {"id": BOT_USER_ID, "tags": {}},
        "message": {"id": "msg_01X", "type": type_, "payload": payload},
    }


def test_message_created_channel_type_and_payload(caller):
    def send(**kwargs):
        body = _message_body(**kwargs)
        return caller.message_created(**body)

    _sdk_error(send(channel="hitl"), 400, "InvalidPayload", "Channel hitl not found")
    _sdk_error(
        send(type_="location"), 400, "InvalidPayload", "Message of type location not found in channel supportTicket"
    )
    error = _sdk_error(send(payload={"text": ""}), 400, "InvalidPayload")
    assert set(error["metadata"]["fields"]) == {"payload.text"}
    error = _sdk_error(send(type_="image", payload={"title": "no url"}), 400, "InvalidPayload")
    assert set(error["metadata"]["fields"]) == {"payload.imageUrl"}
    _sdk_error(send(), 400, "Runtime", "conversationId: No HITL session has this conversation id.")


def test_webhook_received_is_our_webhook_handler(caller, integration):
    relayed = {"method": "POST", "path": "/", "query": "", "headers": {"content-type": "application/json"}}
    response = caller.webhook_received(**relayed, body=json.dumps({"type": "ticketAssigned", "ticketId": "1"}))
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert not WebhookEvent.objects.filter(integration=integration).exists()
    assert WebhookRejection.objects.get(integration=integration).reason.startswith("no signing secret")
    assert caller.webhook_received(**(relayed | {"method": "GET"}), body=None).status_code == 405


def test_the_hitl_api_transport_does_not_answer_the_wire_protocol(caller, integration):
    integration_botpress_configure(
        integration=integration, transport="hitl_api", hitl_api_webhook_url="https://x.test/w"
    )
    _sdk_error(caller.ping(), 403, "Forbidden")


def test_the_secret_is_never_logged(caller, integration, caplog):
    caller.action("createTicket", {})
    caller.send("ping", omit=("x-bot-id",))
    assert integration.botpress_url_secret not in caplog.text


def test_an_unexpected_error_is_a_500_runtime_error(caller, monkeypatch):
    from sessions_app.api import wire

    def crash(*args):
        raise ZeroDivisionError

    monkeypatch.setitem(wire.OPERATIONS, "ping", crash)
    body = _sdk_error(caller.ping(), 500, "Runtime", UNEXPECTED)
    assert body["code"] == 400  # as the SDK: a Runtime body, sent with status 500


# --- one whole session over the wire protocol, renamed names included ---------------------------------
@dataclass
class Wired:
    gateway: object
    caller: BotpressCaller
    relay: BotpressWebhookRelay
    runtime: RuntimeApi
    bot_user: dict


@pytest.fixture
def relay():
    server = BotpressWebhookRelay().start()
    yield server
    server.stop()


@pytest.fixture
def wired(relay, gateway):
    """The gateway as a Botpress integration with renamed names, Botpress's webhook relay in front.

    The relay comes first, so it outlives the gateway's teardown, which waits for Zendesk's webhooks.
    """
    botpress = gateway.botpress
    events = {"agentAssigned": ("conversationId", "userId"), "ticketClosed": ("conversationId",)}
    botpress.add_bot(bot_id=BOT_ID, token=BP_TOKEN, integration_id=BP_INTEGRATION_ID, event_types=events)
    integration_botpress_configure(integration=gateway.integration, names=NAMES)
    runtime = RuntimeApi(botpress.base_url, token=BP_TOKEN, bot_id=BOT_ID, integration_id=BP_INTEGRATION_ID)
    bot_user = runtime.user_create(tags={}, name="Botpress")
    caller = BotpressCaller(
        integration_botpress_endpoints(integration=gateway.integration)["wire_url"],
        bot_id=BOT_ID,
        bot_user_id=bot_user["id"],
        integration_id=BP_INTEGRATION_ID,
        integration_alias="zendesk-hitl",
        configuration={"ignoreNonHitlTickets": True},
    )
    return Wired(gateway=gateway, caller=caller, relay=relay, runtime=runtime, bot_user=bot_user)


def _ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.e2e
def test_whole_session_over_the_wire_protocol(wired):
    caller, runtime, zendesk, botpress = wired.caller, wired.runtime, wired.gateway.zendesk, wired.gateway.botpress

    # register: the help-desk webhook now points at Botpress's webhook URL, as Botpress's integrations do
    webhook_url = wired.relay.webhook_url(caller)
    assert _ok(caller.register(webhook_url)) == {}
    assert [hook["endpoint"] for hook in zendesk.webhooks()] == [webhook_url]
    assert len(zendesk.triggers()) == 3
    assert Integration.objects.get(pk=wired.gateway.integration.pk).botpress_bot_user_id == wired.bot_user["id"]
    assert _ok(caller.ping()) == {}

    created = _ok(caller.action("createUser", {"name": "Ada Lovelace", "email": "ada@example.com"}))
    assert created["meta"] == {"cost": 0}
    user_id = created["output"]["userId"]
    history = [
        {"source": {"type": "user", "userId": user_id}, "type": "text", "payload": {"text": "I want a refund"}},
        {"source": {"type": "bot"}, "type": "text", "payload": {"text": "Let me find someone."}},
    ]
    started = _ok(
        caller.action(
            "createTicket",
            {"userId": user_id, "title": "Refund", "messageHistory": history, "hitlSession": {"priority": "high"}},
        )
    )
    conversation_id = started["output"]["conversationId"]
    assert runtime.conversation_get(conversation_id)["channel"] == "supportTicket"
    ticket = zendesk.wait_for(
        lambda: next((t for t in zendesk.tickets() if t.get("external_id") == conversation_id), None), timeout=20
    )
    assert ticket["priority"] == "high" and "I want a refund" in zendesk.comments(ticket["id"])[0]["body"]

    # The plugin's copies of the user's messages: authored by the bot user, the real author in payload.userId.
    sent = []
    for kind, payload in [
        ("text", {"text": "Hello?", "userId": user_id}),
        ("image", {"imageUrl": "https://cdn.example.com/r.png", "title": "receipt", "userId": user_id}),
        ("bloc", {"items": [{"type": "text", "payload": {"text": "bloc text"}}], "userId": user_id}),
        ("text", {"text": "An agent will be with you shortly."}),
    ]:
        message = runtime.message_create(
            conversation_id=conversation_id, user_id=wired.bot_user["id"], type=kind, payload=payload
        )
        conversation = runtime.conversation_get(conversation_id)
        assert _ok(caller.message_created(conversation=conversation, user=wired.bot_user, message=message)) == {}
        sent.append(message)
    again = caller.message_created(conversation=conversation, user=wired.bot_user, message=sent[0])
    assert _ok(again) == {}, "the same Botpress message twice is one comment"

    comments = zendesk.wait_for(lambda: (c := zendesk.comments(ticket["id"])) and len(c) == 5 and c, timeout=30)
    assert [c["body"] for c in comments[1:]][::3] == ["Hello?", "An agent will be with you shortly."]
    requester = next(u for u in zendesk.users() if u.get("external_id") == user_id)
    assert [c["author_id"] == requester["id"] for c in comments[1:]] == [True, True, True, False]

    # Each Botpress message is acknowledged with the id of its comment.
    def acknowledged():
        tags = [runtime.message_get(m["id"])["tags"].get("externalMessageId") for m in sent]
        return all(tags) and tags

    assert botpress.wait_for(acknowledged, timeout=20) == [str(c["id"]) for c in comments[1:]]

    # The agent works the ticket; Zendesk's webhooks reach the gateway through Botpress's relay.
    agent_id = zendesk.add_agent("Grace Hopper", "grace@acme.test")
    zendesk.assign(ticket["id"], agent_id)
    assigned = botpress.wait_for(lambda: botpress.events(type="agentAssigned"), timeout=20)
    agent_user = runtime.user_get(assigned[0]["payload"]["userId"])
    assert assigned[0]["payload"]["conversationId"] == conversation_id and agent_user["name"] == "Grace Hopper"
    zendesk.agent_reply(ticket["id"], agent_id, "Hi Ada, I am on it.")
    zendesk.agent_reply(ticket["id"], agent_id, "Refund done.", solve=True)
    stopped = botpress.wait_for(lambda: botpress.events(type="ticketClosed"), timeout=20)
    assert stopped[0]["payload"] == {"conversationId": conversation_id}
    assert not botpress.events(type="hitlAssigned") and not botpress.events(type="hitlStopped")
    replies = [m["payload"]["text"] for m in botpress.messages(conversation_id) if m["userId"] == agent_user["id"]]
    assert replies == ["Hi Ada, I am on it.", "Refund done."]

    deliveries = zendesk.webhook_deliveries()
    assert deliveries and {(d["endpoint"], d["status"]) for d in deliveries} == {(webhook_url, 200)}
    assert WebhookEvent.objects.filter(status=WebhookStatus.PROCESSED).count() >= 3
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert session.status == SessionStatus.STOPPED
    assert Message.objects.filter(session=session, direction="to_agent").count() == 4

    # unregister removes what register installed
    assert _ok(caller.unregister(webhook_url)) == {}
    assert zendesk.webhooks() == [] and zendesk.triggers() == []


@pytest.mark.e2e
def test_close_ticket_over_the_wire_protocol(wired):
    caller, zendesk = wired.caller, wired.gateway.zendesk
    user_id = _ok(caller.action("createUser", {"name": "Alan"}))["output"]["userId"]
    conversation_id = _ok(caller.action("createTicket", {"userId": user_id, "messageHistory": []}))["output"][
        "conversationId"
    ]
    ticket = zendesk.wait_for(
        lambda: next((t for t in zendesk.tickets() if t.get("external_id") == conversation_id), None), timeout=20
    )
    assert _ok(caller.action("closeTicket", {"conversationId": conversation_id})) == {
        "output": {},
        "meta": {"cost": 0},
    }
    zendesk.wait_for(lambda: zendesk.ticket(ticket["id"])["status"] == "closed", timeout=20)
    message = wired.runtime.message_create(
        conversation_id=conversation_id, user_id=wired.bot_user["id"], type="text", payload={"text": "late"}
    )
    conversation = wired.runtime.conversation_get(conversation_id)
    late = caller.message_created(conversation=conversation, user=wired.bot_user, message=message)
    _sdk_error(late, 400, "Runtime", "conversationId: The HITL session is stopped.")
