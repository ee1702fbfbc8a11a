"""The Freshdesk stand-in answers like Freshdesk API v2 and fires automation rules like it
(helpdesk-apis.md section 2): it is as strict as the real service."""

import json
import time

import pytest
import requests

from standins import FreshdeskStandin, Response, StandinServer

KEY = "fd-key-1"


class Receiver(StandinServer):
    """A webhook endpoint that answers the statuses it is given, then 200."""

    def __init__(self):
        super().__init__()
        self.statuses: list[int] = []
        self.route("POST", "/hooks", lambda req: Response(self.statuses.pop(0) if self.statuses else 200, {}))

    def hooks(self):
        return self.requests_log(path_regex="^/hooks")


@pytest.fixture(scope="module")
def servers():
    desk, receiver = FreshdeskStandin(api_key=KEY).start(), Receiver().start()
    yield desk, receiver
    desk.stop()
    receiver.stop()


@pytest.fixture
def desk(servers):
    servers[0].reset()
    return servers[0]


@pytest.fixture
def receiver(servers):
    servers[1].reset()
    servers[1].statuses = []
    return servers[1]


class Api:
    def __init__(self, desk, key=KEY):
        self.base = desk.base_url + "/api/v2"
        self.session = requests.Session()
        self.session.auth = (key, "X")

    def call(self, method, path, **kwargs):
        return self.session.request(method, self.base + path, timeout=5, **kwargs)

    def ok(self, method, path, status=200, **kwargs):
        resp = self.call(method, path, **kwargs)
        assert resp.status_code == status, resp.text
        return resp.json() if resp.content else None

    def contact(self, **fields):
        self.contacts = getattr(self, "contacts", 0) + 1
        identity = {"unique_external_id": f"u{self.contacts}"}
        return self.ok("POST", "/contacts", 201, json={"name": "Ada", **identity, **fields})

    def ticket(self, **fields):
        requester = self.contact()
        body = {"requester_id": requester["id"], "subject": "Help", "description": "<p>hi</p>", **fields}
        return self.ok("POST", "/tickets", 201, json=body)


def rule(url, **overrides):
    return {
        "name": "notify",
        "performer": {"type": 1},
        "events": [{"field_name": "reply_sent"}, {"field_name": "status", "from": "--", "to": 4}],
        "conditions": [
            {
                "name": "condition_set_1",
                "match_type": "all",
                "properties": [{"resource_type": "ticket", "field_name": "tags", "operator": "in", "value": ["hitl"]}],
            }
        ],
        "actions": [
            {
                "field_name": "trigger_webhook",
                "request_type": "POST",
                "url": url,
                "content_type": "JSON",
                "content_layout": "2",
                "content": {"id": "{{ticket.id}}", "status": "{{ticket.status}}", "who": "{{ticket.agent.name}}"},
                "custom_headers": {"X-Secret": "s3"},
            }
        ],
        **overrides,
    }


# --- auth, envelope, content types ----------------------------------------------------------
def test_api_key_basic_auth_with_any_password(desk):
    assert Api(desk).ok("GET", "/agents/me")["id"] == desk.api_agent_id
    wrong = Api(desk, key="nope").call("GET", "/agents/me")
    assert wrong.status_code == 401
    assert wrong.json() == {
        "code": "invalid_credentials",
        "message": "You have to be logged in to perform this action.",
    }
    assert requests.get(desk.base_url + "/api/v2/agents/me", timeout=5).status_code == 401


def test_validation_errors_come_all_at_once_in_the_envelope(desk):
    api = Api(desk)
    resp = api.call("POST", "/tickets", json={"subject": 1, "priority": 9, "status": "open", "bogus": True})
    assert resp.status_code == 400
    body = resp.json()
    assert body["description"] == "Validation failed"
    fields = {(e["field"], e["code"]) for e in body["errors"]}
    assert {("bogus", "invalid_field"), ("priority", "invalid_value"), ("status", "invalid_value")} <= fields
    assert ("description", "missing_field") in fields and ("requester_id", "missing_field") in fields
    assert ("subject", "datatype_mismatch") in fields


