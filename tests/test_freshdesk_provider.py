"""The Freshdesk adapter against the Freshdesk stand-in, over real HTTP (no gateway involved)."""

import ipaddress
import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from outbound.guard import AddressPolicy, Allowance, guarded_session
from outbound.http import PermanentError, RetryableError, make_session
from outbound.media import MediaLimits, media_fetch
from providers.base import (
    AttachmentUnavailable,
    ExternalUserSpec,
    OutboundMessage,
    TicketSpec,
    WebhookInvalid,
    WebhookRejected,
)
from providers.freshdesk import SPEC, FreshdeskProvider
from providers.freshdesk import provider as fd_provider
from providers.freshdesk.entity import FreshdeskHitlSessionSerializer
from providers.freshdesk.provider import reference_tag
from providers.freshdesk.webhooks import SECRET_HEADER
from standins import FreshdeskStandin, Response, StandinServer

KEY = "fd-key-1"
NOW = datetime.now(UTC)


class Files(StandinServer):
    """A public web server holding the end user's media."""

    def __init__(self):
        super().__init__()
        self.route("GET", r"/media/photo\.png", lambda req: Response(200, b"\x89PNG-data", content_type="image/png"))
        self.route("GET", r"/media/big\.bin", lambda req: Response(200, b"x" * 5000, content_type="application/zip"))


class Receiver(StandinServer):
    """The gateway's webhook endpoint, reduced to: log and answer 200."""

    def __init__(self):
        super().__init__()
        self.route("POST", "/hooks/freshdesk", lambda req: Response(200, {"ok": True}))

    def hooks(self):
        return self.requests_log(path_regex="^/hooks/")


@pytest.fixture(scope="module")
def servers():
    desk, files, receiver = FreshdeskStandin(api_key=KEY).start(), Files().start(), Receiver().start()
    yield desk, files, receiver
    for server in (desk, files, receiver):
        server.stop()


@pytest.fixture
def desk(servers):
    servers[0].reset()
    servers[2].reset()
    fd_provider.RATE_PACER.reset()
    return servers[0]


@pytest.fixture
def files(servers):
    return servers[1]


@pytest.fixture
def receiver(servers):
    return servers[2]


def adapter(desk, *, key=KEY, max_bytes=1000):
    session = make_session()

    def fetch(url):  # the guarded public fetch, allowing only this test's loopback server
        port = urlsplit(url).port
        allow = tuple(Allowance(ipaddress.ip_network(net), port) for net in ("127.0.0.1/32", "::1/128"))
        guarded = guarded_session(policy=AddressPolicy(allow=allow))
        return media_fetch(url, session=guarded, limits=MediaLimits(max_bytes=max_bytes, deadline=5.0))

    return FreshdeskProvider(
        base_url=desk.base_url,
        credentials={"api_key": key},
        session=session,
        timeout=(5, 5),
        media_fetcher=fetch,
        media_max_bytes=100_000,
        media_timeout=5,
    )


def user_and_ticket(fd, *, reference="conv_01", extras=None):
    contact = fd.external_user_upsert(ExternalUserSpec(reference="user_1", name="Ada"))
    spec = TicketSpec(
        requester_external_id=contact,
        subject="Help",
        body="Hi\n\n<b>bold</b>",
        reference=reference,
        extras=extras or {},
    )
    return contact, fd.ticket_create(spec, idempotency_key="k1")


def text(author, body="hello agent"):
    return OutboundMessage(type="text", payload={"text": body}, author_external_id=author)


# --- contacts -------------------------------------------------------------------------------
def test_contact_created_with_external_id_and_found_again_on_duplicate(desk):
    fd = adapter(desk)
    first = fd.external_user_upsert(ExternalUserSpec(reference="user_1", name="Ada"))
    again = fd.external_user_upsert(ExternalUserSpec(reference="user_1", name="Ada"))
    assert first == again
    (contact,) = desk.contacts()
    assert contact["unique_external_id"] == "user_1" and contact["email"] is None  # no e-mail needed


