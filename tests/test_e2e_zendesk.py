"""Whole HITL sessions through the public endpoints, a real worker, and the stand-ins."""

from __future__ import annotations

import json

import pytest

from sessions_app.models import (
    Delivery,
    DeliveryStatus,
    HitlSession,
    Message,
    SessionStatus,
    StoppedBy,
    WebhookEvent,
    WebhookRejection,
    WebhookStatus,
)

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _create_user(gateway, name="Ada Lovelace", email="ada@example.com") -> str:
    response = gateway.action(
        "createUser", {"name": name, "email": email, "pictureUrl": "https://cdn.example.com/a.png"}
    )
    assert response.status_code == 200, response.text
    return response.json()["userId"]


def _start(gateway, user_id, **extra) -> str:
    body = {"userId": user_id, "title": "Refund request", "messageHistory": []} | extra
    response = gateway.action("startHitl", body)
    assert response.status_code == 200, response.text
    return response.json()["conversationId"]


def _ticket_for(gateway, conversation_id):
    return gateway.zendesk.wait_for(
        lambda: next((t for t in gateway.zendesk.tickets() if t.get("external_id") == conversation_id), None),
        timeout=20,
    )


def _zendesk_user(gateway, external_id):
    return next(u for u in gateway.zendesk.users() if u.get("external_id") == external_id)


