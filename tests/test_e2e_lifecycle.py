"""Lifecycle policies end to end: the public API, a real worker (whose beat sweeps), the stand-ins.

Time is moved forward by passing ``now`` to the sweep, never slept; the worker's own sweep runs
on the real clock, so it ends only what is really due (the restart test).
"""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from django.utils import timezone

from sessions_app.models import HitlSession, OperatorAction, SessionStatus, StoppedBy
from sessions_app.services.lifecycle import session_timeouts_sweep
from sessions_app.services.sessions import USER_LEFT_NOTE

pytestmark = pytest.mark.e2e


def _policy(gateway, **changes) -> dict:
    response = requests.patch(
        f"{gateway.url}/api/v1/integrations/{gateway.integration.pk}/lifecycle",
        json=changes,
        headers={"Authorization": f"Bearer {gateway.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _start(gateway) -> tuple[str, dict]:
    user = gateway.action("createUser", {"name": "Ada", "email": "ada@example.com"})
    assert user.status_code == 200, user.text
    started = gateway.action("startHitl", {"userId": user.json()["userId"], "title": "Help", "messageHistory": []})
    assert started.status_code == 200, started.text
    conversation_id = started.json()["conversationId"]
    ticket = gateway.zendesk.wait_for(
        lambda: next((t for t in gateway.zendesk.tickets() if t.get("external_id") == conversation_id), None),
        timeout=20,
    )
    return conversation_id, ticket


def _bot_texts(gateway, conversation_id) -> list[str]:
    return [m["payload"].get("text") for m in gateway.botpress.messages(conversation_id=conversation_id)]


def _comment_texts(gateway, ticket) -> list[str]:
    return [c["body"] for c in gateway.zendesk.comments(ticket["id"])]


def test_assignment_timeout_tells_everyone_and_closes_the_ticket(gateway):
    policy = _policy(
        gateway, assignmentTimeoutMinutes=2, assignmentTimeoutMessage="Nobody is free; we will e-mail you."
    )
    conversation_id, ticket = _start(gateway)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert session_timeouts_sweep(now=session.created_at + dt.timedelta(minutes=1))["assignment_timeout"] == 0
    assert (
        session_timeouts_sweep(now=session.created_at + dt.timedelta(minutes=2, seconds=1))["assignment_timeout"] == 1
    )

    stopped = gateway.botpress.wait_for(lambda: gateway.botpress.events(type="hitlStopped"), timeout=20)
    told = gateway.botpress.wait_for(
        lambda: [m for m in gateway.botpress.messages(conversation_id=conversation_id) if m["payload"].get("text")],
        timeout=20,
    )
    assert told[0]["payload"]["text"] == policy["assignmentTimeoutMessage"]
    assert told[0]["createdAt"] <= stopped[0]["createdAt"]  # the message first, then the stop
    bot_user = next(u for u in gateway.botpress.users() if u["id"] == told[0]["userId"])
    assert bot_user["tags"]["role"] == "bot"
    gateway.zendesk.wait_for(lambda: gateway.zendesk.ticket(ticket["id"])["status"] == "closed", timeout=20)
    assert any("within 2 min" in body for body in _comment_texts(gateway, ticket))
    session.refresh_from_db()
    assert (session.stopped_by, session.stop_reason) == (StoppedBy.POLICY, "assignment_timeout")
    assert OperatorAction.objects.filter(session=session, username="lifecycle policy").exists()


def test_assignment_timeout_keeping_the_ticket_open_for_email(gateway):
    _policy(gateway, assignmentTimeoutMinutes=1, assignmentTimeoutKeepTicketOpen=True)
    conversation_id, ticket = _start(gateway)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert (
        session_timeouts_sweep(now=session.created_at + dt.timedelta(minutes=1, seconds=1))["assignment_timeout"] == 1
    )
    gateway.botpress.wait_for(lambda: gateway.botpress.events(type="hitlStopped"), timeout=20)
    gateway.zendesk.wait_for(
        lambda: any("within 1 min" in body for body in _comment_texts(gateway, ticket)), timeout=20
    )
    assert gateway.zendesk.ticket(ticket["id"])["status"] != "closed"


def test_an_agent_reply_before_the_deadline_disarms_the_timer(gateway):
    _policy(gateway, assignmentTimeoutMinutes=5)
    conversation_id, ticket = _start(gateway)
    agent_id = gateway.zendesk.add_agent("Grace Hopper", "grace@acme.test")
    gateway.zendesk.agent_reply(ticket["id"], agent_id, "On it.")
    gateway.botpress.wait_for(lambda: "On it." in _bot_texts(gateway, conversation_id), timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert session.status == SessionStatus.ASSIGNED
    assert session_timeouts_sweep(now=session.created_at + dt.timedelta(hours=1))["assignment_timeout"] == 0
    session.refresh_from_db()
    assert session.status == SessionStatus.ASSIGNED


def test_inactivity_warns_then_ends(gateway):
    _policy(gateway, inactivityTimeoutMinutes=10, inactivityWarningMinutes=2, inactivityWarningMessage="Still there?")
    conversation_id, ticket = _start(gateway)
    agent_id = gateway.zendesk.add_agent("Grace Hopper", "grace@acme.test")
    gateway.zendesk.agent_reply(ticket["id"], agent_id, "How can I help?")
    gateway.botpress.wait_for(lambda: "How can I help?" in _bot_texts(gateway, conversation_id), timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    quiet = session.last_activity_at
    assert session_timeouts_sweep(now=quiet + dt.timedelta(minutes=8))["inactivity_warning"] == 1
    gateway.botpress.wait_for(lambda: "Still there?" in _bot_texts(gateway, conversation_id), timeout=20)
    assert session_timeouts_sweep(now=quiet + dt.timedelta(minutes=10))["inactivity_timeout"] == 1
    gateway.botpress.wait_for(lambda: gateway.botpress.events(type="hitlStopped"), timeout=20)
    gateway.zendesk.wait_for(lambda: gateway.zendesk.ticket(ticket["id"])["status"] == "closed", timeout=20)
    texts = _bot_texts(gateway, conversation_id)
    assert texts.index("Still there?") < len(texts) - 1  # then the closing message
    session.refresh_from_db()
    assert session.stop_reason == "inactivity_timeout"


def test_outside_business_hours_the_user_is_told_and_the_ticket_waits(gateway):
    today = timezone.now().astimezone(dt.UTC).date()
    _policy(
        gateway,
        assignmentTimeoutMinutes=30,
        businessHours={day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        holidays=[today.isoformat()],
        outsideHoursMessage="We are closed today.",
    )
    conversation_id, _ticket = _start(gateway)  # the ticket is created all the same
    gateway.botpress.wait_for(lambda: "We are closed today." in _bot_texts(gateway, conversation_id), timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    opening = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    assert session.assignment_due_at == opening + dt.timedelta(minutes=30)
    assert session_timeouts_sweep(now=session.created_at + dt.timedelta(minutes=31))["assignment_timeout"] == 0


def test_outside_business_hours_closing_at_once(gateway):
    today = timezone.now().astimezone(dt.UTC).date()
    _policy(
        gateway,
        businessHours={"mon": [["09:00", "17:00"]]},
        holidays=[today.isoformat()],
        outsideHoursClose=True,
    )
    conversation_id, ticket = _start(gateway)
    gateway.botpress.wait_for(lambda: gateway.botpress.events(type="hitlStopped"), timeout=20)
    gateway.zendesk.wait_for(
        lambda: any("outside business hours" in body for body in _comment_texts(gateway, ticket)), timeout=20
    )
    assert gateway.zendesk.ticket(ticket["id"])["status"] != "closed"  # agents answer by e-mail
    assert HitlSession.objects.get(botpress_conversation_id=conversation_id).stop_reason == "outside_business_hours"


def test_stop_hitl_while_waiting_closes_the_ticket_with_a_note(gateway):
    conversation_id, ticket = _start(gateway)
    assert gateway.action("stopHitl", {"conversationId": conversation_id}).status_code == 200
    gateway.zendesk.wait_for(lambda: gateway.zendesk.ticket(ticket["id"])["status"] == "closed", timeout=20)
    assert USER_LEFT_NOTE in _comment_texts(gateway, ticket)


def test_a_timer_due_during_a_restart_is_ended_by_the_workers_sweep(gateway):
    """Nothing was scheduled in the broker: the due time is a row, and the worker's beat finds it."""
    _policy(gateway, assignmentTimeoutMinutes=60)
    conversation_id, ticket = _start(gateway)
    # The deadline passed while no worker ran (set in the past, as after a long outage).
    HitlSession.objects.filter(botpress_conversation_id=conversation_id).update(
        assignment_due_at=timezone.now() - dt.timedelta(minutes=5)
    )
    gateway.botpress.wait_for(lambda: gateway.botpress.events(type="hitlStopped"), timeout=30)
    gateway.zendesk.wait_for(lambda: gateway.zendesk.ticket(ticket["id"])["status"] == "closed", timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert (session.stopped_by, session.stop_reason) == (StoppedBy.POLICY, "assignment_timeout")


def test_assignment_timeout_through_the_hitl_api_integration(gateway, settings):
    """The same policy when Botpress Hub's hitl-api owns the Botpress side: the bot's message goes
    to ``/message-from-agent`` as ``remoteUserId: "BOT"``, then ``/stop-hitl``; the bodies are the
    documents' (the stand-in checks them)."""
    from outbound.guard import allowances_parse
    from sessions_app.services.integrations import integration_botpress_configure, integration_botpress_endpoints
    from standins.hitl_api_bot import HitlApiBot, RuntimeApi
    from tests.conftest import BOT_ID, BP_INTEGRATION_ID, BP_TOKEN

    # The stand-in bot listens on loopback over http: allowed explicitly, as for local development.
    settings.HITL = {**settings.HITL, "BOTPRESS_ALLOW_INSECURE_URLS": allowances_parse("127.0.0.1")}
    runtime = RuntimeApi(gateway.botpress.base_url, token=BP_TOKEN, bot_id=BOT_ID, integration_id=BP_INTEGRATION_ID)
    bot = HitlApiBot(runtime=runtime).start()
    try:
        integration_botpress_configure(
            integration=gateway.integration, transport="hitl_api", hitl_api_webhook_url=bot.webhook_url
        )
        bot.endpoint_base_url = integration_botpress_endpoints(integration=gateway.integration)["hitl_api_base_url"]
        assert bot.register().status_code == 200
        _policy(gateway, assignmentTimeoutMinutes=3, assignmentTimeoutMessage="We will write to you.")
        user_id = bot.create_user(name="Ada", email="ada@example.com")
        conversation_id = bot.start_hitl(user_id=user_id, title="Help")
        remote_id = runtime.conversation_get(conversation_id)["tags"]["externalId"]
        session = HitlSession.objects.get(botpress_conversation_id=remote_id)
        assert (
            session_timeouts_sweep(now=session.created_at + dt.timedelta(minutes=3, seconds=1))["assignment_timeout"]
            == 1
        )
        to_bot = gateway.botpress.wait_for(
            lambda: (calls := bot.calls(direction="to_bot")) and len(calls) == 2 and calls, timeout=20
        )
        assert [c["endpoint"] for c in to_bot] == ["/message-from-agent", "/stop-hitl"]
        assert to_bot[0]["body"] == {
            "remoteConversationId": remote_id,
            "remoteUserId": "BOT",
            "messageType": "text",
            "payload": {"text": "We will write to you."},
        }
        assert bot.violations() == []
    finally:
        bot.stop()
