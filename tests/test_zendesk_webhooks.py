"""Zendesk webhook signatures and parsing (pure functions: no database, no network)."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from providers.base import WebhookInvalid, WebhookRejected
from providers.zendesk.webhooks import comment_text, signature_compute, signature_verify, trigger_body, webhook_parse

WINDOW = timedelta(minutes=5)
NOW = datetime(2021, 7, 25, 10, 1, tzinfo=UTC)


def test_signature_follows_the_documented_vector():
    # Zendesk's published vector was computed over BODY+TIMESTAMP (the old page's order);
    # current docs say TIMESTAMP+BODY, which is what we verify. Both facts pinned here.
    secret, body, timestamp = (
        "HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=",
        b'{"say": "hello"}',
        "2021-07-25T10:00:00Z",
    )
    import base64
    import hashlib
    import hmac

    old_order = base64.b64encode(hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).digest())
    assert old_order.decode() == "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw="
    expected = base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest())
    assert signature_compute(secret=secret, timestamp=timestamp, body=body) == expected.decode()


def _headers(secret="s3cret", timestamp="2021-07-25T10:00:00Z", body=b"{}"):
    return {
        "x-zendesk-webhook-signature": signature_compute(secret=secret, timestamp=timestamp, body=body),
        "x-zendesk-webhook-signature-timestamp": timestamp,
    }


def test_a_good_signature_passes():
    signature_verify(headers=_headers(), body=b"{}", secret="s3cret", now=NOW, window=WINDOW)


@pytest.mark.parametrize(
    ("headers", "secret", "now", "reason"),
    [
        ({}, "s3cret", NOW, "missing"),
        (_headers(secret="other"), "s3cret", NOW, "mismatch"),
        (_headers(), "s3cret", NOW + timedelta(minutes=10), "replay window"),
        (_headers(), "s3cret", NOW - timedelta(minutes=10), "replay window"),
        (_headers(timestamp="yesterday"), "s3cret", NOW, "malformed"),
        (_headers(), "", NOW, "no signing secret"),
    ],
)
def test_bad_signatures_are_rejected(headers, secret, now, reason):
    with pytest.raises(WebhookRejected, match=reason):
        signature_verify(headers=headers, body=b"{}", secret=secret, now=now, window=WINDOW)


def _render(event_type, attachments=(), **values):
    """Fill our trigger template as Zendesk would, to parse exactly what it sends.

    ``attachments``: (filename, url) pairs the Liquid loop over the comment's attachments lists.
    """
    import re

    template = trigger_body(event_type)
    loop = re.search(
        r"\{% for attachment in ticket\.latest_public_comment\.attachments %\}(.*?)\{% endfor %\}", template
    )
    items = []
    for index, (filename, url) in enumerate(attachments):
        item = loop.group(1).replace("{{attachment.filename}}", filename).replace("{{attachment.url}}", url)
        last = index == len(attachments) - 1
        items.append(re.sub(r"\{% if forloop\.last == false %\}(.*?)\{% endif %\}", "" if last else r"\1", item))
    template = template[: loop.start()] + "".join(items) + template[loop.end() :]
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", json.dumps(str(value))[1:-1])
    return re.sub(r"\{\{[^}]+\}\}", "", template).encode()


AGENT = {
    "current_user.id": "7",
    "current_user.name": "Grace",
    "current_user.role": "agent",
    "ticket.id": "42",
    "ticket.external_id": "conv_1",
}


def test_agent_comment_is_an_agent_message():
    body = _render(
        "newMessage",
        **AGENT,
        **{"ticket.public_comments[0].id": "900", "ticket.latest_public_comment_html": "<p>Hello &amp; welcome</p>"},
    )
    parsed = webhook_parse(headers={"x-zendesk-webhook-invocation-id": "inv-1"}, body=body)
    assert parsed.dedup_key == "zendesk:newMessage:inv-1"
    [event] = parsed.events
    assert (event.kind, event.ticket_external_id, event.reference, event.message_external_id, event.text) == (
        "agent_message",
        "42",
        "conv_1",
        "900",
        "Hello & welcome",
    )
    assert event.agent.external_id == "7" and event.agent.name == "Grace"


@pytest.mark.parametrize("role", ["end-user", "End-user", ""])
def test_end_user_and_system_comments_are_not_relayed(role):
    values = AGENT | {
        "current_user.role": role,
        "ticket.public_comments[0].id": "900",
        "ticket.latest_public_comment_html": "<p>hi</p>",
    }
    assert webhook_parse(headers={}, body=_render("newMessage", **values)).events == []
    system = AGENT | {
        "current_user.id": "-1",
        "ticket.public_comments[0].id": "900",
        "ticket.latest_public_comment_html": "<p>hi</p>",
    }
    assert webhook_parse(headers={}, body=_render("newMessage", **system)).events == []


def test_solved_relays_the_last_comment_then_stops():
    values = AGENT | {"ticket.public_comments[0].id": "901", "ticket.latest_public_comment_html": "<p>Bye</p>"}
    kinds = [e.kind for e in webhook_parse(headers={}, body=_render("ticketSolved", **values)).events]
    assert kinds == ["agent_message", "stopped"]


def test_assignment_and_unassignment():
    assigned = _render("ticketAssigned", **AGENT, **{"ticket.assignee.id": "7", "ticket.assignee.name": "Grace"})
    [event] = webhook_parse(headers={}, body=assigned).events
    assert event.kind == "assigned" and event.agent.external_id == "7"
    assert webhook_parse(headers={}, body=_render("ticketAssigned", **AGENT)).events == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[]", "body"),
        (b"nope", "body"),
        (b'{"ticketId": "1"}', "type"),
        (b'{"type": "other", "ticketId": "1"}', "type"),
        (b'{"type": "newMessage"}', "ticketId"),
        (b'{"type": "newMessage", "ticketId": "abc"}', "ticketId"),
        (b'{"type": "newMessage", "ticketId": "1", "currentUser": "x"}', "currentUser"),
    ],
)
def test_malformed_bodies_name_the_field(body, field):
    with pytest.raises(WebhookInvalid) as error:
        webhook_parse(headers={}, body=body)
    assert error.value.field == field


def test_without_an_invocation_id_the_body_is_the_dedup_key():
    body = _render("ticketAssigned", **AGENT)
    assert webhook_parse(headers={}, body=body).dedup_key == webhook_parse(headers={}, body=body).dedup_key


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Line one<br>Line two</p>", "Line one\nLine two"),
        ("----------------------------------------------\n\n<p>Reply</p>", "Reply"),
        ("<p>!*** submitted on behalf of Ada ***!</p><p>Real text</p>", "Real text"),
        ("<p>a &lt;b&gt; &quot;c&quot;</p>", 'a <b> "c"'),
    ],
)
def test_comment_text(html, text):
    assert comment_text(html) == text


def test_comment_attachments_follow_its_text_and_inline_images():
    image = "https://acme.zendesk.test/attachments/token/AbC123/?name=screenshot.png"
    pdf = "https://acme.zendesk.test/attachments/token/Pq7/?name=invoice.pdf"
    values = AGENT | {
        "ticket.public_comments[0].id": "900",
        "ticket.latest_public_comment_html": f'<p>See:</p><p><img src="{image}" alt="screenshot.png"></p>',
    }
    body = _render("newMessage", attachments=[("screenshot.png", image), ("invoice.pdf", pdf)], **values)
    [event] = webhook_parse(headers={}, body=body).events
    assert [(p.kind, p.text or p.url, p.filename) for p in event.parts] == [
        ("text", "See:", ""),
        ("media", image, "screenshot.png"),
        ("media", pdf, "invoice.pdf"),
    ]
    assert event.text == "See:"


def test_an_image_only_comment_is_relayed():
    image = "https://acme.zendesk.test/attachments/token/AbC123/?name=screenshot.png"
    values = AGENT | {
        "ticket.public_comments[0].id": "900",
        "ticket.latest_public_comment_html": f'<p><img src="{image}" alt="screenshot.png"></p>',
    }
    [event] = webhook_parse(headers={}, body=_render("newMessage", **values)).events
    assert event.kind == "agent_message" and event.text == ""
    assert [(p.kind, p.url, p.alt) for p in event.parts] == [("media", image, "screenshot.png")]


def test_the_trigger_body_lists_attachments_with_zendesk_liquid():
    body = trigger_body("newMessage")
    assert "{% for attachment in ticket.latest_public_comment.attachments %}" in body
    assert '"filename": "{{attachment.filename}}", "url": "{{attachment.url}}"' in body
    assert json.loads(_render("newMessage", attachments=[("a", "https://x.test/a")], **AGENT))["attachments"] == [
        {"filename": "a", "url": "https://x.test/a"}
    ]


@pytest.mark.parametrize("attachments", ['"x"', '["x"]', '[{"url": {"a": 1}}]'])
def test_malformed_attachments_name_the_field(attachments):
    body = b'{"type": "newMessage", "ticketId": "1", "commentId": "2", "comment": "<p>x</p>", '
    body += b'"currentUser": {"id": "7", "role": "agent"}, "attachments": ' + attachments.encode() + b"}"
    with pytest.raises(WebhookInvalid) as error:
        webhook_parse(headers={}, body=body)
    assert error.value.field in ("attachments", "url")
