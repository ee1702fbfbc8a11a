"""The Botpress stand-in answers like the runtime API (reference botpress-api.md B and D)."""

import re

import pytest
import requests

from standins import BotpressStandin

BOT_ID, TOKEN, INTEGRATION_ID = "bot_test", "bp-token-1", "intg_test"
ERROR_ID = re.compile(r"^err_\d{14}x[0-9A-F]{8}$")


class Api:
    """A minimal runtime-API client: base URL + the integration's headers."""

    def __init__(self, base_url, token=TOKEN, bot_id=BOT_ID, integration_id=INTEGRATION_ID):
        self.base_url = base_url + "/v1/chat"
        self.session = requests.Session()
        headers = {"Authorization": f"Bearer {token}", "x-bot-id": bot_id, "x-integration-id": integration_id}
        self.session.headers.update({k: v for k, v in headers.items() if v is not None})

    def call(self, method, path, **kwargs):
        return self.session.request(method, self.base_url + path, timeout=5, **kwargs)

    def ok(self, method, path, **kwargs):
        resp = self.call(method, path, **kwargs)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def user(self, **tags):
        return self.ok("POST", "/users", json={"tags": tags or {"id": "u1"}, "name": "Ann"})["user"]

    def conversation(self, channel="hitl", **tags):
        return self.ok("POST", "/conversations", json={"channel": channel, "tags": tags or {"id": "T1"}})[
            "conversation"
        ]

    def text(self, conversation, user, text="hello", tags=None):
        body = {
            "conversationId": conversation["id"],
            "userId": user["id"],
            "type": "text",
            "payload": {"text": text},
            "tags": tags or {},
        }
        return self.ok("POST", "/messages", json=body)["message"]


@pytest.fixture
def bp():
    with BotpressStandin() as server:
        server.add_bot(bot_id=BOT_ID, token=TOKEN, integration_id=INTEGRATION_ID)
        yield server


@pytest.fixture
def api(bp):
    return Api(bp.base_url)


def assert_error(resp, status, error_type, mentions=None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"id", "code", "type", "message"}
    assert ERROR_ID.match(body["id"]), body["id"]
    assert body["code"] == status
    assert body["type"] == error_type
    if mentions:
        assert mentions in body["message"]
    return body


# ----------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("headers", "status", "error_type"),
    [
        ({"token": None}, 401, "Unauthorized"),
        ({"token": "wrong"}, 401, "Unauthorized"),
        ({"bot_id": None}, 400, "InvalidPayload"),
        ({"bot_id": "bot_other"}, 403, "Forbidden"),
        ({"integration_id": None}, 400, "InvalidPayload"),
        ({"integration_id": "intg_other"}, 403, "Forbidden"),
    ],
)
def test_auth_failures_use_the_error_shape(bp, headers, status, error_type):
    api = Api(bp.base_url, **headers)
    if headers.get("token", "") is None:
        api.session.headers.pop("Authorization")
    assert_error(api.call("GET", "/users"), status, error_type)


def test_token_of_another_bot_cannot_act_for_this_bot(bp):
    bp.add_bot(bot_id="bot_two", token="token-two", integration_id="intg_two")
    assert_error(Api(bp.base_url, token="token-two").call("GET", "/users"), 403, "Forbidden")
    assert Api(bp.base_url, "token-two", "bot_two", "intg_two").ok("GET", "/users") == {
        "users": [],
        "meta": {},
    }


def test_objects_are_private_to_their_bot(bp, api):
    user = api.user()
    bp.add_bot(bot_id="bot_two", token="token-two", integration_id="intg_two")
    other = Api(bp.base_url, "token-two", "bot_two", "intg_two")
    assert_error(other.call("GET", f"/users/{user['id']}"), 404, "ResourceNotFound")


def test_unknown_endpoint_and_method(api):
    assert_error(api.call("GET", "/nothing"), 404, "ResourceNotFound")
    assert_error(api.call("PATCH", "/users"), 405, "MethodNotFound")