def test_existing_email_contact_is_linked_and_given_our_id(desk):
    fd = adapter(desk)
    existing = fd.external_user_upsert(ExternalUserSpec(reference="crm-import", name="Bob", email="bob@example.com"))
    # The e-mail belongs to a contact made elsewhere, without an external id.
    with desk.lock:
        desk._contacts[int(existing)]["unique_external_id"] = None
    linked = fd.external_user_upsert(ExternalUserSpec(reference="user_9", name="Bob", email="bob@example.com"))
    assert linked == existing
    assert [c["unique_external_id"] for c in desk.contacts()] == ["user_9"]


# --- tickets --------------------------------------------------------------------------------
def test_ticket_carries_requester_html_description_codes_and_entity(desk):
    fd = adapter(desk)
    extras = {"priority": "high", "groupId": "2", "type": "Incident", "tags": ["vip"], "customFields": {"cf_vip": True}}
    contact, ref = user_and_ticket(fd, extras=extras)
    ticket = desk.ticket(int(ref.external_id))
    assert ticket["requester_id"] == int(contact)
    assert ticket["description"] == "<p>Hi</p><p>&lt;b&gt;bold&lt;/b&gt;</p>"
    assert (ticket["status"], ticket["priority"], ticket["source"]) == (2, 3, 7)
    assert ticket["group_id"] == 2 and ticket["type"] == "Incident" and ticket["custom_fields"]["cf_vip"] is True
    assert ticket["tags"] == ["botpress_hitl", reference_tag("conv_01"), "vip"]
    assert (ref.status, ref.priority, ref.url) == ("open", "high", f"{desk.base_url}/a/tickets/{ticket['id']}")


def test_line_breaks_of_the_transcript_are_kept():
    assert fd_provider.text_to_html("a\nb\n\nc") == "<p>a<br>b</p><p>c</p>"


def test_rejected_entity_value_is_a_permanent_error_naming_freshdesks_field(desk):
    fd = adapter(desk)
    with pytest.raises(PermanentError) as caught:
        user_and_ticket(fd, extras={"groupId": "999"})
    assert caught.value.status_code == 400 and "group_id" in caught.value.message


@pytest.mark.parametrize(
    "entity, field",
    [
        ({"priority": "normal"}, "priority"),
        ({"groupId": "abc"}, "groupId"),
        ({"tags": ["x" * 33]}, "tags"),
        ({"customFields": {"order": "1"}}, "customFields"),
        ({"customFields": {"cf_x": {"nested": 1}}}, "customFields"),
    ],
)
def test_entity_errors_name_the_field(entity, field):
    serializer = FreshdeskHitlSessionSerializer(data=entity)
    assert not serializer.is_valid()
    assert field in serializer.errors


def test_ticket_found_by_reference_after_a_lost_answer(desk):
    fd = adapter(desk)
    contact = fd.external_user_upsert(ExternalUserSpec(reference="user_1", name="Ada"))
    desk.add_fault("POST", r"/api/v2/tickets$", kind="drop_after", times=1)
    spec = TicketSpec(requester_external_id=contact, subject="S", body="B", reference="conv_lost")
    with pytest.raises(RetryableError):
        fd.ticket_create(spec, idempotency_key="k")
    found = fd.ticket_find(reference="conv_lost")
    assert found is not None and found.external_id == str(desk.tickets()[0]["id"])
    assert fd.ticket_find(reference="conv_other") is None


def test_ticket_found_while_the_search_index_lags(desk):
    """The filter API does not see a new ticket yet; the tickets list does."""
    fd = adapter(desk)
    desk.search_lag = 60
    _, ref = user_and_ticket(fd, reference="conv_fresh")
    assert desk.requests_log("GET", "/search/tickets") == []
    assert fd.ticket_find(reference="conv_fresh").external_id == ref.external_id
    assert desk.requests_log("GET", r"/api/v2/tickets$"), "the list was read after an empty search"


