"""The Zendesk stand-in answers like Zendesk Support and fires triggers like it (helpdesk-apis.md §1)."""

import base64
import hashlib
import hmac
import json
import re
import time

import pytest
import requests

from standins import Response, StandinServer, ZendeskStandin, sign_zendesk_webhook

EMAIL, TOKEN = "gateway@example.com", "zd-token-1"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Receiver(StandinServer):
    """The gateway's webhook endpoint, reduced to: answer 200 and log what arrived."""

    def __init__(self):
        super().__init__()
        self.route("POST", "/hooks/zendesk", lambda req: Response(200, {"ok": True}))

    def hooks(self):
        return self.requests_log(path_regex="^/hooks/")


class Api:
    def __init__(self, base_url, email=EMAIL, token=TOKEN):
        self.base_url = base_url + "/api/v2"
        self.session = requests.Session()
        self.session.auth = (f"{email}/token", token)

    def call(self, method, path, **kwargs):
        return self.session.request(method, self.base_url + path, timeout=5, **kwargs)

    def ok(self, method, path, status=200, **kwargs):
        resp = self.call(method, path, **kwargs)
        assert resp.status_code == status, resp.text
        return resp.json() if resp.content else None

    def end_user(self, name="Bob", email="bob@example.com", **fields):
        body = {"user": {"name": name, "email": email, **fields}}
        return self.call("POST", "/users/create_or_update", json=body).json()["user"]

    def ticket(self, external_id="hitl_1", **fields):
        requester = self.end_user()
        body = {
            "ticket": {
                "subject": "Help",
                "comment": {"body": "Transcript"},
                "requester_id": requester["id"],
                "external_id": external_id,
                **fields,
            }
        }
        return self.ok("POST", "/tickets.json", 201, json=body)["ticket"]


@pytest.fixture
def zd():
    with ZendeskStandin(email=EMAIL, api_token=TOKEN) as server:
        server.webhook_retry_delay = 0.01
        yield server


@pytest.fixture
def api(zd):
    return Api(zd.base_url)


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def assert_invalid(resp, field):
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "RecordInvalid"
    assert body["description"] == "Record validation errors"
    assert set(body["details"]) == {field}
    assert {"description", "error"} <= set(body["details"][field][0])
    return body


# ----------------------------------------------------------------------------- the BP-style setup


def template(kind):
    """The JSON body Botpress's Zendesk integration puts in its three triggers."""
    person = ("id", "name", "email", "role", "remote_photo_url")
    return json.dumps(
        {
            "type": kind,
            "ticketId": "{{ticket.id}}",
            "externalId": "{{ticket.external_id}}",
            "status": "{{ticket.status}}",
            "comment": "{{ticket.latest_public_comment_html}}",
            "commentId": "{{ticket.public_comments[0].id}}",
            "agent": {name: f"{{{{ticket.assignee.{name}}}}}" for name in person},
            "currentUser": {
                **{name: f"{{{{current_user.{name}}}}}" for name in person},
                "externalId": "{{current_user.external_id}}",
            },
            "unknown": "{{ticket.no_such_placeholder}}",
        }
    )


TRIGGERS = {
    "ticketAssigned": {"any": [{"field": "assignee_id", "operator": "changed"}]},
    "ticketSolved": {"all": [{"field": "status", "operator": "value", "value": "SOLVED"}]},
    "newMessage": {
        "all": [
            {"field": "comment_is_public", "operator": "is", "value": "requester_can_see_comment"},
            {"field": "current_via_id", "operator": "is_not", "value": "5"},
        ]
    },
}


@pytest.fixture
def hooked(api, receiver):
    """A webhook to the receiver and BP's three triggers; returns the webhook's signing secret."""
    webhook = {"name": "botpress-hitl", "endpoint": receiver.base_url + "/hooks/zendesk"}
    webhook |= {
        "http_method": "POST",
        "request_format": "json",
        "subscriptions": ["conditional_ticket_events"],
    }
    webhook_id = api.ok("POST", "/webhooks", 201, json={"webhook": webhook})["webhook"]["id"]
    for title, conditions in TRIGGERS.items():
        action = {"field": "notification_webhook", "value": [webhook_id, template(title)]}
        trigger = {"title": title, "conditions": conditions, "actions": [action]}
        api.ok("POST", "/triggers.json", 201, json={"trigger": trigger})
    return api.ok("GET", f"/webhooks/{webhook_id}/signing_secret")["signing_secret"]["secret"]