def test_body_must_be_json_object(api):
    assert_error(api.call("POST", "/users", data="{not json"), 400, "InvalidPayload", "JSON")
    assert_error(api.call("POST", "/users", json=["tags"]), 400, "InvalidPayload", "object")


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("field", ["payload", "userId", "conversationId", "type", "tags"])
def test_create_message_names_the_missing_field(api, field):
    conversation, user = api.conversation(), api.user()
    body = {
        "conversationId": conversation["id"],
        "userId": user["id"],
        "type": "text",
        "payload": {"text": "hi"},
        "tags": {},
    }
    del body[field]
    assert_error(api.call("POST", "/messages", json=body), 400, "InvalidPayload", f"'{field}'")


def test_create_user_and_conversation_name_missing_fields(api):
    assert_error(api.call("POST", "/users", json={"name": "x"}), 400, "InvalidPayload", "'tags'")
    assert_error(api.call("POST", "/conversations", json={"tags": {}}), 400, "InvalidPayload", "'channel'")


@pytest.mark.parametrize(
    ("tags", "mentions"),
    [
        ({"id": 5}, "tags.id"),
        ({"id": {"nested": "x"}}, "tags.id"),
        ({"id": ""}, "tags.id"),
        ({"id": None}, "tags.id"),
        ("id=1", "'tags' must be an object"),
    ],
)
def test_tags_must_be_flat_strings_on_create(api, tags, mentions):
    assert_error(api.call("POST", "/users", json={"tags": tags}), 400, "InvalidPayload", mentions)


def test_tag_values_are_limited_to_500_characters(api):
    conversation, user = api.conversation(), api.user()
    api.text(conversation, user, tags={"zendeskCommentId": "x" * 500})
    body = {
        "conversationId": conversation["id"],
        "userId": user["id"],
        "type": "text",
        "payload": {"text": "hi"},
        "tags": {"zendeskCommentId": "x" * 501},
    }
    assert_error(api.call("POST", "/messages", json=body), 400, "InvalidPayload", "500")


def test_null_or_empty_tags_delete_on_update(api):
    user = api.user(id="u1", email="a@example.com", role="patient")
    updated = api.ok("PUT", f"/users/{user['id']}", json={"tags": {"email": None, "role": "", "x": "y"}})
    assert updated["user"]["tags"] == {"id": "u1", "x": "y"}


def test_unknown_ids(api):
    assert_error(api.call("GET", "/users/user_01J0000000000000000000000000"), 404, "ResourceNotFound")
    assert_error(api.call("GET", "/conversations/conv_nope"), 404, "ResourceNotFound")
    assert_error(api.call("PUT", "/messages/msg_nope", json={"tags": {}}), 404, "ResourceNotFound")
    user = api.user()
    body = {
        "conversationId": "conv_nope",
        "userId": user["id"],
        "type": "text",
        "payload": {"text": "x"},
        "tags": {},
    }
    assert_error(api.call("POST", "/messages", json=body), 400, "ReferenceNotFound", "conversationId")
    conversation = api.conversation()
    body |= {"conversationId": conversation["id"], "userId": "user_nope"}
    assert_error(api.call("POST", "/messages", json=body), 400, "ReferenceNotFound", "userId")


def test_ids_have_prefix_and_length(api):
    user, conversation = api.user(), api.conversation()
    message = api.text(conversation, user)
    event = api.ok("POST", "/events", json={"type": "hitlStopped", "payload": {"conversationId": conversation["id"]}})
    for obj, prefix in [
        (user, "user_"),
        (conversation, "conv_"),
        (message, "msg_"),
        (event["event"], "evt_"),
    ]:
        assert obj["id"].startswith(prefix)
        assert 28 <= len(obj["id"]) <= 36


# ----------------------------------------------------------------------------- get-or-create