def test_close_sets_status_closed(desk):
    fd = adapter(desk)
    _, ref = user_and_ticket(fd)
    fd.ticket_close(ticket_external_id=ref.external_id)
    assert desk.ticket(int(ref.external_id))["status"] == 5


# --- notes ----------------------------------------------------------------------------------
def test_message_is_an_incoming_public_note_by_the_contact(desk):
    fd = adapter(desk)
    contact, ref = user_and_ticket(fd)
    note_id = fd.message_post(ticket_external_id=ref.external_id, message=text(contact, "a <tag>\nline"))
    (note,) = desk.conversations(int(ref.external_id))
    assert str(note["id"]) == note_id
    assert (note["incoming"], note["private"], note["user_id"], note["source"]) == (True, False, int(contact), 2)
    assert note["body"] == "<p>a &lt;tag&gt;<br>line</p>"


def test_bloc_is_one_note_with_its_image_attached_and_linked(desk, files):
    fd = adapter(desk)
    contact, ref = user_and_ticket(fd)
    image_url = f"{files.base_url}/media/photo.png"
    bloc = OutboundMessage(
        type="bloc",
        payload={
            "items": [
                {"type": "text", "payload": {"text": "look"}},
                {"type": "image", "payload": {"imageUrl": image_url, "title": "cat"}},
            ]
        },
        author_external_id=contact,
    )
    fd.message_post(ticket_external_id=ref.external_id, message=bloc)
    (note,) = desk.conversations(int(ref.external_id))
    assert "look" in note["body_text"] and image_url in note["body_text"]
    (attachment,) = note["attachments"]
    assert (attachment["name"], attachment["content_type"], attachment["size"]) == ("photo.png", "image/png", 9)
    assert desk.requests_log("POST", "/notes$")[0]["headers"]["content-type"].startswith("multipart/form-data")


def test_media_over_the_limit_stays_a_link(desk, files):
    fd = adapter(desk, max_bytes=1000)
    contact, ref = user_and_ticket(fd)
    url = f"{files.base_url}/media/big.bin"
    message = OutboundMessage(type="file", payload={"fileUrl": url}, author_external_id=contact)
    fd.message_post(ticket_external_id=ref.external_id, message=message)
    (note,) = desk.conversations(int(ref.external_id))
    assert note["attachments"] == [] and url in note["body_text"]


def test_message_found_after_a_lost_answer_and_not_twice(desk):
    fd = adapter(desk)
    contact, ref = user_and_ticket(fd)
    message = text(contact, "where is my order?")
    desk.add_fault("POST", "/notes$", kind="drop_after", times=1)
    with pytest.raises(RetryableError):
        fd.message_post(ticket_external_id=ref.external_id, message=message)
    found = fd.message_find(ticket_external_id=ref.external_id, message=message, exclude=set())
    assert found == str(desk.conversations(int(ref.external_id))[0]["id"])
    assert fd.message_find(ticket_external_id=ref.external_id, message=message, exclude={found}) is None


# --- errors and rate limits -----------------------------------------------------------------
def test_errors_map_to_retryable_and_permanent(desk):
    fd = adapter(desk)
    desk.add_fault("GET", "/agents/me", status=503, times=1)
    with pytest.raises(RetryableError):
        fd.connection_check(installation={})
    with pytest.raises(PermanentError) as caught:
        adapter(desk, key="wrong").connection_check(installation={})
    assert (caught.value.status_code, caught.value.error_type) == (401, "invalid_credentials")


def test_429_retry_after_is_honoured_without_spending_calls(desk):
    fd = adapter(desk)
    desk.add_fault("GET", "/agents/me", kind="rate_limit", retry_after=7, times=1)
    with pytest.raises(RetryableError) as caught:
        fd.connection_check(installation={})
    assert caught.value.status_code == 429 and caught.value.retry_after == 7
    sent = len(desk.requests_log())
    with pytest.raises(RetryableError) as again:
        fd.connection_check(installation={})
    assert 0 < again.value.retry_after <= 7
    assert len(desk.requests_log()) == sent, "the pause is kept locally, not by asking Freshdesk again"


