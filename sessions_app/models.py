"""The gateway's records: who talks to whom, in which session, and what was relayed.

Every mapping between Botpress and a help desk lives here, so steady-state relays need no
look-up calls. A delivery's state lives only in its outbox row (``Delivery``).
"""

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from providers.registry import provider_choices, provider_default
from sessions_app.fields import EncryptedJSONField, EncryptedTextField, EncryptedURLField


class Direction(models.TextChoices):
    TO_AGENT = "to_agent", "Botpress → help desk"
    TO_USER = "to_user", "help desk → Botpress"


class BotpressTransport(models.TextChoices):
    """How the gateway reaches Botpress (see ``botpress.sink``)."""

    RUNTIME_API = "runtime_api", "Runtime API (the gateway is the bot's HITL integration)"
    HITL_API = "hitl_api", 'Hub integration "Human in the Loop API" (plus/hitl-api)'


def botpress_url_secret_new() -> str:
    return secrets.token_urlsafe(32)


class Integration(models.Model):
    """One Botpress bot connected to one help-desk account."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    # The help desks are ``providers.registry.SPECS``: the choices are read from there, so a new
    # desk needs no migration.
    provider = models.CharField(max_length=32, choices=provider_choices, default=provider_default)
    provider_base_url = models.URLField("Help-desk account URL", help_text="Help-desk account URL")
    # Provider credentials, the fields its spec declares (``ProviderSpec.credential_fields``);
    # read only through ``services.integrations.integration_provider`` and never rendered.
    # The secrets below are encrypted at rest (``sessions_app.fields``, keys ``HITL_ENCRYPTION_KEYS``).
    provider_credentials = EncryptedJSONField(default=dict, blank=True)
    webhook_signing_secret = EncryptedTextField(max_length=255, blank=True)
    # The secret before the last change, still accepted for a grace period: webhooks the desk
    # signed just before a rotation or a reinstall are in flight when the new secret is stored.
    webhook_signing_secret_previous = EncryptedTextField(max_length=255, blank=True)
    webhook_signing_secret_changed_at = models.DateTimeField(null=True, blank=True)
    # Ids of what we installed in the help desk (webhook id, trigger ids), for reinstall/removal.
    provider_installation = models.JSONField(default=dict, blank=True)
    botpress_api_url = models.URLField("Botpress API URL", default="https://api.botpress.cloud")
    botpress_token = EncryptedTextField(max_length=512)
    botpress_bot_id = models.CharField("Botpress bot id", max_length=128)
    botpress_integration_id = models.CharField("Botpress integration id", max_length=128)
    botpress_integration_alias = models.CharField("Botpress integration alias", max_length=128, blank=True)
    # Botpress user standing for the bot; messages without an author are posted as it.
    botpress_bot_user_id = models.CharField("Botpress bot user id", max_length=64, blank=True)
    # The help desk's user for the bot (an external user named "Botpress"), created on first need.
    helpdesk_bot_user_id = models.CharField("Help-desk bot user id", max_length=64, blank=True)
    # SHA-256 of the credential Botpress uses to call us; the credential itself is shown once.
    api_key_hash = models.CharField(max_length=64)
    api_key_prefix = models.CharField("API key prefix", max_length=12, help_text="First characters, to recognise a key")
    # Botpress sends no credential on the wire protocol nor on the hitl-api: this unguessable
    # path segment of the URLs it calls (``/botpress/<id>/<secret>/``, ``/hitl-api/<id>/<secret>``)
    # is the credential, compared in constant time.
    botpress_url_secret = EncryptedTextField(max_length=64, default=botpress_url_secret_new)
    # With ``hitl_api`` the Hub integration owns the Botpress side and names users and
    # conversations by the remote ids we issue: those are what ``EndUser.botpress_user_id`` and
    # ``HitlSession.botpress_conversation_id`` then hold.
    botpress_transport = models.CharField(
        max_length=16, choices=BotpressTransport.choices, default=BotpressTransport.RUNTIME_API
    )
    # The integration's own names for the HITL interface's actions, events and channel
    # (``{"actions": {"startHitl": "createTicket"}, "events": {...}, "channel": "supportTicket"}``).
    botpress_names = models.JSONField(default=dict, blank=True)
    # The bot's webhook URL of its hitl-api integration (``https://webhook.botpress.cloud/<id>``);
    # it holds the webhook id, Botpress's only check, so it is a secret too.
    hitl_api_webhook_url = EncryptedURLField(max_length=2048, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_provider_display()})"


def _default_weekly_hours() -> dict:
    return {}


class LifecyclePolicy(models.Model):
    """When the gateway ends a session on its own, per integration (``services.lifecycle``).

    Every timeout is off (null) by default. ``business_hours`` maps a weekday (``mon`` ...
    ``sun``) to its open intervals, ``[["09:00", "17:00"]]``, in ``time_zone`` (an IANA name);
    empty means always open. ``holidays`` lists closed dates (``"2026-12-25"``) in that zone.
    """

    integration = models.OneToOneField(Integration, on_delete=models.CASCADE, related_name="lifecycle_policy")
    assignment_timeout_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="End a session no agent took within this many minutes (empty: never)."
    )
    assignment_timeout_message = models.TextField(
        blank=True, default="No agent is free right now; we will answer you by e-mail."
    )
    assignment_timeout_keep_ticket_open = models.BooleanField(
        default=False, help_text="Leave the ticket open for an e-mail follow-up instead of closing it."
    )
    inactivity_timeout_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="End an assigned session silent for this many minutes (empty: never)."
    )
    inactivity_timeout_message = models.TextField(
        blank=True, default="This conversation was closed after a period of inactivity."
    )
    inactivity_warning_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Warn the end user this many minutes before the inactivity timeout."
    )
    inactivity_warning_message = models.TextField(
        blank=True, default="Are you still there? This conversation will close soon without a reply."
    )
    business_hours = models.JSONField(default=_default_weekly_hours, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC")
    holidays = models.JSONField(default=list, blank=True)
    outside_hours_message = models.TextField(
        blank=True, default="Our agents are away right now; they will see your request when they are back."
    )
    outside_hours_close = models.BooleanField(
        default=False, help_text="Outside hours, end the session at once (the ticket stays open)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "lifecycle policy"
        verbose_name_plural = "lifecycle policies"

    def __str__(self) -> str:
        return f"lifecycle policy of {self.integration_id}"


class EndUser(models.Model):
    """The person talking to the bot: a Botpress user and their external user in the help desk."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="end_users")
    botpress_user_id = models.CharField(max_length=64)
    external_user_id = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=255)
    email = models.EmailField(blank=True)
    picture_url = models.URLField(max_length=2048, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["integration", "botpress_user_id"], name="enduser_unique_bp_user"),
        ]
        indexes = [models.Index(fields=["email"]), models.Index(fields=["integration", "external_user_id"])]

    def __str__(self) -> str:
        return self.email or self.name


