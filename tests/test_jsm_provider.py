"""Jira Service Management: webhook parsing and signatures, wiki parts, errors, settings, and the
adapter against its stand-in (what the contract and end-to-end suites do not single out)."""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug import Response

from outbound.http import PermanentError, RetryableError, make_session
from providers.base import (
    ExternalUserSpec,
    OutboundMessage,
    ParsedWebhook,
    TicketSpec,
    WebhookInvalid,
    WebhookRejected,
)
from providers.jsm import provider as jsm_provider
from providers.jsm.entity import JsmHitlSessionSerializer
from providers.jsm.errors import describe_jsm_error
from providers.jsm.provider import JsmProvider, comment_text, reference_marker
from providers.jsm.webhooks import (
    IDENTIFIER_HEADER,
    SIGNATURE_HEADER,
    signature_compute,
    signature_verify,
    webhook_definition,
    webhook_parse,
)
from providers.jsm.wiki import wiki_to_parts
from standins.jsm import JsmStandin

EMAIL, TOKEN = "unit@acme.test", "jsm_unit_token"
OURS = "5b10ac8d82e05b22cc7d4ef5"


def _body(**data) -> bytes:
    return json.dumps(data).encode()


def _comment(author="agent-1", public=True, **extra) -> dict:
    return {"id": "10001", "body": "hi", "author": {"accountId": author}, "jsdPublic": public, **extra}


# --- parsing ------------------------------------------------------------------------------------
def test_an_assignment_rings_and_its_identifier_is_the_key():
    body = _body(
        webhookEvent="jira:issue_updated",
        issue={"id": "10002", "key": "HELP-2"},
        changelog={"items": [{"field": "assignee", "fieldId": "assignee", "to": "agent-1"}]},
    )
    parsed = webhook_parse(headers={IDENTIFIER_HEADER: "d1"}, body=body, installation={"account_id": OURS})
    assert parsed == ParsedWebhook(
        dedup_key="jsm:d1", event_type="jira:issue_updated", ticket_external_id="10002", events=[], doorbell=True
    )
    retried = webhook_parse(headers={IDENTIFIER_HEADER: "d1", "x-atlassian-webhook-retry": "1"}, body=body)
    assert retried.dedup_key == parsed.dedup_key, "Jira keeps the identifier across retries"


@pytest.mark.parametrize(
    ("comment", "rings"),
    [
        (_comment(), True),
        (_comment(public=False), False),  # an internal note
        (_comment(author=OURS), False),  # our own relayed message
        ({k: v for k, v in _comment().items() if k != "jsdPublic"}, True),  # not a JSM project
    ],
)
def test_comments_ring_only_when_public_and_not_ours(comment, rings):
    for event in ("jira:issue_updated", "comment_created"):
        body = _body(webhookEvent=event, issue={"id": "7"}, comment=comment, issue_event_type_name="issue_commented")
        parsed = webhook_parse(headers={}, body=body, installation={"account_id": OURS})
        assert parsed.doorbell is rings and parsed.events == []


def test_an_update_of_other_fields_is_dropped_without_a_read():
    body = _body(webhookEvent="jira:issue_updated", issue={"id": "7"}, changelog={"items": [{"field": "labels"}]})
    assert webhook_parse(headers={}, body=body).doorbell is False
    moved = _body(webhookEvent="jira:issue_updated", issue={"id": "7"}, changelog={"items": [{"field": "status"}]})
    assert webhook_parse(headers={}, body=moved).doorbell is True


