"""Slack's adapter against its stand-in, and its parsers on any input (Hypothesis).

Protocol facts checked here come from Slack's documentation (signature v0 and its test vector,
url_verification, ``block_actions`` payloads sent form-encoded, 200 + ``ok: false`` errors, 429
with ``Retry-After``); the whole session runs in ``tests/test_e2e_desks.py`` and
``tests/test_slack_e2e.py``.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug import Response

from outbound.http import PermanentError, RetryableError, make_session
from outbound.media import MediaFile
from providers.base import InboundEvent, OutboundMessage, TicketSpec, WebhookInvalid, WebhookRejected
from providers.slack import SlackProvider
from providers.slack import provider as slack_provider
from providers.slack.manifest import app_manifest
from providers.slack.webhooks import mrkdwn_to_text, signature_verify, webhook_parse
from standins.slack import SlackStandin, sign

TOKEN, SECRET, CHANNEL = "xoxb-unit", "unit-signing-secret", "C0UNIT"
INSTALLATION = {"bot_user_id": "U0BOT", "bot_id": "B0BOT", "channel_id": CHANNEL}
WINDOW = timedelta(minutes=5)


@pytest.fixture
def standin(db):  # the channel's pace is kept in the database
    server = SlackStandin(bot_token=TOKEN, signing_secret=SECRET, channel_id=CHANNEL)
    server.retry_time_scale = 0
    slack_provider.PACER.reset()
    with server:
        yield server
    slack_provider.PACER.reset()


def _adapter(standin, **credentials) -> SlackProvider:
    return SlackProvider(
        base_url=standin.base_url,
        credentials={"bot_token": TOKEN, "signing_secret": SECRET, "channel_id": CHANNEL} | credentials,
        session=make_session(pool_size=2),
        timeout=(2.0, 3.0),
        media_fetcher=lambda url: MediaFile(filename="a.png", content_type="image/png", content=b"\x89PNG"),
    )


def _thread(adapter) -> str:
    spec = TicketSpec(requester_external_id="bp-x", subject="Help", body="I need help", reference=str(uuid.uuid4()))
    return adapter.ticket_create(spec, idempotency_key="k").external_id


# --- signature v0 ---------------------------------------------------------------------------
# The example of Slack's "Verifying requests from Slack" page, also in slack_sdk's tests.
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TIMESTAMP = "1531420618"
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def _headers(signature: str, timestamp: str = DOC_TIMESTAMP) -> dict:
    return {"x-slack-signature": signature, "x-slack-request-timestamp": timestamp}


def test_the_documented_signature_example_verifies_and_the_stand_in_signs_alike():
    at = datetime.fromtimestamp(int(DOC_TIMESTAMP), UTC)
    signature_verify(headers=_headers(DOC_SIGNATURE), body=DOC_BODY, secret=DOC_SECRET, now=at, window=WINDOW)
    assert sign(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY) == DOC_SIGNATURE


@pytest.mark.parametrize(
    ("headers", "body", "seconds_later"),
    [
        (_headers(DOC_SIGNATURE), DOC_BODY + b"x", 0),  # the body changed
        (_headers(DOC_SIGNATURE.replace("a2", "b2", 1)), DOC_BODY, 0),  # another signature
        (_headers(DOC_SIGNATURE), DOC_BODY, 301),  # more than five minutes late
        (_headers(DOC_SIGNATURE), DOC_BODY, -301),  # or early
        ({"x-slack-signature": DOC_SIGNATURE}, DOC_BODY, 0),
        ({"x-slack-request-timestamp": DOC_TIMESTAMP}, DOC_BODY, 0),
        (_headers(DOC_SIGNATURE, "1531420618.5"), DOC_BODY, 0),
    ],
)
def test_a_changed_late_or_incomplete_request_is_refused(headers, body, seconds_later):
    at = datetime.fromtimestamp(int(DOC_TIMESTAMP) + seconds_later, UTC)
    with pytest.raises(WebhookRejected):
        signature_verify(headers=headers, body=body, secret=DOC_SECRET, now=at, window=WINDOW)


def test_url_verification_is_answered_with_its_challenge():
    body = json.dumps(
        {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}
    )
    parsed = webhook_parse(headers={"content-type": "application/json"}, body=body.encode())
    assert parsed.reply == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


# --- parsing: properties ----------------------------------------------------------------------
ts_values = st.builds(lambda a, b: f"{a}.{b:06d}", st.integers(1_000_000_000, 2_000_000_000), st.integers(0, 999_999))
user_ids = st.from_regex(r"U[A-Z0-9]{8}", fullmatch=True)
subtypes = st.sampled_from(
    ["", "file_share", "thread_broadcast", "message_changed", "message_deleted", "bot_message", "channel_join"]
)


@st.composite
def message_events(draw):
    root = draw(ts_values)
    reply = draw(st.one_of(st.just(root), ts_values))
    event = {
        "type": "message",
        "channel": draw(st.sampled_from([CHANNEL, "C0OTHER"])),
        "user": draw(st.one_of(user_ids, st.just("U0BOT"))),
        "text": draw(st.text(max_size=200)),
        "ts": reply,
    }
    if draw(st.booleans()):
        event["thread_ts"] = root
    subtype = draw(subtypes)
    if subtype:
        event["subtype"] = subtype
    if draw(st.booleans()):
        event["bot_id"] = "B0SOMEBOT"
    return event


@given(event=message_events(), event_id=st.from_regex(r"Ev[A-Z0-9]{10}", fullmatch=True))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_only_a_human_reply_in_a_thread_of_the_channel_is_relayed(event, event_id):
    body = json.dumps({"type": "event_callback", "event_id": event_id, "event": event}).encode()
    parsed = webhook_parse(headers={"content-type": "application/json"}, body=body, installation=INSTALLATION)
    relayed = (
        event["channel"] == CHANNEL
        and event.get("subtype", "") in ("", "file_share", "thread_broadcast")
        and "bot_id" not in event
        and event["user"] != "U0BOT"
        and event.get("thread_ts") not in (None, event["ts"])
        and bool(event["text"].strip())
    )
    assert bool(parsed.events) == relayed
    if relayed:
        [message] = parsed.events
        assert parsed.dedup_key == f"slack:{event_id}"
        assert (message.kind, message.ticket_external_id, message.message_external_id) == (
            "agent_message",
            event["thread_ts"],
            event["ts"],
        )
        assert message.agent.external_id == event["user"] and not message.agent.name
    else:
        assert parsed.reply is not None, "nothing to do: answered, not stored"


@given(
    body=st.binary(max_size=400),
    content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", ""]),
)
@settings(max_examples=300)
def test_any_body_parses_or_names_the_bad_field(body, content_type):
    try:
        webhook_parse(headers={"content-type": content_type}, body=body, installation=INSTALLATION)
    except WebhookInvalid as exc:
        assert exc.field


@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=12,
    )
)
@settings(max_examples=300)
def test_any_json_envelope_or_interaction_parses_or_names_the_bad_field(payload):
    for content_type, body in (
        ("application/json", json.dumps({"type": "event_callback", "event_id": "Ev1", "event": payload}).encode()),
        ("application/x-www-form-urlencoded", urlencode({"payload": json.dumps(payload)}).encode()),
    ):
        try:
            webhook_parse(headers={"content-type": content_type}, body=body, installation=INSTALLATION)
        except WebhookInvalid as exc:
            assert exc.field


@given(
    action=st.sampled_from(["hitl_take", "hitl_close", "other"]),
    user=user_ids,
    root=ts_values,
    channel=st.sampled_from([CHANNEL, "C0OTHER"]),
)
def test_a_button_press_is_assignment_or_stop_with_our_reference(action, user, root, channel):
    payload = {
        "type": "block_actions",
        "user": {"id": user, "name": "jane"},
        "container": {"type": "message", "message_ts": root, "channel_id": channel},
        "actions": [{"action_id": action, "value": "conv-1", "action_ts": "1700000000.1"}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    parsed = webhook_parse(
        headers={"content-type": "application/x-www-form-urlencoded"}, body=body, installation=INSTALLATION
    )
    if action == "other" or channel != CHANNEL:
        assert not parsed.events
        return
    [event] = parsed.events
    assert event.kind == ("assigned" if action == "hitl_take" else "stopped")
    assert (event.ticket_external_id, event.reference, event.agent.external_id) == (root, "conv-1", user)


@given(text=st.text(max_size=300))
def test_escaped_text_reads_back_as_written(text):
    assert mrkdwn_to_text(slack_provider.mrkdwn_escape(text)) == text
    assert "<" not in slack_provider.mrkdwn_escape(text)


def test_a_check_mark_reaction_on_a_root_stops_and_other_reactions_do_not():
    def parse(reaction):
        event = {"type": "reaction_added", "user": "U0AGENT1", "reaction": reaction}
        event["item"] = {"type": "message", "channel": CHANNEL, "ts": "1700000000.000100"}
        body = json.dumps({"type": "event_callback", "event_id": f"Ev{reaction[:8]}", "event": event}).encode()
        return webhook_parse(headers={"content-type": "application/json"}, body=body, installation=INSTALLATION)

    [stop] = parse("white_check_mark").events
    assert (stop.kind, stop.ticket_external_id, stop.agent.external_id) == ("stopped", "1700000000.000100", "U0AGENT1")
    assert not parse("thumbsup").events


# --- the adapter against the stand-in ---------------------------------------------------------
def test_set_up_names_what_is_wrong(standin):
    with pytest.raises(PermanentError, match="invalid_auth"):
        _adapter(standin, bot_token="xoxb-wrong").webhook_install(url="https://gw/x", previous_state={})
    with pytest.raises(PermanentError, match="channel_id: Slack finds no channel"):
        _adapter(standin, channel_id="C0NOPE").webhook_install(url="https://gw/x", previous_state={})
    with pytest.raises(PermanentError, match="/invite @hitl"):
        _adapter(standin, channel_id="C0ELSEWHERE").webhook_install(url="https://gw/x", previous_state={})
    installed = _adapter(standin).webhook_install(url="https://gw/x", previous_state={})
    assert installed.signing_secret == SECRET and installed.state["bot_user_id"] == "U0BOT"


def test_text_cannot_ping_or_forge_links_and_shows_its_author(standin):
    adapter = _adapter(standin)
    thread = _thread(adapter)
    text = "<!channel> look <https://evil.example|your bank> & <@U0AGENT1>"
    message = OutboundMessage(
        type="text",
        payload={"text": text},
        author_external_id="bp-x",
        author_name="Ada",
        author_picture_url="https://cdn.example.com/a.png",
    )
    posted = adapter.message_post(ticket_external_id=thread, message=message)
    [reply] = [m for m in standin.thread(thread) if m["ts"] == posted]
    assert reply["text"] == "&lt;!channel&gt; look &lt;https://evil.example|your bank&gt; &amp; &lt;@U0AGENT1&gt;"
    assert (reply["username"], reply["icon_url"]) == ("Ada", "https://cdn.example.com/a.png")
    log = standin.requests_log(path_regex=r"chat\.postMessage$")[-1]["json"]
    assert log["parse"] == "none" and log["unfurl_links"] is False


def test_media_is_uploaded_into_the_thread_with_files_upload_v2(standin):
    adapter = _adapter(standin)
    thread = _thread(adapter)
    message = OutboundMessage(
        type="image", payload={"imageUrl": "https://cdn.example.com/a.png"}, author_external_id="bp-x"
    )
    adapter.message_post(ticket_external_id=thread, message=message)
    paths = [e["path"] for e in standin.requests_log()][-4:]
    assert paths[0] == "/api/chat.postMessage" and paths[1] == "/api/files.getUploadURLExternal"
    assert paths[2].startswith("/upload/v1/") and paths[3] == "/api/files.completeUploadExternal"
    [share] = [m for m in standin.thread(thread) if m.get("subtype") == "file_share"]
    assert standin.file(share["files"][0])["content"] == b"\x89PNG"


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [
        ({"kind": "rate_limit", "retry_after": 7}, RetryableError, "ratelimited"),
        ({"kind": "status", "status": 503}, RetryableError, "internal_error"),
        ({"kind": "drop_after"}, RetryableError, "unreachable"),
    ],
)
def test_failures_become_retryable_with_retry_after(standin, fault, error, code):
    adapter = _adapter(standin)
    thread = _thread(adapter)
    standin.add_fault(method="POST", path=r"chat\.postMessage$", times=1, **fault)
    message = OutboundMessage(type="text", payload={"text": "x"}, author_external_id="bp-x")
    with pytest.raises(error) as raised:
        adapter.message_post(ticket_external_id=thread, message=message)
    assert raised.value.error_type == code
    if fault["kind"] == "rate_limit":
        assert raised.value.status_code == 429 and raised.value.retry_after == 7
        # The channel's next message waits for Retry-After: refused here without being sent.
        sent = len(standin.requests_log())
        with pytest.raises(RetryableError, match="pacing"):
            adapter.message_post(ticket_external_id=thread, message=message)
        assert len(standin.requests_log()) == sent
    else:
        assert raised.value.status_code in (503, None)


def test_ok_false_is_permanent(standin):
    adapter = _adapter(standin)
    message = OutboundMessage(type="text", payload={"text": "x"}, author_external_id="bp-x")
    with pytest.raises(PermanentError) as raised:
        adapter.message_post(ticket_external_id="1700000000.000001", message=message)
    assert raised.value.error_type == "thread_not_found"


def test_a_burst_is_paced_to_one_message_a_second_without_a_slack_429(standin):
    standin.post_burst = 1  # no burst allowance at all: one per second
    adapter = _adapter(standin)
    thread = _thread(adapter)
    message = OutboundMessage(type="text", payload={"text": "burst"}, author_external_id="bp-x")
    started, posted, refused = time.monotonic(), 0, 0
    while posted < 3:
        try:
            adapter.message_post(ticket_external_id=thread, message=message)
            posted += 1
        except RetryableError as exc:
            assert exc.error_type == "paced" and 0 < exc.retry_after <= 2.5
            refused += 1
            time.sleep(exc.retry_after)
    assert time.monotonic() - started >= 2.9
    assert all(e["status"] == 200 for e in standin.requests_log(path_regex=r"chat\.postMessage$"))


def test_a_reply_in_a_closed_thread_gets_an_ephemeral_note(standin):
    adapter = _adapter(standin)
    thread = _thread(adapter)
    agent = standin.add_agent("Jane Agent")
    event = InboundEvent(
        kind="agent_message", ticket_external_id=thread, agent=slack_provider.AgentProfile(external_id=agent)
    )
    adapter.ticket_stopped_reply(ticket_external_id=thread, event=event)
    [note] = standin.ephemeral()
    assert (note["user"], note["thread_ts"]) == (agent, thread) and "over" in note["text"]


def test_close_notes_once_and_closes_the_root(standin):
    adapter = _adapter(standin)
    thread = _thread(adapter)
    adapter.ticket_close(ticket_external_id=thread)
    adapter.ticket_close(ticket_external_id=thread)
    notes = [m for m in standin.thread(thread) if (m.get("metadata") or {}).get("event_type") == "hitl_closed"]
    root = standin.root(thread)
    assert len(notes) == 1 and root["metadata"]["event_payload"]["state"] == "closed"
    assert not [b for b in root["blocks"] if b["type"] == "actions"], "no buttons on a closed root"


def test_the_bot_token_goes_only_to_slack_hosts(standin):
    adapter = _adapter(standin)
    fetched = []
    adapter.media_fetcher = lambda url: fetched.append(url) or MediaFile("x.png", "image/png", b"x")
    adapter.attachment_download(url="https://elsewhere.example.com/files-pri/T-F1/x.png")
    assert fetched == ["https://elsewhere.example.com/files-pri/T-F1/x.png"], "another host: the guarded fetcher"
    thread = _thread(adapter)
    agent = standin.add_agent("Jane Agent")
    reply = standin.agent_reply(
        thread,
        agent,
        "see file",
        attachments=[{"filename": "r.pdf", "content_type": "application/pdf", "content": b"%PDF"}],
    )
    url = reply["files"][0]["url_private_download"]
    assert adapter.attachment_download(url=url).content == b"%PDF"
    with pytest.raises(Exception, match="redirected"):
        _adapter(standin, bot_token="xoxb-other").attachment_download(url=url)


# --- the stand-in's Events API deliveries ----------------------------------------------------
def _event_deliveries(standin, httpserver, *answers, fault: str = "") -> list[dict]:
    """The stand-in's attempts at delivering the root message's event, answered in turn by ``answers``."""
    replies = iter(answers)
    httpserver.expect_request("/events").respond_with_handler(lambda request: next(replies))
    standin.app_configure(request_url=httpserver.url_for("/events"))
    if fault:
        standin.add_webhook_fault(fault)
    _thread(_adapter(standin))
    standin.wait_webhooks_idle()
    return standin.webhook_deliveries()


def test_an_event_is_retried_signed_anew_with_its_number_and_reason(standin, httpserver):
    failed, ok = Response("oops", status=500), Response("", status=200)
    attempts = _event_deliveries(standin, httpserver, failed, failed, ok)
    assert [(d["attempt"], d["status"]) for d in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert [d["headers"].get("X-Slack-Retry-Num") for d in attempts] == [None, "1", "2"]
    assert [d["headers"].get("X-Slack-Retry-Reason") for d in attempts] == [None, "http_error", "http_error"]
    assert len({d["body"] for d in attempts}) == 1
    for delivery in attempts:
        timestamp = delivery["headers"]["X-Slack-Request-Timestamp"]
        assert delivery["headers"]["X-Slack-Signature"] == sign(SECRET, timestamp, delivery["body"])


def test_no_retry_header_stops_the_retries_and_four_attempts_at_most(standin, httpserver):
    refused = Response("no", status=500, headers={"X-Slack-No-Retry": "1"})
    assert [d["attempt"] for d in _event_deliveries(standin, httpserver, refused)] == [1]
    standin.reset_state()
    failed = [Response("oops", status=503) for _ in range(4)]
    assert [d["attempt"] for d in _event_deliveries(standin, httpserver, *failed)] == [1, 2, 3, 4]


def test_a_duplicate_fault_resends_an_answered_event_as_a_retry(standin, httpserver):
    attempts = _event_deliveries(standin, httpserver, Response(""), Response(""), fault="duplicate")
    assert [d["attempt"] for d in attempts] == [1, 2]
    assert attempts[1]["headers"]["X-Slack-Retry-Num"] == "1"
    assert attempts[1]["headers"]["X-Slack-Retry-Reason"] == "http_timeout"
    assert attempts[0]["body"] == attempts[1]["body"]


def test_a_dropped_event_never_leaves(standin, httpserver):
    assert _event_deliveries(standin, httpserver, fault="drop") == []


def test_the_manifest_fills_in_both_urls_scopes_and_events():
    manifest = app_manifest(url="https://gw.example.com/webhooks/slack/abc/")
    settings_ = manifest["settings"]
    assert settings_["event_subscriptions"]["request_url"] == settings_["interactivity"]["request_url"]
    assert settings_["interactivity"]["is_enabled"] is True
    assert {"message.channels", "reaction_added"} <= set(settings_["event_subscriptions"]["bot_events"])
    assert {"chat:write", "chat:write.customize", "files:write", "users:read", "channels:history"} <= set(
        manifest["oauth_config"]["scopes"]["bot"]
    )