def test_calls_slow_down_as_the_budget_runs_low_and_stop_at_zero(desk, monkeypatch):
    fd = adapter(desk)
    desk.rate_limit_total = 20
    slept = []
    monkeypatch.setattr(fd_provider.time, "sleep", slept.append)
    for _ in range(17):
        fd.connection_check(installation={})
    assert slept == []  # 3 left of 20: above 10 %
    fd.connection_check(installation={})  # now 2 left: the next call is spaced
    fd.connection_check(installation={})
    assert slept and all(0 < s <= fd_provider.RATE_PACER.MAX_SLEEP for s in slept)
    fd.connection_check(installation={})  # the last call of the minute
    with pytest.raises(RetryableError) as caught:
        fd.connection_check(installation={})
    assert caught.value.retry_after and len(desk.requests_log()) == 20


# --- webhooks: install, verify, parse -------------------------------------------------------
def installed(desk, receiver):
    fd = adapter(desk)
    return fd, fd.webhook_install(url=f"{receiver.base_url}/hooks/freshdesk", previous_state={})


def test_install_creates_two_rules_and_reinstall_replaces_them(desk, receiver):
    fd, installation = installed(desk, receiver)
    rules = desk.rules()
    assert [r["performer"]["type"] for r in rules] == [1, 4]
    assert all(
        r["actions"][0]["custom_headers"] == {"X-Hitl-Webhook-Secret": installation.signing_secret} for r in rules
    )
    again = fd.webhook_install(url=f"{receiver.base_url}/hooks/freshdesk", previous_state=installation.state)
    assert {str(r["id"]) for r in desk.rules()} == set(again.state["rule_ids"])
    assert fd.connection_check(installation=again.state).ok
    fd.webhook_uninstall(state=again.state)
    assert desk.rules() == []
    fd.webhook_uninstall(state=again.state)  # already gone is fine


def test_secret_rotation_rewrites_the_rules_header(desk, receiver):
    fd, installation = installed(desk, receiver)
    secret = fd.webhook_secret_rotate(state=installation.state)
    assert secret != installation.signing_secret
    assert {r["actions"][0]["custom_headers"]["X-Hitl-Webhook-Secret"] for r in desk.rules()} == {secret}


def test_agent_reply_rings_the_doorbell_with_our_secret(desk, receiver):
    fd, installation = installed(desk, receiver)
    _, ref = user_and_ticket(fd)
    agent = desk.add_agent("Jane", "jane@example.com")
    desk.agent_reply(int(ref.external_id), agent, "Hello!")
    desk.wait_webhooks_idle()
    (hook,) = receiver.hooks()
    headers = {k.lower(): v for k, v in hook["headers"].items()}
    FreshdeskProvider.webhook_verify(
        headers=headers, body=hook["body"], secret=installation.signing_secret, now=NOW, window=timedelta(0)
    )
    parsed = FreshdeskProvider.webhook_parse(headers=headers, body=hook["body"])
    assert parsed.doorbell and parsed.ticket_external_id == ref.external_id and parsed.events == []
    assert json.loads(hook["body"]) == {
        "ticket_id": ref.external_id,
        "status": "Open",
        "performer": "agent",
    }


def test_our_own_notes_ring_no_doorbell(desk, receiver):
    fd, _ = installed(desk, receiver)
    contact, ref = user_and_ticket(fd)
    fd.message_post(ticket_external_id=ref.external_id, message=text(contact))
    desk.wait_webhooks_idle()
    assert receiver.hooks() == []


@pytest.mark.parametrize(
    "headers, reason",
    [({}, "missing"), ({SECRET_HEADER: "nope"}, "mismatch")],
)
def test_doorbell_without_the_secret_is_rejected(headers, reason):
    with pytest.raises(WebhookRejected, match=reason):
        FreshdeskProvider.webhook_verify(headers=headers, body=b"{}", secret="s3cret", now=NOW, window=timedelta(0))
    with pytest.raises(WebhookRejected):
        FreshdeskProvider.webhook_verify(
            headers={SECRET_HEADER: ""}, body=b"{}", secret="", now=NOW, window=timedelta(0)
        )