def received(zd, receiver, secret):
    """Every webhook the receiver got so far, after checking headers and signature."""
    zd.wait_webhooks_idle(timeout=10)
    payloads = []
    for hook in receiver.hooks():
        headers = hook["headers"]
        assert headers["content-type"] == "application/json"
        assert headers["x-zendesk-account-id"] == str(zd.account_id)
        assert headers["x-zendesk-webhook-invocation-id"]
        assert len(headers["x-zendesk-webhook-id"]) == 26
        timestamp = headers["x-zendesk-webhook-signature-timestamp"]
        assert TIMESTAMP.match(timestamp)
        expected = hmac.new(secret.encode(), timestamp.encode() + hook["body"], hashlib.sha256).digest()
        assert headers["x-zendesk-webhook-signature"] == base64.b64encode(expected).decode()
        payloads.append(hook["json"])
    return payloads


# ----------------------------------------------------------------------------- auth and errors


def test_signature_known_answer_and_order():
    secret, body, timestamp = (
        "HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=",
        b'{"say": "hello"}',
        "2021-07-25T10:00:00Z",
    )
    old_docs_signature = "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw="
    # The old docs' vector only reproduces with BODY+TIMESTAMP...
    body_first = hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).digest()
    assert base64.b64encode(body_first).decode() == old_docs_signature
    # ...while the current docs (and the stand-in) sign TIMESTAMP+BODY, which gives another value.
    assert sign_zendesk_webhook(secret, timestamp, body) != old_docs_signature
    timestamp_first = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    assert sign_zendesk_webhook(secret, timestamp, body) == base64.b64encode(timestamp_first).decode()


@pytest.mark.parametrize(
    "auth",
    [None, (f"{EMAIL}/token", "wrong"), (EMAIL, TOKEN), ("other@example.com/token", TOKEN)],
)
def test_bad_credentials_get_401(zd, auth):
    resp = requests.get(zd.base_url + "/api/v2/users/me.json", auth=auth, timeout=5)
    assert resp.status_code == 401
    assert resp.json() == {"error": "Couldn't authenticate you"}


def test_good_credentials_and_optional_json_suffix(api):
    me = api.ok("GET", "/users/me.json")["user"]
    assert me["email"] == EMAIL and me["role"] == "admin"
    assert api.ok("GET", f"/users/{me['id']}")["user"] == api.ok("GET", f"/users/{me['id']}.json")["user"]


def test_not_found_envelope(api):
    assert api.call("GET", "/tickets/999.json").json() == {
        "error": "RecordNotFound",
        "description": "Not found",
    }
    assert api.call("GET", "/tickets/999").status_code == 404


# ----------------------------------------------------------------------------- users


def test_create_or_update_user_201_then_200(api):
    first = api.call("POST", "/users/create_or_update", json={"user": {"name": "Bob", "external_id": "ABC-1"}})
    assert first.status_code == 201
    user = first.json()["user"]
    assert user["role"] == "end-user" and user["external_id"] == "ABC-1"
    body = {"user": {"name": "Bobby", "external_id": "abc-1", "email": "bob@example.com"}}
    again = api.call("POST", "/users/create_or_update", json=body)
    assert again.status_code == 200
    assert again.json()["user"]["id"] == user["id"]
    assert again.json()["user"]["external_id"] == "abc-1"  # rewritten to the given case
    by_email = api.call("POST", "/users/create_or_update", json={"user": {"name": "B", "email": "BOB@example.com"}})
    assert (by_email.status_code, by_email.json()["user"]["id"]) == (200, user["id"])


def test_create_or_update_user_validation(api):
    long_url = "https://example.com/" + "p" * 240
    body = {"user": {"name": "Bob", "email": "b@example.com", "remote_photo_url": long_url}}
    assert_invalid(api.call("POST", "/users/create_or_update", json=body), "remote_photo_url")
    assert_invalid(api.call("POST", "/users/create_or_update", json={"user": {"email": "x@example.com"}}), "name")
    bad_role = {"user": {"name": "X", "role": "owner"}}
    assert_invalid(api.call("POST", "/users/create_or_update", json=bad_role), "role")
    assert api.call("POST", "/users/create_or_update", json={"name": "no root"}).status_code == 400