def test_whole_session_agent_solves(gateway, httpserver):
    httpserver.expect_request("/media/photo.png").respond_with_data(PNG, content_type="image/png")
    photo_url = httpserver.url_for("/media/photo.png")
    zendesk, botpress = gateway.zendesk, gateway.botpress

    user_id = _create_user(gateway)
    assert botpress.users()  # the Botpress user exists
    history = [
        {"source": {"type": "user", "userId": user_id}, "type": "text", "payload": {"text": "I want a refund"}},
        {
            "source": {"type": "bot"},
            "type": "choice",
            "payload": {"text": "Which order?", "options": [{"label": "Order 42", "value": "42"}]},
        },
        {"source": {"type": "bot"}, "type": "image", "payload": {"imageUrl": "https://cdn.example.com/i.png"}},
        {
            "source": {"type": "user", "userId": user_id},
            "type": "bloc",
            "payload": {
                "items": [
                    {"type": "text", "payload": {"text": "this one"}},
                    {"type": "location", "payload": {"latitude": 48.85, "longitude": 2.35, "title": "Paris"}},
                ]
            },
        },
        {
            "source": {"type": "bot"},
            "type": "carousel",
            "payload": {
                "items": [
                    {"title": "Card A", "actions": [{"action": "url", "label": "Open", "value": "https://a.example"}]}
                ]
            },
        },
    ]
    conversation_id = _start(
        gateway,
        user_id,
        description="Customer asks for a refund",
        hitlSession={"priority": "high"},
        messageHistory=history,
    )
    conversation = next(c for c in botpress.conversations() if c["id"] == conversation_id)
    assert conversation["channel"] == "hitl"

    ticket = _ticket_for(gateway, conversation_id)
    requester = _zendesk_user(gateway, user_id)
    assert ticket["requester_id"] == requester["id"]
    assert ticket["priority"] == "high"
    assert ticket["subject"] == "Refund request"
    transcript = zendesk.comments(ticket["id"])[0]["body"]
    for expected in (
        "Customer asks for a refund",
        "👤 Ada Lovelace:\nI want a refund",
        '"Order 42" (42)',
        "https://cdn.example.com/i.png",
        "this one",
        "Paris",
        'Card: "Card A"',
    ):
        assert expected in transcript

    # End-user and bot messages of every type, in order.
    sent = [
        {"type": "text", "payload": {"text": "Hello?", "userId": user_id}},
        {"type": "image", "payload": {"imageUrl": photo_url, "title": "receipt", "userId": user_id}},
        {"type": "audio", "payload": {"audioUrl": "http://127.0.0.1:9/nothing.mp3", "userId": user_id}},
        {
            "type": "video",
            "payload": {"videoUrl": "https://video.example.com/v.mp4", "title": "clip", "userId": user_id},
        },
        {"type": "file", "payload": {"fileUrl": photo_url, "title": "invoice", "userId": user_id}},
        {
            "type": "bloc",
            "payload": {
                "userId": user_id,
                "items": [
                    {"type": "text", "payload": {"text": "bloc text"}},
                    {"type": "image", "payload": {"imageUrl": photo_url}},
                    {"type": "markdown", "payload": {"markdown": "**bold**"}},
                    {"type": "location", "payload": {"latitude": 1.5, "longitude": 2.5, "address": "1 Main St"}},
                ],
            },
        },
        {"type": "text", "payload": {"text": "An agent will be with you shortly.", "additionalData": "x" * 500}},
    ]
    for index, message in enumerate(sent):
        response = gateway.message({"conversationId": conversation_id, "messageId": f"msg_{index:030d}"} | message)
        assert response.status_code == 202, response.text

    comments = zendesk.wait_for(lambda: (c := zendesk.comments(ticket["id"]))[1:] and len(c) == 8 and c, timeout=30)
    bodies = [c["body"] for c in comments[1:]]
    assert bodies[0] == "Hello?"
    assert "receipt" in bodies[1] and comments[2]["attachments"], "a fetchable image is attached"
    assert "http://127.0.0.1:9/nothing.mp3" in bodies[2] and not comments[3]["attachments"], "else sent as a link"
    assert "https://video.example.com/v.mp4" in bodies[3]
    assert "invoice" in bodies[4] and comments[5]["attachments"]
    assert all(part in bodies[5] for part in ("bloc text", "**bold**", "1 Main St"))
    assert comments[6]["attachments"], "the bloc's image is attached to the same comment"
    assert bodies[6] == "An agent will be with you shortly."
    for comment in comments[1:7]:
        assert comment["author_id"] == requester["id"]
    bot_user = next(u for u in zendesk.users() if u["id"] == comments[7]["author_id"])
    assert bot_user["name"] == "Botpress"

    # The agent takes the ticket, replies, then solves it with a last reply.
    agent_id = zendesk.add_agent("Grace Hopper", "grace@acme.test")
    zendesk.assign(ticket["id"], agent_id)
    assigned = botpress.wait_for(lambda: botpress.events(type="hitlAssigned"), timeout=20)
    agent_user = next(u for u in botpress.users() if u["id"] == assigned[0]["payload"]["userId"])
    assert agent_user["tags"]["id"] == str(agent_id) and agent_user["name"] == "Grace Hopper"
    assert assigned[0]["payload"]["conversationId"] == conversation_id

    zendesk.agent_reply(ticket["id"], agent_id, "Hi Ada, I am looking at it.")
    zendesk.agent_reply(ticket["id"], agent_id, "Refund done. Bye!", solve=True)
    stopped = botpress.wait_for(lambda: botpress.events(type="hitlStopped"), timeout=20)
    assert stopped[0]["payload"] == {"conversationId": conversation_id}
    relayed = [m for m in botpress.messages(conversation_id=conversation_id)]
    assert [m["payload"]["text"] for m in relayed] == ["Hi Ada, I am looking at it.", "Refund done. Bye!"]
    assert {m["userId"] for m in relayed} == {agent_user["id"]}
    assert relayed[-1]["createdAt"] <= stopped[0]["createdAt"], "the last comment is relayed before the stop"

    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.AGENT
    assert session.assigned_at and session.stopped_at and session.agent.name == "Grace Hopper"
    assert Message.objects.filter(session=session).count() == 9
    # Our own comments never came back: only the two agent replies were relayed.
    assert Message.objects.filter(session=session, direction="to_user").count() == 2


