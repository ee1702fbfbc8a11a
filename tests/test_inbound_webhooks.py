"""Inbound help-desk webhooks: foreign tickets, unstorable text, per-event isolation, re-apply,
replays under a fresh invocation id, and rejected requests counted instead of stored.

Signed Zendesk webhooks go through the real view (``/webhooks/zendesk/<id>/``, Django's test
client) and are applied synchronously (``webhook_queue_drain``), on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps as global_apps
from django.urls import reverse

from providers.base import AgentProfile, InboundEvent
from providers.text import text_sanitize, value_sanitize
from providers.zendesk.webhooks import signature_compute
from sessions_app.models import (
    Delivery,
    DeliveryKind,
    EndUser,
    HitlSession,
    Message,
    OperatorAction,
    OperatorActionKind,
    SessionStatus,
    Ticket,
    WebhookEvent,
    WebhookRejection,
    WebhookStatus,
)
from sessions_app.services import sessions as session_services
from sessions_app.services import webhooks
from sessions_app.services.integrations import integration_signing_secret_replace
from sessions_app.services.relay import doorbell_answer, relay_doorbell
from sessions_app.services.sessions import session_events_apply
from tests.conftest import integration_for

SECRET = "whsec-inbound-test-secret"
GRACE = AgentProfile(external_id="7", name="Grace")
AGENT = {"id": "7", "name": "Grace", "email": "grace@acme.test", "role": "agent", "remote_photo_url": ""}


@pytest.fixture
def scene(db, monkeypatch):
    """A session with ticket 42 on conversation conv_1; the broker is not called."""
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    integration.save(update_fields=integration_signing_secret_replace(integration=integration, secret=SECRET))
    end_user = EndUser.objects.create(integration=integration, botpress_user_id="user_1", name="Ada")
    session = HitlSession.objects.create(integration=integration, end_user=end_user, botpress_conversation_id="conv_1")
    Ticket.objects.create(session=session, integration=integration, external_id="42")
    return session


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def send(client, integration, payload, *, invocation: str | None = None, timestamp: str | None = None):
    """POST a correctly signed Zendesk webhook (``payload``: a dict, or the raw body)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    stamp = timestamp or _stamp()
    return client.post(
        f"/webhooks/zendesk/{integration.pk}/",
        data=body,
        content_type="application/json",
        HTTP_X_ZENDESK_WEBHOOK_SIGNATURE=signature_compute(secret=SECRET, timestamp=stamp, body=body),
        HTTP_X_ZENDESK_WEBHOOK_SIGNATURE_TIMESTAMP=stamp,
        HTTP_X_ZENDESK_WEBHOOK_INVOCATION_ID=invocation or uuid.uuid4().hex,
    )


def apply_accepted() -> None:
    for event_id in (
        WebhookEvent.objects.filter(status=WebhookStatus.ACCEPTED).order_by("id").values_list("id", flat=True)
    ):
        webhooks.webhook_queue_drain(webhook_event_id=event_id)


def trigger(event_type: str, *, comment: str = "", comment_id: str = "900", ticket: str = "42", reference="conv_1"):
    return {
        "type": event_type,
        "ticketId": ticket,
        "externalId": reference,
        "status": "solved" if event_type == "ticketSolved" else "open",
        "commentId": comment_id if comment else "",
        "comment": comment,
        "agent": AGENT,
        "currentUser": AGENT,
    }


def stop_events(session) -> list[Delivery]:
    return list(Delivery.objects.filter(session=session, kind=DeliveryKind.EVENT_TO_USER, payload__event="hitlStopped"))


