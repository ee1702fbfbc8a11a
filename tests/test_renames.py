"""Renames and the entity: the integration's own names for the HITL interface, and its definition."""

from __future__ import annotations

import jsonschema
import pytest
from rest_framework.test import APIClient

from botpress.client import BotpressClient
from botpress.names import HitlNames, names_errors
from botpress.sink import AgentRef, RuntimeApiSink
from sessions_app.services.errors import InvalidInput
from sessions_app.services.integrations import integration_botpress_configure
from tests.conftest import integration_for

NAMES = {
    "actions": {"startHitl": "createTicket", "stopHitl": "closeTicket"},
    "events": {"hitlAssigned": "agentAssigned", "hitlStopped": "ticketClosed"},
    "channel": "supportTicket",
}


def test_names_default_to_the_interfaces_and_map_both_ways():
    default = HitlNames.from_config({})
    assert (default.action("startHitl"), default.event("hitlStopped"), default.channel) == (
        "startHitl",
        "hitlStopped",
        "hitl",
    )
    names = HitlNames.from_config(NAMES)
    assert names.action("startHitl") == "createTicket" and names.action("createUser") == "createUser"
    assert names.interface_action("createTicket") == "startHitl"
    assert names.interface_action("startHitl") is None, "Botpress only ever sends the integration's names"
    assert names.event("hitlAssigned") == "agentAssigned" and names.channel == "supportTicket"


@pytest.mark.parametrize(
    ("config", "errors"),
    [
        (NAMES, set()),
        ([], {""}),
        ({"entities": {}}, {"entities"}),
        ({"actions": {"openTicket": "x"}}, {"actions.openTicket"}),
        ({"actions": {"startHitl": "create ticket"}}, {"actions.startHitl"}),
        ({"actions": {"startHitl": "stopHitl"}}, {"actions.stopHitl"}),
        ({"actions": {"startHitl": "a", "stopHitl": "a"}}, {"actions.stopHitl"}),
        ({"events": {"hitlAssigned": 7}}, {"events.hitlAssigned"}),
        ({"events": []}, {"events"}),
        ({"channel": "9lives"}, {"channel"}),
    ],
)
def test_names_errors_name_the_field(config, errors):
    assert set(names_errors(config)) == errors


@pytest.fixture
def integration(db):
    return integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")


@pytest.fixture
def client(integration):
    obj, api_key = integration
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    api.base = f"/api/v1/integrations/{obj.pk}"
    return api


