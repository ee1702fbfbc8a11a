"""Inbound help-desk webhooks: acknowledge fast, process in a task.

The acknowledgement does verify + one insert + enqueue and no outbound HTTP. The insert is the
deduplication: a unique (integration, dedup key) row, so a webhook delivered twice is stored
and processed once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from providers import provider_class
from providers.base import WebhookInvalid, WebhookRejected
from sessions_app.models import Integration, WebhookEvent, WebhookStatus
from sessions_app.services.integrations import integration_signing_secrets
from sessions_app.services.sessions import session_events_apply

log = structlog.get_logger(__name__)

# Headers worth keeping for the audit trail; never the signature.
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "x-zendesk-account-id",
    "x-zendesk-webhook-id",
    "x-zendesk-webhook-invocation-id",
    "x-zendesk-webhook-signature-timestamp",
)
# A rejected request is kept for audit only, so only its start is stored.
MAX_REJECTED_BODY = 4096


@dataclass(frozen=True)
class WebhookOutcome:
    status_code: int
    body: dict = field(default_factory=dict)


UNAUTHORIZED = WebhookOutcome(401, {"error": "unauthorized", "message": "Webhook authentication failed."})


def _integration(integration_id: str, provider: str) -> Integration | None:
    try:
        return Integration.objects.filter(pk=uuid.UUID(integration_id), provider=provider, is_active=True).first()
    except ValueError:
        return None


def webhook_receive(
    *, integration_id: str, provider: str, headers: Mapping[str, str], body: bytes, remote_addr: str | None
) -> WebhookOutcome:
    """Verify, record, enqueue. An unknown integration looks exactly like a bad signature."""
    integration = _integration(integration_id, provider)
    if integration is None:
        log.warning("webhook.unknown_integration", provider=provider, remote_addr=remote_addr)
        return UNAUTHORIZED
    adapter = provider_class(provider)
    lowered = {key.lower(): value for key, value in headers.items()}
    record = {
        "integration": integration,
        "provider": provider,
        "headers": {key: lowered[key] for key in KEPT_HEADERS if key in lowered},
        "body": body[:MAX_REJECTED_BODY].decode("utf-8", errors="replace"),
        "remote_addr": remote_addr,
    }
    try:
        _verify(adapter, integration, headers=lowered, body=body)
    except WebhookRejected as exc:
        WebhookEvent.objects.create(status=WebhookStatus.REJECTED, detail=str(exc), **record)
        log.warning("webhook.rejected", integration_id=str(integration.pk), reason=str(exc))
        return UNAUTHORIZED
    try:
        parsed = adapter.webhook_parse(headers=lowered, body=body)
    except WebhookInvalid as exc:
        WebhookEvent.objects.create(status=WebhookStatus.FAILED, detail=f"invalid: {exc}", **record)
        return WebhookOutcome(
            400,
            {
                "error": "invalid_payload",
                "message": "The webhook body is invalid.",
                "fields": {exc.field: [exc.message]},
            },
        )
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                status=WebhookStatus.ACCEPTED,
                dedup_key=parsed.dedup_key,
                event_type=parsed.event_type,
                ticket_external_id=parsed.ticket_external_id,
                **(record | {"body": body.decode("utf-8", errors="replace")}),
            )
            transaction.on_commit(lambda: webhook_schedule(webhook_event_id=event.pk))
    except IntegrityError:
        return WebhookOutcome(200, {"status": "duplicate"})
    return WebhookOutcome(200, {"status": "accepted"})


def _verify(adapter, integration: Integration, *, headers: Mapping[str, str], body: bytes) -> None:
    """Accept a signature by the current secret, or by the previous one during its grace period."""
    window = timedelta(seconds=settings.HITL["WEBHOOK_REPLAY_WINDOW_SECONDS"])
    first_error = None
    for secret in integration_signing_secrets(integration=integration):
        try:
            adapter.webhook_verify(headers=headers, body=body, secret=secret, now=timezone.now(), window=window)
            return
        except WebhookRejected as exc:
            first_error = first_error or exc
    raise first_error


def webhook_schedule(*, webhook_event_id: int, countdown: float | None = None) -> None:
    from sessions_app.tasks import webhook_process

    try:
        webhook_process.apply_async((webhook_event_id,), countdown=countdown)
    except Exception as exc:  # noqa: BLE001 - the sweeper finds accepted events left behind
        log.warning("webhook.enqueue_failed", webhook_event_id=webhook_event_id, error=type(exc).__name__)


QUEUE_BUDGET = 100  # webhooks one task applies before handing the ticket's queue to a fresh task


def webhook_queue_drain(*, webhook_event_id: int) -> int:
    """Apply the accepted webhooks of this event's ticket, oldest first; return how many.

    Webhooks about one ticket are applied in the order they were accepted, whatever worker
    runs which task: only the queue's head is applied, under a row lock taken with SKIP LOCKED,
    so a second worker backs off and the first carries on with the queue.
    """
    key = WebhookEvent.objects.filter(pk=webhook_event_id).values_list("integration_id", "ticket_external_id").first()
    if key is None:
        return 0
    done = 0
    while done < QUEUE_BUDGET and _queue_step(*key):
        done += 1
    if done == QUEUE_BUDGET:
        webhook_schedule(webhook_event_id=webhook_event_id)
    return done


def _queue_step(integration_id, ticket_external_id: str) -> bool:
    queue = WebhookEvent.objects.filter(
        integration_id=integration_id, ticket_external_id=ticket_external_id, status=WebhookStatus.ACCEPTED
    )
    try:
        with transaction.atomic():
            head_id = queue.order_by("id").values_list("id", flat=True).first()
            if head_id is None:
                return False
            # This row only: FOR UPDATE through a join would also lock the integration row.
            event = (
                queue.select_for_update(skip_locked=True, of=("self",))
                .select_related("integration")
                .filter(pk=head_id)
                .first()
            )
            if event is None:
                return False
            _webhook_event_apply(event)
        return True
    except (OperationalError, InterfaceError) as exc:
        # Transient (a deadlock victim, a lost connection): the event stays accepted and is
        # applied again shortly, still ahead of the rest of its ticket's queue.
        log.warning("webhook.apply_retry", webhook_event_id=head_id, error=type(exc).__name__)
        webhook_schedule(webhook_event_id=head_id, countdown=1.0)
        return False
    except Exception as exc:
        log.exception("webhook.apply_failed", webhook_event_id=head_id)
        WebhookEvent.objects.filter(pk=head_id, status=WebhookStatus.ACCEPTED).update(
            status=WebhookStatus.FAILED,
            detail=f"failed: {type(exc).__name__}: {exc}"[:2000],
            processed_at=timezone.now(),
        )
        return True


def _webhook_event_apply(event: WebhookEvent) -> None:
    adapter = provider_class(event.provider)
    parsed = adapter.webhook_parse(headers=event.headers, body=event.body.encode())
    session, detail = session_events_apply(integration=event.integration, events=parsed.events)
    event.session = session
    event.status = WebhookStatus.PROCESSED if session else WebhookStatus.IGNORED
    event.detail, event.processed_at = detail, timezone.now()
    event.save(update_fields=["session", "status", "detail", "processed_at"])


def webhook_events_sweep(*, older_than_seconds: int) -> int:
    """Re-enqueue accepted webhooks whose task was lost."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        WebhookEvent.objects.filter(status=WebhookStatus.ACCEPTED, received_at__lte=cutoff).values_list(
            "pk", flat=True
        )[:1000]
    )
    for webhook_event_id in ids:
        webhook_schedule(webhook_event_id=webhook_event_id)
    return len(ids)