def test_invalid_json_and_wrong_content_type(desk):
    api = Api(desk)
    bad = api.call("POST", "/contacts", data=b"{", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "invalid_json"
    form = api.call("POST", "/contacts", data=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and form.json()["code"] == "invalid_content_type"


def test_ticket_field_values_are_checked_against_the_account(desk):
    api = Api(desk)
    requester = api.contact()
    body = {"requester_id": requester["id"], "subject": "S", "description": "D"}
    errors = api.call(
        "POST",
        "/tickets",
        json=body | {"group_id": 99, "type": "Nope", "tags": ["x" * 33], "custom_fields": {"cf_unknown": 1}},
    ).json()["errors"]
    assert {e["field"] for e in errors} == {"group_id", "type", "tags", "cf_unknown"}
    ticket = api.ok("POST", "/tickets", 201, json=body | {"custom_fields": {"cf_vip": True}, "source": 7})
    assert (ticket["status"], ticket["priority"], ticket["source"]) == (2, 1, 7)
    assert api.call("GET", "/tickets/999").status_code == 404


# --- contacts -------------------------------------------------------------------------------
def test_contact_needs_a_name_and_an_identity_and_duplicates_conflict(desk):
    api = Api(desk)
    missing = api.call("POST", "/contacts", json={"name": "Ada"}).json()["errors"]
    assert missing[0]["code"] == "missing_field"
    first = api.contact(email="ada@example.com")
    dup = api.call("POST", "/contacts", json={"name": "Eve", "email": "ADA@example.com"})
    assert dup.status_code == 409
    (error,) = dup.json()["errors"]
    assert (error["field"], error["code"], error["additional_info"]) == (
        "email",
        "duplicate_value",
        {"user_id": first["id"]},
    )
    assert [c["id"] for c in api.ok("GET", "/contacts", params={"unique_external_id": "u1"})] == [first["id"]]
    assert api.ok("GET", "/contacts", params={"email": "nobody@example.com"}) == []


# --- conversations, pagination, attachments -------------------------------------------------
def test_notes_default_private_and_replies_need_an_agent(desk):
    api = Api(desk)
    ticket = api.ticket()
    note = api.ok("POST", f"/tickets/{ticket['id']}/notes", 201, json={"body": "<p>x</p>"})
    assert (note["private"], note["incoming"], note["source"], note["user_id"]) == (True, False, 2, desk.api_agent_id)
    bad = api.call("POST", f"/tickets/{ticket['id']}/reply", json={"body": "x", "user_id": ticket["requester_id"]})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "user_id"
    assert api.call("POST", f"/tickets/{ticket['id']}/notes", json={"private": "no"}).status_code == 400


def test_conversations_paginate_with_a_link_header(desk):
    api = Api(desk)
    ticket = api.ticket()
    for i in range(5):
        api.ok("POST", f"/tickets/{ticket['id']}/notes", 201, json={"body": f"n{i}"})
    first = api.call("GET", f"/tickets/{ticket['id']}/conversations", params={"per_page": 2})
    assert [c["body"] for c in first.json()] == ["n0", "n1"]
    follow = api.session.get(first.links["next"]["url"], timeout=5)
    assert [c["body"] for c in follow.json()] == ["n2", "n3"]
    last = api.call("GET", f"/tickets/{ticket['id']}/conversations", params={"per_page": 2, "page": 3})
    assert [c["body"] for c in last.json()] == ["n4"] and "next" not in last.links
    assert api.call("GET", f"/tickets/{ticket['id']}/conversations", params={"per_page": 101}).status_code == 400


def test_multipart_attachments_have_a_size_limit_and_signed_links(desk):
    api = Api(desk)
    ticket = api.ticket()
    path = f"/tickets/{ticket['id']}/notes"
    note = api.ok(
        "POST",
        path,
        201,
        data={"body": "see", "private": "false"},
        files=[("attachments[]", ("a.txt", b"hi", "text/plain"))],
    )
    assert note["private"] is False
    url = note["attachments"][0]["attachment_url"]
    assert requests.get(url, timeout=5).content == b"hi"  # pre-signed: no credentials
    assert requests.get(url.replace("Signature=", "Signature=0"), timeout=5).status_code == 403
    desk.attachment_url_ttl = -1
    expired = api.ok("GET", f"/tickets/{ticket['id']}/conversations")[0]["attachments"][0]["attachment_url"]
    assert requests.get(expired, timeout=5).status_code == 403
    desk.attachment_url_ttl = FreshdeskStandin.attachment_url_ttl
    big = [("attachments[]", ("big.bin", b"x" * (20 * 1024 * 1024 + 1), "application/octet-stream"))]
    assert api.call("POST", path, data={"body": "big"}, files=big).status_code == 400


# --- search ---------------------------------------------------------------------------------
def test_search_by_tag_sees_tickets_only_once_indexed(desk):
    api = Api(desk)
    desk.search_lag = 0.3
    ticket = api.ticket(tags=["hitl-abc"])
    query = {"query": "\"tag:'hitl-abc'\""}
    assert api.ok("GET", "/search/tickets", params=query) == {"results": [], "total": 0}
    time.sleep(0.35)
    assert [t["id"] for t in api.ok("GET", "/search/tickets", params=query)["results"]] == [ticket["id"]]
    assert api.call("GET", "/search/tickets", params={"query": "tag:'hitl-abc'"}).status_code == 400


# --- rate limits ----------------------------------------------------------------------------
def test_every_answer_reports_the_budget_and_429_says_when_to_retry(desk):
    api = Api(desk)
    desk.rate_limit_total = 3
    first = api.call("GET", "/agents/me")
    assert (first.headers["X-RateLimit-Total"], first.headers["X-RateLimit-Remaining"]) == ("3", "2")
    assert first.headers["X-RateLimit-Used-CurrentRequest"] == "1"
    api.call("GET", "/agents/me")
    assert api.call("GET", "/tickets/1").status_code == 404  # invalid requests count too
    limited = api.call("GET", "/agents/me")
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 61


# --- automation rules and their webhooks ----------------------------------------------------
def test_rules_are_validated(desk, receiver):
    api = Api(desk)
    bad = rule("ftp://x", performer={"type": 9}, events=[{"field_name": "bogus"}])
    errors = api.call("POST", "/automations/4/rules", json=bad).json()["errors"]
    assert {e["field"] for e in errors} == {"performer", "events", "url"}
    assert api.call("POST", "/automations/2/rules", json=rule(receiver.base_url + "/hooks")).status_code == 404
    created = api.ok("POST", "/automations/4/rules", 201, json=rule(receiver.base_url + "/hooks"))
    assert api.ok("GET", f"/automations/4/rules/{created['id']}")["active"] is True
    assert api.call("GET", f"/automations/1/rules/{created['id']}").status_code == 404
    assert [r["id"] for r in api.ok("GET", "/automations/4/rules")["rules"]] == [created["id"]]
    api.ok("DELETE", f"/automations/4/rules/{created['id']}", 204)


def test_agent_reply_fires_the_rule_with_headers_and_string_placeholders(desk, receiver):
    api = Api(desk)
    api.ok("POST", "/automations/4/rules", 201, json=rule(receiver.base_url + "/hooks"))
    ticket = api.ticket(tags=["hitl"])
    other = api.ticket(tags=["unrelated"])
    agent = desk.add_agent("Jane", "jane@example.com")
    desk.assign(ticket["id"], agent)  # no matching event: no webhook
    desk.agent_reply(other["id"], agent, "not ours")  # condition fails: no webhook
    desk.agent_reply(ticket["id"], agent, "Hello")
    desk.resolve(ticket["id"], None)  # performed by the system: the agent rule does not run
    desk.resolve(ticket["id"], agent, status=5)  # to 5, not 4: no match
    desk.wait_webhooks_idle()
    (hook,) = receiver.hooks()
    assert hook["headers"]["x-secret"] == "s3" and hook["headers"]["content-type"] == "application/json"
    assert json.loads(hook["body"]) == {"id": str(ticket["id"]), "status": "Open", "who": "Jane"}


def test_failed_webhook_is_retried_on_freshdesks_schedule_then_reported(desk, receiver):
    api = Api(desk)
    api.ok("POST", "/automations/4/rules", 201, json=rule(receiver.base_url + "/hooks"))
    ticket = api.ticket(tags=["hitl"])
    agent = desk.add_agent("Jane", "jane@example.com")
    receiver.statuses = [500, 503]
    desk.agent_reply(ticket["id"], agent, "one")
    desk.wait_webhooks_idle()
    assert [d["status"] for d in desk.webhook_deliveries()] == [500, 503, 200]
    receiver.statuses = [500] * 4
    desk.agent_reply(ticket["id"], agent, "two")
    desk.wait_webhooks_idle()
    assert [d["attempt"] for d in desk.webhook_deliveries()[3:]] == [1, 2, 3, 4]
    assert desk.failure_emails() == [{"rule_id": desk.rules()[0]["id"], "url": receiver.base_url + "/hooks"}]


def test_updates_through_the_api_fire_rules_as_the_key_owner(desk, receiver):
    api = Api(desk)
    api.ok("POST", "/automations/4/rules", 201, json=rule(receiver.base_url + "/hooks"))
    ticket = api.ticket(tags=["hitl"])
    api.ok("PUT", f"/tickets/{ticket['id']}", json={"status": 4})
    desk.wait_webhooks_idle()
    assert json.loads(receiver.hooks()[0]["body"])["status"] == "Resolved"


def test_injected_faults_and_duplicate_deliveries(desk, receiver):
    api = Api(desk)
    desk.add_fault("GET", "/agents/me", kind="rate_limit", retry_after=9, times=1)
    limited = api.call("GET", "/agents/me")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "9"
    api.ok("POST", "/automations/4/rules", 201, json=rule(receiver.base_url + "/hooks"))
    ticket = api.ticket(tags=["hitl"])
    desk.add_webhook_fault("duplicate")
    desk.agent_reply(ticket["id"], desk.add_agent("Jane", "jane@example.com"), "hi")
    desk.wait_webhooks_idle()
    assert len(receiver.hooks()) == 2


def test_agent_desk_page_shows_tickets_and_its_buttons_fire_rules(receiver):
    from standins.demo_pages import DeskFreshdesk

    desk = DeskFreshdesk().start()
    try:
        api = Api(desk, key="freshdesk-key")
        doorbell = rule(receiver.base_url + "/hooks")
        doorbell["actions"][0]["content"] = {"ticket_id": "{{ticket.id}}", "performer": "agent"}
        api.ok("POST", "/automations/4/rules", 201, json=doorbell)
        ticket = api.ticket(tags=["hitl"])
        page = requests.get(f"{desk.base_url}/a/tickets/{ticket['id']}", timeout=5)
        assert page.status_code == 200 and 'data-solve-action="resolve"' in page.text
        agent = requests.post(
            f"{desk.base_url}/__standin__/agents", json={"name": "Jane", "email": "j@x.io"}, timeout=5
        )
        control = f"{desk.base_url}/__standin__/tickets/{ticket['id']}"
        requests.post(f"{control}/reply", json={"agent_id": agent.json()["id"], "body": "Hi"}, timeout=5)
        desk.wait_webhooks_idle()
        view = requests.get(f"{desk.base_url}/__demo__/desk", timeout=5).json()
        (shown,) = view["tickets"]
        assert [c["via"] for c in shown["comments"]] == ["chat", "reply"] and shown["status"] == "open"
        assert [h["status"] for h in shown["webhooks"]] == [200] and view["agents"][0]["name"] == "Jane"
    finally:
        desk.stop()