def test_renames_are_configured_with_field_level_errors(client, integration):
    bad = client.patch(f"{client.base}/botpress", {"names": {"actions": {"startHitl": "a b"}}}, format="json")
    assert bad.status_code == 400 and set(bad.json()["fields"]) == {"names.actions.startHitl"}
    response = client.patch(f"{client.base}/botpress", {"names": NAMES}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["names"] == {
        "actions": {"createUser": "createUser", "startHitl": "createTicket", "stopHitl": "closeTicket"},
        "events": {"hitlAssigned": "agentAssigned", "hitlStopped": "ticketClosed"},
        "channel": "supportTicket",
    }
    with pytest.raises(InvalidInput) as refused:
        integration_botpress_configure(integration=integration[0], names={"channel": ""})
    assert refused.value.field == "names.channel"


def test_the_definition_under_the_interfaces_names(client):
    definition = client.get(f"{client.base}/definition").json()
    assert set(definition["actions"]) == {"createUser", "startHitl", "stopHitl"}
    assert definition["actions"]["startHitl"]["title"] == "Start HITL"
    assert set(definition["events"]) == {"hitlAssigned", "hitlStopped"}
    assert set(definition["channels"]) == {"hitl"}
    assert definition["interfaces"]["hitl"]["version"] == "2.1.0"


def test_the_definition_under_renamed_names(client, integration):
    integration_botpress_configure(integration=integration[0], names=NAMES)
    definition = client.get(f"{client.base}/definition").json()
    actions, events, channels = definition["actions"], definition["events"], definition["channels"]
    assert set(actions) == {"createUser", "createTicket", "closeTicket"}
    assert (actions["createTicket"]["title"], actions["closeTicket"]["title"]) == ("Create ticket", "Close ticket")
    assert set(events) == {"agentAssigned", "ticketClosed"} and events["agentAssigned"]["title"] == "Agent assigned"
    assert events["agentAssigned"]["schema"]["required"] == ["conversationId", "userId"]
    assert set(channels) == {"supportTicket"}
    assert set(channels["supportTicket"]["messages"]) == {"text", "image", "audio", "video", "file", "bloc"}
    assert channels["supportTicket"]["message"]["tags"] == {"externalMessageId": {"title": "Help-desk message id"}}
    assert definition["interfaces"]["hitl"] == {
        "name": "hitl",
        "version": "2.1.0",
        "entities": {"hitlSession": {"name": "hitlSession"}},
        "actions": {a: {"name": n} for a, n in [("createUser", "createUser"), *NAMES["actions"].items()]},
        "events": {e: {"name": n} for e, n in NAMES["events"].items()},
        "channels": {"hitl": {"name": "supportTicket"}},
    }

    # The Zendesk hitlSession entity: priority, requester, ticket form, chatbot name and photo.
    entity = definition["entities"]["hitlSession"]["schema"]
    assert entity["properties"] == {
        "priority": {"type": "string", "enum": ["low", "normal", "high", "urgent"]},
        "chatbotName": {"type": "string", "minLength": 1, "maxLength": 255},
        "chatbotPhotoUrl": {"type": "string", "format": "uri", "minLength": 1, "maxLength": 255},
        "requesterName": {"type": "string", "minLength": 1, "maxLength": 255},
        "requesterEmail": {"type": "string", "format": "email", "minLength": 1},
        "ticketFormId": {"type": "string", "pattern": r"^\d+$", "minLength": 1, "maxLength": 20},
    }
    assert "required" not in entity

    # Every schema is valid JSON Schema and says what the serializers accept.
    start = actions["createTicket"]["input"]["schema"]
    assert start["properties"]["hitlSession"] == entity and start["required"] == ["userId", "messageHistory"]
    for schema in [
        start,
        actions["createTicket"]["output"]["schema"],
        entity,
        *(m["schema"] for m in channels["supportTicket"]["messages"].values()),
    ]:
        jsonschema.Draft7Validator.check_schema(schema)
    good = {
        "userId": "user_1",
        "hitlSession": {"priority": "high"},
        "messageHistory": [
            {"source": {"type": "user", "userId": "user_1"}, "type": "text", "payload": {"text": "hi"}},
            {"source": {"type": "bot"}, "type": "image", "payload": {"imageUrl": "https://x.test/i.png"}},
        ],
    }
    jsonschema.validate(good, start)
    for bad in (
        good | {"hitlSession": {"priority": "asap"}},
        good | {"messageHistory": [{"source": {"type": "bot"}, "type": "sticker", "payload": {}}]},
        {"userId": "user_1"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, start)
    jsonschema.validate(
        {"text": "hi", "userId": "u", "additionalData": "x"}, channels["supportTicket"]["messages"]["text"]["schema"]
    )


def test_rest_accepts_the_renamed_names(client, integration):
    integration_botpress_configure(integration=integration[0], names=NAMES)
    renamed = client.post(f"{client.base}/actions/createTicket", {"userId": ""}, format="json")
    original = client.post(f"{client.base}/actions/startHitl", {"userId": ""}, format="json")
    assert renamed.status_code == original.status_code == 400
    assert renamed.json() == original.json(), "the same serializer answers both"
    unknown = client.post(f"{client.base}/actions/deleteEverything", {}, format="json")
    assert unknown.status_code == 404 and unknown.json()["fields"] == {
        "action": ["No action deleteEverything in this integration."]
    }
    message = {"conversationId": "conv_nope", "type": "text", "payload": {"text": "a"}}
    assert client.post(f"{client.base}/channels/supportTicket/messages", message, format="json").status_code == 404
    assert (
        "conversationId"
        in client.post(f"{client.base}/channels/supportTicket/messages", message, format="json").json()["fields"]
    )
    other = client.post(f"{client.base}/channels/sms/messages", message, format="json")
    assert other.status_code == 404 and "channel" in other.json()["fields"]
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "/api/v1/integrations/{integration_id}/definition" in schema["paths"]


def test_events_are_emitted_under_the_configured_names(httpserver):
    httpserver.expect_request("/v1/chat/events", method="POST").respond_with_json({"event": {"id": "evt_1"}})
    client = BotpressClient(base_url=httpserver.url_for("/"), token="t", bot_id="b", integration_id="i", max_retries=0)
    sink = RuntimeApiSink(client=client, names=HitlNames.from_config(NAMES))
    agent = AgentRef(external_id="42", botpress_user_id="user_agent")
    assert sink.event_emit(event="hitlAssigned", conversation_id="conv_1", agent=agent) == "evt_1"
    sink.event_emit(event="hitlStopped", conversation_id="conv_1")
    sent = [request.get_json() for request, _ in httpserver.log]
    assert sent == [
        {"type": "agentAssigned", "payload": {"conversationId": "conv_1", "userId": "user_agent"}},
        {"type": "ticketClosed", "payload": {"conversationId": "conv_1"}},
    ]