class HumanAgent(models.Model):
    """A help-desk agent and the Botpress user that speaks for them."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="agents")
    external_user_id = models.CharField(max_length=64)
    botpress_user_id = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=255, blank=True)
    email = models.EmailField(blank=True)
    picture_url = models.URLField(max_length=2048, blank=True)
    # The profile last written to Botpress; a change triggers one update call, not one per message.
    synced_profile = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["integration", "external_user_id"], name="agent_unique_external"),
        ]

    def __str__(self) -> str:
        return self.name or self.email or self.external_user_id


class SessionStatus(models.TextChoices):
    PENDING = "pending", "Waiting for an agent"
    ASSIGNED = "assigned", "Assigned"
    STOPPED = "stopped", "Stopped"


class StoppedBy(models.TextChoices):
    BOTPRESS = "botpress", "Botpress (stopHitl)"
    AGENT = "agent", "Agent (ticket solved)"
    OPERATOR = "operator", "Operator (admin)"
    HELPDESK_REFUSED = "helpdesk_refused", "Help desk refused the ticket"
    # ``stop_reason`` names which: assignment_timeout, inactivity_timeout, outside_business_hours.
    POLICY = "policy", "Lifecycle policy (timeout, business hours)"


class HitlSession(models.Model):
    """A Botpress conversation on channel ``hitl`` and the ticket that mirrors it."""

    # What its state changes and relays never read: the transcript handed over at the start and
    # the description, read only to open the ticket. A long transcript was the bulk of the row,
    # decoded again for every message of the session; the hot reads defer these.
    COLD_FIELDS = ("message_history", "description")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    integration = models.ForeignKey(Integration, on_delete=models.PROTECT, related_name="sessions")
    end_user = models.ForeignKey(EndUser, on_delete=models.PROTECT, related_name="sessions")
    agent = models.ForeignKey(HumanAgent, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    botpress_conversation_id = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=SessionStatus.choices, default=SessionStatus.PENDING)
    title = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    # The validated ``hitlSession`` entity (provider extras such as priority).
    extras = models.JSONField(default=dict, blank=True)
    message_history = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    stopped_by = models.CharField(max_length=32, choices=StoppedBy.choices, blank=True)
    stop_reason = models.TextField(blank=True)
    last_activity_at = models.DateTimeField(auto_now_add=True)
    # When the assignment timeout ends the session if no agent took it (business hours counted);
    # null when the integration has no such timeout. Swept by ``services.lifecycle``.
    assignment_due_at = models.DateTimeField(null=True, blank=True)
    # The ``last_activity_at`` of the silence the end user was last warned about: one warning
    # per silence, whatever clock the sweep runs on.
    inactivity_warned_for = models.DateTimeField(null=True, blank=True)
    # Set when a delivery of this session is dead, so operators find it.
    needs_attention = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["integration", "botpress_conversation_id"], name="session_unique_conversation"
            ),
        ]
        verbose_name = "HITL session"
        indexes = [
            models.Index(fields=["status", "-created_at"]),
            models.Index(fields=["-last_activity_at"]),
            models.Index(fields=["botpress_conversation_id"]),
            # The operators' console: default order and date range, per integration, stopped today.
            models.Index(fields=["-created_at", "-id"], name="session_created"),
            models.Index(fields=["integration", "-created_at"], name="session_integration_created"),
            models.Index(fields=["-stopped_at"], name="session_stopped"),
            models.Index(fields=["assignment_due_at"], name="session_assignment_due", condition=Q(status="pending")),
        ]
        ordering = ["-created_at"]
        # What an operator may do besides looking; the groups are made in a data migration.
        permissions = [
            ("close_session", "Can close a session (closes the ticket, tells Botpress)"),
            ("retry_delivery", "Can retry failed deliveries"),
            ("resend_message", "Can resend a message"),
            ("reapply_webhook", "Can re-apply failed webhooks"),
        ]

    def __str__(self) -> str:
        return f"session {self.botpress_conversation_id}"

    @property
    def is_active(self) -> bool:
        return self.status != SessionStatus.STOPPED


class Ticket(models.Model):
    """The help desk's record of a session (a ticket, later a Slack thread, ...)."""

    session = models.OneToOneField(HitlSession, on_delete=models.CASCADE, related_name="ticket")
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="tickets")
    external_id = models.CharField(max_length=64)
    # The ticket's first message (the transcript we wrote); a "solved" webhook may carry it.
    initial_message_id = models.CharField(max_length=64, blank=True)
    url = models.URLField(max_length=2048, blank=True)
    status = models.CharField(max_length=32, blank=True)
    priority = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["integration", "external_id"], name="ticket_unique_external"),
        ]
        # Operators search by ticket number without naming the integration.
        indexes = [models.Index(fields=["external_id"], name="ticket_external_id")]

    def __str__(self) -> str:
        return f"ticket {self.external_id}"