def test_without_an_identifier_the_key_is_the_signed_body():
    body = _body(webhookEvent="jira:issue_updated", issue={"id": "7"})
    first, second = webhook_parse(headers={}, body=body), webhook_parse(headers={IDENTIFIER_HEADER: " "}, body=body)
    assert first.dedup_key == second.dedup_key and first.dedup_key.startswith("jsm:body-")
    other = webhook_parse(headers={}, body=_body(webhookEvent="jira:issue_updated", issue={"id": "8"}))
    assert other.dedup_key != first.dedup_key


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b"\xff\xfe", "body"),
        (_body(webhookEvent="jira:issue_deleted", issue={"id": "1"}), "webhookEvent"),
        (_body(issue={"id": "1"}), "webhookEvent"),
        (_body(webhookEvent="jira:issue_updated"), "issue"),
        (_body(webhookEvent="jira:issue_updated", issue={"id": ""}), "issue.id"),
        (_body(webhookEvent="jira:issue_updated", issue={"id": "HELP-1"}), "issue.id"),
        (_body(webhookEvent="jira:issue_updated", issue={"id": "1" * 65}), "issue.id"),
        (_body(webhookEvent="jira:issue_updated", issue={"id": ["1"]}), "issue.id"),
        (_body(webhookEvent="comment_created", issue={"id": "1"}), "comment"),
        (_body(webhookEvent="comment_created", issue={"id": "1"}, comment=_comment(public="yes")), "comment.jsdPublic"),
        (_body(webhookEvent="jira:issue_updated", issue={"id": "1"}, changelog={"items": "x"}), "changelog.items"),
        (_body(webhookEvent="jira:issue_updated", issue={"id": "1"}, changelog=[]), "changelog"),
    ],
)
def test_malformed_bodies_name_the_field(body, field):
    with pytest.raises(WebhookInvalid) as caught:
        webhook_parse(headers={}, body=body)
    assert caught.value.field == field


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_shaped = st.fixed_dictionaries(
    {
        "webhookEvent": st.sampled_from(["jira:issue_updated", "comment_created", "x"]) | _json,
        "issue": st.fixed_dictionaries({"id": st.sampled_from(["10001", "", "x"]) | _json}) | _json,
    },
    optional={
        "comment": st.fixed_dictionaries(
            {},
            optional={
                "jsdPublic": st.booleans() | _json,
                "author": st.fixed_dictionaries({}, optional={"accountId": st.text(max_size=8) | _json}) | _json,
            },
        )
        | _json,
        "changelog": st.fixed_dictionaries(
            {}, optional={"items": st.lists(st.dictionaries(st.sampled_from(["field", "fieldId"]), _json)) | _json}
        )
        | _json,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=200)
    | _json.map(lambda v: json.dumps(v).encode())
    | _shaped.map(lambda v: json.dumps(v).encode()),
    identifier=st.text(max_size=200),
    installation=st.none() | st.fixed_dictionaries({"account_id": _json}),
)
def test_the_parser_raises_nothing_but_webhook_invalid(body, identifier, installation):
    try:
        parsed = webhook_parse(headers={IDENTIFIER_HEADER: identifier}, body=body, installation=installation)
    except WebhookInvalid as exc:
        assert exc.field
        return
    assert parsed.ticket_external_id.isdigit() and len(parsed.dedup_key) <= 140


@settings(max_examples=200, deadline=None)
@given(
    signature=st.text(max_size=120),
    body=st.binary(max_size=100),
    secret=st.text(max_size=40),
)
def test_verification_raises_nothing_but_webhook_rejected(signature, body, secret):
    try:
        signature_verify(headers={SIGNATURE_HEADER: signature}, body=body, secret=secret)
    except WebhookRejected:
        return
    assert signature == signature_compute(secret=secret, body=body) or signature.lower().startswith("sha256=")


def test_a_captured_delivery_under_a_new_identifier_has_the_same_replay_key():
    body = _body(webhookEvent="jira:issue_updated", issue={"id": "7"}, timestamp=1)
    first = JsmProvider.webhook_replay_key(headers={IDENTIFIER_HEADER: "a"}, body=body)
    assert first == JsmProvider.webhook_replay_key(headers={IDENTIFIER_HEADER: "b"}, body=body)
    assert first != JsmProvider.webhook_replay_key(headers={}, body=body + b" ") and len(first) <= 128