def test_search_and_update_users(api):
    bob = api.end_user(external_id="E-7")
    assert api.ok("GET", "/users/search.json", params={"query": "email:bob@example.com"})["users"] == [bob]
    assert [u["id"] for u in api.ok("GET", "/users/search", params={"query": "external_id:e-7"})["users"]] == [
        bob["id"]
    ]
    assert api.ok("GET", "/users/search", params={"query": "email:nobody@example.com"})["users"] == []
    updated = api.ok("PUT", f"/users/{bob['id']}.json", json={"user": {"external_id": "E-8"}})["user"]
    assert updated["external_id"] == "E-8"
    assert api.call("PUT", "/users/12345", json={"user": {}}).status_code == 404


# ----------------------------------------------------------------------------- tickets


def test_create_ticket(api, zd):
    requester = api.end_user()
    body = {
        "ticket": {
            "comment": {"body": "Transcript"},
            "requester_id": requester["id"],
            "priority": "high",
            "external_id": "hitl_1",
            "ticket_form_id": 77,
        }
    }
    resp = api.call("POST", "/tickets.json", json=body)
    assert resp.status_code == 201
    ticket = resp.json()["ticket"]
    assert resp.headers["Location"] == f"{zd.base_url}/api/v2/tickets/{ticket['id']}.json"
    assert ticket["status"] == "new" and ticket["priority"] == "high" and ticket["subject"] is None
    assert ticket["via"]["channel"] == "api" and ticket["description"] == "Transcript"
    assert api.ok("GET", f"/tickets/{ticket['id']}")["ticket"] == ticket
    assert api.ok("GET", "/tickets.json", params={"external_id": "hitl_1"})["tickets"] == [ticket]
    [comment] = zd.comments(ticket["id"])
    assert comment["author_id"] == zd.api_user_id and comment["via"]["channel"] == "api"


def test_create_ticket_with_requester_object(api, zd):
    body = {
        "ticket": {
            "comment": {"html_body": "<p>Hi</p>"},
            "requester": {"name": "Eve", "email": "eve@example.com"},
        }
    }
    ticket = api.ok("POST", "/tickets", 201, json=body)["ticket"]
    requester = api.ok("GET", f"/users/{ticket['requester_id']}")["user"]
    assert (requester["name"], requester["email"], requester["role"]) == (
        "Eve",
        "eve@example.com",
        "end-user",
    )
    again = api.ok("POST", "/tickets", 201, json=body)["ticket"]
    assert again["requester_id"] == requester["id"]  # matched by email, not created twice
    assert zd.comments(ticket["id"])[0]["body"] == "Hi"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"comment": None}, "comment"),
        ({"comment": {"body": "  "}}, "comment"),
        ({"priority": "critical"}, "priority"),
        ({"requester_id": 999}, "requester_id"),
        ({"ticket_form_id": "12"}, "ticket_form_id"),
        ({"comment": {"body": "x", "author_id": 999}}, "author_id"),
    ],
)
def test_create_ticket_validation(api, zd, fields, field):
    body = {"ticket": {"comment": {"body": "Transcript"}, **fields}}
    if body["ticket"]["comment"] is None:
        del body["ticket"]["comment"]
    assert_invalid(api.call("POST", "/tickets.json", json=body), field)
    assert zd.tickets() == []


