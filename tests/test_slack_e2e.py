"""Slack-only behaviour end to end (live gateway, real worker, PostgreSQL, both stand-ins).

The parametrised suite (``tests/test_e2e_desks.py``) covers what every desk does; here, what
only a Slack thread has: the root message's state, the ✅ reaction, the ephemeral note in a
closed thread, the "user left" note, and ``url_verification`` through the public endpoint.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from sessions_app.models import HitlSession, SessionStatus, StoppedBy
from standins.slack import sign
from tests.e2e_desks import SLACK_SIGNING_SECRET
from tests.test_e2e_desks import _create_user, _settled, _start, _ticket_for, desk_gateway, slack_standin  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("desk_gateway", ["slack"], indirect=True)]


def _status(standin, ts: str) -> str:
    root = standin.root(ts)
    return next(b["elements"][0]["text"] for b in root["blocks"] if b.get("block_id") == "hitl_status")


def test_take_react_and_a_late_reply(desk_gateway):  # noqa: F811 - the fixture imported above
    gateway, standin, botpress = desk_gateway, desk_gateway.zendesk, desk_gateway.botpress
    conversation_id = _start(gateway, _create_user(gateway), hitlSession={"priority": "urgent"})
    ts = _ticket_for(gateway, conversation_id)["ts"]
    assert "Waiting for an agent" in _status(standin, ts)
    agent = standin.add_agent("Grace Hopper", "grace@acme.test")

    standin.take(ts, agent)
    botpress.wait_for(lambda: botpress.events(type="hitlAssigned"), timeout=20)
    standin.wait_for(lambda: "Taken by *Grace Hopper*" in _status(standin, ts), timeout=20)

    standin.react(ts, agent, "white_check_mark")
    botpress.wait_for(lambda: botpress.events(type="hitlStopped"), timeout=20)
    standin.wait_for(lambda: "Closed" in _status(standin, ts), timeout=20)
    assert not [b for b in standin.root(ts)["blocks"] if b["type"] == "actions"], "a closed root has no buttons"
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.AGENT

    standin.agent_reply(ts, agent, "one more thing")
    [note] = standin.wait_for(lambda: standin.ephemeral(), timeout=20)
    assert (note["user"], note["thread_ts"]) == (agent, ts) and "over" in note["text"]
    _settled(gateway, conversation_id)
    assert not botpress.messages(conversation_id=conversation_id), "nothing reaches the user after the close"


def test_stop_hitl_says_the_chat_side_ended_it(desk_gateway):  # noqa: F811 - the fixture imported above
    gateway, standin = desk_gateway, desk_gateway.zendesk
    conversation_id = _start(gateway, _create_user(gateway))
    ts = _ticket_for(gateway, conversation_id)["ts"]
    agent = standin.add_agent("Grace Hopper", "grace@acme.test")
    standin.agent_reply(ts, agent, "Hello, I am here")
    gateway.botpress.wait_for(lambda: gateway.botpress.events(type="hitlAssigned"), timeout=20)

    assert gateway.action("stopHitl", {"conversationId": conversation_id}).status_code == 200
    standin.wait_for(lambda: "Closed" in _status(standin, ts), timeout=20)
    _settled(gateway, conversation_id)
    notes = [m["text"] for m in standin.thread(ts) if m.get("bot_id")]
    assert any("chat side ended this session" in text for text in notes)


def test_url_verification_is_answered_through_the_webhook_url(desk_gateway):  # noqa: F811 - the fixture imported above
    gateway = desk_gateway
    url = f"{gateway.url}/webhooks/slack/{gateway.integration.pk}/"
    body = json.dumps({"token": "x", "challenge": "c-123", "type": "url_verification"}).encode()
    now = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": now}
    signed = requests.post(
        url, data=body, headers=headers | {"X-Slack-Signature": sign(SLACK_SIGNING_SECRET, now, body)}, timeout=10
    )
    assert signed.status_code == 200 and signed.json() == {"challenge": "c-123"}
    forged = requests.post(url, data=body, headers=headers | {"X-Slack-Signature": sign("no", now, body)}, timeout=10)
    assert forged.status_code == 401 and "c-123" not in forged.text


def test_a_burst_of_end_user_messages_is_paced_in_order(desk_gateway, monkeypatch):  # noqa: F811 - the fixture imported above
    """Twelve messages at once into one thread: all arrive, in order, about one a second, under
    the end user's name and picture, and Slack never had to answer 429."""
    gateway, standin = desk_gateway, desk_gateway.zendesk
    monkeypatch.setattr(standin, "post_burst", 2)
    # A short burst only (above): the adapter's pacing must do the rest.
    user_id = _create_user(gateway, name="Ada Lovelace")
    conversation_id = _start(gateway, user_id)
    ts = _ticket_for(gateway, conversation_id)["ts"]
    for n in range(12):
        body = {"conversationId": conversation_id, "type": "text", "payload": {"text": f"burst {n}", "userId": user_id}}
        assert gateway.message(body).status_code == 202
    replies = standin.wait_for(lambda: len(r := standin.thread(ts)) == 12 and r, timeout=60)
    assert [r["text"] for r in replies] == [f"burst {n}" for n in range(12)]
    assert {(r["username"], r["icon_url"]) for r in replies} == {("Ada Lovelace", "https://cdn.example.com/a.png")}
    posts = standin.requests_log(method="POST", path_regex=r"chat\.postMessage$")
    assert posts[-1]["timestamp"] - posts[-12]["timestamp"] >= 9, "paced: about a second apart"
    # The test worker has two processes (and relay threads in each): they share the channel's
    # pace in the database, so none posts in another's second.
    assert [p["status"] for p in posts if p["status"] != 200] == [], "paced before Slack had to refuse"


def test_bursts_of_several_sessions_share_the_channel_pace(desk_gateway, monkeypatch):  # noqa: F811 - the fixture imported above
    """Three sessions' bursts at once, into three threads of the one channel: the test worker's
    two processes (relay threads in each) post for different lanes at the same time, and still
    about one message a second between them all, so Slack never answers 429."""
    gateway, standin = desk_gateway, desk_gateway.zendesk
    monkeypatch.setattr(standin, "post_burst", 2)
    threads = []
    for s in range(3):
        user_id = _create_user(gateway, name=f"User {s}")
        conversation_id = _start(gateway, user_id)
        threads.append((user_id, conversation_id, _ticket_for(gateway, conversation_id)["ts"]))
    for n in range(5):
        for s, (user_id, conversation_id, _) in enumerate(threads):
            body = {
                "conversationId": conversation_id,
                "type": "text",
                "payload": {"text": f"{s}:{n}", "userId": user_id},
            }
            assert gateway.message(body).status_code == 202
    for s, (_, _, ts) in enumerate(threads):
        replies = standin.wait_for(lambda ts=ts: len(r := standin.thread(ts)) == 5 and r, timeout=90)
        assert [r["text"] for r in replies] == [f"{s}:{n}" for n in range(5)]
    posts = standin.requests_log(method="POST", path_regex=r"chat\.postMessage$")
    assert [p["status"] for p in posts if p["status"] != 200] == [], "one pace for the channel, whichever process posts"
    assert posts[-1]["timestamp"] - posts[-15]["timestamp"] >= 13, "about a second apart"