# --- signature ----------------------------------------------------------------------------------
def test_signature_is_sha256_hex_of_the_raw_body():
    body = b'{"webhookEvent":"jira:issue_updated"}'
    good = signature_compute(secret="s3cret", body=body)
    assert good.startswith("sha256=") and len(good) == 7 + 64
    signature_verify(headers={SIGNATURE_HEADER: good}, body=body, secret="s3cret")
    signature_verify(headers={SIGNATURE_HEADER: good.upper().replace("SHA256", "sha256")}, body=body, secret="s3cret")
    for headers, secret in [
        ({}, "s3cret"),
        ({SIGNATURE_HEADER: good}, ""),
        ({SIGNATURE_HEADER: good}, "other"),
        ({SIGNATURE_HEADER: "sha1=" + good[7:47]}, "s3cret"),
        ({SIGNATURE_HEADER: good[7:]}, "s3cret"),
    ]:
        with pytest.raises(WebhookRejected):
            signature_verify(headers=headers, body=body, secret=secret)
    with pytest.raises(WebhookRejected):
        signature_verify(headers={SIGNATURE_HEADER: good}, body=body + b" ", secret="s3cret")


def test_the_registered_webhook_is_an_admin_webhook_with_a_secret():
    definition = webhook_definition(url="https://gw.example/webhooks/jsm/1/", secret="abc", project_key="HELP")
    assert definition["secret"] == "abc" and definition["events"] == ["jira:issue_updated"]
    assert definition["filters"] == {"issue-related-events-section": 'project = "HELP"'}


# --- wiki, comments, errors, entity -------------------------------------------------------------
def test_wiki_references_become_media_parts_in_place():
    files = {
        "shot.png": {"content": "https://acme.atlassian.net/rest/api/2/attachment/content/1", "mimeType": "image/png"},
        "refund.pdf": {"content": "https://acme.atlassian.net/rest/api/2/attachment/content/2"},
        "evil.txt": {"content": "javascript:alert(1)"},
    }
    parts = wiki_to_parts("Look:\n!shot.png|thumbnail!\nthen [^refund.pdf] and [^missing.doc] [^evil.txt]", files)
    assert [(p.kind, p.text or p.filename) for p in parts] == [
        ("text", "Look:"),
        ("media", "shot.png"),
        ("text", "then"),
        ("media", "refund.pdf"),
        ("text", "and [^missing.doc] [^evil.txt]"),
    ]
    assert parts[1].content_type == "image/png" and parts[3].url.endswith("/content/2")


def test_comment_text_names_its_real_author():
    user = OutboundMessage(
        type="text", payload={"text": "Hello", "userId": "u1"}, author_external_id="qm:1", author_name="Ada Lovelace"
    )
    assert comment_text(user) == ("Ada Lovelace (customer): Hello", [])
    bot = OutboundMessage(
        type="bloc",
        author_external_id="noemail:x",
        author_name="Botpress",
        payload={
            "items": [
                {"type": "text", "payload": {"text": "See"}},
                {"type": "image", "payload": {"imageUrl": "https://cdn.example/a.png", "title": "map"}},
            ]
        },
    )
    text, urls = comment_text(bot)
    assert text == "Botpress (bot): See\n\nImage: map\nhttps://cdn.example/a.png" and urls == [
        "https://cdn.example/a.png"
    ]


def _response(status: int, body) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, json.dumps(body).encode()
    return response


def test_both_error_envelopes_are_described():
    service_desk = {"errorMessage": "Summary is required.", "i18nErrorMessage": {"i18nKey": "sd.x", "parameters": []}}
    assert describe_jsm_error(_response(400, service_desk)) == ("sd.x", "Summary is required.")
    platform = {"errorMessages": ["Bad."], "errors": {"resolution": "Resolution is required."}}
    assert describe_jsm_error(_response(400, platform)) == ("resolution", "Bad.; resolution: Resolution is required.")
    assert describe_jsm_error(_response(502, ["?"]))[0] == "HTTP502"


@pytest.mark.parametrize(
    ("entity", "field"),
    [
        ({"priority": "critical"}, "priority"),
        ({"labels": ["two words"]}, "labels"),
        ({"fields": {"summary": "x"}}, "fields"),
        ({"fields": {"not a field": 1}}, "fields"),
        ({"components": [""]}, "components"),
    ],
)
def test_entity_errors_name_the_field(entity, field):
    serializer = JsmHitlSessionSerializer(data=entity)
    assert not serializer.is_valid() and field in serializer.errors