def test_ticket_idempotency_key(api, zd):
    requester = api.end_user()
    body = {"ticket": {"comment": {"body": "Transcript"}, "requester_id": requester["id"]}}
    headers = {"Idempotency-Key": "session-1"}
    first = api.call("POST", "/tickets.json", json=body, headers=headers)
    second = api.call("POST", "/tickets.json", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.headers["x-idempotency-lookup"] == "miss"
    assert second.headers["x-idempotency-lookup"] == "hit"
    assert second.json() == first.json()
    assert len(zd.tickets()) == 1
    changed = {"ticket": {"comment": {"body": "Other"}, "requester_id": requester["id"]}}
    mismatch = api.call("POST", "/tickets.json", json=changed, headers=headers)
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "IdempotentRequestError"
    assert len(zd.tickets()) == 1
    api.ok("POST", "/tickets.json", 201, json=body, headers={"Idempotency-Key": "session-2"})
    assert len(zd.tickets()) == 2


def test_update_ticket_answers_audit_events(api, zd):
    ticket = api.ticket()
    requester_id = ticket["requester_id"]
    body = {"ticket": {"comment": {"body": "From Bob", "author_id": requester_id}, "status": "open"}}
    answer = api.ok("PUT", f"/tickets/{ticket['id']}.json", json=body)
    assert answer["ticket"]["status"] == "open"
    comment_event, change_event = answer["audit"]["events"]
    assert comment_event["type"] == "Comment"
    assert (comment_event["body"], comment_event["public"], comment_event["author_id"]) == (
        "From Bob",
        True,
        requester_id,
    )
    assert comment_event["attachments"] == [] and comment_event["via"]["channel"] == "api"
    assert change_event == {
        "id": change_event["id"],
        "type": "Change",
        "field_name": "status",
        "value": "open",
        "previous_value": "new",
        "via": comment_event["via"],
    }
    assert zd.comments(ticket["id"])[-1]["id"] == comment_event["id"]
    note = {"ticket": {"comment": {"body": "internal", "public": False}}}
    api.ok("PUT", f"/tickets/{ticket['id']}", json=note)
    bodies = [c["body"] for c in api.ok("GET", f"/tickets/{ticket['id']}/comments.json")["comments"]]
    assert bodies == ["Transcript", "From Bob", "internal"]
    desc = api.ok("GET", f"/tickets/{ticket['id']}/comments", params={"sort_order": "desc"})["comments"]
    assert [c["body"] for c in desc] == bodies[::-1]
    assert [c["public"] for c in desc] == [False, True, True]


def test_update_ticket_changes_and_validation(api, zd):
    ticket = api.ticket()
    agent = zd.add_agent("Alice", "alice@example.com")
    body = {"ticket": {"assignee_id": agent, "priority": "urgent", "external_id": "hitl_2"}}
    changed = api.ok("PUT", f"/tickets/{ticket['id']}", json=body)
    fields = {e["field_name"]: (e["previous_value"], e["value"]) for e in changed["audit"]["events"]}
    assert fields == {
        "priority": (None, "urgent"),
        "assignee_id": (None, str(agent)),
        "external_id": ("hitl_1", "hitl_2"),
    }
    assert_invalid(api.call("PUT", f"/tickets/{ticket['id']}", json={"ticket": {"status": "done"}}), "status")
    not_agent = {"ticket": {"assignee_id": ticket["requester_id"]}}
    assert_invalid(api.call("PUT", f"/tickets/{ticket['id']}", json=not_agent), "assignee_id")
    stale = {"ticket": {"status": "pending", "safe_update": True, "updated_stamp": "2000-01-01T00:00:00Z"}}
    assert api.call("PUT", f"/tickets/{ticket['id']}", json=stale).status_code == 409


def test_closed_ticket_rejects_updates(api):
    ticket = api.ticket()
    api.ok("PUT", f"/tickets/{ticket['id']}", json={"ticket": {"status": "closed"}})
    body = assert_invalid(
        api.call("PUT", f"/tickets/{ticket['id']}", json={"ticket": {"comment": {"body": "x"}}}), "status"
    )
    assert body["details"]["status"][0]["description"] == "Ticket is closed"


def test_comment_limit(api, zd):
    zd.max_comments = 3  # stands for Zendesk's 5000
    ticket = api.ticket()
    for text in ("two", "three"):
        api.ok("PUT", f"/tickets/{ticket['id']}", json={"ticket": {"comment": {"body": text}}})
    assert_invalid(
        api.call("PUT", f"/tickets/{ticket['id']}", json={"ticket": {"comment": {"body": "four"}}}), "comment"
    )
    assert len(zd.comments(ticket["id"])) == 3


# ----------------------------------------------------------------------------- uploads


def test_uploads_attach_to_a_comment(api, zd):
    ticket = api.ticket()
    first = api.call(
        "POST",
        "/uploads.json",
        params={"filename": "a.txt"},
        data=b"hello",
        headers={"Content-Type": "text/plain"},
    )
    assert first.status_code == 201
    upload = first.json()["upload"]
    assert upload["attachment"]["file_name"] == "a.txt" and upload["attachment"]["size"] == 5
    params = {"filename": "b.png", "token": upload["token"]}
    second = api.ok("POST", "/uploads", 201, params=params, data=b"\x89PNG", headers={"Content-Type": "image/png"})
    assert second["upload"]["token"] == upload["token"] and len(second["upload"]["attachments"]) == 2
    comment = {"body": "files", "uploads": [upload["token"]]}
    answer = api.ok("PUT", f"/tickets/{ticket['id']}", json={"ticket": {"comment": comment}})
    attachments = answer["audit"]["events"][0]["attachments"]
    assert [a["file_name"] for a in attachments] == ["a.txt", "b.png"]
    download = requests.get(attachments[1]["content_url"], timeout=5)
    assert (download.content, download.headers["Content-Type"]) == (b"\x89PNG", "image/png")
    assert zd.uploads() == []  # the token was used
    assert_invalid(api.call("PUT", f"/tickets/{ticket['id']}", json={"ticket": {"comment": comment}}), "uploads")


def test_delete_upload(api, zd):
    token = api.ok("POST", "/uploads", 201, params={"filename": "x.bin"}, data=b"1")["upload"]["token"]
    assert [u["token"] for u in zd.uploads()] == [token]
    assert api.call("DELETE", f"/uploads/{token}.json").status_code == 204
    assert api.call("DELETE", f"/uploads/{token}").status_code == 404
    assert_invalid(api.call("POST", "/uploads", data=b"1"), "filename")


# ----------------------------------------------------------------------------- webhooks and triggers


def test_webhooks_crud_and_signing_secret(api, zd):
    body = {"webhook": {"name": "Botpress HITL", "endpoint": "http://127.0.0.1:9/hook", "subscriptions": []}}
    webhook = api.ok("POST", "/webhooks", 201, json=body)["webhook"]
    assert re.fullmatch(r"[0-9A-Z]{26}", webhook["id"])
    assert (webhook["status"], webhook["http_method"], webhook["request_format"]) == (
        "active",
        "POST",
        "json",
    )
    assert api.ok("GET", "/webhooks", params={"filter[name_contains]": "botpress"})["webhooks"] == [webhook]
    assert api.ok("GET", "/webhooks", params={"filter[name_contains]": "other"})["webhooks"] == []
    secret = api.ok("GET", f"/webhooks/{webhook['id']}/signing_secret")["signing_secret"]
    assert secret["algorithm"] == "SHA256" and len(secret["secret"]) >= 40
    reset = api.ok("POST", f"/webhooks/{webhook['id']}/signing_secret", 201)["signing_secret"]
    assert reset["secret"] != secret["secret"]
    assert api.ok("GET", f"/webhooks/{webhook['id']}/signing_secret")["signing_secret"] == reset
    assert api.call("DELETE", f"/webhooks/{webhook['id']}").status_code == 204
    assert api.call("GET", f"/webhooks/{webhook['id']}").status_code == 404
    bad = {"webhook": {"name": "x", "endpoint": "ftp://nowhere"}}
    assert_invalid(api.call("POST", "/webhooks", json=bad), "endpoint")
    assert zd.webhooks() == []


def test_triggers_crud(api, hooked, zd):
    triggers = api.ok("GET", "/triggers.json")["triggers"]
    assert [t["title"] for t in triggers] == list(TRIGGERS)
    assert api.ok("GET", f"/triggers/{triggers[0]['id']}")["trigger"] == triggers[0]
    assert api.call("DELETE", f"/triggers/{triggers[0]['id']}.json").status_code == 204
    assert [t["title"] for t in zd.triggers()] == ["ticketSolved", "newMessage"]
    action = {"field": "notification_webhook", "value": ["01NOSUCHWEBHOOK00000000000", "{}"]}
    bad = {"trigger": {"title": "t", "conditions": {"all": []}, "actions": [action]}}
    assert_invalid(api.call("POST", "/triggers", json=bad), "actions")


# ----------------------------------------------------------------------------- agent workspace → triggers


def test_agent_actions_fire_only_matching_triggers(api, zd, receiver, hooked):
    ticket = api.ticket(external_id="hitl_42")
    assert received(zd, receiver, hooked) == []  # API-made ticket: no trigger matches
    agent = zd.add_agent("Alice", "alice@example.com")

    comment = zd.agent_reply(ticket["id"], agent, 'Hi "Bob" <b>bold</b>\nsecond line')
    [message] = received(zd, receiver, hooked)
    assert comment["via"]["channel"] == "web"
    assert message["type"] == "newMessage"
    assert (message["ticketId"], message["externalId"], message["status"]) == (
        str(ticket["id"]),
        "hitl_42",
        "open",
    )
    assert message["comment"] == '<p>Hi "Bob" &lt;b&gt;bold&lt;/b&gt;<br>second line</p>'
    assert message["commentId"] == str(comment["id"])
    assert message["currentUser"] == {
        "id": str(agent),
        "name": "Alice",
        "email": "alice@example.com",
        "role": "agent",
        "remote_photo_url": "",
        "externalId": "",
    }
    assert message["agent"]["id"] == "" and message["unknown"] == ""

    zd.assign(ticket["id"], agent)
    assigned = received(zd, receiver, hooked)[1:]
    assert [p["type"] for p in assigned] == ["ticketAssigned"]
    assert assigned[0]["agent"] == {
        "id": str(agent),
        "name": "Alice",
        "email": "alice@example.com",
        "role": "agent",
        "remote_photo_url": "",
    }

    zd.solve(ticket["id"], agent)
    solved = received(zd, receiver, hooked)[2:]
    assert [(p["type"], p["status"]) for p in solved] == [("ticketSolved", "solved")]
    assert len(zd.webhook_deliveries()) == 3


def test_api_comments_do_not_fire_new_message_but_email_replies_do(api, zd, receiver, hooked):
    ticket = api.ticket()
    body = {"ticket": {"comment": {"body": "relayed by the gateway", "author_id": ticket["requester_id"]}}}
    api.ok("PUT", f"/tickets/{ticket['id']}", json=body)
    assert received(zd, receiver, hooked) == []

    comment = zd.end_user_reply(ticket["id"], "answer by e-mail")
    [message] = received(zd, receiver, hooked)
    assert comment["via"]["channel"] == "email"
    assert message["type"] == "newMessage" and message["commentId"] == str(comment["id"])
    assert message["currentUser"]["role"] == "end-user"
    assert message["currentUser"]["id"] == str(ticket["requester_id"])


def test_solving_unassigned_ticket_assigns_the_solver_and_system_user(api, zd, receiver, hooked):
    first, second = api.ticket(), api.ticket(external_id="hitl_2")
    agent = zd.add_agent("Alice", "alice@example.com")
    zd.agent_reply(first["id"], agent, "done", solve=True)
    assert sorted(p["type"] for p in received(zd, receiver, hooked)) == [
        "newMessage",
        "ticketAssigned",
        "ticketSolved",
    ]
    zd.solve(second["id"], None)
    assert received(zd, receiver, hooked)[-1]["currentUser"]["id"] == "-1"
    with pytest.raises(KeyError):
        zd.assign(999, agent)


def test_api_assignment_fires_ticket_assigned(api, zd, receiver, hooked):
    ticket = api.ticket()
    agent = zd.add_agent("Carl", "carl@example.com", role="admin")
    api.ok("PUT", f"/tickets/{ticket['id']}", json={"ticket": {"assignee_id": agent}})
    [message] = received(zd, receiver, hooked)
    assert message["type"] == "ticketAssigned" and message["agent"]["role"] == "admin"
    assert message["currentUser"]["id"] == str(zd.api_user_id)


# ----------------------------------------------------------------------------- delivery faults and retries


def invocation_ids(receiver):
    return [h["headers"]["x-zendesk-webhook-invocation-id"] for h in receiver.hooks()]


def test_duplicate_fault_delivers_same_invocation_twice(api, zd, receiver, hooked):
    ticket = api.ticket()
    agent = zd.add_agent("Alice", "alice@example.com")
    zd.add_webhook_fault(kind="duplicate", times=1)
    zd.agent_reply(ticket["id"], agent, "once")
    zd.agent_reply(ticket["id"], agent, "twice")
    payloads = received(zd, receiver, hooked)  # checks both signatures
    ids = invocation_ids(receiver)
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]
    assert payloads[0] == payloads[1]
    assert [d["invocation_id"] for d in zd.webhook_deliveries()] == ids