@pytest.mark.parametrize(
    "body, field",
    [(b"[]", "body"), (b"{", "body"), (b"{}", "ticket_id"), (b'{"ticket_id": "12a"}', "ticket_id")],
)
def test_malformed_doorbell_names_the_field(body, field):
    with pytest.raises(WebhookInvalid) as caught:
        FreshdeskProvider.webhook_parse(headers={}, body=body)
    assert caught.value.field == field


def test_dedup_key_drops_only_an_identical_copy_of_the_same_instant():
    body = b'{"ticket_id": "7"}'
    parse = fd_provider.webhooks.webhook_parse
    assert parse(headers={}, body=body, now=100.0).dedup_key == parse(headers={}, body=body, now=100.0).dedup_key
    assert parse(headers={}, body=body, now=100.0).dedup_key != parse(headers={}, body=body, now=100.5).dedup_key


def test_manual_instructions_name_url_header_and_body(desk):
    text_ = adapter(desk).webhook_instructions(url="https://gw.example.com/hook", secret="abc")
    assert "https://gw.example.com/hook" in text_ and "X-Hitl-Webhook-Secret: abc" in text_
    assert '"ticket_id": "{{ticket.id}}"' in text_ and "Reply is sent" in text_


# --- the worker's read: events from the ticket ----------------------------------------------
def fetch(fd, ticket_id, known=()):
    parsed = FreshdeskProvider.webhook_parse(headers={}, body=json.dumps({"ticket_id": ticket_id}).encode())
    return fd.webhook_events_fetch(parsed=parsed, installation={}, known_message_ids=set(known))


def test_fetch_returns_agent_replies_then_assigned_then_stopped_without_echoes(desk):
    fd = adapter(desk)
    contact, ref = user_and_ticket(fd)
    ticket_id = int(ref.external_id)
    ours = fd.message_post(ticket_external_id=ref.external_id, message=text(contact))
    agent = desk.add_agent("Jane", "jane@example.com")
    first = desk.agent_reply(
        ticket_id,
        agent,
        "Hi **there**",
        attachments=[{"filename": "r.pdf", "content_type": "application/pdf", "content": b"%PDF"}],
    )
    desk.customer_reply(ticket_id, "thanks by e-mail")
    with desk.lock:  # an agent's private note is never relayed
        desk._new_conversation(
            desk._tickets[ticket_id],
            body="<p>internal</p>",
            user_id=agent,
            source=2,
            incoming=False,
            private=True,
            files=[],
        )
    second = desk.agent_reply(ticket_id, agent, "Bye")
    desk.assign(ticket_id, agent)
    desk.resolve(ticket_id, agent)

    events = fetch(fd, ref.external_id, known={ours})
    assert [e.kind for e in events] == ["agent_message", "agent_message", "assigned", "stopped"]
    reply = events[0]
    assert reply.message_external_id == str(first["id"]) and events[1].message_external_id == str(second["id"])
    # Named by id: the gateway looks up only agents it does not know (two calls per doorbell).
    assert reply.agent.external_id == str(agent) and not reply.agent.name
    assert not desk.requests_log("GET", "/agents/")
    profile = fd.agent_profile_fetch(external_id=reply.agent.external_id)
    assert (profile.name, profile.email) == ("Jane", "jane@example.com") and profile.picture_url
    assert [p.kind for p in reply.parts] == ["text", "media"] and reply.parts[1].filename == "r.pdf"
    assert "there" in reply.text
    assert events[2].agent.external_id == str(agent)
    # Already relayed messages are not returned again.
    known = {ours, str(first["id"]), str(second["id"])}
    assert [e.kind for e in fetch(fd, ref.external_id, known=known)] == ["assigned", "stopped"]


