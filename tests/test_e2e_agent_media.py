"""Agents' images and files reach the end user as Botpress media, with the real worker and stand-ins."""

from __future__ import annotations

import pytest
import requests

from sessions_app.models import Delivery, DeliveryStatus, HitlSession, Message
from tests.e2e_desks import create_user as _create_user
from tests.e2e_desks import start_hitl as _start
from tests.e2e_desks import zendesk_ticket_for as _ticket_for

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 200
PDF = b"%PDF-1.4\n" + b"\x02" * 300


def _session_idle(gateway, conversation_id):
    session = HitlSession.objects.get(botpress_conversation_id=conversation_id)
    gateway.zendesk.wait_webhooks_idle(timeout=20)
    gateway.botpress.wait_for(
        lambda: not Delivery.objects.filter(session=session, status=DeliveryStatus.PENDING).exists(), timeout=30
    )
    return session


def _assigned_ticket(gateway):
    user_id = _create_user(gateway)
    conversation_id = _start(gateway, user_id)
    ticket = _ticket_for(gateway, conversation_id)
    agent_id = gateway.zendesk.add_agent("Grace Hopper", "grace@acme.test")
    gateway.zendesk.assign(ticket["id"], agent_id)
    gateway.botpress.wait_for(lambda: gateway.botpress.events(type="hitlAssigned"), timeout=20)
    return conversation_id, ticket, agent_id


def test_text_inline_image_and_attachment_arrive_in_order_without_zendesk_credentials(gateway):
    zendesk, botpress = gateway.zendesk, gateway.botpress
    zendesk.private_attachments = True  # attachment URLs need the API agent's credentials
    conversation_id, ticket, agent_id = _assigned_ticket(gateway)

    comment = zendesk.agent_reply(
        ticket["id"],
        agent_id,
        "Here is what I see:",
        inline_images=[{"filename": "screenshot.png", "content_type": "image/png", "content": PNG}],
        attachments=[{"filename": "invoice.pdf", "content_type": "application/pdf", "content": PDF}],
    )
    private_url = comment["attachments"][0]["content_url"]
    assert requests.get(private_url, timeout=5).status_code == 401, "the stand-in's files are private"

    messages = botpress.wait_for(
        lambda: len(m := botpress.messages(conversation_id=conversation_id)) == 3 and m, timeout=30
    )
    assert [m["type"] for m in messages] == ["text", "image", "file"]
    assert messages[0]["payload"]["text"] == "Here is what I see:"
    image_url, file_url = messages[1]["payload"]["imageUrl"], messages[2]["payload"]["fileUrl"]
    assert messages[1]["payload"]["title"] == "screenshot.png" and messages[2]["payload"]["title"] == "invoice.pdf"
    for url, content in ((image_url, PNG), (file_url, PDF)):
        assert url.startswith(botpress.base_url + "/files-store/"), "re-hosted in Botpress's file store"
        served = requests.get(url, timeout=5)  # no credentials of any kind
        assert served.status_code == 200 and served.content == content
    assert {f["contentType"] for f in botpress.files()} == {"image/png", "application/pdf"}
    assert all(f["accessPolicies"] == ["public_content"] for f in botpress.files())
    # Zendesk's credentials went to Zendesk only: the file store saw none.
    store = botpress.requests_log(path_regex=r"^/files-store/")
    assert store and not any("authorization" in entry["headers"] for entry in store)
    downloads = zendesk.requests_log(method="GET", path_regex=r"^/attachments/token/")
    assert len([d for d in downloads if "authorization" in d["headers"]]) == 2, "each file downloaded once"

    session = _session_idle(gateway, conversation_id)
    ids = list(
        Message.objects.filter(session=session, direction="to_user")
        .order_by("id")
        .values_list("external_message_id", flat=True)
    )
    assert ids == [str(comment["id"]), f"{comment['id']}:1", f"{comment['id']}:2"]


def test_an_image_only_comment_is_relayed_once(gateway):
    zendesk, botpress = gateway.zendesk, gateway.botpress
    conversation_id, ticket, agent_id = _assigned_ticket(gateway)
    image = {"filename": "photo.png", "content_type": "image/png", "content": PNG}
    zendesk.add_webhook_fault(kind="duplicate", times=1)  # the same webhook twice: one message per part
    zendesk.agent_reply(ticket["id"], agent_id, "", inline_images=[image])
    messages = botpress.wait_for(lambda: botpress.messages(conversation_id=conversation_id), timeout=30)
    _session_idle(gateway, conversation_id)
    messages = botpress.messages(conversation_id=conversation_id)
    assert [m["type"] for m in messages] == ["image"]
    assert requests.get(messages[0]["payload"]["imageUrl"], timeout=5).content == PNG


def test_an_attachment_that_cannot_be_transferred_becomes_a_note(gateway):
    zendesk, botpress = gateway.zendesk, gateway.botpress
    zendesk.private_attachments = True
    conversation_id, ticket, agent_id = _assigned_ticket(gateway)
    zendesk.add_fault(method="GET", path=r"^/attachments/token/", status=404, times=1)
    zendesk.agent_reply(
        ticket["id"],
        agent_id,
        "See attached",
        attachments=[{"filename": "report.pdf", "content_type": "application/pdf", "content": PDF}],
    )
    messages = botpress.wait_for(
        lambda: len(m := botpress.messages(conversation_id=conversation_id)) == 2 and m, timeout=30
    )
    assert [m["payload"].get("text") for m in messages] == [
        "See attached",
        "[file: report.pdf — could not be transferred]",
    ]
    assert zendesk.base_url not in messages[1]["payload"]["text"], "no link that needs Zendesk credentials"


def test_a_text_reply_costs_one_botpress_call_and_no_zendesk_call(gateway):
    zendesk, botpress = gateway.zendesk, gateway.botpress
    conversation_id, ticket, agent_id = _assigned_ticket(gateway)
    zendesk.agent_reply(ticket["id"], agent_id, "Warm-up: the agent's Botpress user is created now")
    botpress.wait_for(lambda: botpress.messages(conversation_id=conversation_id), timeout=30)
    _session_idle(gateway, conversation_id)
    botpress.clear_log()
    zendesk.clear_log()

    zendesk.agent_reply(ticket["id"], agent_id, "<b>Just text</b> & a [link](https://example.com)")
    botpress.wait_for(lambda: len(botpress.messages(conversation_id=conversation_id)) == 2, timeout=30)
    _session_idle(gateway, conversation_id)
    assert [(e["method"], e["path"]) for e in botpress.requests_log()] == [("POST", "/v1/chat/messages/get-or-create")]
    assert zendesk.requests_log() == []