def test_delay_fault_holds_delivery_back(api, zd, receiver, hooked):
    ticket = api.ticket()
    agent = zd.add_agent("Alice", "alice@example.com")
    zd.add_webhook_fault(kind="delay", delay=0.3)
    started = time.time()
    zd.agent_reply(ticket["id"], agent, "late")
    received(zd, receiver, hooked)
    assert receiver.hooks()[0]["timestamp"] - started >= 0.3


def test_failed_deliveries_are_retried_with_the_same_invocation_id(api, zd, receiver, hooked):
    ticket = api.ticket()
    agent = zd.add_agent("Alice", "alice@example.com")
    receiver.add_fault(path="^/hooks/", kind="status", status=503, times=1)
    receiver.add_fault(path="^/hooks/", kind="timeout", delay=0.05, times=1)
    zd.agent_reply(ticket["id"], agent, "retry me")
    received(zd, receiver, hooked)
    deliveries = zd.webhook_deliveries()
    assert [(d["attempt"], d["status"]) for d in deliveries] == [(1, 503), (2, None), (3, 200)]
    assert deliveries[1]["error"]
    assert len({d["invocation_id"] for d in deliveries}) == 1
    assert len(set(invocation_ids(receiver))) == 1


def test_rate_limited_delivery_honours_retry_after(api, zd, receiver, hooked):
    ticket = api.ticket()
    agent = zd.add_agent("Alice", "alice@example.com")
    receiver.add_fault(path="^/hooks/", kind="rate_limit", retry_after=1, times=1)
    zd.agent_reply(ticket["id"], agent, "slow down")
    received(zd, receiver, hooked)
    first, second = receiver.hooks()
    assert (first["status"], second["status"]) == (429, 200)
    assert second["timestamp"] - first["timestamp"] >= 0.95