class Message(models.Model):
    """One relayed message, in either direction: the message log."""

    session = models.ForeignKey(HitlSession, on_delete=models.CASCADE, related_name="messages")
    direction = models.CharField(max_length=16, choices=Direction.choices)
    type = models.CharField(max_length=16)
    payload = models.JSONField()
    author_end_user = models.ForeignKey(EndUser, null=True, blank=True, on_delete=models.SET_NULL)
    author_agent = models.ForeignKey(HumanAgent, null=True, blank=True, on_delete=models.SET_NULL)
    # Botpress message id: given by Botpress (to_agent) or created by us (to_user).
    botpress_message_id = models.CharField(max_length=64, blank=True)
    # Help-desk id of the message.
    external_message_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # The same Botpress message accepted twice is one message (to_agent dedup).
            models.UniqueConstraint(
                fields=["session", "botpress_message_id"],
                condition=Q(direction="to_agent") & ~Q(botpress_message_id=""),
                name="message_unique_bp_message_to_agent",
            ),
            # The same help-desk message relayed twice is one message (to_user dedup).
            models.UniqueConstraint(
                fields=["session", "external_message_id"],
                condition=Q(direction="to_user") & ~Q(external_message_id=""),
                name="message_unique_external_to_user",
            ),
        ]
        indexes = [models.Index(fields=["session", "created_at"])]
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.direction} {self.type} #{self.pk}"


