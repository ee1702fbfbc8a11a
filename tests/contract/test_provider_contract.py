"""The provider contract: what every help-desk adapter does, checked through its stand-in.

Adding a desk to this suite: write ``tests/contract/<kind>_fixture.py`` with a ``desk()``
context manager yielding a ``tests.contract.desk.ContractDesk`` (its stand-in, an adapter with
the stand-in's credentials, the installed webhook and the few desk-side actions: agent,
reply, assign, solve, captured webhooks). ``conftest.py`` finds it by its name; nothing here
changes. Agent-side events always go through ``webhook_parse`` and then
``webhook_events_fetch``, as the worker does, so doorbell desks (the webhook names the
ticket, the adapter reads it) and desks whose webhook carries the events pass the same tests.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from outbound.http import PermanentError, RetryableError
from providers.base import ExternalUserSpec, InboundEvent, OutboundMessage, TicketSpec, WebhookRejected
from providers.registry import provider_spec
from tests.contract.desk import CapturedWebhook, ContractDesk

WINDOW = timedelta(minutes=5)
MESSAGES = {
    "text": {"text": "Hello from the contract suite"},
    "image": {"imageUrl": "https://cdn.example.com/contract/photo.png", "title": "photo"},
    "audio": {"audioUrl": "https://cdn.example.com/contract/voice.mp3"},
    "video": {"videoUrl": "https://cdn.example.com/contract/clip.mp4"},
    "file": {"fileUrl": "https://cdn.example.com/contract/report.pdf", "title": "report"},
    "bloc": {
        "items": [
            {"type": "text", "payload": {"text": "Bloc text part"}},
            {"type": "image", "payload": {"imageUrl": "https://cdn.example.com/contract/bloc.png"}},
        ]
    },
}
TRANSCRIPT = "Someone opened a ticket.\n\n---\n\n**User**: my order is late\n\n**Bot**: let me find a human"


def _user(desk: ContractDesk, name: str = "Ada Lovelace") -> str:
    reference = f"bp-user-{uuid.uuid4().hex[:8]}"
    return desk.adapter.external_user_upsert(
        ExternalUserSpec(reference=reference, name=name, email=f"{reference}@x.test")
    )


def _ticket(desk: ContractDesk) -> tuple[str, str, str]:
    """A ticket with the transcript; returns (ticket id, our reference, requester id)."""
    requester = _user(desk)
    reference = f"conv-{uuid.uuid4().hex[:12]}"
    spec = TicketSpec(requester_external_id=requester, subject="Contract", body=TRANSCRIPT, reference=reference)
    ref = desk.adapter.ticket_create(spec, idempotency_key=str(uuid.uuid4()))
    return ref.external_id, reference, requester


def _events(desk: ContractDesk, webhooks: list[CapturedWebhook], known: set[str] = frozenset()) -> list[InboundEvent]:
    """What the worker would apply: each verified webhook parsed, then its events fetched."""
    adapter, events = desk.adapter, []
    for webhook in webhooks:
        adapter.webhook_verify(
            headers=webhook.headers,
            body=webhook.body,
            secret=desk.installation.signing_secret,
            now=datetime.now(UTC),
            window=WINDOW,
        )
        parsed = adapter.webhook_parse(headers=webhook.headers, body=webhook.body, installation=desk.installation.state)
        events += adapter.webhook_events_fetch(
            parsed=parsed, installation=desk.installation.state, known_message_ids=set(known)
        )
    return events


def test_spec_names_this_adapter(desk):
    spec = provider_spec(desk.kind)
    assert type(desk.adapter).kind == spec.kind
    assert all(header == header.lower() for header in spec.kept_headers)


def test_external_user_is_created_then_found_by_reference(desk):
    spec = ExternalUserSpec(reference=f"bp-{uuid.uuid4().hex[:8]}", name="Grace Hopper", email="grace@x.test")
    first = desk.adapter.external_user_upsert(spec)
    again = desk.adapter.external_user_upsert(ExternalUserSpec(reference=spec.reference, name="Grace B. Hopper"))
    assert first and again == first


def test_ticket_carries_the_transcript_and_is_found_by_reference(desk):
    ticket_id, reference, _ = _ticket(desk)
    bodies = "\n".join(desk.ticket_messages(ticket_external_id=ticket_id).values())
    assert "my order is late" in bodies and "let me find a human" in bodies
    assert desk.adapter.ticket_find(reference=reference).external_id == ticket_id
    assert desk.adapter.ticket_find(reference=f"conv-unknown-{uuid.uuid4().hex}") is None


@pytest.mark.parametrize("message_type", list(MESSAGES))
def test_each_message_type_is_posted_as_its_author(desk, message_type):
    ticket_id, _, requester = _ticket(desk)
    message = OutboundMessage(
        type=message_type, payload=MESSAGES[message_type], author_external_id=requester, author_name="Ada Lovelace"
    )
    posted = desk.adapter.message_post(ticket_external_id=ticket_id, message=message)
    stored = desk.ticket_messages(ticket_external_id=ticket_id)
    assert posted in stored
    expected = "Bloc text part" if message_type == "bloc" else next(iter(MESSAGES[message_type].values()))
    assert expected in stored[posted]


def test_lost_ticket_answer_is_found_by_reference(desk):
    requester = _user(desk)
    reference = f"conv-{uuid.uuid4().hex[:12]}"
    spec = TicketSpec(requester_external_id=requester, subject="Lost", body=TRANSCRIPT, reference=reference)
    method, path = desk.ticket_create_request
    desk.standin.add_fault(method=method, path=path, kind="drop_after", times=1)
    with pytest.raises(RetryableError):
        desk.adapter.ticket_create(spec, idempotency_key=str(uuid.uuid4()))
    found = desk.adapter.ticket_find(reference=reference)
    assert found is not None and found.external_id


def test_lost_message_answer_is_found_and_known_ones_are_excluded(desk):
    ticket_id, _, requester = _ticket(desk)
    message = OutboundMessage(type="text", payload={"text": "Did this arrive?"}, author_external_id=requester)
    method, path = desk.message_post_request
    desk.standin.add_fault(method=method, path=path, kind="drop_after", times=1)
    with pytest.raises(RetryableError):
        desk.adapter.message_post(ticket_external_id=ticket_id, message=message)
    found = desk.adapter.message_find(ticket_external_id=ticket_id, message=message, exclude=set())
    assert found in desk.ticket_messages(ticket_external_id=ticket_id)
    assert desk.adapter.message_find(ticket_external_id=ticket_id, message=message, exclude={found}) is None


def test_close_is_done_once_and_again(desk):
    ticket_id, _, _ = _ticket(desk)
    desk.adapter.ticket_close(ticket_external_id=ticket_id)
    desk.adapter.ticket_close(ticket_external_id=ticket_id)  # already closed is done, not failed
    assert desk.ticket_is_closed(ticket_external_id=ticket_id)


def test_agent_reply_assignment_and_solve_become_events_in_order(desk):
    ticket_id, _, _ = _ticket(desk)
    desk.webhooks()
    agent = desk.agent_create("Jane Agent")
    desk.assign(ticket_external_id=ticket_id, agent_id=agent)
    assert [e.kind for e in _events(desk, desk.webhooks())] == ["assigned"]

    desk.agent_reply(ticket_external_id=ticket_id, agent_id=agent, text="We are on it.")
    [reply] = [e for e in _events(desk, desk.webhooks()) if e.kind == "agent_message"]
    assert reply.ticket_external_id == ticket_id and "We are on it." in reply.text
    assert reply.agent.external_id == agent and reply.message_external_id

    desk.solve(ticket_external_id=ticket_id, agent_id=agent)
    events = _events(desk, desk.webhooks(), known={reply.message_external_id})
    assert events[-1].kind == "stopped"
    # Only the reply already relayed may come again (the services dedupe it by its id).
    assert {e.message_external_id for e in events if e.kind == "agent_message"} <= {reply.message_external_id}


def test_our_own_messages_never_come_back_as_agent_messages(desk):
    ticket_id, _, requester = _ticket(desk)
    desk.webhooks()
    ours = {
        desk.adapter.message_post(
            ticket_external_id=ticket_id,
            message=OutboundMessage(type="text", payload={"text": f"end user says {n}"}, author_external_id=requester),
        )
        for n in range(2)
    }
    agent = desk.agent_create("Echo Agent")
    desk.agent_reply(ticket_external_id=ticket_id, agent_id=agent, text="Agent text")
    events = _events(desk, desk.webhooks())
    relayed = {e.message_external_id for e in events if e.kind == "agent_message"}
    assert relayed and not relayed & ours
    assert all("end user says" not in e.text for e in events)


def test_a_webhook_delivered_twice_has_one_dedup_key(desk):
    ticket_id, _, _ = _ticket(desk)
    desk.webhooks()
    agent = desk.agent_create("Dup Agent")
    desk.agent_reply(ticket_external_id=ticket_id, agent_id=agent, text="Once only")
    webhook = desk.webhooks()[-1]
    parse = desk.adapter.webhook_parse
    first = parse(headers=webhook.headers, body=webhook.body, installation=desk.installation.state)
    second = parse(headers=webhook.headers, body=webhook.body, installation=desk.installation.state)
    assert first.dedup_key and first.ticket_external_id == second.ticket_external_id == ticket_id
    if not first.doorbell:
        assert first.dedup_key == second.dedup_key
    # A doorbell's key may include its arrival (two identical doorbells can stand for two agent
    # replies); a repeat then costs one more read of the ticket, and the message ids dedupe.
    [reply] = [e for e in _events(desk, [webhook]) if e.kind == "agent_message"]
    # Already relayed: a doorbell does not return it again; a carrying webhook keeps its id.
    again = [e for e in _events(desk, [webhook], known={reply.message_external_id}) if e.kind == "agent_message"]
    assert all(e.message_external_id == reply.message_external_id for e in again)


def test_forged_and_unauthenticated_webhooks_are_rejected(desk):
    ticket_id, _, _ = _ticket(desk)
    desk.webhooks()
    desk.agent_reply(ticket_external_id=ticket_id, agent_id=desk.agent_create("Auth Agent"), text="Signed")
    [webhook] = desk.webhooks()[-1:]
    for bad in (desk.forged(webhook), desk.unauthenticated(webhook)):
        with pytest.raises(WebhookRejected):
            desk.adapter.webhook_verify(
                headers=bad.headers,
                body=bad.body,
                secret=desk.installation.signing_secret,
                now=datetime.now(UTC),
                window=WINDOW,
            )
    assert _events(desk, [webhook])  # the genuine one passes
    # What authenticates a webhook is never kept for the audit trail.
    forged = desk.forged(webhook).headers
    authenticating = {name for name, value in webhook.headers.items() if forged.get(name) != value}
    assert authenticating and not authenticating & set(provider_spec(desk.kind).kept_headers)


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, RetryableError), (503, RetryableError), (429, RetryableError), (400, PermanentError), (401, PermanentError)],
)
def test_http_errors_map_to_retryable_or_permanent(desk, status, error):
    ticket_id, _, requester = _ticket(desk)
    method, path = desk.message_post_request
    kind = "rate_limit" if status == 429 else "status"
    desk.standin.add_fault(method=method, path=path, kind=kind, status=status, retry_after=1, times=1)
    message = OutboundMessage(type="text", payload={"text": "fault"}, author_external_id=requester)
    with pytest.raises(error):
        desk.adapter.message_post(ticket_external_id=ticket_id, message=message)
    if status == 429:
        time.sleep(1.1)  # the desk said Retry-After: 1; an adapter may hold calls back until then
    assert desk.adapter.message_post(ticket_external_id=ticket_id, message=message)  # the next one goes through


def test_connection_failure_is_retryable(desk):
    desk.standin.add_fault(kind="timeout", delay=0.5, times=1)
    with pytest.raises(RetryableError):
        desk.adapter.ticket_find(reference="conv-timeout")