# --- the adapter against the stand-in -------------------------------------------------------------
@pytest.fixture
def standin():
    server = JsmStandin(email=EMAIL, api_token=TOKEN).start()
    server.webhook_retry_delays = ()
    jsm_provider.FIELDS_CACHE.reset()
    yield server
    server.stop()


def _adapter(standin, **settings_) -> JsmProvider:
    credentials = {"email": EMAIL, "api_token": TOKEN, "service_desk_id": "1", "request_type_id": "10"} | settings_
    return JsmProvider(
        base_url=standin.base_url, credentials=credentials, session=make_session(pool_size=2), timeout=(2.0, 5.0)
    )


def _request(adapter, **extras):
    requester = adapter.external_user_upsert(
        ExternalUserSpec(reference=f"u-{uuid.uuid4().hex}", name="Ada", email=f"{uuid.uuid4().hex[:8]}@x.test")
    )
    spec = TicketSpec(
        requester_external_id=requester, subject="Help", body="transcript", reference="c-1", extras=extras
    )
    return adapter.ticket_create(spec, idempotency_key="k")


def test_set_up_names_what_is_wrong(standin):
    with pytest.raises(PermanentError, match="service_desk_id 9"):
        _adapter(standin, service_desk_id="9").webhook_install(url="http://127.0.0.1:9/x", previous_state={})
    with pytest.raises(PermanentError, match="request_type_id 99"):
        _adapter(standin, request_type_id="99").webhook_install(url="http://127.0.0.1:9/x", previous_state={})
    with pytest.raises(PermanentError, match="comment_visibility"):
        _adapter(standin, comment_visibility="loud").webhook_install(url="http://127.0.0.1:9/x", previous_state={})
    assert not standin.webhooks()
    installed = _adapter(standin, request_type_id="11").webhook_install(url="http://127.0.0.1:9/x", previous_state={})
    assert installed.state["required_fields"] == ["customfield_10050", "summary"]
    assert installed.state["account_id"] == standin.api_account_id and installed.state["project_key"] == "HELP"
    [webhook] = standin.webhooks()
    assert webhook["secret"] == installed.signing_secret and webhook["id"] == installed.state["webhook_id"]


def test_request_fields_are_checked_against_the_request_type(standin):
    adapter = _adapter(standin)
    ref = _request(adapter, priority="high", labels=["vip"], components=["Web"], fields={"customfield_10010": "42"})
    values = standin.issue(ref.external_id)["fields"]
    assert values["priority"] == {"name": "High"} and values["labels"] == ["vip"] and ref.priority == "High"
    assert values["customfield_10010"] == "42" and ref.url.endswith("/browse/HELP-1")
    with pytest.raises(PermanentError, match=r"hitlSession\.fields\.customfield_99: request type 10 has no field"):
        _request(adapter, fields={"customfield_99": "x"})
    with pytest.raises(PermanentError, match="requires customfield_10050"):
        _request(_adapter(standin, request_type_id="11"))
    assert len(standin.issues()) == 1, "refused before anything was sent"


def test_comment_visibility_is_a_setting(standin):
    ref = _request(_adapter(standin))
    message = OutboundMessage(type="text", payload={"text": "hi"}, author_external_id="x", author_name="Ada")
    internal = _adapter(standin).message_post(ticket_external_id=ref.external_id, message=message)
    public = _adapter(standin, comment_visibility="public").message_post(
        ticket_external_id=ref.external_id, message=message
    )
    by_id = {c["id"]: c["jsdPublic"] for c in standin.comments(ref.external_id)}
    assert by_id == {internal: False, public: True}