class DeliveryKind(models.TextChoices):
    """What one outbox row asks an external system to do."""

    EXTERNAL_USER_SYNC = "external_user_sync", "Create or update the external user"
    TICKET_CREATE = "ticket_create", "Create the ticket"
    MESSAGE_TO_AGENT = "message_to_agent", "Post a message to the ticket"
    TICKET_CLOSE = "ticket_close", "Close the ticket"
    MESSAGE_TO_USER = "message_to_user", "Create the agent's message in Botpress"
    EVENT_TO_USER = "event_to_user", "Emit a HITL event to Botpress"
    CONVERSATION_TAG = "conversation_tag", "Tag the Botpress conversation with the ticket id"
    TICKET_HEAD_UPDATE = "ticket_head_update", "Show the session's state on the ticket's head"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    DEAD = "dead", "Dead (gave up)"
    SKIPPED = "skipped", "Skipped (nothing to do)"


class Delivery(models.Model):
    """An outbox row: written in the transaction that caused it, executed by a Celery task.

    Rows of one ``lane`` (a session and a direction) go out strictly in ``id`` order.
    """

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="deliveries")
    session = models.ForeignKey(HitlSession, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    message = models.OneToOneField(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="delivery")
    lane = models.CharField(max_length=96)
    direction = models.CharField(max_length=16, choices=Direction.choices)
    kind = models.CharField(max_length=32, choices=DeliveryKind.choices)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    # Sent as the help desk's idempotency key / used as a Botpress discriminating tag.
    idempotency_key = models.UUIDField(default=uuid.uuid4, editable=False)
    attempts = models.PositiveIntegerField(default=0)
    # Set while a worker executes the row; a lease that expires means that worker died mid-call.
    lease_until = models.DateTimeField(null=True, blank=True)
    # The last attempt may have reached the remote side without us learning it (timeout, lost
    # answer, dead worker): the executor checks before sending again.
    maybe_delivered = models.BooleanField(default=False)
    next_attempt_at = models.DateTimeField()
    # Written behind an earlier pending row of its lane: it cannot be claimed before that one
    # settles, so the claim's scan of due rows (``delivery_due``) leaves it out; the earlier
    # row's settle, or the sweeper, clears it. Only a scan shortcut: order never depends on it.
    parked = models.BooleanField(default=False)
    # When retrying stops and the delivery is dead (the retry budget, reset by a manual retry).
    retry_deadline = models.DateTimeField()
    last_error = models.TextField(blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    # The Celery queue its tasks go to ('' = the default): work that may be slow (fetching media)
    # runs on a queue of its own, so it cannot hold up everybody else's deliveries.
    queue = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["lane", "id"], name="delivery_lane_head", condition=Q(status="pending")),
            models.Index(fields=["next_attempt_at"], name="delivery_due", condition=Q(status="pending", parked=False)),
            models.Index(fields=["status", "-created_at"]),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        # Operators read it (titles, breadcrumbs, links): words, not ``ticket_create #2``.
        return f"{self.get_kind_display()} (delivery {self.pk}, {self.get_status_display().lower()})"


class DeliveryAttempt(models.Model):
    """One try of a delivery, kept for operators: when, how long, what came back."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16)  # succeeded | retry | dead
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery_id", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.outcome}"


class WebhookStatus(models.TextChoices):
    ACCEPTED = "accepted", "Accepted, waiting to be processed"
    PROCESSED = "processed", "Processed"
    IGNORED = "ignored", "Ignored (not for a gateway session)"
    # No longer written: rejected requests are counted in ``WebhookRejection`` (migration 0009_a).
    REJECTED = "rejected", "Rejected (authentication)"
    FAILED = "failed", "Failed while processing"


class WebhookEvent(models.Model):
    """Every inbound help-desk webhook: the dedup key, and the audit trail of what arrived."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="webhook_events")
    provider = models.CharField(max_length=32, choices=provider_choices)
    dedup_key = models.CharField(max_length=255, null=True, blank=True)
    # A hash of what the help desk signed (its ``webhook_replay_key``), unique per integration:
    # the invocation id is not signed, so a captured webhook re-sent under a new one is a replay.
    replay_key = models.CharField(max_length=128, null=True, blank=True)
    event_type = models.CharField(max_length=64, blank=True)
    # Webhooks about one ticket are processed in the order they were accepted.
    ticket_external_id = models.CharField(max_length=64, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=WebhookStatus.choices)
    detail = models.TextField(blank=True)
    session = models.ForeignKey(HitlSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhooks")
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # The events of this webhook that failed for good: ``[{"index", "kind", "reason"}]``. A
    # re-apply applies only these (the others were applied), then clears the list.
    failed_events = models.JSONField(default=list, blank=True)
    # Tries that failed on the help desk's API (a doorbell's read of the ticket): the next one
    # waits longer, and after ``WEBHOOK_FETCH_MAX_ATTEMPTS`` the webhook is ``failed``.
    attempts = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["integration", "dedup_key"],
                condition=Q(dedup_key__isnull=False),
                name="webhook_unique_dedup_key",
            ),
            models.UniqueConstraint(
                fields=["integration", "replay_key"],
                condition=Q(replay_key__isnull=False),
                name="webhook_unique_replay_key",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-received_at"]),
            models.Index(
                fields=["integration", "ticket_external_id", "id"],
                name="webhook_ticket_queue",
                condition=Q(status="accepted"),
            ),
        ]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type or 'webhook'} #{self.pk}"