def test_get_or_create_user_is_idempotent_and_updates(api):
    first = api.ok("POST", "/users/get-or-create", json={"tags": {"id": "42", "email": "a@x.io"}, "name": "A"})
    assert first["meta"] == {"created": True}
    again = api.ok(
        "POST",
        "/users/get-or-create",
        json={"tags": {"id": "42", "email": None}, "name": "B", "pictureUrl": "https://x/p.png"},
        params=None,
    )
    # Without discriminateByTags every non-null tag must match: id=42 matches.
    assert again["meta"] == {"created": False}
    assert again["user"]["id"] == first["user"]["id"]
    assert again["user"]["tags"] == {"id": "42"}
    assert again["user"]["name"] == "B"
    assert again["user"]["pictureUrl"] == "https://x/p.png"


def test_get_or_create_user_discriminates_by_listed_tags(api):
    first = api.ok("POST", "/users/get-or-create", json={"tags": {"id": "42", "email": "a@x.io"}})
    other_email = {"tags": {"id": "42", "email": "b@x.io"}, "discriminateByTags": ["id"]}
    again = api.ok("POST", "/users/get-or-create", json=other_email)
    assert (again["meta"]["created"], again["user"]["id"]) == (False, first["user"]["id"])
    assert again["user"]["tags"] == {"id": "42", "email": "b@x.io"}
    without = api.ok("POST", "/users/get-or-create", json={"tags": {"id": "42", "email": "c@x.io"}})
    assert without["meta"]["created"] is True  # all tags must match without discriminateByTags
    missing = {"tags": {"email": "d@x.io"}, "discriminateByTags": ["id"]}
    assert_error(api.call("POST", "/users/get-or-create", json=missing), 400, "InvalidPayload", "id")


def test_get_or_create_conversation_includes_channel(api):
    body = {"channel": "hitl", "tags": {"id": "T9"}}
    first = api.ok("POST", "/conversations/get-or-create", json=body)
    extra = {"tags": {"id": "T9", "x": "1"}, "discriminateByTags": ["id"]}
    again = api.ok("POST", "/conversations/get-or-create", json=body | extra)
    other_channel = api.ok("POST", "/conversations/get-or-create", json=body | {"channel": "other"})
    assert first["meta"]["created"] is True and again["meta"]["created"] is False
    assert again["conversation"]["id"] == first["conversation"]["id"]
    assert again["conversation"]["tags"] == {"id": "T9", "x": "1"}
    assert other_channel["meta"]["created"] is True
    assert len(api.ok("GET", "/conversations", params={"channel": "hitl"})["conversations"]) == 1


def test_get_or_create_message_is_idempotent_on_discriminating_tags(bp, api):
    conversation, agent = api.conversation(), api.user(id="agent-7")
    body = {
        "conversationId": conversation["id"],
        "userId": agent["id"],
        "type": "text",
        "payload": {"text": "from the agent"},
        "tags": {"zendeskCommentId": "1001"},
        "discriminateByTags": ["zendeskCommentId"],
    }
    first = api.ok("POST", "/messages/get-or-create", json=body)
    retried = api.ok("POST", "/messages/get-or-create", json=body | {"payload": {"text": "changed"}})
    assert first["meta"] == {"created": True} and retried["meta"] == {"created": False}
    assert retried["message"]["id"] == first["message"]["id"]
    assert retried["message"]["payload"] == {"text": "from the agent"}
    assert first["message"]["direction"] == "incoming"
    assert len(bp.messages(conversation["id"])) == 1
    assert api.ok("GET", f"/conversations/{conversation['id']}")["conversation"]["messageCount"] == 1