def test_a_doorbell_costs_two_calls_whatever_it_finds(desk):
    fd = adapter(desk)
    _, ref = user_and_ticket(fd)
    agent = desk.add_agent("Jane", "jane@example.com")
    desk.assign(int(ref.external_id), agent)
    desk.agent_reply(int(ref.external_id), agent, "one")
    desk.agent_reply(int(ref.external_id), agent, "two")
    desk.clear_log()
    events = fetch(fd, ref.external_id)
    assert [e.kind for e in events] == ["agent_message", "agent_message", "assigned"]
    assert [(e["method"], e["path"].split("?")[0]) for e in desk.requests_log()] == [
        ("GET", f"/api/v2/tickets/{ref.external_id}"),
        ("GET", f"/api/v2/tickets/{ref.external_id}/conversations"),
    ]


def test_fetch_follows_pagination(desk):
    fd = adapter(desk)
    contact, ref = user_and_ticket(fd)
    known = {fd.message_post(ticket_external_id=ref.external_id, message=text(contact, f"m{i}")) for i in range(101)}
    agent = desk.add_agent("Jane", "jane@example.com")
    reply = desk.agent_reply(int(ref.external_id), agent, "on page two")
    events = fetch(fd, ref.external_id, known=known)
    assert [e.message_external_id for e in events if e.kind == "agent_message"] == [str(reply["id"])]
    assert len(desk.requests_log("GET", "/conversations$")) == 2


def test_agent_profile_of_a_contact_is_none(desk):
    fd = adapter(desk)
    contact, _ = user_and_ticket(fd)
    assert fd.agent_profile_fetch(external_id=contact) is None
    assert fd.agent_profile_fetch(external_id="not-a-number") is None


def test_agent_attachment_downloads_and_an_expired_link_is_unavailable(desk):
    fd = adapter(desk)
    _, ref = user_and_ticket(fd)
    agent = desk.add_agent("Jane", "jane@example.com")
    desk.agent_reply(
        int(ref.external_id),
        agent,
        "see file",
        attachments=[{"filename": "r.pdf", "content_type": "application/pdf", "content": b"%PDF-1"}],
    )
    (message,) = [e for e in fetch(fd, ref.external_id) if e.kind == "agent_message"]
    media = fd.attachment_download(url=message.parts[1].url)
    assert (media.filename, media.content_type, media.content) == ("r.pdf", "application/pdf", b"%PDF-1")
    expired = message.parts[1].url.replace("Expires=", "Expires=1")
    with pytest.raises(AttachmentUnavailable):
        fd.attachment_download(url=expired)


def test_spec_declares_the_secret_and_the_api_install():
    assert [(f.name, f.secret) for f in SPEC.credential_fields] == [("api_key", True)]
    assert SPEC.webhook_install == "api" and SECRET_HEADER not in SPEC.kept_headers


def test_changed_tickets_are_listed_in_one_call_oldest_change_first(desk):
    fd = adapter(desk)
    _, first = user_and_ticket(fd, reference="conv_a")
    _, second = user_and_ticket(fd, reference="conv_b")
    since = datetime.now(UTC) - timedelta(minutes=5)
    time.sleep(1.05)  # Freshdesk stamps to the second: the reply's change comes a second later
    desk.agent_reply(int(first.external_id), desk.add_agent("Jane", "jane@example.com"), "later change")
    desk.clear_log()

    changes = fd.tickets_changed_list(since=since, limit=300)
    (listing,) = desk.requests_log("GET")
    assert listing["path"] == "/api/v2/tickets"
    assert listing["query"] == {
        "updated_since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "order_by": "updated_at",
        "order_type": "asc",
        "per_page": "100",
    }
    assert list(changes.changed) == [second.external_id, first.external_id]
    stamp = datetime.fromisoformat(desk.ticket(int(first.external_id))["updated_at"].replace("Z", "+00:00"))
    assert changes.changed[first.external_id] == stamp + timedelta(seconds=1), "made by the end of its second"
    assert changes.through >= stamp
    assert fd.tickets_changed_list(since=datetime.now(UTC) + timedelta(minutes=1), limit=300).changed == {}