def test_session_stopped_from_botpress(gateway):
    user_id = _create_user(gateway, name="Alan", email="alan@example.com")
    conversation_id = _start(gateway, user_id)
    ticket = _ticket_for(gateway, conversation_id)

    response = gateway.action("stopHitl", {"conversationId": conversation_id})
    assert response.status_code == 200 and response.json() == {}
    gateway.zendesk.wait_for(lambda: gateway.zendesk.ticket(ticket["id"])["status"] == "closed", timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.BOTPRESS
    assert not gateway.botpress.events(type="hitlStopped"), "Botpress asked for the stop; no event echoes it"

    again = gateway.action("stopHitl", {"conversationId": conversation_id})
    assert again.status_code == 200  # stopping twice is harmless
    late = gateway.message({"conversationId": conversation_id, "type": "text", "payload": {"text": "hello?"}})
    assert late.status_code == 409 and late.json()["fields"] == {"conversationId": ["The HITL session is stopped."]}


def test_duplicated_webhook_yields_one_message(gateway):
    user_id = _create_user(gateway)
    conversation_id = _start(gateway, user_id)
    ticket = _ticket_for(gateway, conversation_id)
    agent_id = gateway.zendesk.add_agent("Grace Hopper", "grace@acme.test")

    gateway.zendesk.add_webhook_fault(kind="duplicate", times=1)
    gateway.zendesk.agent_reply(ticket["id"], agent_id, "Only once, please")
    gateway.zendesk.wait_webhooks_idle(timeout=20)
    gateway.botpress.wait_for(lambda: gateway.botpress.messages(conversation_id=conversation_id), timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    gateway.botpress.wait_for(
        lambda: not Delivery.objects.filter(session=session, status=DeliveryStatus.PENDING).exists(), timeout=20
    )
    assert [m["payload"]["text"] for m in gateway.botpress.messages(conversation_id=conversation_id)] == [
        "Only once, please"
    ]
    deliveries = [d for d in gateway.zendesk.webhook_deliveries() if d.get("status") == 200]
    assert len(deliveries) >= 2, "the webhook really did arrive twice"
    assert (
        WebhookEvent.objects.filter(
            integration=gateway.integration, status__in=[WebhookStatus.PROCESSED, WebhookStatus.ACCEPTED]
        ).count()
        == 1
    )


def _post_webhook(gateway, body: bytes, headers: dict, integration_id=None):
    import requests

    url = f"{gateway.url}/webhooks/zendesk/{integration_id or gateway.integration.pk}/"
    return requests.post(url, data=body, headers={"Content-Type": "application/json"} | headers, timeout=10)


def test_unsigned_forged_and_stale_webhooks_are_rejected(gateway):
    from datetime import UTC, datetime, timedelta

    from providers.zendesk.webhooks import signature_compute

    secret = gateway.integration.webhook_signing_secret
    body = json.dumps({"type": "ticketAssigned", "ticketId": "1", "externalId": "x"}).encode()
    now = datetime.now(UTC)
    fresh = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    stale = (now - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def signed(timestamp, key=secret, payload=body):
        return {
            "X-Zendesk-Webhook-Signature": signature_compute(secret=key, timestamp=timestamp, body=payload),
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        }

    cases = {
        "unsigned": _post_webhook(gateway, body, {}),
        "forged": _post_webhook(gateway, body, signed(fresh, key="not-the-secret")),
        "stale": _post_webhook(gateway, body, signed(stale)),
        "tampered": _post_webhook(gateway, body + b" ", signed(fresh)),
        "unknown integration": _post_webhook(
            gateway, body, signed(fresh), integration_id="7d0f5a8e-0000-4000-8000-000000000000"
        ),
        "not a uuid": _post_webhook(gateway, body, signed(fresh), integration_id="nope"),
    }
    bodies = {name: (r.status_code, r.json()) for name, r in cases.items()}
    assert all(status == 401 for status, _ in bodies.values()), bodies
    assert len({json.dumps(b) for _, b in bodies.values()}) == 1, "every rejection looks the same"
    assert secret not in json.dumps(bodies)
    # Counted, not stored; the two without a known integration have nothing to be counted under.
    assert not WebhookEvent.objects.exists()
    assert sum(WebhookRejection.objects.values_list("count", flat=True)) == 4

    malformed = _post_webhook(gateway, b"not json", signed(fresh, payload=b"not json"))
    assert malformed.status_code == 400 and malformed.json()["fields"] == {"body": ["must be a JSON object"]}
    missing = json.dumps({"type": "ticketAssigned"}).encode()
    response = _post_webhook(gateway, missing, signed(fresh, payload=missing))
    assert response.status_code == 400 and "ticketId" in response.json()["fields"]

    accepted = _post_webhook(gateway, body, signed(fresh))
    assert accepted.status_code == 200 and accepted.json() == {"status": "accepted"}