# --- 1. a foreign ticket never takes over a session ------------------------------------------
FOREIGN = {
    "agent_message": InboundEvent(
        kind="agent_message",
        ticket_external_id="434343",
        reference="conv_1",
        agent=GRACE,
        message_external_id="9001",
        text="hijack",
    ),
    "assigned": InboundEvent(kind="assigned", ticket_external_id="434343", reference="conv_1", agent=GRACE),
    "stopped": InboundEvent(kind="stopped", ticket_external_id="434343", reference="conv_1", agent=GRACE),
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_foreign_ticket_naming_the_conversation_is_not_a_gateway_ticket(scene, kind):
    applied = session_events_apply(integration=scene.integration, events=[FOREIGN[kind]])
    assert applied.session is None and applied.detail == f"{kind}: not a gateway ticket"
    session = HitlSession.objects.get(pk=scene.pk)
    assert session.status == SessionStatus.PENDING and session.agent is None
    assert not Message.objects.filter(session=session).exists()
    assert not Delivery.objects.filter(session=session).exists()


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_the_fallback_still_serves_a_session_whose_ticket_row_is_not_committed_yet(scene, kind):
    Ticket.objects.filter(session=scene).delete()
    applied = session_events_apply(integration=scene.integration, events=[FOREIGN[kind]])
    assert applied.session.pk == scene.pk and "not a gateway ticket" not in applied.detail
    session = HitlSession.objects.get(pk=scene.pk)
    expected = {"agent_message": SessionStatus.ASSIGNED, "assigned": SessionStatus.ASSIGNED, "stopped": "stopped"}
    assert session.status == expected[kind]


def test_a_signed_foreign_new_message_is_ignored_end_to_end(scene, client):
    response = send(client, scene.integration, trigger("newMessage", comment="<p>hijack</p>", ticket="434343"))
    assert response.status_code == 200
    apply_accepted()
    event = WebhookEvent.objects.get()
    assert event.status == WebhookStatus.IGNORED and event.session is None
    assert not Message.objects.exists()


# --- 4. unstorable characters ---------------------------------------------------------------
def test_text_sanitize():
    assert text_sanitize("copy\x00paste") == "copypaste"
    assert text_sanitize("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    assert text_sanitize("\ud83d\ude00") == "\U0001f600"  # a pair given as two code points is joined
    assert text_sanitize("plain ✓ 😀") == "plain ✓ 😀"


@dataclasses.dataclass(frozen=True)
class _Part:
    url: str
    meta: dict


@dataclasses.dataclass(frozen=True)
class _Event:
    text: str
    parts: list
    pair: tuple
    nested: _Part | None = None


def test_value_sanitize_walks_every_field_of_nested_dataclasses():
    dirty = _Event(
        text="a\x00",
        parts=[_Part(url="u\ud800", meta={"k\x00": ["v\x00", 3]})],
        pair=("x\x00", 1),
        nested=_Part(url="\udc00", meta={}),
    )
    assert value_sanitize(dirty) == _Event(
        text="a",
        parts=[_Part(url="u\ufffd", meta={"k": ["v", 3]})],
        pair=("x", 1),
        nested=_Part(url="\ufffd", meta={}),
    )


def test_a_comment_with_nul_is_relayed_sanitised(scene, client):
    response = send(client, scene.integration, trigger("newMessage", comment="<p>copy\u0000paste</p>"))
    assert response.status_code == 200 and response.json() == {"status": "accepted"}
    apply_accepted()
    event = WebhookEvent.objects.get()
    assert event.status == WebhookStatus.PROCESSED, event.detail
    message = Message.objects.get(session=scene, direction="to_user")
    assert message.payload["text"] == "copypaste"
    assert Delivery.objects.filter(message=message, kind=DeliveryKind.MESSAGE_TO_USER).exists()


def test_a_solve_carrying_such_a_comment_still_stops(scene, client):
    response = send(client, scene.integration, trigger("ticketSolved", comment="<p>bye\u0000 \ud800</p>"))
    assert response.status_code == 200
    apply_accepted()
    assert WebhookEvent.objects.get().status == WebhookStatus.PROCESSED
    session = HitlSession.objects.get(pk=scene.pk)
    assert session.status == SessionStatus.STOPPED and len(stop_events(session)) == 1
    assert Message.objects.get(session=session, direction="to_user").payload["text"] == "bye \ufffd"


def test_raw_nul_bytes_and_invalid_utf8_are_answered_400_and_stored_sanitised(scene, client):
    for body in (b'{"type": "newMessage", "ticketId": "42"\x00}', b'{"type": "\xff\xfe"}'):
        assert send(client, scene.integration, body).status_code == 400
    stored = list(WebhookEvent.objects.values_list("status", "body"))
    assert [status for status, _ in stored] == [WebhookStatus.FAILED] * 2
    assert all("\x00" not in body for _, body in stored)


def test_an_agent_described_with_longer_values_than_stored_still_gets_the_message_through(scene, client):
    agent = {
        **AGENT,
        "name": "N" * 300,
        "email": "a" * 250 + "@acme.test",
        "remote_photo_url": "https://p.test/" + "p" * 2100,
    }
    body = {**trigger("newMessage", comment="<p>hello</p>"), "agent": agent, "currentUser": agent}
    assert send(client, scene.integration, body).status_code == 200
    apply_accepted()
    event = WebhookEvent.objects.get()
    assert event.status == WebhookStatus.PROCESSED, event.detail
    message = Message.objects.get(session=scene, direction="to_user")
    assert message.payload["text"] == "hello"
    assert (message.author_agent.name, message.author_agent.email, message.author_agent.picture_url) == (
        "N" * 255,
        "",
        "",
    )


# --- 4. one failing event drops nothing else; recorded, flagged, re-appliable ---------------
def _break_relays(monkeypatch):
    def broken(**kwargs):
        raise ValueError("comment renderer crashed")

    monkeypatch.setattr(session_services, "agent_reply_receive", broken)


def test_a_permanent_failure_of_one_event_still_applies_the_others(scene, client, monkeypatch):
    _break_relays(monkeypatch)
    assert send(client, scene.integration, trigger("ticketSolved", comment="<p>last words</p>")).status_code == 200
    apply_accepted()
    event = WebhookEvent.objects.get()
    assert event.status == WebhookStatus.FAILED and event.session_id == scene.pk
    assert event.failed_events == [
        {"index": 0, "kind": "agent_message", "reason": "ValueError: comment renderer crashed"}
    ]
    assert event.detail == "agent_message: failed: ValueError: comment renderer crashed; stopped"
    session = HitlSession.objects.get(pk=scene.pk)
    assert session.status == SessionStatus.STOPPED and len(stop_events(session)) == 1, "the stop was not blocked"
    assert session.needs_attention


def test_a_transient_failure_of_one_event_retries_the_whole_webhook(scene, client, monkeypatch):
    from django.db import OperationalError

    def deadlock(**kwargs):
        raise OperationalError("deadlock detected")

    monkeypatch.setattr(session_services, "agent_reply_receive", deadlock)
    retries = []
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: retries.append(kw))
    send(client, scene.integration, trigger("ticketSolved", comment="<p>later</p>"))
    apply_accepted()
    assert WebhookEvent.objects.get().status == WebhookStatus.ACCEPTED and retries
    assert HitlSession.objects.get(pk=scene.pk).status == SessionStatus.PENDING, "rolled back as a whole"


def test_failed_webhooks_show_their_reason_and_are_re_applied_in_one_click(
    scene, client, admin_client, admin_user, monkeypatch
):
    _break_relays(monkeypatch)
    send(client, scene.integration, trigger("newMessage", comment="<p>first try</p>", comment_id="950"))
    apply_accepted()
    event = WebhookEvent.objects.get()
    assert event.status == WebhookStatus.FAILED

    listed = admin_client.get(reverse("admin:sessions_app_webhookevent_changelist") + "?status__exact=failed")
    assert "comment renderer crashed" in listed.content.decode()
    page = admin_client.get(reverse("admin:sessions_app_hitlsession_change", args=[scene.pk])).content.decode()
    reapply_url = reverse("admin:sessions_app_webhookevent_reapply", args=[event.pk])
    assert "comment renderer crashed" in page and reapply_url in page
    dashboard = admin_client.get(reverse("admin:sessions_app_hitlsession_dashboard"))
    card = next(c for c in dashboard.context["cards"] if c["label"] == "Webhooks failed")
    assert card["value"] == 1 and admin_client.get(card["url"]).context["cl"].result_count == 1

    monkeypatch.undo()  # the bug is fixed
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    response = admin_client.post(reapply_url)
    assert response.status_code == 302 and response["Location"].endswith(
        reverse("admin:sessions_app_hitlsession_change", args=[scene.pk])
    )
    audit = OperatorAction.objects.get(action=OperatorActionKind.WEBHOOK_REAPPLY)
    assert audit.user == admin_user and audit.detail["webhook_event_id"] == event.pk
    assert "comment renderer crashed" in audit.detail["previous"]["detail"]
    assert WebhookEvent.objects.get(pk=event.pk).status == WebhookStatus.ACCEPTED
    assert not HitlSession.objects.get(pk=scene.pk).needs_attention
    apply_accepted()
    event.refresh_from_db()
    assert event.status == WebhookStatus.PROCESSED and event.failed_events == []
    assert Message.objects.get(session=scene, direction="to_user").payload["text"] == "first try"
    # Applying it again changes nothing: the relay is deduplicated by comment id.
    admin_client.post(reapply_url)  # not failed any more: left alone
    assert Message.objects.filter(session=scene, direction="to_user").count() == 1


def test_re_apply_applies_only_the_events_that_failed(scene, client, admin_client, monkeypatch):
    """Events applied the first time (here a reassignment) are not applied again."""
    _break_relays(monkeypatch)
    send(client, scene.integration, trigger("ticketSolved", comment="<p>bye</p>", comment_id="960"))
    apply_accepted()
    monkeypatch.undo()
    monkeypatch.setattr(webhooks, "webhook_schedule", lambda **kw: None)
    admin_client.post(reverse("admin:sessions_app_webhookevent_reapply", args=[WebhookEvent.objects.get().pk]))
    apply_accepted()
    assert WebhookEvent.objects.get().detail == "agent_message: already relayed or session stopped"
    assert len(stop_events(scene)) == 1


def test_re_apply_needs_the_permission(scene, client, monkeypatch):
    from django.contrib.auth.models import Group, User

    from sessions_app.services.operators import OPERATORS_GROUP

    _break_relays(monkeypatch)
    send(client, scene.integration, trigger("newMessage", comment="<p>x</p>"))
    apply_accepted()
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.groups.add(Group.objects.get(name=OPERATORS_GROUP))
    client.force_login(viewer)
    event = WebhookEvent.objects.get()
    assert client.post(reverse("admin:sessions_app_webhookevent_reapply", args=[event.pk])).status_code == 403
    page = client.get(reverse("admin:sessions_app_hitlsession_change", args=[scene.pk])).content.decode()
    assert "comment renderer crashed" in page and "/reapply/" not in page
    assert WebhookEvent.objects.get().status == WebhookStatus.FAILED and not OperatorAction.objects.exists()


# --- issue 10.7: a replay under a fresh invocation id ---------------------------------------
def test_the_same_signed_content_under_a_new_invocation_id_is_a_duplicate(scene, client):
    body = json.dumps(trigger("newMessage", comment="<p>once</p>", comment_id="970")).encode()
    stamp = _stamp()
    first = send(client, scene.integration, body, invocation="inv-1", timestamp=stamp)
    replay = send(client, scene.integration, body, invocation="inv-2-forged", timestamp=stamp)
    assert first.json() == {"status": "accepted"} and replay.json() == {"status": "duplicate"}
    # Zendesk's own retry of a delivery, re-signed at another second: a new webhook as far as the
    # replay key goes, and the comment id still makes the relay once.
    resigned = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = send(client, scene.integration, body, invocation="inv-3", timestamp=resigned)
    assert later.json() == {"status": "accepted"}
    apply_accepted()
    assert Message.objects.filter(session=scene, external_message_id="970").count() == 1
    assert WebhookEvent.objects.count() == 2


# --- issue 10.5: rejected webhooks are counted, not stored ----------------------------------
def test_two_thousand_unsigned_posts_store_no_event_and_few_counters(scene, client):
    url = f"/webhooks/zendesk/{scene.integration.pk}/"
    forged = {
        "HTTP_X_ZENDESK_WEBHOOK_SIGNATURE": "Zm9yZ2VkLXNpZ25hdHVyZQ==",
        "HTTP_X_ZENDESK_WEBHOOK_SIGNATURE_TIMESTAMP": "",
    }
    for n in range(2000):
        body = json.dumps({"type": "ticketSolved", "ticketId": str(n), "pad": "x" * 4000}).encode()
        headers = forged | {"HTTP_X_ZENDESK_WEBHOOK_SIGNATURE_TIMESTAMP": _stamp()} if n % 2 else {}
        assert client.post(url, data=body, content_type="application/json", **headers).status_code == 401
    assert not WebhookEvent.objects.exists()
    counters = list(WebhookRejection.objects.all())
    assert len(counters) <= 4  # two reasons, at most two hours if the run straddles one
    assert {c.reason for c in counters} == {"missing signature headers", "signature mismatch"}
    assert sum(c.count for c in counters) == 2000
    for counter in counters:
        assert 1 <= len(counter.samples) <= webhooks.SAMPLES_KEPT
        for sample in counter.samples:
            assert len(json.dumps(sample).encode()) <= webhooks.SAMPLE_MAX_BYTES
            assert "Zm9yZ2VkLXNpZ25hdHVyZQ==" not in json.dumps(sample)
    # the last samples are kept: the newest request's ticket id is in the newest sample
    newest = max(counters, key=lambda c: c.last_at)
    assert '"ticketId": "199' in newest.samples[-1]["body"]


def test_rejection_figures_come_from_the_counters(scene, client, admin_client):
    for _ in range(3):
        client.post(f"/webhooks/zendesk/{scene.integration.pk}/", data=b"{}", content_type="application/json")
    page = admin_client.get(reverse("admin:sessions_app_integration_change", args=[scene.integration.pk]))
    assert page.status_code == 200
    dashboard = admin_client.get(reverse("admin:sessions_app_hitlsession_dashboard"))
    card = next(c for c in dashboard.context["cards"] if c["label"] == "Webhooks rejected (24 h)")
    assert card["value"] == 3 and card["note"] == "3 in 7 days"
    listed = admin_client.get(card["url"])
    assert sum(r.count for r in listed.context["cl"].queryset) == 3


def test_the_migration_folds_stored_rejections_into_counters(scene):
    migration = importlib.import_module("sessions_app.migrations.0009_a_webhook_robustness")
    for n in range(7):
        WebhookEvent.objects.create(
            integration=scene.integration,
            provider="zendesk",
            status="rejected",
            detail="signature mismatch",
            body=f'{{"n": {n}}}' + "x" * 4000,
            remote_addr="203.0.113.9",
        )
    WebhookEvent.objects.create(integration=scene.integration, provider="zendesk", status=WebhookStatus.PROCESSED)
    migration.rejected_rows_to_counters(global_apps, None)
    assert list(WebhookEvent.objects.values_list("status", flat=True)) == [WebhookStatus.PROCESSED]
    counters = list(WebhookRejection.objects.all())
    assert sum(c.count for c in counters) == 7 and {c.reason for c in counters} == {"signature mismatch"}
    samples = [s for c in counters for s in c.samples]
    assert samples[-1]["body"].startswith('{"n": 6}')
    assert all(len(json.dumps(s).encode()) <= webhooks.SAMPLE_MAX_BYTES for s in samples)


def test_retrying_dead_deliveries_keeps_the_flag_of_a_failed_webhook(scene, client, admin_user, monkeypatch):
    from django.utils import timezone

    from sessions_app.models import DeliveryStatus, Direction
    from sessions_app.services.operators import deliveries_retry_by_operator

    _break_relays(monkeypatch)
    send(client, scene.integration, trigger("newMessage", comment="<p>x</p>"))
    apply_accepted()
    now = timezone.now()
    dead = Delivery.objects.create(
        integration=scene.integration,
        session=scene,
        lane="l",
        direction=Direction.TO_AGENT,
        kind=DeliveryKind.TICKET_CLOSE,
        status=DeliveryStatus.DEAD,
        next_attempt_at=now,
        retry_deadline=now,
    )
    assert deliveries_retry_by_operator(deliveries=[dead], operator=admin_user) == [dead.pk]
    assert HitlSession.objects.get(pk=scene.pk).needs_attention, "the failed webhook still needs an operator"


def test_a_burst_of_webhooks_sends_one_relay_task(scene, client, monkeypatch, django_capture_on_commit_callbacks):
    """The doorbell: webhooks accepted before the relay answers cost no task each, whatever ticket."""
    sent: list[bool] = []
    monkeypatch.setattr(webhooks, "_relay_send", lambda: sent.append(True) or True)
    monkeypatch.setitem(webhooks.settings.HITL, "WEBHOOK_SIGNAL_SECONDS", 0)  # ring in the request's thread
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(3):
            send(client, scene.integration, trigger("newMessage", comment=f"<p>n{n}</p>", comment_id=str(900 + n)))
        send(client, scene.integration, trigger("newMessage", comment="<p>x</p>", comment_id="950", ticket="43"))
    events = list(WebhookEvent.objects.order_by("id"))
    assert len(events) == 4 and sent == [True], "one relay task for the burst"
    assert webhooks.webhook_queue_drain(webhook_event_id=events[0].pk) == 3, "a ticket's queue is applied in one go"
    doorbell_answer(name=relay_doorbell(""))  # what a relay does before it looks for work
    with django_capture_on_commit_callbacks(execute=True):
        send(client, scene.integration, trigger("newMessage", comment="<p>later</p>", comment_id="960"))
    assert sent == [True, True], "after the relay answered, the next webhook rings again"
