"""Whole HITL sessions for every help desk: one suite, run once per desk (``tests/e2e_desks.py``).

Public endpoints, a live gateway on PostgreSQL, a real Celery worker, and the stand-ins of
Botpress and the desk. Zendesk's webhooks carry their events; Freshdesk's are doorbells that
make the worker read the ticket. What Botpress and the desk see must be the same either way.
"""

from __future__ import annotations

import json

import pytest
import requests

from providers import provider_class
from sessions_app.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    HitlSession,
    Message,
    SessionStatus,
    StoppedBy,
    Ticket,
    WebhookEvent,
    WebhookRejection,
    WebhookStatus,
)
from sessions_app.services.webhooks import REREAD_EVENT_TYPE, webhook_doorbells_reread
from tests.conftest import BOT_ID, BP_INTEGRATION_ID, BP_TOKEN, Gateway, _quiesce
from tests.e2e_desks import DESKS
from tests.e2e_desks import create_user as _create_user
from tests.e2e_desks import start_hitl as _start

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4\n% e2e\n" + b"0" * 200


@pytest.fixture(scope="session")
def freshdesk_standin():
    from standins.freshdesk import FreshdeskStandin
    from tests.e2e_desks import FD_API_KEY

    server = FreshdeskStandin(api_key=FD_API_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def jsm_standin():
    from standins.jsm import JsmStandin
    from tests.e2e_desks import JSM_EMAIL, JSM_TOKEN

    server = JsmStandin(email=JSM_EMAIL, api_token=JSM_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slack_standin():
    from standins.slack import SlackStandin
    from tests.e2e_desks import SLACK_BOT_TOKEN, SLACK_CHANNEL, SLACK_SIGNING_SECRET

    server = SlackStandin(bot_token=SLACK_BOT_TOKEN, signing_secret=SLACK_SIGNING_SECRET, channel_id=SLACK_CHANNEL)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=sorted(DESKS))
def desk_gateway(request, transactional_db, live_server, celery_worker, botpress, settings):
    """A live gateway wired to Botpress and one desk, its webhook installed through the desk's API.

    The integration is made as an operator does (``integration_create`` with the desk's
    credential fields, then ``integration_webhook_install``).
    """
    from providers.freshdesk import provider as freshdesk_provider
    from providers.jsm import provider as jsm_provider
    from providers.slack import provider as slack_provider
    from sessions_app.services.integrations import (
        integration_create,
        integration_webhook_install,
        integration_webhook_url,
    )

    standin = request.getfixturevalue(f"{request.param}_standin")
    standin.reset()
    freshdesk_provider.RATE_PACER.reset()
    jsm_provider.FIELDS_CACHE.reset()
    slack_provider.PACER.reset()
    desk = DESKS[request.param](standin)
    settings.PUBLIC_BASE_URL = live_server.url
    integration, api_key = integration_create(
        name=f"Acme on {desk.kind}",
        provider=desk.kind,
        provider_base_url=standin.base_url,
        provider_credentials=desk.credentials(),
        botpress_api_url=botpress.base_url,
        botpress_token=BP_TOKEN,
        botpress_bot_id=BOT_ID,
        botpress_integration_id=BP_INTEGRATION_ID,
    )
    integration = integration_webhook_install(integration=integration)
    desk.installed(integration_webhook_url(integration=integration))
    gateway = Gateway(
        url=live_server.url,
        integration=integration,
        api_key=api_key,
        botpress=botpress,
        zendesk=standin,
        worker=celery_worker,
    )
    gateway.desk = desk
    yield gateway
    _quiesce(standin)


def _ticket_for(gateway, conversation_id) -> dict:
    return gateway.zendesk.wait_for(lambda: gateway.desk.ticket(conversation_id), timeout=20)


def _settled(gateway, conversation_id, timeout=30) -> HitlSession:
    """Once every webhook the desk sent is applied and every delivery it caused is done."""
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    gateway.zendesk.wait_webhooks_idle(timeout=timeout)
    gateway.botpress.wait_for(
        lambda: (
            not WebhookEvent.objects.filter(integration=gateway.integration, status=WebhookStatus.ACCEPTED).exists()
        ),
        timeout=timeout,
    )
    gateway.botpress.wait_for(
        lambda: not Delivery.objects.filter(session=session, status=DeliveryStatus.PENDING).exists(), timeout=timeout
    )
    return session


HISTORY = [
    {"source": {"type": "user"}, "type": "text", "payload": {"text": "I want a refund"}},
    {
        "source": {"type": "bot"},
        "type": "choice",
        "payload": {"text": "Which order?", "options": [{"label": "Order 42", "value": "42"}]},
    },
    {"source": {"type": "bot"}, "type": "image", "payload": {"imageUrl": "https://cdn.example.com/i.png"}},
    {
        "source": {"type": "user"},
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


def test_whole_session_agent_resolves(desk_gateway, httpserver):
    gateway, desk, botpress = desk_gateway, desk_gateway.desk, desk_gateway.botpress
    httpserver.expect_request("/media/photo.png").respond_with_data(PNG, content_type="image/png")
    photo_url = httpserver.url_for("/media/photo.png")

    user_id = _create_user(gateway)
    history = [
        m | {"source": m["source"] | {"userId": user_id}} if m["source"]["type"] == "user" else m for m in HISTORY
    ]
    conversation_id = _start(
        gateway,
        user_id,
        description="Customer asks for a refund",
        hitlSession={"priority": "high"},
        messageHistory=history,
    )
    assert next(c for c in botpress.conversations() if c["id"] == conversation_id)["channel"] == "hitl"

    ticket = _ticket_for(gateway, conversation_id)
    requester = desk.external_user_id(user_id)
    assert desk.ticket_fields(ticket) == ("Refund request", desk.high_priority, requester)
    transcript = desk.transcript(ticket["id"])
    for expected in (
        "Customer asks for a refund",
        "I want a refund",
        '"Order 42" (42)',
        "https://cdn.example.com/i.png",
        "this one",
        "Paris",
        'Card: "Card A"',
    ):
        assert expected in transcript, expected

    # End-user and bot messages of every type, in order, each one message on the ticket.
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
        # Botpress may add fields of its own (``additionalData``): accepted and left out.
        {"type": "text", "payload": {"text": "An agent will be with you shortly.", "additionalData": "x" * 500}},
    ]
    for index, message in enumerate(sent):
        response = gateway.message({"conversationId": conversation_id, "messageId": f"msg_{index:030d}"} | message)
        assert response.status_code == 202, response.text

    posted = gateway.zendesk.wait_for(lambda: len(m := desk.messages(ticket["id"])) == 7 and m, timeout=30)
    assert posted[0].text.strip() == "Hello?"
    assert "receipt" in posted[1].text and posted[1].attachments, "a fetchable image is attached"
    assert "http://127.0.0.1:9/nothing.mp3" in posted[2].text and not posted[2].attachments, "else sent as a link"
    assert "https://video.example.com/v.mp4" in posted[3].text
    assert "invoice" in posted[4].text and posted[4].attachments
    assert all(part in posted[5].text for part in ("bloc text", "**bold**", "1 Main St"))
    assert posted[5].attachments, "the bloc's image is attached to the same message"
    assert posted[6].text.strip() == "An agent will be with you shortly."
    assert {m.author_id for m in posted[:6]} == {requester}
    assert desk.user_name(posted[6].author_id) == "Botpress"

    # The agent takes the ticket, replies with a file, then resolves with a last reply.
    agent_id = desk.add_agent("Grace Hopper", "grace@acme.test")
    desk.assign(ticket["id"], agent_id)
    assigned = botpress.wait_for(lambda: botpress.events(type="hitlAssigned"), timeout=20)
    agent_user = next(u for u in botpress.users() if u["id"] == assigned[0]["payload"]["userId"])
    assert agent_user["tags"]["id"] == str(agent_id) and agent_user["name"] == "Grace Hopper"
    assert assigned[0]["payload"]["conversationId"] == conversation_id

    invoice = {"filename": "refund.pdf", "content_type": "application/pdf", "content": PDF}
    desk.agent_reply(ticket["id"], agent_id, "Hi Ada, I am looking at it.", attachments=[invoice])
    botpress.wait_for(lambda: len(botpress.messages(conversation_id=conversation_id)) == 2, timeout=30)
    desk.solve_with_reply(ticket["id"], agent_id, "Refund done. Bye!")
    stopped = botpress.wait_for(lambda: botpress.events(type="hitlStopped"), timeout=30)
    assert stopped[0]["payload"] == {"conversationId": conversation_id}

    relayed = botpress.messages(conversation_id=conversation_id)
    assert [m["type"] for m in relayed] == ["text", "file", "text"]
    assert relayed[0]["payload"]["text"] == "Hi Ada, I am looking at it."
    assert relayed[1]["payload"]["title"] == "refund.pdf"
    file_url = relayed[1]["payload"]["fileUrl"]
    assert file_url.startswith(botpress.base_url + "/files-store/"), "re-hosted in Botpress's file store"
    assert requests.get(file_url, timeout=5).content == PDF
    assert relayed[2]["payload"]["text"] == "Refund done. Bye!"
    assert {m["userId"] for m in relayed} == {agent_user["id"]}
    assert relayed[-1]["createdAt"] <= stopped[0]["createdAt"], "the last reply is relayed before the stop"

    session = _settled(gateway, conversation_id)
    assert len(botpress.events(type="hitlAssigned")) == 1, "every later doorbell's 'assigned' was a no-op"
    assert len(botpress.events(type="hitlStopped")) == 1
    session.refresh_from_db()
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.AGENT
    assert session.assigned_at and session.stopped_at and session.agent.name == "Grace Hopper"
    # Our own messages never came back: only the agent's three parts were relayed.
    assert Message.objects.filter(session=session, direction="to_user").count() == 3
    assert Message.objects.filter(session=session).count() == 7 + 3


def test_stop_hitl_closes_the_ticket(desk_gateway):
    gateway, desk = desk_gateway, desk_gateway.desk
    user_id = _create_user(gateway, name="Alan", email="alan@example.com")
    conversation_id = _start(gateway, user_id)
    ticket = _ticket_for(gateway, conversation_id)

    response = gateway.action("stopHitl", {"conversationId": conversation_id})
    assert response.status_code == 200 and response.json() == {}
    gateway.zendesk.wait_for(lambda: desk.is_closed(ticket["id"]), timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert session.status == SessionStatus.STOPPED and session.stopped_by == StoppedBy.BOTPRESS
    _settled(gateway, conversation_id)
    assert not gateway.botpress.events(type="hitlStopped"), "Botpress asked for the stop; no event echoes it"

    again = gateway.action("stopHitl", {"conversationId": conversation_id})
    assert again.status_code == 200  # stopping twice is harmless
    late = gateway.message({"conversationId": conversation_id, "type": "text", "payload": {"text": "hello?"}})
    assert late.status_code == 409 and late.json()["fields"] == {"conversationId": ["The HITL session is stopped."]}


def test_duplicated_webhook_yields_one_message(desk_gateway):
    gateway, desk, botpress = desk_gateway, desk_gateway.desk, desk_gateway.botpress
    conversation_id = _start(gateway, _create_user(gateway))
    ticket = _ticket_for(gateway, conversation_id)
    agent_id = desk.add_agent("Grace Hopper", "grace@acme.test")

    gateway.zendesk.add_webhook_fault(kind="duplicate", times=1)
    desk.agent_reply(ticket["id"], agent_id, "Only once, please")
    _settled(gateway, conversation_id)
    assert [m["payload"]["text"] for m in botpress.messages(conversation_id=conversation_id)] == ["Only once, please"]
    assert len(botpress.events(type="hitlAssigned")) == 1
    delivered = [d for d in gateway.zendesk.webhook_deliveries() if d.get("status") == 200]
    assert len(delivered) >= 2, "the webhook really did arrive twice"
    events = WebhookEvent.objects.filter(integration=gateway.integration)
    assert not events.filter(status=WebhookStatus.FAILED).exists()
    if not desk.repeat_dropped_by_key:
        # A doorbell repeated is stored and read again; the message id makes that read relay nothing.
        assert events.exclude(event_type=REREAD_EVENT_TYPE).count() == len(delivered)
    else:
        # A webhook repeated is dropped by its key.
        assert events.filter(status__in=[WebhookStatus.PROCESSED, WebhookStatus.ACCEPTED]).count() == 1


def test_a_doorbell_that_never_arrives_is_made_up_by_the_sweep(desk_gateway):
    """The desk's webhook is lost for good (no retry reaches us): the reply still arrives, read
    by the beat sweep from the desk's list of changed tickets."""
    gateway, desk, standin, botpress = desk_gateway, desk_gateway.desk, desk_gateway.zendesk, desk_gateway.botpress
    if not provider_class(desk.kind).doorbell_webhooks:
        pytest.skip("this desk's webhooks carry the message itself, or are retried by the desk for hours")
    conversation_id = _start(gateway, _create_user(gateway))
    ticket = _ticket_for(gateway, conversation_id)
    _settled(gateway, conversation_id)
    agent_id = desk.add_agent("Grace Hopper", "grace@acme.test")
    sent = len(standin.webhook_deliveries())

    standin.add_webhook_fault(kind="drop", times=1)
    desk.agent_reply(ticket["id"], agent_id, "The bell was lost, not the reply")
    standin.wait_webhooks_idle(timeout=20)
    assert len(standin.webhook_deliveries()) == sent, "the doorbell never left the desk"
    botpress.wait_for(lambda: botpress.messages(conversation_id=conversation_id), timeout=30)
    _settled(gateway, conversation_id)
    texts = [m["payload"]["text"] for m in botpress.messages(conversation_id=conversation_id)]
    assert texts == ["The bell was lost, not the reply"]
    assert WebhookEvent.objects.filter(integration=gateway.integration, event_type=REREAD_EVENT_TYPE).exists()


def test_forged_and_missing_secrets_are_refused(desk_gateway):
    gateway, desk = desk_gateway, desk_gateway.desk
    secret = gateway.integration.webhook_signing_secret
    url = f"{gateway.url}/webhooks/{desk.kind}/{gateway.integration.pk}/"
    body, refused = desk.refused_webhooks(secret)

    def post(headers, target=url):
        return requests.post(target, data=body, headers={"Content-Type": "application/json"} | headers, timeout=10)

    answers = {name: post(headers) for name, headers in refused.items()}
    genuine = desk.accepted_webhook_headers(secret, body)
    answers["unknown integration"] = post(
        genuine, url.replace(str(gateway.integration.pk), "7d0f5a8e-0000-4000-8000-000000000000")
    )
    answers["not a uuid"] = post(genuine, url.replace(str(gateway.integration.pk), "nope"))
    bodies = {name: (r.status_code, r.json()) for name, r in answers.items()}
    assert all(status == 401 for status, _ in bodies.values()), bodies
    assert len({json.dumps(b) for _, b in bodies.values()}) == 1, "every rejection looks the same"
    assert secret not in json.dumps(bodies)
    # Counted, not stored; the two without a known integration have nothing to be counted under.
    assert not WebhookEvent.objects.exists()
    assert sum(WebhookRejection.objects.values_list("count", flat=True)) == len(refused)

    # Authentic but malformed: 400 naming the field, never a 500.
    for invalid, field in desk.invalid_webhooks():
        response = requests.post(
            url,
            data=invalid,
            headers={"Content-Type": "application/json"} | desk.accepted_webhook_headers(secret, invalid),
            timeout=10,
        )
        assert response.status_code == 400 and field in response.json()["fields"], (field, response.text)

    accepted = post(genuine)
    assert accepted.status_code == 200 and accepted.json() == {"status": "accepted"}


def test_start_hitl_while_the_desk_is_down_makes_the_ticket_and_backlog_later_in_order(desk_gateway):
    gateway, desk, standin = desk_gateway, desk_gateway.desk, desk_gateway.zendesk
    user_id = _create_user(gateway)
    method, path = desk.ticket_create_request
    standin.add_fault(method=method, path=path, kind="status", status=503)
    conversation_id = _start(gateway, user_id)
    for n in range(5):
        response = gateway.message(
            {"conversationId": conversation_id, "type": "text", "payload": {"text": f"m{n}", "userId": user_id}}
        )
        assert response.status_code == 202
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    head = standin.wait_for(
        lambda: (d := Delivery.objects.get(session=session, kind=DeliveryKind.TICKET_CREATE)).attempts >= 2 and d,
        timeout=20,
    )
    assert head.status == DeliveryStatus.PENDING and head.last_status_code == 503
    assert not standin.tickets() and Message.objects.filter(session=session).count() == 5

    standin.clear_faults()
    ticket = _ticket_for(gateway, conversation_id)
    posted = standin.wait_for(lambda: len(m := desk.messages(ticket["id"])) == 5 and m, timeout=30)
    assert [m.text.strip() for m in posted] == [f"m{n}" for n in range(5)], "the backlog follows, in order"
    assert len(standin.tickets()) == 1, "retries made one ticket"


def test_a_webhook_before_the_ticket_row_is_stored_is_not_lost(desk_gateway):
    """The desk may call before our Ticket row commits (an agent quicker than our worker).

    A webhook carrying our reference (Zendesk) finds the session by it. A doorbell names only
    the desk's ticket: it finds nothing yet and is ignored, but nothing is lost, because the
    next doorbell on that ticket reads every reply the gateway has not relayed.
    """
    gateway, desk, botpress = desk_gateway, desk_gateway.desk, desk_gateway.botpress
    conversation_id = _start(gateway, _create_user(gateway))
    ticket = _ticket_for(gateway, conversation_id)
    session = _settled(gateway, conversation_id)
    row = Ticket.objects.get(session=session)
    Ticket.objects.filter(pk=row.pk).delete()  # as if its transaction had not committed yet
    agent_id = desk.add_agent("Grace Hopper", "grace@acme.test")

    desk.agent_reply(ticket["id"], agent_id, "First, while the row is missing")
    _settled(gateway, conversation_id)
    early = [m["payload"]["text"] for m in botpress.messages(conversation_id=conversation_id)]
    assert early == ([] if not desk.carries_reference else ["First, while the row is missing"])

    if not Ticket.objects.filter(session=session).exists():
        row.save(force_insert=True)  # the commit lands, and with it (as in ticket creation) ...
        # ... what found no session before it is applied again.
        webhook_doorbells_reread(integration=gateway.integration, ticket_external_id=row.external_id)
    desk.agent_reply(ticket["id"], agent_id, "Second")
    relayed = botpress.wait_for(
        lambda: len(m := botpress.messages(conversation_id=conversation_id)) >= 2 and m, timeout=20
    )
    _settled(gateway, conversation_id)
    assert [m["payload"]["text"] for m in botpress.messages(conversation_id=conversation_id)] == [
        "First, while the row is missing",
        "Second",
    ]
    assert len(relayed) == 2


def test_an_agent_reply_while_the_ticket_creation_answer_is_lost_is_relayed_once_it_is_found(desk_gateway):
    """The desk made the ticket but our answer was lost, and the look-up fails for a while; an
    agent replies meanwhile. Once the gateway finds and stores its ticket, the reply is relayed
    without waiting for another action in the desk (a doorbell is read again then)."""
    gateway, desk, standin, botpress = desk_gateway, desk_gateway.desk, desk_gateway.zendesk, desk_gateway.botpress
    method, path = desk.ticket_create_request
    standin.add_fault(method=method, path=path, kind="drop_after", times=1)
    method, path = desk.ticket_find_request
    standin.add_fault(method=method, path=path, kind="status", status=503)
    conversation_id = _start(gateway, _create_user(gateway))
    ticket = _ticket_for(gateway, conversation_id)
    agent_id = desk.add_agent("Grace Hopper", "grace@acme.test")
    desk.agent_reply(ticket["id"], agent_id, "Already on it")
    standin.wait_webhooks_idle(timeout=20)
    pending = WebhookEvent.objects.filter(integration=gateway.integration, status=WebhookStatus.ACCEPTED)
    botpress.wait_for(lambda: not pending.exists(), timeout=20)
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    assert not Ticket.objects.filter(session=session).exists(), "the look-up is still failing"

    standin.clear_faults()
    botpress.wait_for(lambda: Ticket.objects.filter(session=session).exists(), timeout=30)
    relayed = botpress.wait_for(lambda: botpress.messages(conversation_id=conversation_id), timeout=20)
    _settled(gateway, conversation_id)
    assert [m["payload"]["text"] for m in botpress.messages(conversation_id=conversation_id)] == ["Already on it"]
    assert relayed and len(standin.tickets()) == 1
