"""What operators do from the admin, each written to the audit trail (``OperatorAction``).

The admin only calls these. Each action and its audit record commit together, so the trail
never shows an action that did not happen, nor misses one that did. The acting user is passed
in (``operator``); permission checks stay in the admin, which knows the request.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps as global_apps
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from sessions_app.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Direction,
    HitlSession,
    Integration,
    Message,
    OperatorAction,
    OperatorActionKind,
    SessionStatus,
    StoppedBy,
    WebhookEvent,
    WebhookStatus,
)
from sessions_app.services.errors import Conflict, InvalidInput
from sessions_app.services.integrations import (
    ConnectionAnswer,
    integration_connection_test,
    integration_secrets_redact,
    integration_webhook_secret_rotate,
)
from sessions_app.services.outbox import delivery_enqueue, delivery_retry
from sessions_app.services.sessions import locked_sessions, session_stop

OPERATORS_GROUP = "HITL operators (read-only)"
SUPERVISORS_GROUP = "HITL supervisors"
# Custom permissions of ``HitlSession`` (see its Meta); the supervisors have them all.
SUPERVISOR_PERMISSIONS = ("close_session", "retry_delivery", "resend_message", "reapply_webhook")
REASON_MAX = 2000


def _reason(reason: str, *, required: bool) -> str:
    reason = " ".join((reason or "").split())
    if required and not reason:
        raise InvalidInput("Say why: the reason is kept in the audit trail.", field="reason")
    return reason[:REASON_MAX]


def operator_action_record(
    *,
    operator: AbstractBaseUser,
    action: str,
    reason: str = "",
    session: HitlSession | None = None,
    integration: Integration | None = None,
    detail: dict | None = None,
) -> OperatorAction:
    """One audit entry; callers write it in the transaction of the action it records."""
    return OperatorAction.objects.create(
        user=operator if operator.pk else None,
        username=operator.get_username(),
        action=action,
        reason=reason,
        session=session,
        integration=integration or (session.integration if session else None),
        detail=detail or {},
    )


@transaction.atomic
def session_close_by_operator(
    *, session: HitlSession, operator: AbstractBaseUser, reason: str
) -> OperatorAction | None:
    """Close the ticket and emit ``hitlStopped``; None when the session was already stopped.

    Nothing is recorded for a session already stopped: nothing happened.
    """
    reason = _reason(reason, required=True)
    locked = locked_sessions().select_related("integration").get(pk=session.pk)
    if locked.status == SessionStatus.STOPPED:
        return None
    previous = locked.status
    session_stop(session=locked, stopped_by=StoppedBy.OPERATOR, reason=reason, close_ticket=True, notify_botpress=True)
    return operator_action_record(
        operator=operator,
        action=OperatorActionKind.SESSION_CLOSE,
        reason=reason,
        session=locked,
        detail={"previous_status": previous},
    )


@transaction.atomic
def deliveries_retry_by_operator(
    *, deliveries: Iterable[Delivery], operator: AbstractBaseUser, reason: str = ""
) -> list[int]:
    """Give each dead delivery a fresh retry budget; others are left alone. Returns the retried ids.

    One audit entry per session touched. A session none of whose deliveries is dead any more
    stops needing attention (a delivery that dies again flags it again).
    """
    reason = _reason(reason, required=False)
    retried: dict[object, list[Delivery]] = {}
    for delivery in deliveries:
        if delivery.status != DeliveryStatus.DEAD:
            continue
        after = delivery_retry(delivery=delivery)
        if after.status == DeliveryStatus.PENDING:
            retried.setdefault(delivery.session_id, []).append(after)
    for session_id, done in retried.items():
        session = HitlSession.objects.filter(pk=session_id).select_related("integration").first()
        if session is not None and not (
            session.deliveries.filter(status=DeliveryStatus.DEAD).exists()
            or session.webhooks.filter(status=WebhookStatus.FAILED).exists()
        ):
            HitlSession.objects.filter(pk=session.pk).update(needs_attention=False)
        operator_action_record(
            operator=operator,
            action=OperatorActionKind.DELIVERY_RETRY,
            reason=reason,
            session=session,
            integration=done[0].integration if session is None else None,
            detail={"delivery_ids": [d.pk for d in done], "kinds": sorted({d.kind for d in done})},
        )
    return [d.pk for done in retried.values() for d in done]


@transaction.atomic
def message_resend(*, message: Message, operator: AbstractBaseUser, reason: str) -> Message:
    """Send the message once more, as a copy with its own outbox delivery; return the copy.

    A copy rather than a second delivery of the same row, because both directions deduplicate
    on the row's ids, which is what makes ordinary retries safe: a to_agent message that has
    its help-desk message id is only acknowledged, and Botpress get-or-creates a to_user message by tag
    ``externalMessageId`` (the help desk's id). The copy has no message id (to_agent: a new message)
    or a distinct one, ``<message id>/resend-<n>`` (to_user: a new Botpress message), so it goes
    out again exactly once however often its own delivery is retried. Both rows keep their ids.
    """
    reason = _reason(reason, required=True)
    session = locked_sessions().select_related("integration").get(pk=message.session_id)
    if session.status == SessionStatus.STOPPED:
        raise Conflict("The session is stopped: nothing more can be sent in it.", field="message")
    previous = OperatorAction.objects.filter(
        session=session, action=OperatorActionKind.MESSAGE_RESEND, detail__message_id=message.pk
    ).count()
    to_agent = message.direction == Direction.TO_AGENT
    copy = Message.objects.create(
        session=session,
        direction=message.direction,
        type=message.type,
        payload=message.payload,
        author_end_user_id=message.author_end_user_id,
        author_agent_id=message.author_agent_id,
        external_message_id="" if to_agent else f"{message.external_message_id[:48]}/resend-{previous + 1}",
    )
    delivery = delivery_enqueue(
        integration_id=session.integration_id,
        kind=DeliveryKind.MESSAGE_TO_AGENT if to_agent else DeliveryKind.MESSAGE_TO_USER,
        direction=message.direction,
        session=session,
        message=copy,
    )
    operator_action_record(
        operator=operator,
        action=OperatorActionKind.MESSAGE_RESEND,
        reason=reason,
        session=session,
        detail={"message_id": message.pk, "copy_id": copy.pk, "delivery_id": delivery.pk},
    )
    return copy


@transaction.atomic
def webhooks_reapply_by_operator(
    *, events: Iterable[WebhookEvent], operator: AbstractBaseUser, reason: str = ""
) -> list[int]:
    """Apply failed webhooks again; return the ids queued. Others are left alone.

    Only webhooks that were accepted (they have a dedup key) and then failed: a malformed one
    (answered 400) has nothing to apply. Only the events that failed are applied again (see
    ``WebhookEvent.failed_events``); that is safe to repeat, as relays are deduplicated by
    message id and a stop is idempotent. One audit entry per webhook, with the reason it had
    failed. A session with no other failure left stops needing attention (a webhook that fails
    again flags it again).
    """
    from sessions_app.services.webhooks import webhook_schedule

    reason = _reason(reason, required=False)
    failed = WebhookEvent.objects.select_for_update(of=("self",)).filter(
        pk__in=[event.pk for event in events], status=WebhookStatus.FAILED, dedup_key__isnull=False
    )
    queued = []
    for event in failed.select_related("integration", "session").order_by("id"):
        previous = {"detail": event.detail, "failed_events": event.failed_events}
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=WebhookStatus.ACCEPTED, processed_at=None, attempts=0, retry_at=None
        )
        operator_action_record(
            operator=operator,
            action=OperatorActionKind.WEBHOOK_REAPPLY,
            reason=reason,
            session=event.session,
            integration=event.integration,
            detail={"webhook_event_id": event.pk, "previous": previous},
        )
        if event.session_id and not (
            event.session.deliveries.filter(status=DeliveryStatus.DEAD).exists()
            or event.session.webhooks.filter(status=WebhookStatus.FAILED).exclude(pk=event.pk).exists()
        ):
            HitlSession.objects.filter(pk=event.session_id).update(needs_attention=False)
        transaction.on_commit(lambda pk=event.pk: webhook_schedule(webhook_event_id=pk))
        queued.append(event.pk)
    return queued


def integration_connection_test_by_operator(
    *, integration: Integration, operator: AbstractBaseUser
) -> list[ConnectionAnswer]:
    """Test both connections and record what each answered (answers never hold a secret)."""
    answers = integration_connection_test(integration=integration)
    operator_action_record(
        operator=operator,
        action=OperatorActionKind.CONNECTION_TEST,
        integration=integration,
        detail={"answers": [{"system": a.system, "ok": a.ok, "summary": a.summary} for a in answers]},
    )
    return answers


def integration_webhook_secret_rotate_by_operator(
    *, integration: Integration, operator: AbstractBaseUser, reason: str = ""
) -> Integration:
    """Rotate the help-desk webhook's signing secret; a failed attempt is recorded too, then raised."""
    reason = _reason(reason, required=False)
    try:
        with transaction.atomic():
            integration = integration_webhook_secret_rotate(integration=integration)
            operator_action_record(
                operator=operator,
                action=OperatorActionKind.WEBHOOK_SECRET_ROTATE,
                reason=reason,
                integration=integration,
                detail={"outcome": "rotated"},
            )
    except Exception as exc:
        error = integration_secrets_redact(integration=integration, text=f"{type(exc).__name__}: {exc}")
        operator_action_record(
            operator=operator,
            action=OperatorActionKind.WEBHOOK_SECRET_ROTATE,
            reason=reason,
            integration=integration,
            detail={"outcome": "failed", "error": error[:500]},
        )
        raise
    return integration


def operator_groups_ensure(*, apps=global_apps) -> None:
    """Create the two operator groups, or add what they lack; safe to run again.

    Run by the ``operators_console`` migration (with its historical ``apps``); tests run it
    after a database flush. Permissions an admin added by hand are kept.
    """
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    ours = permission_model.objects.filter(content_type__app_label="sessions_app")
    # The relay's doorbells are engine state, not something an operator reads.
    view = list(ours.filter(codename__startswith="view_").exclude(codename="view_relaydoorbell"))
    act = list(ours.filter(codename__in=SUPERVISOR_PERMISSIONS))
    operators, _ = group_model.objects.get_or_create(name=OPERATORS_GROUP)
    operators.permissions.add(*view)
    supervisors, _ = group_model.objects.get_or_create(name=SUPERVISORS_GROUP)
    supervisors.permissions.add(*view, *act)