def test_close_takes_a_transition_into_done_with_an_internal_note(standin):
    adapter = _adapter(standin)
    ref = _request(adapter)
    adapter.ticket_close(ticket_external_id=ref.external_id)
    issue = standin.issue(ref.external_id)["fields"]
    assert issue["status"]["name"] == "Resolved" and issue["resolution"] == {"name": "Done"}
    [note] = standin.comments(ref.external_id)
    assert note["jsdPublic"] is False and "left" in note["body"]
    transitions = standin.requests_log(method="POST", path_regex=r"/transitions$")
    assert [e["json"]["transition"]["id"] for e in transitions] == ["21"], "found through the transitions API"


def test_a_429_with_only_a_reset_time_is_retried_after_it(standin):
    adapter = _adapter(standin)
    standin.add_fault(method="GET", path=r"/rest/api/2/myself$", kind="rate_limit", retry_after=120, times=1)
    jsm_provider._ACCOUNT_IDS.clear()
    with pytest.raises(RetryableError) as caught:
        adapter._account_id()
    assert caught.value.status_code == 429 and 60 <= caught.value.retry_after <= 121
    [entry] = standin.requests_log(path_regex="myself")
    assert entry["status"] == 429


def test_the_service_desk_envelope_is_used_on_its_paths(standin):
    adapter = _adapter(standin)
    with pytest.raises(PermanentError) as caught:
        adapter._json("GET", "/rest/servicedeskapi/request/999999")
    assert caught.value.status_code == 404 and caught.value.error_type == "sd.rest.error.not.found"
    with pytest.raises(PermanentError) as caught:
        adapter._json("GET", "/rest/api/2/issue/999999")
    assert caught.value.error_type == "HTTP404" and "does not exist" in caught.value.message
    standin.add_fault(path=r"^/rest/servicedeskapi/servicedesk$", kind="status", status=503, times=1)
    with pytest.raises(RetryableError) as caught:
        adapter._json("GET", "/rest/servicedeskapi/servicedesk")
    assert caught.value.error_type == "sd.rest.error.server", "an injected fault takes the path's envelope too"


def test_deliveries_are_signed_and_retried_under_one_identifier(standin, httpserver):
    httpserver.expect_request("/hook").respond_with_data("busy", status=503)
    standin.webhook_retry_delays = (0.05, 0.05)
    adapter = _adapter(standin)
    installed = adapter.webhook_install(url=httpserver.url_for("/hook"), previous_state={})
    ref = _request(adapter)
    agent = standin.add_agent("Grace", "grace@acme.test")
    standin.assign(ref.external_id, agent)
    standin.wait_webhooks_idle()
    attempts = standin.webhook_deliveries()
    assert [d["attempt"] for d in attempts] == [1, 2, 3]
    assert len({d["headers"][IDENTIFIER_HEADER.title()] for d in attempts}) == 1
    assert [d["headers"].get("X-Atlassian-Webhook-Retry") for d in attempts] == [None, "1", "2"]
    for delivery in attempts:
        headers = {k.lower(): v for k, v in delivery["headers"].items()}
        adapter.webhook_verify(
            headers=headers, body=delivery["body"], secret=installed.signing_secret, now=None, window=None
        )
        parsed = adapter.webhook_parse(headers=headers, body=delivery["body"], installation=installed.state)
        assert parsed.doorbell and parsed.ticket_external_id == ref.external_id


@pytest.mark.parametrize(
    ("statuses", "fault", "attempts"),
    [
        ((400,), "", [(1, 400)]),  # a refusal that retrying cannot change
        ((429, 200), "", [(1, 429), (2, 200)]),
        ((200, 200), "duplicate", [(1, 200), (1, 200)]),  # the whole delivery again
        ((), "drop", []),
    ],
)
def test_which_answers_are_retried_and_the_faults(standin, httpserver, statuses, fault, attempts):
    answers = iter(statuses)
    httpserver.expect_request("/hook").respond_with_handler(lambda request: Response("", status=next(answers)))
    standin.webhook_retry_delays = (0.05, 0.05)
    adapter = _adapter(standin)
    adapter.webhook_install(url=httpserver.url_for("/hook"), previous_state={})
    ref = _request(adapter)
    agent = standin.add_agent("Grace", "grace@acme.test")
    standin.wait_webhooks_idle()
    before = len(standin.webhook_deliveries())
    if fault:
        standin.add_webhook_fault(fault)
    standin.assign(ref.external_id, agent)
    standin.wait_webhooks_idle()
    sent = standin.webhook_deliveries()[before:]
    assert [(d["attempt"], d["status"]) for d in sent] == attempts
    assert len({d["headers"][IDENTIFIER_HEADER.title()] for d in sent}) <= 1, "one identifier across copies"