def test_get_or_create_message_follows_tag_changes_and_deletions(bp, api):
    """The lookup is indexed by tag: a message is found under the tags it has now, a deleted one
    is not found, and of two messages with the same tags the first created is returned."""
    conversation, agent = api.conversation(), api.user(id="agent-7")

    def get_or_create(comment_id: str, text: str = "reply") -> dict:
        body = {
            "conversationId": conversation["id"],
            "userId": agent["id"],
            "type": "text",
            "payload": {"text": text},
            "tags": {"zendeskCommentId": comment_id},
            "discriminateByTags": ["zendeskCommentId"],
        }
        return api.ok("POST", "/messages/get-or-create", json=body)

    made = [get_or_create(str(n))["message"] for n in range(50)]
    assert get_or_create("7")["message"]["id"] == made[7]["id"]
    api.ok("PUT", f"/messages/{made[7]['id']}", json={"tags": {"zendeskCommentId": "700"}})
    assert get_or_create("700")["message"]["id"] == made[7]["id"], "found under its new tag"
    again = get_or_create("7", "a new message")
    assert again["meta"] == {"created": True}, "no longer found under the old one"
    api.ok("DELETE", f"/messages/{made[8]['id']}")
    assert get_or_create("8")["meta"] == {"created": True}, "a deleted message is not found"
    twin = api.text(conversation, agent, "same tag, made later", tags={"zendeskCommentId": "9"})
    assert get_or_create("9")["message"]["id"] == made[9]["id"] != twin["id"], "the first created wins"


# ----------------------------------------------------------------------------- listing


def test_list_messages_newest_first_with_tag_filter_and_pages(api):
    conversation, user = api.conversation(), api.user()
    other = api.conversation(id="T2")
    sent = [api.text(conversation, user, f"m{i}", tags={"n": str(i % 2)}) for i in range(5)]
    api.text(other, user, "elsewhere")
    listed = api.ok("GET", "/messages", params={"conversationId": conversation["id"]})["messages"]
    assert [m["id"] for m in listed] == [m["id"] for m in reversed(sent)]
    odd = api.ok("GET", "/messages", params={"conversationId": conversation["id"], "tags.n": "1"})["messages"]
    assert [m["payload"]["text"] for m in odd] == ["m3", "m1"]
    page1 = api.ok("GET", "/messages", params={"conversationId": conversation["id"], "pageSize": 2})
    page2 = api.ok(
        "GET",
        "/messages",
        params={"conversationId": conversation["id"], "pageSize": 2, "nextToken": page1["meta"]["nextToken"]},
    )
    page3 = api.ok(
        "GET",
        "/messages",
        params={"conversationId": conversation["id"], "pageSize": 2, "nextToken": page2["meta"]["nextToken"]},
    )
    assert [m["payload"]["text"] for m in page1["messages"] + page2["messages"] + page3["messages"]] == [
        "m4",
        "m3",
        "m2",
        "m1",
        "m0",
    ]
    assert page3["meta"] == {}


def test_list_users_and_conversations_filters(api):
    ann, bob = api.user(id="a", kind="patient"), api.user(id="b", kind="agent")
    conversation = api.conversation(id="T1")
    api.text(conversation, bob)
    assert [u["id"] for u in api.ok("GET", "/users", params={"tags.kind": "patient"})["users"]] == [ann["id"]]
    members = api.ok("GET", "/users", params={"conversationId": conversation["id"]})["users"]
    assert [u["id"] for u in members] == [bob["id"]]
    found = api.ok("GET", "/conversations", params={"tags.id": "T1", "participantIds": [bob["id"]]})
    assert [c["id"] for c in found["conversations"]] == [conversation["id"]]
    assert api.ok("GET", "/conversations", params={"participantIds": [ann["id"]]})["conversations"] == []


# ----------------------------------------------------------------------------- hitl payloads


@pytest.mark.parametrize(
    ("msg_type", "payload"),
    [
        ("text", {"text": "hi", "userId": "user_x", "additionalData": "{}"}),
        ("image", {"imageUrl": "https://x/i.png", "title": "i"}),
        ("audio", {"audioUrl": "https://x/a.mp3"}),
        ("video", {"videoUrl": "https://x/v.mp4"}),
        ("file", {"fileUrl": "https://x/f.pdf", "title": "f"}),
        (
            "bloc",
            {
                "items": [
                    {"type": "text", "payload": {"text": "a"}},
                    {"type": "location", "payload": {"latitude": 1.5, "longitude": 2}},
                    {"type": "markdown", "payload": {"markdown": "**b**"}},
                ]
            },
        ),
    ],
)
def test_valid_hitl_payloads_are_accepted(api, msg_type, payload):
    conversation, user = api.conversation(), api.user()
    body = {
        "conversationId": conversation["id"],
        "userId": user["id"],
        "type": msg_type,
        "payload": payload,
        "tags": {},
    }
    assert api.ok("POST", "/messages", json=body)["message"]["payload"] == payload