def test_gives_up_after_five_retries_or_a_long_retry_after(api, zd, receiver, hooked):
    ticket = api.ticket()
    agent = zd.add_agent("Alice", "alice@example.com")
    receiver.add_fault(path="^/hooks/", kind="status", status=500)
    zd.agent_reply(ticket["id"], agent, "never")
    received(zd, receiver, hooked)
    assert [d["attempt"] for d in zd.webhook_deliveries()] == [1, 2, 3, 4, 5, 6]
    receiver.clear_faults()
    receiver.add_fault(path="^/hooks/", kind="rate_limit", retry_after=120)
    zd.agent_reply(ticket["id"], agent, "too long to wait")
    received(zd, receiver, hooked)
    assert [d["status"] for d in zd.webhook_deliveries()[6:]] == [429]


# ----------------------------------------------------------------------------- control API


def test_control_api_drives_agents(api, zd, receiver, hooked):
    control = zd.base_url + "/__standin__"
    ticket = api.ticket()
    agent = requests.post(control + "/agents", json={"name": "Dan", "email": "dan@example.com"}, timeout=5)
    assert agent.status_code == 201
    agent_id = agent.json()["id"]
    reply = requests.post(
        control + f"/tickets/{ticket['id']}/reply", json={"agent_id": agent_id, "body": "hi"}, timeout=5
    )
    assert reply.status_code == 200 and reply.json()["comment"]["body"] == "hi"
    assert requests.post(control + f"/tickets/{ticket['id']}/assign", json={"agent_id": agent_id}, timeout=5).ok
    assert requests.post(control + f"/tickets/{ticket['id']}/end_user_reply", json={"body": "ok"}, timeout=5).ok
    assert requests.post(control + f"/tickets/{ticket['id']}/solve", json={"agent_id": agent_id}, timeout=5).ok
    assert [p["type"] for p in received(zd, receiver, hooked)] == [
        "newMessage",
        "ticketAssigned",
        "newMessage",
        "ticketSolved",
    ]
    missing = requests.post(control + "/tickets/999/solve", json={"agent_id": agent_id}, timeout=5)
    assert missing.status_code == 404
    assert requests.post(control + "/webhook_faults", json={"kind": "duplicate"}, timeout=5).status_code == 201
    state = requests.get(control + "/state", timeout=5).json()
    assert [t["status"] for t in state["tickets"]] == ["solved"]
    assert [c["body"] for c in state["comments"][str(ticket["id"])]] == ["Transcript", "hi", "ok"]
    assert len(state["webhook_deliveries"]) == 4
    assert requests.post(control + "/reset", timeout=5).ok
    assert zd.tickets() == [] and zd.webhooks() == [] and [u["email"] for u in zd.users()] == [EMAIL]
    assert api.ok("GET", "/users/me")["user"]["email"] == EMAIL