class WebhookRejection(models.Model):
    """Webhooks refused for authentication, counted per integration, reason and hour.

    Counted rather than stored one row each, so a flood of unsigned requests costs one upsert
    each and a bounded number of rows; ``samples`` keeps the last few requests (each at most
    ``services.webhooks.SAMPLE_MAX_BYTES`` of JSON, never the signature) for operators.
    """

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="webhook_rejections")
    reason = models.CharField(max_length=128)
    # The start of the hour (UTC) the rejections fell in.
    bucket = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    # The last few rejected requests, oldest first: ``[{"at", "remote_addr", "headers", "body"}]``.
    samples = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["integration", "reason", "bucket"], name="webhookrejection_unique_bucket"),
        ]
        indexes = [models.Index(fields=["-bucket"], name="webhookrejection_bucket")]
        ordering = ["-bucket", "reason"]

    def __str__(self) -> str:
        return f"{self.count} x {self.reason} at {self.bucket:%Y-%m-%d %H:00}"


class OperatorActionKind(models.TextChoices):
    SESSION_CLOSE = "session_close", "Closed the session"
    DELIVERY_RETRY = "delivery_retry", "Retried failed deliveries"
    MESSAGE_RESEND = "message_resend", "Resent a message"
    CONNECTION_TEST = "connection_test", "Tested the connections"
    WEBHOOK_SECRET_ROTATE = "webhook_secret_rotate", "Rotated the webhook signing secret"
    WEBHOOK_REAPPLY = "webhook_reapply", "Re-applied failed webhooks"
    SESSION_POLICY_END = "session_policy_end", "Ended the session by a lifecycle policy"


class OperatorAction(models.Model):
    """The audit trail of the operators' console: who did what, when and why.

    Written by ``services.operators`` in the transaction of the action itself, never edited.
    ``detail`` names what was touched (ids, outcomes) and never holds a secret.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as written, so the record outlives the account.
    username = models.CharField(max_length=150)
    action = models.CharField(max_length=32, choices=OperatorActionKind.choices)
    reason = models.TextField(blank=True)
    session = models.ForeignKey(
        HitlSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="operator_actions"
    )
    integration = models.ForeignKey(
        Integration, null=True, blank=True, on_delete=models.SET_NULL, related_name="operator_actions"
    )
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["session", "-created_at"], name="operatoraction_session"),
            models.Index(fields=["-created_at"], name="operatoraction_created"),
        ]

    def __str__(self) -> str:
        return f"{self.username}: {self.get_action_display()}"


class Heartbeat(models.Model):
    """When a background process last showed it was alive (``services.heartbeats``, read by /health/).

    ``name`` is ``worker:<hostname>`` (each Celery worker, on a timer) or ``sweeper`` (the outbox
    sweeper, which beat schedules and a worker runs).
    """

    name = models.CharField(max_length=255, primary_key=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%Y-%m-%d %H:%M:%S}"


class RelayDoorbell(models.Model):
    """Whether a "work is ready" message is on its way to the relay of ``name`` (``services.relay``).

    One row per relay (``outbox:<queue>``, ``webhooks``): a writer sends a broker message only
    when it is the one that turns ``rung`` on, and the relay turns it off before it looks for
    work, so a burst of writes costs one message, not one each.
    """

    name = models.CharField(max_length=96, primary_key=True)
    rung = models.BooleanField(default=False)
    rung_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({'rung' if self.rung else 'idle'})"