@pytest.mark.parametrize(
    ("msg_type", "payload", "mentions"),
    [
        ("text", {"text": ""}, "payload.text"),
        ("text", {}, "payload.text"),
        ("image", {"title": "no url"}, "payload.imageUrl"),
        ("file", {"fileUrl": 5}, "payload.fileUrl"),
        ("text", {"text": "x", "additionalData": "d" * 501}, "payload.additionalData"),
        ("text", {"text": "x", "userId": 7}, "payload.userId"),
        ("bloc", {"items": [{"type": "image", "payload": {}}]}, "payload.items[0].payload.imageUrl"),
        ("bloc", {"items": [{"type": "carousel", "payload": {}}]}, "payload.items[0].type"),
        ("card", {"title": "x"}, "not supported"),
    ],
)
def test_invalid_hitl_payloads_are_rejected(api, msg_type, payload, mentions):
    conversation, user = api.conversation(), api.user()
    body = {
        "conversationId": conversation["id"],
        "userId": user["id"],
        "type": msg_type,
        "payload": payload,
        "tags": {},
    }
    assert_error(api.call("POST", "/messages", json=body), 400, "InvalidPayload", mentions)


def test_other_channels_do_not_check_payloads(api):
    conversation, user = api.conversation(channel="webchat"), api.user()
    body = {
        "conversationId": conversation["id"],
        "userId": user["id"],
        "type": "card",
        "payload": {},
        "tags": {},
    }
    assert api.ok("POST", "/messages", json=body)["message"]["type"] == "card"


# ----------------------------------------------------------------------------- events


def test_events_are_validated_and_pending(bp, api):
    conversation, agent = api.conversation(), api.user()
    assigned = {
        "type": "hitlAssigned",
        "payload": {"conversationId": conversation["id"], "userId": agent["id"]},
    }
    event = api.ok("POST", "/events", json=assigned)["event"]
    assert event["status"] == "pending" and event["failureReason"] is None
    assert event["payload"] == assigned["payload"]
    assert [e["id"] for e in bp.events(type="hitlAssigned")] == [event["id"]]
    assert api.ok("GET", f"/events/{event['id']}")["event"] == event
    assert api.ok("GET", "/events", params={"type": "hitlAssigned"})["events"] == [event]


@pytest.mark.parametrize(
    ("body", "error_type", "mentions"),
    [
        ({"type": "hitlUnknown", "payload": {}}, "InvalidPayload", "hitlUnknown"),
        ({"payload": {}}, "InvalidPayload", "'type'"),
        ({"type": "hitlStopped"}, "InvalidPayload", "'payload'"),
        ({"type": "hitlStopped", "payload": {}}, "InvalidPayload", "payload.conversationId"),
        ({"type": "hitlAssigned", "payload": {"conversationId": "CONV"}}, "InvalidPayload", "payload.userId"),
        (
            {"type": "hitlStopped", "payload": {"conversationId": "conv_nope"}},
            "ReferenceNotFound",
            "conv_nope",
        ),
        (
            {"type": "hitlAssigned", "payload": {"conversationId": "CONV", "userId": "user_nope"}},
            "ReferenceNotFound",
            "user_nope",
        ),
    ],
)
def test_invalid_events_are_rejected(api, body, error_type, mentions):
    conversation = api.conversation()
    if "payload" in body and body["payload"].get("conversationId") == "CONV":
        body["payload"]["conversationId"] = conversation["id"]
    assert_error(api.call("POST", "/events", json=body), 400, error_type, mentions)


