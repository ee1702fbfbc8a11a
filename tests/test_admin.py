"""The operators' admin: pages render, secrets never show, actions go through the services.

No outbound HTTP happens here: any request through ``requests`` fails the test, the help-desk
adapter's webhook installation is replaced by a fake, and the outbox's broker call is recorded
instead of sent.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from outbound.http import PermanentError
from providers.base import WebhookInstallation
from providers.zendesk import ZendeskProvider
from sessions_app.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryKind,
    DeliveryStatus,
    Direction,
    EndUser,
    HitlSession,
    HumanAgent,
    Integration,
    Message,
    OperatorAction,
    OperatorActionKind,
    SessionStatus,
    StoppedBy,
    Ticket,
    WebhookEvent,
    WebhookStatus,
)
from sessions_app.services import outbox
from sessions_app.services.integrations import integration_create
from sessions_app.services.operators import (
    OPERATORS_GROUP,
    SUPERVISOR_PERMISSIONS,
    SUPERVISORS_GROUP,
    operator_groups_ensure,
)

BP_TOKEN = "bp-admin-test-token-Zq8LmW2v"
ZD_TOKEN = "zd-admin-test-api-token-Xr4Np7c"
SIGNING_SECRET = "whsec-admin-test-signing-Kt9Hb3q"
DUMMY_URL = "http://127.0.0.1:9/"
CHANGELISTS = ["integration", "hitlsession", "delivery", "webhookevent", "enduser", "humanagent"]
GATEWAY_CREATED = ["hitlsession", "delivery", "webhookevent", "enduser", "humanagent"]


def url(model: str, view: str = "changelist", *args) -> str:
    return reverse(f"admin:sessions_app_{model}_{view}", args=args)


def html(response) -> str:
    return response.content.decode()


def shown_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.fixture(autouse=True)
def no_outbound_http(request, monkeypatch):
    if {"zendesk", "botpress"} & set(request.fixturenames):
        return  # talks to the loopback stand-ins on purpose

    def refuse(self, request, *args, **kwargs):
        raise AssertionError(f"outbound HTTP attempted in an admin test: {request.method} {request.url}")

    monkeypatch.setattr("requests.adapters.HTTPAdapter.send", refuse)


@pytest.fixture
def scheduled(monkeypatch):
    """Delivery ids the outbox would have sent to the broker."""
    calls: list[int] = []
    monkeypatch.setattr(outbox, "delivery_schedule", lambda *, delivery_id, countdown=0: calls.append(delivery_id))
    monkeypatch.setattr(outbox, "_delivery_ready", lambda delivery: calls.append(delivery.pk))
    return calls


def lane_heads(deliveries) -> list[int]:
    """Of these deliveries, those that wake the relay once committed: every one (the doorbell,
    not the outbox, coalesces the messages)."""
    return [d.pk for d in deliveries]


def make_integration(name: str = "Acme support") -> tuple[Integration, str]:
    return integration_create(
        name=name,
        provider_base_url=DUMMY_URL,
        provider_credentials={"email": "gateway@acme.test", "api_token": ZD_TOKEN},
        botpress_api_url=DUMMY_URL,
        botpress_token=BP_TOKEN,
        botpress_bot_id="bot_admin_test",
        botpress_integration_id="intg_admin_test",
        webhook_signing_secret=SIGNING_SECRET,
    )


def make_session(integration: Integration, n: int, *, email: str = "", with_ticket: bool = True) -> HitlSession:
    """A session with an agent, a ticket, three messages (end user, agent, bot), deliveries and a webhook."""
    end_user = EndUser.objects.create(
        integration=integration,
        botpress_user_id=f"user_{n}",
        name=f"User {n}",
        email=email or f"user{n}@example.com",
    )
    agent = HumanAgent.objects.create(
        integration=integration, external_user_id=f"agent_{n}", name=f"Agent {n}", email=f"agent{n}@acme.test"
    )
    session = HitlSession.objects.create(
        integration=integration,
        end_user=end_user,
        agent=agent,
        status=SessionStatus.ASSIGNED,
        assigned_at=timezone.now(),
        botpress_conversation_id=f"conv_{n}",
        title=f"Help {n}",
    )
    if with_ticket:
        Ticket.objects.create(
            session=session,
            integration=integration,
            external_id=str(1000 + n),
            url=f"https://acme.zendesk.test/agent/tickets/{1000 + n}",
            status="open",
        )
    now = timezone.now()
    first = Message.objects.create(
        session=session,
        direction=Direction.TO_AGENT,
        type="text",
        payload={"text": f"hello from user {n}"},
        author_end_user=end_user,
        botpress_message_id=f"msg_{n}_1",
    )
    Message.objects.create(
        session=session,
        direction=Direction.TO_USER,
        type="text",
        payload={"text": f"agent reply {n}"},
        author_agent=agent,
        external_message_id=f"comment_{n}",
    )
    Message.objects.create(
        session=session,
        direction=Direction.TO_AGENT,
        type="image",
        payload={"imageUrl": f"https://files.example.com/img_{n}.png"},
    )
    dead = Delivery.objects.create(
        integration=integration,
        session=session,
        message=first,
        lane=f"session:{session.pk}:to_agent",
        direction=Direction.TO_AGENT,
        kind=DeliveryKind.MESSAGE_TO_AGENT,
        status=DeliveryStatus.DEAD,
        attempts=2,
        next_attempt_at=now,
        retry_deadline=now - timedelta(seconds=1),
        completed_at=now,
        last_error=f"HTTP 422: comment refused {n}",
        last_status_code=422,
    )
    DeliveryAttempt.objects.create(
        delivery=dead,
        number=1,
        started_at=now,
        duration_ms=12,
        status_code=503,
        outcome="retry",
        error="HTTP 503",
    )
    DeliveryAttempt.objects.create(
        delivery=dead,
        number=2,
        started_at=now,
        duration_ms=15,
        status_code=422,
        outcome="dead",
        error=f"HTTP 422: comment refused {n}",
    )
    Delivery.objects.create(
        integration=integration,
        session=session,
        lane=f"session:{session.pk}:to_agent",
        direction=Direction.TO_AGENT,
        kind=DeliveryKind.TICKET_CREATE,
        status=DeliveryStatus.SUCCEEDED,
        attempts=1,
        next_attempt_at=now,
        retry_deadline=now + timedelta(days=1),
        completed_at=now,
    )
    WebhookEvent.objects.create(
        integration=integration,
        provider=integration.provider,
        dedup_key=f"dedup_{n}",
        event_type="comment_added",
        headers={"content-type": "application/json", "user-agent": "Zendesk Webhook"},
        body=f'{{"ticket_id": "{1000 + n}", "marker": "webhook-body-{n}"}}',
        status=WebhookStatus.PROCESSED,
        detail=f"agent_message: relayed {n}",
        session=session,
        remote_addr="203.0.113.7",
    )
    return session


@pytest.fixture
def world(db):
    integration, api_key = make_integration()
    session = make_session(integration, 1)
    return SimpleNamespace(
        integration=integration,
        api_key=api_key,
        session=session,
        dead=Delivery.objects.get(session=session, status=DeliveryStatus.DEAD),
        succeeded=Delivery.objects.get(session=session, status=DeliveryStatus.SUCCEEDED),
        webhook=WebhookEvent.objects.get(session=session),
    )


def secrets_of(world) -> list[str]:
    integration = Integration.objects.get(pk=world.integration.pk)
    url_secret = getattr(integration, "botpress_url_secret", "")  # Botpress's URL credential, if any
    return [
        BP_TOKEN,
        ZD_TOKEN,
        SIGNING_SECRET,
        world.api_key,
        integration.api_key_hash,
        *([url_secret] if url_secret else []),
    ]


def assert_no_secret(content: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in content


def integration_form_data(integration: Integration, **overrides) -> dict:
    data = {
        "name": integration.name,
        "is_active": "on",
        "provider_base_url": integration.provider_base_url,
        "credential_zendesk_email": integration.provider_credentials.get("email", ""),
        "credential_zendesk_api_token": "",
        "new_webhook_signing_secret": "",
        "botpress_api_url": integration.botpress_api_url,
        "botpress_bot_id": integration.botpress_bot_id,
        "botpress_integration_id": integration.botpress_integration_id,
        "botpress_integration_alias": integration.botpress_integration_alias,
        "botpress_bot_user_id": integration.botpress_bot_user_id,
        "new_botpress_token": "",
    }
    return data | overrides


def run_action(
    client, model: str, action: str, pks, *, confirm: bool = False, follow: bool = True, reason: str | None = None
):
    """Post a changelist action as the browser does; ``confirm`` posts the confirmation page."""
    data = {"action": action, ACTION_CHECKBOX_NAME: [str(pk) for pk in pks]}
    if confirm:
        data["confirm"] = "yes"
        if reason is not None:
            data["reason"] = reason
    else:
        data["index"] = "0"
    return client.post(url(model), data, follow=follow)


# --- every page renders -----------------------------------------------------------------------
@pytest.mark.parametrize("model", CHANGELISTS)
def test_changelist_renders(admin_client, world, model):
    response = admin_client.get(url(model))
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


def test_change_pages_render(admin_client, world):
    session = world.session
    pages = [
        url("integration", "change", world.integration.pk),
        url("integration", "add"),
        url("integration", "history", world.integration.pk),
        url("hitlsession", "change", session.pk),
        url("delivery", "change", world.dead.pk),
        url("webhookevent", "change", world.webhook.pk),
        url("enduser", "change", session.end_user.pk),
        url("humanagent", "change", session.agent.pk),
        reverse("admin:index"),
    ]
    for page in pages:
        assert admin_client.get(page).status_code == 200, page


def test_filters_render(admin_client, world):
    pk = world.integration.pk
    for model, query in [
        (
            "hitlsession",
            {"status__exact": "assigned", "integration__id__exact": pk, "needs_attention__exact": "0"},
        ),
        ("hitlsession", {"o": "-7"}),
        (
            "delivery",
            {"status__exact": "dead", "kind__exact": "message_to_agent", "direction__exact": "to_agent"},
        ),
        (
            "webhookevent",
            {"status__exact": "processed", "provider__exact": "zendesk", "integration__id__exact": pk},
        ),
    ]:
        response = admin_client.get(url(model), query)
        assert response.status_code == 200
        assert response.context["cl"].result_count >= 1, (model, query)


# --- sessions -----------------------------------------------------------------------------------
def test_session_list_columns_and_ticket_link(admin_client, world):
    response = admin_client.get(url("hitlsession"))
    content = html(response)
    assert 'href="https://acme.zendesk.test/agent/tickets/1001" target="_blank"' in content
    assert "user1@example.com" in content
    assert "Agent 1" in content
    assert "Help 1" in content  # the title
    # One problem badge worded as a problem (the session has a dead delivery), no yes/no icons.
    assert '<span class="problem-badge">delivery failed (gave up)</span>' in content
    assert "icon-no.svg" not in content and "icon-yes.svg" not in content


def test_session_ticket_link_only_for_web_urls(admin_client, world):
    Ticket.objects.filter(session=world.session).update(url="javascript:alert(1)")
    content = html(admin_client.get(url("hitlsession")))
    assert "javascript:alert" not in content
    assert "1001" in content


@pytest.mark.parametrize("query", ["ada@example.com", "Ada Lovelace", "1002", "conv_2"])
def test_session_search(admin_client, db, query):
    integration, _ = make_integration()
    make_session(integration, 1)
    wanted = make_session(integration, 2, email="ada@example.com")
    EndUser.objects.filter(pk=wanted.end_user_id).update(name="Ada Lovelace")
    response = admin_client.get(url("hitlsession"), {"q": query})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [wanted]


def _session_changelist_queries(client) -> tuple[int, object]:
    client.get(url("hitlsession"))  # warm caches (content types, the admin session)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url("hitlsession"))
    assert response.status_code == 200
    return len(queries.captured_queries), response


def test_session_changelist_query_count_does_not_grow(admin_client, db):
    integration, _ = make_integration()
    make_session(integration, 0, with_ticket=False)
    for n in range(1, 3):
        make_session(integration, n)
    few, response = _session_changelist_queries(admin_client)
    assert response.context["cl"].result_count == 3
    for n in range(3, 30):
        make_session(integration, n)
    many, response = _session_changelist_queries(admin_client)
    assert response.context["cl"].result_count == 30
    assert many == few


def test_session_page_shows_message_log_deliveries_and_webhooks(admin_client, world):
    content = html(admin_client.get(url("hitlsession", "change", world.session.pk)))
    # The message log, in order, with authors and the delivery of each message.
    first, second, third = (
        content.index("hello from user 1"),
        content.index("agent reply 1"),
        content.index("https://files.example.com/img_1.png"),
    )
    assert first < second < third
    assert "end user: user1@example.com" in content
    assert "agent: Agent 1" in content
    assert ">bot<" in content
    assert "msg_1_1" in content and "comment_1" in content
    assert "HTTP 422: comment refused 1" in content
    assert "not delivered, gave up: HTTP 422: comment refused 1" in content
    # Status fields, the webhook events, the ticket, and the close button (session is active).
    assert "Stop reason" in content and "Assigned at" in content
    assert "agent_message: relayed 1" in content
    assert 'target="_blank"' in content
    assert url("hitlsession", "close", world.session.pk) in content
    # Read-only: no save button, no editable inputs for the session.
    assert 'name="_save"' not in content
    assert 'name="status"' not in content


@pytest.mark.parametrize("model", GATEWAY_CREATED)
def test_gateway_records_cannot_be_added(admin_client, world, model):
    assert admin_client.get(url(model, "add")).status_code == 403


def test_session_page_cannot_be_edited(admin_client, world):
    response = admin_client.post(url("hitlsession", "change", world.session.pk), {"status": "stopped"})
    assert response.status_code == 403
    world.session.refresh_from_db()
    assert world.session.status == SessionStatus.ASSIGNED


# --- closing sessions ---------------------------------------------------------------------------
def _stop_deliveries(session):
    return Delivery.objects.filter(session=session, kind__in=[DeliveryKind.TICKET_CLOSE, DeliveryKind.EVENT_TO_USER])


REASON = "customer asked by phone to stop"


def assert_closed_by_operator(session, scheduled, *, reason: str = REASON, username: str = "admin"):
    session.refresh_from_db()
    assert session.status == SessionStatus.STOPPED
    assert session.stopped_by == StoppedBy.OPERATOR
    assert session.stop_reason == reason
    assert session.stopped_at is not None
    close = Delivery.objects.get(session=session, kind=DeliveryKind.TICKET_CLOSE)
    assert close.direction == Direction.TO_AGENT and close.status == DeliveryStatus.PENDING
    event = Delivery.objects.get(session=session, kind=DeliveryKind.EVENT_TO_USER)
    assert event.direction == Direction.TO_USER and event.payload == {"event": "hitlStopped"}
    assert sorted(scheduled) == sorted(lane_heads([close, event]))
    audit = OperatorAction.objects.get(session=session, action=OperatorActionKind.SESSION_CLOSE)
    assert (audit.username, audit.reason, audit.user.get_username()) == (username, reason, username)


def test_close_action_asks_first_then_closes_and_is_idempotent(
    admin_client, world, scheduled, django_capture_on_commit_callbacks
):
    session = world.session
    already = make_session(world.integration, 2)
    HitlSession.objects.filter(pk=already.pk).update(
        status=SessionStatus.STOPPED,
        stopped_by=StoppedBy.AGENT,
        stopped_at=timezone.now(),
        stop_reason="solved",
    )

    asked = run_action(admin_client, "hitlsession", "close_sessions", [session.pk, already.pk])
    assert asked.status_code == 200
    assert "admin/sessions_app/action_confirmation.html" in [t.name for t in asked.templates]
    session.refresh_from_db()
    assert session.status == SessionStatus.ASSIGNED

    # Confirmed without a reason: asked again, nothing closed.
    no_reason = run_action(admin_client, "hitlsession", "close_sessions", [session.pk], confirm=True, reason=" ")
    assert "admin/sessions_app/action_confirmation.html" in [t.name for t in no_reason.templates]
    assert "This field is required" in html(no_reason)
    session.refresh_from_db()
    assert session.status == SessionStatus.ASSIGNED

    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(
            admin_client, "hitlsession", "close_sessions", [session.pk, already.pk], confirm=True, reason=REASON
        )
    assert response.status_code == 200
    assert_closed_by_operator(session, scheduled)
    notes = shown_messages(response)
    assert any("Closed 1 session" in note for note in notes)
    assert any("1 session(s) were already stopped: conv_2" in note for note in notes)
    already.refresh_from_db()
    assert already.stopped_by == StoppedBy.AGENT and not _stop_deliveries(already).exists()

    # Again: nothing changes, and it is reported, not an error.
    with django_capture_on_commit_callbacks(execute=True):
        again = run_action(admin_client, "hitlsession", "close_sessions", [session.pk], confirm=True, reason="again")
    assert again.status_code == 200
    assert _stop_deliveries(session).count() == 2
    assert OperatorAction.objects.filter(action=OperatorActionKind.SESSION_CLOSE).count() == 1
    assert any("already stopped" in note for note in shown_messages(again))
    assert len(scheduled) == 2


def test_close_button_asks_why_then_closes_once(admin_client, world, scheduled, django_capture_on_commit_callbacks):
    session = world.session
    close_url = url("hitlsession", "close", session.pk)
    asked = admin_client.get(close_url)
    assert asked.status_code == 200
    assert 'name="reason"' in html(asked) and "hitlStopped" in html(asked)

    refused = admin_client.post(close_url, {"reason": ""})
    assert refused.status_code == 200 and refused.context["form"].errors
    session.refresh_from_db()
    assert session.status == SessionStatus.ASSIGNED and not scheduled

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(close_url, {"reason": REASON})
    assert response.status_code == 302
    assert response["Location"] == url("hitlsession", "change", session.pk)
    assert_closed_by_operator(session, scheduled)

    with django_capture_on_commit_callbacks(execute=True):
        again = admin_client.post(close_url, {"reason": "twice"}, follow=True)
    assert again.status_code == 200
    assert any("already stopped" in note for note in shown_messages(again))
    assert _stop_deliveries(session).count() == 2
    # A stopped session has no close button any more.
    assert close_url not in html(again)


def test_close_button_requires_csrf(admin_user, world, scheduled):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(url("hitlsession", "close", world.session.pk), {"reason": REASON}).status_code == 403
    world.session.refresh_from_db()
    assert world.session.status == SessionStatus.ASSIGNED


def test_viewer_cannot_close(client, world, scheduled):
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_hitlsession"))
    client.force_login(viewer)
    page = html(client.get(url("hitlsession", "change", world.session.pk)))
    assert url("hitlsession", "close", world.session.pk) not in page
    assert client.get(url("hitlsession", "close", world.session.pk)).status_code == 403
    assert client.post(url("hitlsession", "close", world.session.pk), {"reason": REASON}).status_code == 403
    run_action(client, "hitlsession", "close_sessions", [world.session.pk], confirm=True, reason=REASON)
    world.session.refresh_from_db()
    assert world.session.status == SessionStatus.ASSIGNED


# --- deliveries and webhooks --------------------------------------------------------------------
def test_retry_action_re_pends_dead_deliveries_only(admin_client, world, scheduled, django_capture_on_commit_callbacks):
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "delivery", "retry_dead_deliveries", [world.dead.pk, world.succeeded.pk])
    assert response.status_code == 200
    world.dead.refresh_from_db()
    assert world.dead.status == DeliveryStatus.PENDING
    assert world.dead.completed_at is None
    assert world.dead.retry_deadline > before
    assert world.dead.next_attempt_at >= before
    world.succeeded.refresh_from_db()
    assert world.succeeded.status == DeliveryStatus.SUCCEEDED
    assert scheduled == [world.dead.pk]
    notes = shown_messages(response)
    assert any("1 dead delivery(ies) queued again" in note for note in notes)
    assert any("1 selected delivery(ies) were not dead" in note for note in notes)


@pytest.mark.parametrize("query", ["conv_1", "1001", str(10**9)])
def test_delivery_search(admin_client, world, query):
    response = admin_client.get(url("delivery"), {"q": query})
    assert response.status_code == 200
    expected = [] if query == str(10**9) else [world.succeeded, world.dead]
    assert list(response.context["cl"].result_list) == expected


def test_delivery_list_links_the_session(admin_client, world):
    content = html(admin_client.get(url("delivery")))
    assert f'href="{url("hitlsession", "change", world.session.pk)}"' in content


def test_delivery_page_shows_attempts(admin_client, world):
    content = html(admin_client.get(url("delivery", "change", world.dead.pk)))
    assert "HTTP 503" in content and "HTTP 422: comment refused 1" in content
    # Each attempt in words, in order; the delivery's outcome says what is known.
    assert content.index("not delivered: HTTP 503") < content.index("not delivered: HTTP 422: comment refused 1")
    assert "not delivered, gave up: HTTP 422: comment refused 1" in content
    assert "Message to agent" not in content and "message_to_agent #" not in content
    assert "Post a message to the ticket (delivery" in content  # the kind in words, in the title


def test_webhook_event_page_shows_headers_and_body(admin_client, world):
    content = html(admin_client.get(url("webhookevent", "change", world.webhook.pk)))
    assert "Zendesk Webhook" in content
    assert "webhook-body-1" in content
    assert "agent_message: relayed 1" in content


# --- integrations: secrets, creation, actions ---------------------------------------------------
def test_secrets_never_appear_in_admin_pages(admin_client, world):
    secrets = secrets_of(world)
    pages = [
        url("integration"),
        url("integration", "change", world.integration.pk),
        url("integration", "add"),
        url("hitlsession", "change", world.session.pk),
        url("hitlsession", "close", world.session.pk),
        reverse("admin:sessions_app_hitlsession_dashboard"),
        url("operatoraction"),
        url("webhookevent"),
        url("webhookevent", "change", world.webhook.pk),
        url("delivery", "change", world.dead.pk),
        reverse("admin:index"),
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200
        assert_no_secret(html(response), secrets)

    # A save that keeps every secret, then one that is refused: neither echoes a secret back.
    change = url("integration", "change", world.integration.pk)
    saved = admin_client.post(change, integration_form_data(world.integration), follow=True)
    assert saved.status_code == 200
    assert_no_secret(html(saved), secrets)
    refused = admin_client.post(
        change,
        integration_form_data(world.integration, provider_base_url="not a url", new_botpress_token="bp-new-token-99"),
    )
    assert refused.status_code == 200 and refused.context["adminform"].form.errors
    assert_no_secret(html(refused), [*secrets, "bp-new-token-99"])

    history = admin_client.get(url("integration", "history", world.integration.pk))
    assert_no_secret(html(history), secrets)


def test_edit_integration_blank_secrets_keep_values(admin_client, world):
    integration = world.integration
    change = url("integration", "change", integration.pk)
    page = html(admin_client.get(change))
    assert 'type="password"' in page
    assert "gateway@acme.test" in page  # the non-secret email is a normal field

    response = admin_client.post(change, integration_form_data(integration, credential_zendesk_email="new@acme.test"))
    assert response.status_code == 302
    integration.refresh_from_db()
    assert integration.provider_credentials == {"email": "new@acme.test", "api_token": ZD_TOKEN}
    assert integration.botpress_token == BP_TOKEN
    assert integration.webhook_signing_secret == SIGNING_SECRET

    response = admin_client.post(
        change,
        integration_form_data(
            integration,
            new_botpress_token="bp-rotated-token-123456",
            credential_zendesk_api_token="zd-rotated-token-123456",
            new_webhook_signing_secret="whsec-rotated-123456",
        ),
    )
    assert response.status_code == 302
    integration.refresh_from_db()
    assert integration.botpress_token == "bp-rotated-token-123456"
    assert integration.provider_credentials == {
        "email": "new@acme.test",
        "api_token": "zd-rotated-token-123456",
    }
    assert integration.webhook_signing_secret == "whsec-rotated-123456"
    # The history names the changed fields, never their values.
    logged = " ".join(entry.get_change_message() for entry in LogEntry.objects.all())
    assert "Botpress token" in logged
    assert_no_secret(logged, ["bp-rotated-token-123456", "zd-rotated-token-123456", "whsec-rotated-123456"])


def add_form_data(**overrides) -> dict:
    data = {
        "name": "Globex help",
        "provider": "zendesk",
        "provider_base_url": DUMMY_URL,
        "credential_zendesk_email": "agent@globex.test",
        "credential_zendesk_api_token": ZD_TOKEN,
        "new_webhook_signing_secret": "",
        "botpress_api_url": DUMMY_URL,
        "botpress_bot_id": "bot_globex",
        "botpress_integration_id": "intg_globex",
        "botpress_integration_alias": "",
        "botpress_bot_user_id": "",
        "new_botpress_token": BP_TOKEN,
    }
    return data | overrides


def test_add_integration_shows_api_key_once(admin_client, db, settings):
    settings.PUBLIC_BASE_URL = "https://gateway.example.com"
    response = admin_client.post(url("integration", "add"), add_form_data(), follow=True)
    assert response.status_code == 200
    integration = Integration.objects.get(name="Globex help")
    assert integration.botpress_token == BP_TOKEN
    assert integration.provider_credentials == {"email": "agent@globex.test", "api_token": ZD_TOKEN}
    assert integration.provider_base_url == DUMMY_URL.rstrip("/")

    content = html(response)
    keys = re.findall(r"<code>(hitl_[A-Za-z0-9_-]+)</code>", content)
    assert len(keys) == 1
    api_key = keys[0]
    assert hashlib.sha256(api_key.encode()).hexdigest() == integration.api_key_hash
    assert api_key.startswith(integration.api_key_prefix)
    assert f"https://gateway.example.com/webhooks/zendesk/{integration.pk}/" in content
    assert_no_secret(content, [BP_TOKEN, ZD_TOKEN, integration.api_key_hash])

    for page in (url("integration"), url("integration", "change", integration.pk)):
        later = html(admin_client.get(page))
        assert api_key not in later
        assert integration.api_key_prefix in later or page == url("integration")


def test_add_integration_requires_credentials(admin_client, db):
    response = admin_client.post(
        url("integration", "add"), add_form_data(new_botpress_token="", credential_zendesk_api_token="")
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "new_botpress_token" in errors and "credential_zendesk_api_token" in errors
    assert not Integration.objects.exists()

    # A refused form with the secrets typed in does not echo them back.
    refused = admin_client.post(url("integration", "add"), add_form_data(provider_base_url="not a url"))
    assert refused.status_code == 200 and "provider_base_url" in refused.context["adminform"].form.errors
    assert_no_secret(html(refused), [BP_TOKEN, ZD_TOKEN])
    assert not Integration.objects.exists()


def test_rotate_api_key_asks_then_shows_the_new_key_once(admin_client, world):
    integration = world.integration
    old_hash = integration.api_key_hash
    asked = run_action(admin_client, "integration", "rotate_api_key", [integration.pk])
    assert asked.status_code == 200
    assert "admin/sessions_app/action_confirmation.html" in [t.name for t in asked.templates]
    integration.refresh_from_db()
    assert integration.api_key_hash == old_hash

    response = run_action(admin_client, "integration", "rotate_api_key", [integration.pk], confirm=True)
    assert response.status_code == 200
    integration.refresh_from_db()
    assert integration.api_key_hash != old_hash
    keys = re.findall(r"<code>(hitl_[A-Za-z0-9_-]+)</code>", html(response))
    assert len(keys) == 1
    assert hashlib.sha256(keys[0].encode()).hexdigest() == integration.api_key_hash
    assert_no_secret(html(response), [BP_TOKEN, ZD_TOKEN, SIGNING_SECRET, integration.api_key_hash])
    assert keys[0] not in html(admin_client.get(url("integration", "change", integration.pk)))


def test_install_webhook_action(admin_client, world, monkeypatch):
    installed = {}

    def fake_install(self, *, url, previous_state):
        installed["url"] = url
        return WebhookInstallation(signing_secret="whsec-installed-secret-777", state={"webhook_id": "wh_1"})

    monkeypatch.setattr(ZendeskProvider, "webhook_install", fake_install)
    response = run_action(admin_client, "integration", "install_webhook", [world.integration.pk])
    assert response.status_code == 200
    world.integration.refresh_from_db()
    assert world.integration.provider_installation == {"webhook_id": "wh_1"}
    assert world.integration.webhook_signing_secret == "whsec-installed-secret-777"
    assert installed["url"].endswith(f"/webhooks/zendesk/{world.integration.pk}/")
    assert any("help-desk webhook installed" in note for note in shown_messages(response))
    assert_no_secret(html(response), ["whsec-installed-secret-777", BP_TOKEN, ZD_TOKEN])
    assert 'alt="True"' in html(admin_client.get(url("integration")))  # the "webhook installed" column


def test_install_webhook_failure_is_readable_and_secret_free(admin_client, world, monkeypatch):
    def failing_install(self, *, url, previous_state):
        raise PermanentError(f"Couldn't authenticate you (token {ZD_TOKEN})", 401, None, "Unauthorized")

    monkeypatch.setattr(ZendeskProvider, "webhook_install", failing_install)
    response = run_action(admin_client, "integration", "install_webhook", [world.integration.pk])
    assert response.status_code == 200
    notes = shown_messages(response)
    assert any("could not be installed: HTTP 401: Couldn't authenticate you" in note for note in notes)
    assert any("check the help-desk Agent email and API token" in note for note in notes)
    assert_no_secret(html(response), secrets_of(world))
    world.integration.refresh_from_db()
    assert world.integration.provider_installation == {}
    assert world.integration.webhook_signing_secret == SIGNING_SECRET


# --- the operators' console: groups and permissions ---------------------------------------------
def operator(username: str, group: str) -> User:
    user = User.objects.create_user(username, password="x", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_operator_groups_come_from_the_migration(db):
    view = {
        f"view_{model}"
        for model in (
            "integration",
            "enduser",
            "humanagent",
            "hitlsession",
            "ticket",
            "message",
            "delivery",
            "deliveryattempt",
            "webhookevent",
            "webhookrejection",
            "operatoraction",
            "lifecyclepolicy",
            "heartbeat",
        )
    }
    operators = Group.objects.get(name=OPERATORS_GROUP)
    supervisors = Group.objects.get(name=SUPERVISORS_GROUP)
    assert {p.codename for p in operators.permissions.all()} == view
    assert {p.codename for p in supervisors.permissions.all()} == view | set(SUPERVISOR_PERMISSIONS)
    operator_groups_ensure()  # idempotent
    assert operators.permissions.count() == len(view)


def test_read_only_operator_sees_everything_and_can_do_nothing(client, world, scheduled):
    client.force_login(operator("watcher", OPERATORS_GROUP))
    for model in [*CHANGELISTS, "operatoraction"]:
        assert client.get(url(model)).status_code == 200, model
    assert client.get(reverse("admin:sessions_app_hitlsession_dashboard")).status_code == 200
    session, message = world.session, world.session.messages.first()
    page = html(client.get(url("hitlsession", "change", session.pk)))
    assert "hello from user 1" in page
    for forbidden in (
        url("hitlsession", "close", session.pk),
        url("hitlsession", "retry", session.pk),
        url("hitlsession", "resend", session.pk, message.pk),
    ):
        assert forbidden not in page
    assert client.get(url("hitlsession", "close", session.pk)).status_code == 403
    assert client.post(url("hitlsession", "close", session.pk), {"reason": REASON}).status_code == 403
    assert client.post(url("hitlsession", "retry", session.pk)).status_code == 403
    assert client.post(url("hitlsession", "resend", session.pk, message.pk), {"reason": REASON}).status_code == 403
    assert "retry_dead_deliveries" not in html(client.get(url("delivery")))
    run_action(client, "delivery", "retry_dead_deliveries", [world.dead.pk])
    # Integration tools: looking is allowed (a connection test only reads), rotating is not.
    assert client.post(url("integration", "rotate_webhook_secret", world.integration.pk)).status_code == 403
    world.session.refresh_from_db()
    world.dead.refresh_from_db()
    assert world.session.status == SessionStatus.ASSIGNED and world.dead.status == DeliveryStatus.DEAD
    assert not OperatorAction.objects.exists() and not scheduled


def test_supervisor_closes_retries_and_resends(client, world, scheduled, django_capture_on_commit_callbacks):
    supervisor = operator("lead", SUPERVISORS_GROUP)
    client.force_login(supervisor)
    session = world.session
    page = html(client.get(url("hitlsession", "change", session.pk)))
    assert url("hitlsession", "close", session.pk) in page
    assert url("hitlsession", "retry", session.pk) in page
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url("hitlsession", "retry", session.pk))
        client.post(url("hitlsession", "close", session.pk), {"reason": REASON})
    world.dead.refresh_from_db()
    assert world.dead.status == DeliveryStatus.PENDING
    assert_closed_by_operator(session, [d for d in scheduled if d != world.dead.pk], username="lead")
    # Nobody may change the integration's secrets without the integration's change permission.
    assert client.get(url("integration", "rotate_webhook_secret", world.integration.pk)).status_code == 403


# --- the session page ---------------------------------------------------------------------------
def test_session_page_timeline_shows_types_transitions_webhooks_and_audit(admin_client, world, admin_user):
    session = world.session
    for kind, payload in [
        ("file", {"fileUrl": "https://files.example.com/invoice.pdf", "title": "invoice.pdf"}),
        ("image", {"imageUrl": "javascript:alert(1)"}),
        (
            "bloc",
            {
                "items": [
                    {"type": "text", "payload": {"text": "bloc words"}},
                    {"type": "image", "payload": {"imageUrl": "https://files.example.com/in-bloc.png"}},
                ]
            },
        ),
        ("choice", {"text": "Pick one", "options": [{"label": "Yes", "value": "y"}]}),
    ]:
        Message.objects.create(session=session, direction=Direction.TO_AGENT, type=kind, payload=payload)
    OperatorAction.objects.create(
        user=admin_user,
        username="admin",
        action=OperatorActionKind.DELIVERY_RETRY,
        session=session,
        reason="audit-reason-1",
        detail={"delivery_ids": [world.dead.pk]},
    )
    content = html(admin_client.get(url("hitlsession", "change", session.pk)))
    # An image is a link: the operator's browser fetches no end user's URL by itself.
    assert 'href="https://files.example.com/img_1.png"' in content and "image: " in content
    assert 'href="https://files.example.com/in-bloc.png"' in content
    assert [src for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', content) if not src.startswith("/static/")] == []
    assert 'href="https://files.example.com/invoice.pdf"' in content and "file: invoice.pdf" in content
    assert 'src="javascript' not in content and 'href="javascript' not in content  # shown as text only
    assert "bloc words" in content and "&quot;Yes&quot; (y)" in content
    # Both directions, in order, on their own side.
    assert content.index('data-direction="to_agent"') < content.index('data-direction="to_user"')
    assert 'class="msg right agent"' in content and 'class="msg left user"' in content
    # Delivery state and attempts; transitions; raw webhook records; the audit entry.
    assert "not delivered, gave up: HTTP 422: comment refused 1" in content
    assert "1. " in content and "2. " in content and "not delivered: HTTP 503" in content  # both attempts
    assert "Waiting for an agent" in content and "Assigned" in content
    assert "webhook-body-1" in content and "Zendesk Webhook" in content
    assert "audit-reason-1" in content and "Retried failed deliveries" in content


def test_retry_button_retries_dead_deliveries_and_clears_attention(
    admin_client, world, scheduled, django_capture_on_commit_callbacks
):
    HitlSession.objects.filter(pk=world.session.pk).update(needs_attention=True)
    assert admin_client.get(url("hitlsession", "retry", world.session.pk)).status_code == 405
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url("hitlsession", "retry", world.session.pk), {"delivery": world.dead.pk}, follow=True
        )
    assert any("1 dead delivery(ies) queued again" in note for note in shown_messages(response))
    world.dead.refresh_from_db()
    world.session.refresh_from_db()
    assert world.dead.status == DeliveryStatus.PENDING and scheduled == [world.dead.pk]
    assert not world.session.needs_attention
    entry = OperatorAction.objects.get(action=OperatorActionKind.DELIVERY_RETRY)
    assert entry.session == world.session and entry.detail["delivery_ids"] == [world.dead.pk]
    again = admin_client.post(url("hitlsession", "retry", world.session.pk), follow=True)
    assert any("No dead delivery" in note for note in shown_messages(again))
    assert OperatorAction.objects.count() == 1


@pytest.mark.parametrize("direction", [Direction.TO_AGENT, Direction.TO_USER])
def test_resend_sends_a_copy_once(admin_client, world, scheduled, django_capture_on_commit_callbacks, direction):
    session = world.session
    original = session.messages.get(direction=direction, type="text")
    resend = url("hitlsession", "resend", session.pk, original.pk)
    asked = admin_client.get(resend)
    assert asked.status_code == 200 and original.payload["text"] in html(asked)
    assert admin_client.post(resend, {"reason": ""}).status_code == 200  # a reason is required
    assert not scheduled
    for n in (1, 2):
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(resend, {"reason": f"user did not get it ({n})"}, follow=True)
        assert any("will be sent again" in note for note in shown_messages(response))
    copies = list(session.messages.filter(direction=direction, type="text").exclude(pk=original.pk).order_by("pk"))
    assert [c.payload for c in copies] == [original.payload] * 2
    if direction == Direction.TO_USER:
        # A distinct tag value each time, or Botpress's get-or-create would return the original.
        assert [c.external_message_id for c in copies] == ["comment_1/resend-1", "comment_1/resend-2"]
        assert all(c.author_agent_id == original.author_agent_id for c in copies)
    else:
        assert [c.external_message_id for c in copies] == ["", ""]  # posted as new comments
    deliveries = Delivery.objects.filter(message__in=copies).order_by("pk")
    assert [d.kind for d in deliveries] == [
        DeliveryKind.MESSAGE_TO_AGENT if direction == Direction.TO_AGENT else DeliveryKind.MESSAGE_TO_USER
    ] * 2
    assert scheduled == lane_heads(deliveries)
    entries = OperatorAction.objects.filter(action=OperatorActionKind.MESSAGE_RESEND).order_by("pk")
    assert [e.detail["copy_id"] for e in entries] == [c.pk for c in copies]
    original.refresh_from_db()
    assert original.external_message_id in ("msg_1_1", "comment_1", "")  # untouched


def test_resend_refused_once_the_session_is_stopped(admin_client, world, scheduled):
    HitlSession.objects.filter(pk=world.session.pk).update(status=SessionStatus.STOPPED)
    message = world.session.messages.first()
    response = admin_client.post(
        url("hitlsession", "resend", world.session.pk, message.pk), {"reason": "again"}, follow=True
    )
    assert any("session is stopped" in note for note in shown_messages(response))
    assert world.session.messages.count() == 3 and not scheduled
    assert url("hitlsession", "resend", world.session.pk, message.pk) not in html(response)


# --- the session list ---------------------------------------------------------------------------
def test_session_filters(admin_client, db):
    integration, _ = make_integration()
    failing = make_session(integration, 1)
    clean = make_session(integration, 2)
    Delivery.objects.filter(session=clean, status=DeliveryStatus.DEAD).update(status=DeliveryStatus.SUCCEEDED)
    old = make_session(integration, 3)
    HitlSession.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=3),
        status=SessionStatus.STOPPED,
        stopped_at=timezone.now() - timedelta(days=2),
    )
    since = timezone.localtime(timezone.now() - timedelta(days=1))
    cases = [
        ({"failed_deliveries": "dead"}, {failing, old}),
        ({"failed_deliveries": "none"}, {clean}),
        ({"provider": "zendesk"}, {failing, clean, old}),
        ({"agent__id__exact": clean.agent_id}, {clean}),
        (
            {
                "created_at__range__gte_0": since.date().isoformat(),
                "created_at__range__gte_1": since.strftime("%H:%M:%S"),
            },
            {failing, clean},
        ),
        (
            {
                "stopped_at__range__lte_0": timezone.localtime().date().isoformat(),
                "stopped_at__range__lte_1": "23:59:59",
            },
            {old},
        ),
        ({"status__exact": "stopped"}, {old}),
    ]
    for query, expected in cases:
        response = admin_client.get(url("hitlsession"), query)
        assert response.status_code == 200
        assert set(response.context["cl"].result_list) == expected, query


@pytest.mark.parametrize(
    ("query", "n"), [("hello from user 2", 2), ("USER2@EXAMPLE", 2), ("Agent reply 3", 3), ("img_2.png", None)]
)
def test_session_search_more(admin_client, db, query, n):
    integration, _ = make_integration()
    sessions = {i: make_session(integration, i) for i in (1, 2, 3)}
    response = admin_client.get(url("hitlsession"), {"q": query})
    expected = [sessions[n]] if n else []  # an image URL is not message text
    assert list(response.context["cl"].result_list) == expected


def test_session_search_by_session_id(admin_client, world):
    response = admin_client.get(url("hitlsession"), {"q": str(world.session.pk)})
    assert list(response.context["cl"].result_list) == [world.session]


@pytest.mark.parametrize(
    "query",
    [{}, {"q": "user"}, {"failed_deliveries": "dead", "o": "-7"}, {"status__exact": "assigned", "o": "2.-7"}],
)
def test_session_changelist_query_count_with_filters_and_search(admin_client, db, query):
    integration, _ = make_integration()
    for n in range(3):
        make_session(integration, n)
    admin_client.get(url("hitlsession"), query)
    with CaptureQueriesContext(connection) as few:
        first = admin_client.get(url("hitlsession"), query)
    for n in range(3, 50):
        make_session(integration, n)
    with CaptureQueriesContext(connection) as many:
        second = admin_client.get(url("hitlsession"), query)
    assert first.context["cl"].result_count < second.context["cl"].result_count
    assert len(many.captured_queries) == len(few.captured_queries)


# --- the integration page -----------------------------------------------------------------------
@pytest.fixture
def live_integration(db, zendesk, botpress, settings):
    """An integration on the stand-ins, its webhook installed there."""
    from sessions_app.services.integrations import integration_webhook_install
    from tests.conftest import integration_for

    settings.PUBLIC_BASE_URL = "http://127.0.0.1:8000"
    integration, _ = integration_for(botpress_url=botpress.base_url, zendesk_url=zendesk.base_url)
    return integration_webhook_install(integration=integration)


def _stand_in_secrets(integration: Integration) -> list[str]:
    from tests.conftest import BP_TOKEN as BOTPRESS_TOKEN
    from tests.conftest import ZD_TOKEN as ZENDESK_TOKEN

    integration.refresh_from_db()
    return [BOTPRESS_TOKEN, ZENDESK_TOKEN, integration.webhook_signing_secret, integration.botpress_url_secret]


def test_test_connection_reports_both_answers(admin_client, live_integration):
    change = html(admin_client.get(url("integration", "change", live_integration.pk)))
    assert url("integration", "test_connection", live_integration.pk) in change
    assert "webhook " + live_integration.provider_installation["webhook_id"] in change
    assert admin_client.get(url("integration", "test_connection", live_integration.pk)).status_code == 405
    response = admin_client.post(url("integration", "test_connection", live_integration.pk))
    content = html(response)
    answers = response.context["answers"]
    assert [a.system for a in answers] == ["Zendesk Support", "Botpress"] and all(a.ok for a in answers)
    assert "authenticated as gateway (admin); webhook active, triggers active 3/3" in content
    assert answers[0].details["webhook_points_at_this_gateway"] is True
    assert "authenticated" in answers[1].summary
    assert_no_secret(content, _stand_in_secrets(live_integration))
    entry = OperatorAction.objects.get(action=OperatorActionKind.CONNECTION_TEST)
    assert entry.integration == live_integration and entry.detail["answers"][0]["ok"] is True


def test_test_connection_reports_failures_without_secrets(admin_client, live_integration, zendesk):
    Integration.objects.filter(pk=live_integration.pk).update(
        provider_credentials={"email": "gateway@acme.test", "api_token": "zd-wrong-token-123456"},
        botpress_token="bp-wrong-token-123456",
    )
    with zendesk.lock:  # the webhook was deleted in Zendesk meanwhile
        zendesk._webhooks.clear()
    response = admin_client.post(url("integration", "test_connection", live_integration.pk))
    answers = response.context["answers"]
    assert [a.ok for a in answers] == [False, False]
    assert "HTTP 401" in answers[0].summary and "check the help-desk Agent email and API token" in answers[0].summary
    assert "HTTP 401" in answers[1].summary and "check the Botpress token" in answers[1].summary
    assert_no_secret(html(response), ["zd-wrong-token-123456", "bp-wrong-token-123456"])

    Integration.objects.filter(pk=live_integration.pk).update(
        provider_credentials={"email": "gateway@acme.test", "api_token": "zd_test_api_token"}
    )
    missing = admin_client.post(url("integration", "test_connection", live_integration.pk)).context["answers"][0]
    assert not missing.ok and "no longer exists in Zendesk" in missing.summary


def test_rotate_webhook_secret(admin_client, live_integration, zendesk):
    before = live_integration.webhook_signing_secret
    rotate = url("integration", "rotate_webhook_secret", live_integration.pk)
    assert rotate in html(admin_client.get(url("integration", "change", live_integration.pk)))
    asked = admin_client.get(rotate)
    assert asked.status_code == 200 and "new signing secret" in html(asked)
    live_integration.refresh_from_db()
    assert live_integration.webhook_signing_secret == before

    response = admin_client.post(rotate, {"reason": "leaked in a screenshot"}, follow=True)
    assert any("new webhook signing secret" in note for note in shown_messages(response))
    live_integration.refresh_from_db()
    webhook_id = live_integration.provider_installation["webhook_id"]
    assert live_integration.webhook_signing_secret not in (before, "")
    assert live_integration.webhook_signing_secret == zendesk._secrets[webhook_id]
    assert_no_secret(html(response), [before, *_stand_in_secrets(live_integration)])
    entry = OperatorAction.objects.get(action=OperatorActionKind.WEBHOOK_SECRET_ROTATE)
    assert entry.reason == "leaked in a screenshot" and entry.detail == {"outcome": "rotated"}


def test_rotate_webhook_secret_failure_is_reported_and_audited(admin_client, world):
    rotate = url("integration", "rotate_webhook_secret", world.integration.pk)
    assert rotate not in html(admin_client.get(url("integration", "change", world.integration.pk)))
    response = admin_client.post(rotate, {"reason": ""}, follow=True)
    assert any("install it first" in note for note in shown_messages(response))
    world.integration.refresh_from_db()
    assert world.integration.webhook_signing_secret == SIGNING_SECRET
    entry = OperatorAction.objects.get(action=OperatorActionKind.WEBHOOK_SECRET_ROTATE)
    assert entry.detail["outcome"] == "failed" and SIGNING_SECRET not in str(entry.detail)


# --- log-in rate limiting -----------------------------------------------------------------------
def test_admin_login_is_rate_limited(db, settings):
    User.objects.create_user("ops", password="right-password-123", is_staff=True)
    User.objects.create_user("other", password="right-password-456", is_staff=True)
    login = reverse("admin:login")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.post(login, {"username": "ops", "password": "wrong"}).status_code == 200
    locked = client.post(login, {"username": "ops", "password": "wrong"})
    assert locked.status_code == 429
    # Locked out: even the right password is refused, and nobody is logged in.
    refused = client.post(login, {"username": "ops", "password": "right-password-123"})
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session
    # Someone else is not locked out by these failures.
    other = Client()
    assert other.post(login, {"username": "other", "password": "right-password-456"}).status_code == 302