def test_the_read_relays_agent_comments_with_files_then_assignment_and_stop(standin):
    adapter = _adapter(standin)
    installed = adapter.webhook_install(url="http://127.0.0.1:9/x", previous_state={})
    ref = _request(adapter)
    agent = standin.add_agent("Grace", "grace@acme.test")
    standin.assign(ref.external_id, agent)
    png = {"filename": "a.png", "content_type": "image/png", "content": b"\x89PNG"}
    standin.agent_reply(ref.external_id, agent, "Here", attachments=[png])
    standin.agent_reply(ref.external_id, agent, "secret note", internal=True)
    standin.customer_reply(ref.external_id, "thanks")
    mine = OutboundMessage(type="text", payload={"text": "x"}, author_external_id="x", author_name="Ada")
    adapter.message_post(ticket_external_id=ref.external_id, message=mine)
    standin.resolve(ref.external_id, agent)
    parsed = ParsedWebhook(
        dedup_key="k", event_type="jira:issue_updated", ticket_external_id=ref.external_id, events=[], doorbell=True
    )
    events = adapter.webhook_events_fetch(parsed=parsed, installation=installed.state, known_message_ids=set())
    assert [e.kind for e in events] == ["agent_message", "assigned", "stopped"]
    reply = events[0]
    assert reply.text == "Here" and [p.kind for p in reply.parts] == ["text", "media"]
    media = adapter.attachment_download(url=reply.parts[1].url)
    assert media.content == b"\x89PNG" and media.filename == "a.png" and media.content_type == "image/png"
    profile = adapter.agent_profile_fetch(external_id=agent)
    assert profile.name == "Grace" and profile.picture_url and adapter.agent_profile_fetch(external_id="nobody") is None
    again = adapter.webhook_events_fetch(
        parsed=parsed, installation=installed.state, known_message_ids={reply.message_external_id}
    )
    assert [e.kind for e in again] == ["assigned", "stopped"]


def test_a_file_attached_between_the_two_reads_is_still_relayed_as_media(standin, monkeypatch):
    """The agent replies with a file after the issue was read and before its comments are: the
    comment names a file the first read did not list, so the files are read again."""
    adapter = _adapter(standin)
    installed = adapter.webhook_install(url="http://127.0.0.1:9/x", previous_state={})
    ref = _request(adapter)
    agent = standin.add_agent("Grace", "grace@acme.test")
    png = {"filename": "late.png", "content_type": "image/png", "content": b"\x89PNG"}
    comments = JsmProvider._comments

    def reply_then_read(self, issue_id):
        standin.agent_reply(ref.external_id, agent, "Here", attachments=[png])
        return comments(self, issue_id)

    monkeypatch.setattr(JsmProvider, "_comments", reply_then_read)
    parsed = ParsedWebhook(
        dedup_key="k", event_type="comment_created", ticket_external_id=ref.external_id, events=[], doorbell=True
    )
    before = len(standin.requests_log())
    [reply] = adapter.webhook_events_fetch(parsed=parsed, installation=installed.state, known_message_ids=set())
    assert [(p.kind, p.filename) for p in reply.parts] == [("text", ""), ("media", "late.png")]
    issue_reads = [e for e in standin.requests_log()[before:] if e["path"].endswith(f"/issue/{ref.external_id}")]
    assert len(issue_reads) == 2


def test_reference_marker_is_fixed_length_and_distinct():
    assert len(reference_marker("a")) == len(reference_marker("b" * 500)) == 29
    assert reference_marker("a") != reference_marker("b")