def test_renamed_event_types_can_be_declared(bp):
    bp.add_bot(bot_id="bot_r", token="tok-r", integration_id="intg_r", event_types=["agentAssigned", "agentStopped"])
    api = Api(bp.base_url, "tok-r", "bot_r", "intg_r")
    conversation = api.conversation()
    assert_error(
        api.call("POST", "/events", json={"type": "hitlStopped", "payload": {"conversationId": conversation["id"]}}),
        400,
        "InvalidPayload",
        "agentAssigned",
    )
    body = {"type": "agentAssigned", "payload": {"conversationId": conversation["id"]}}
    assert_error(api.call("POST", "/events", json=body), 400, "InvalidPayload", "payload.userId")
    stopped = {"type": "agentStopped", "payload": {"conversationId": conversation["id"]}}
    assert api.ok("POST", "/events", json=stopped)["event"]["status"] == "pending"


# ----------------------------------------------------------------------------- states and the rest


def test_states(api):
    conversation = api.conversation()
    path = f"/states/conversation/{conversation['id']}/hitl"
    assert_error(api.call("GET", path), 404, "ResourceNotFound")
    assert_error(api.call("POST", path, json={}), 400, "InvalidPayload", "'payload'")
    api.ok("POST", path, json={"payload": {"a": 1}})
    api.ok("PATCH", path, json={"payload": {"b": 2}})
    state = api.ok("GET", path)
    assert state["state"]["payload"] == {"a": 1, "b": 2} and state["meta"] == {"cached": False}
    kept = api.ok("POST", path + "/get-or-set", json={"payload": {"c": 3}})
    assert kept["state"]["payload"] == {"a": 1, "b": 2}
    api.ok("POST", path, json={"payload": None})
    assert_error(api.call("GET", path), 404, "ResourceNotFound")
    assert_error(api.call("GET", "/states/integration/intg_other/x"), 404, "ResourceNotFound")
    api.ok("POST", f"/states/integration/{INTEGRATION_ID}/x", json={"payload": {"ok": True}, "expiry": 60000})


def test_configure_integration(api):
    assert api.ok("POST", "/integrations/configure", json={"identifier": "abc"}) == {}


def test_python_accessors_return_copies(bp, api):
    user = api.user()
    bp.users()[0]["tags"]["id"] = "mutated"
    assert bp.users()[0]["tags"] == user["tags"]


def test_wait_for_returns_value_or_fails_clearly(bp, api):
    assert bp.wait_for(lambda: 42, timeout=0.1) == 42
    with pytest.raises(AssertionError, match="still false after"):
        bp.wait_for(lambda: bp.users(), timeout=0.1)


def test_control_api_adds_bots_shows_state_and_resets(bp):
    control = bp.base_url + "/__standin__"
    resp = requests.post(control + "/bots", json={"bot_id": "bot_c", "token": "tok-c", "integration_id": "intg_c"})
    assert resp.status_code == 201
    api = Api(bp.base_url, "tok-c", "bot_c", "intg_c")
    user = api.user()
    state = requests.get(control + "/state", timeout=5).json()
    assert [u["id"] for u in state["users"]] == [user["id"]]
    assert set(state) >= {"users", "conversations", "messages", "events"}
    assert [e["path"] for e in bp.requests_log()] == ["/v1/chat/users"]  # control calls are not logged
    assert requests.post(control + "/reset", timeout=5).status_code == 200
    assert bp.users() == [] and bp.requests_log() == []
    assert api.ok("GET", "/users") == {"users": [], "meta": {}}  # bots survive a reset
    bad = requests.post(control + "/bots", json={"bot_id": "x"}, timeout=5)
    assert bad.status_code == 400


def test_the_request_log_is_read_from_a_position(bp, api):
    """A poller reads only what was logged since its last look (``requests_log(start=)``)."""
    api.user(id="u1")
    position = len(bp.requests_log())
    assert position >= 1 and bp.requests_log(start=0) == bp.requests_log()
    assert bp.requests_log(start=position) == []
    api.user(id="u2")
    new = bp.requests_log(start=position)
    assert new == bp.requests_log()[position:] and all(entry["status"] for entry in new)
    new[0]["path"] = "changed"
    assert bp.requests_log()[position]["path"] != "changed", "copies, not the log itself"
