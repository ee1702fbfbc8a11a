"""The operators' admin: see what the gateway relayed, and act on it through the services.

Rules kept here:
- Business logic lives in ``sessions_app.services``; this module only calls it. The only domain
  writes made directly are plain field edits of an ``Integration``.
- Records the gateway creates (sessions, messages, deliveries, webhooks, end users, agents) are
  never added, edited or deleted here.
- Integration secrets are write-only: no page, list, history entry or message ever shows one.
  The gateway API key is shown once, in the message that follows its creation or rotation.
"""

from __future__ import annotations

import json

import structlog
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from outbound.http import OutboundError
from sessions_app.admin_forms import IntegrationForm
from sessions_app.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EndUser,
    HitlSession,
    HumanAgent,
    Integration,
    Message,
    SessionStatus,
    StoppedBy,
    WebhookEvent,
)
from sessions_app.services.integrations import (
    integration_api_key_rotate,
    integration_create,
    integration_webhook_install,
    integration_webhook_url,
)
from sessions_app.services.outbox import delivery_retry
from sessions_app.services.sessions import session_stop

log = structlog.get_logger(__name__)

admin.site.site_header = "HITL gateway"
admin.site.site_title = "HITL gateway admin"
admin.site.index_title = "Operations"

CONFIRMATION_TEMPLATE = "admin/sessions_app/action_confirmation.html"
REDACTED = "[redacted]"


# --- helpers --------------------------------------------------------------------------------
def _short(value, limit: int = 80) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pre(text: str):
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def _pretty_json(value, *, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=sort_keys)


def _safe_http_url(url: str) -> str:
    """The URL if it is a plain web address (never ``javascript:`` and the like), else ''."""
    return url if url.lower().startswith(("https://", "http://")) else ""


def _integration_secrets(integration: Integration) -> list[str]:
    credentials = (
        integration.provider_credentials if isinstance(integration.provider_credentials, dict) else {}
    )
    values = (
        integration.botpress_token,
        integration.webhook_signing_secret,
        integration.api_key_hash,
        credentials.get("api_token"),
    )
    # Very short values would redact ordinary words; a real secret is never that short.
    return sorted({v for v in values if isinstance(v, str) and len(v) >= 6}, key=len, reverse=True)


def _redact(text: str, integration: Integration) -> str:
    for secret in _integration_secrets(integration):
        text = text.replace(secret, REDACTED)
    return text


def _describe_helpdesk_error(exc: Exception, integration: Integration) -> str:
    """A readable, secret-free line for an operator."""
    if isinstance(exc, OutboundError):
        text = str(exc)
        if exc.status_code in (401, 403):
            text += " (check the help-desk email and API token)"
    else:
        text = f"unexpected error ({type(exc).__name__}: {exc})"
    return _short(_redact(text, integration), 300)


class ConfirmedActionMixin:
    """Actions that cannot be undone ask first, like Django's own "delete selected"."""

    def confirm_action(
        self, request: HttpRequest, queryset: QuerySet, *, action: str, title: str, question: str, button: str
    ) -> TemplateResponse | None:
        """None once the operator has confirmed; otherwise the page that asks them."""
        if request.POST.get("confirm") == "yes":
            return None
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "question": question,
            "button": button,
            "queryset": queryset,
            "opts": opts,
            "action_name": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, CONFIRMATION_TEMPLATE, context)


# A URL typed without a scheme is an HTTPS one (Django 6's default, chosen now).
URL_OVERRIDES = {models.URLField: {"assume_scheme": "https"}}


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records only the gateway writes: operators look, they do not edit."""

    formfield_overrides = URL_OVERRIDES

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyTabularInline(admin.TabularInline):
    formfield_overrides = URL_OVERRIDES
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# --- integrations ---------------------------------------------------------------------------
@admin.register(Integration)
class IntegrationAdmin(ConfirmedActionMixin, admin.ModelAdmin):
    form = IntegrationForm
    formfield_overrides = URL_OVERRIDES
    list_display = ("name", "provider", "provider_base_url", "is_active", "created_at", "webhook_installed")
    list_filter = ("provider", "is_active")
    search_fields = ("name", "provider_base_url", "botpress_bot_id")
    ordering = ("name",)
    actions = ("install_webhook", "rotate_api_key")
    readonly_fields = (
        "api_key_prefix",
        "webhook_url",
        "webhook_installed",
        "provider_installation",
        "helpdesk_bot_user_id",
        "created_at",
        "updated_at",
    )

    def get_fieldsets(self, request, obj=None):
        if obj is None:  # add: what ``integration_create`` takes
            return (
                (None, {"fields": ("name",)}),
                (
                    "Help desk",
                    {
                        "fields": (
                            "provider",
                            "provider_base_url",
                            "provider_email",
                            "new_provider_api_token",
                            "new_webhook_signing_secret",
                        )
                    },
                ),
                (
                    "Botpress",
                    {
                        "fields": (
                            "botpress_api_url",
                            "botpress_bot_id",
                            "botpress_integration_id",
                            "botpress_integration_alias",
                            "botpress_bot_user_id",
                            "new_botpress_token",
                        )
                    },
                ),
            )
        return (
            (None, {"fields": ("name", "is_active")}),
            (
                "Help desk",
                {
                    "fields": (
                        "provider",
                        "provider_base_url",
                        "provider_email",
                        "new_provider_api_token",
                        "webhook_url",
                        "webhook_installed",
                        "new_webhook_signing_secret",
                        "provider_installation",
                        "helpdesk_bot_user_id",
                    )
                },
            ),
            (
                "Botpress",
                {
                    "fields": (
                        "botpress_api_url",
                        "botpress_bot_id",
                        "botpress_integration_id",
                        "botpress_integration_alias",
                        "botpress_bot_user_id",
                        "new_botpress_token",
                    )
                },
            ),
            (
                "Gateway API key",
                {
                    "fields": ("api_key_prefix",),
                    "description": "Only the first characters are kept; use “Rotate API key” "
                    "to issue a new key.",
                },
            ),
            ("History", {"fields": ("created_at", "updated_at")}),
        )

    def get_readonly_fields(self, request, obj=None):
        # The provider of an existing integration is fixed: its sessions and tickets live there.
        return (*self.readonly_fields, "provider") if obj is not None else self.readonly_fields

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting would cascade to every session record; deactivate instead (``is_active``).
        return False

    @admin.display(boolean=True, description="Webhook installed")
    def webhook_installed(self, obj: Integration) -> bool:
        return bool(obj.provider_installation)

    @admin.display(description="Webhook URL")
    def webhook_url(self, obj: Integration) -> str:
        return integration_webhook_url(integration=obj)

    def save_model(self, request, obj: Integration, form: IntegrationForm, change: bool) -> None:
        secrets = form.secret_values()
        if change:
            self._save_edit(obj, form, secrets)
            return
        created, api_key = integration_create(
            name=obj.name,
            provider=obj.provider,
            provider_base_url=obj.provider_base_url,
            provider_credentials={
                "email": form.cleaned_data["provider_email"],
                "api_token": secrets["new_provider_api_token"],
            },
            botpress_api_url=obj.botpress_api_url,
            botpress_token=secrets["new_botpress_token"],
            botpress_bot_id=obj.botpress_bot_id,
            botpress_integration_id=obj.botpress_integration_id,
            botpress_integration_alias=obj.botpress_integration_alias,
            botpress_bot_user_id=obj.botpress_bot_user_id,
            webhook_signing_secret=secrets.get("new_webhook_signing_secret", ""),
        )
        # The admin goes on with ``obj`` (history entry, redirect): make it the created row.
        for field in Integration._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding, obj._state.db = False, created._state.db
        messages.success(
            request,
            format_html(
                "API key of “{}”: <code>{}</code> — copy it now into the Botpress integration: it is shown "
                "only this once. Help-desk webhook URL: <code>{}</code>",
                created.name,
                api_key,
                integration_webhook_url(integration=created),
            ),
        )

    @staticmethod
    def _save_edit(obj: Integration, form: IntegrationForm, secrets: dict[str, str]) -> None:
        """Plain field edits; a blank secret keeps the stored one."""
        model_fields = {f.name for f in Integration._meta.concrete_fields}
        update_fields = {name for name in form.changed_data if name in model_fields}
        credentials = dict(obj.provider_credentials) if isinstance(obj.provider_credentials, dict) else {}
        new_credentials = {**credentials, "email": form.cleaned_data["provider_email"]}
        if "new_provider_api_token" in secrets:
            new_credentials["api_token"] = secrets["new_provider_api_token"]
        if new_credentials != credentials:
            obj.provider_credentials = new_credentials
            update_fields.add("provider_credentials")
        if "new_botpress_token" in secrets:
            obj.botpress_token = secrets["new_botpress_token"]
            update_fields.add("botpress_token")
        if "new_webhook_signing_secret" in secrets:
            obj.webhook_signing_secret = secrets["new_webhook_signing_secret"]
            update_fields.add("webhook_signing_secret")
        if update_fields:
            obj.save(update_fields=[*sorted(update_fields), "updated_at"])

    @admin.action(description="Install help-desk webhook", permissions=["change"])
    def install_webhook(self, request, queryset):
        for integration in queryset:
            try:
                integration_webhook_install(integration=integration)
            except Exception as exc:  # noqa: BLE001 - any help-desk failure is reported, not a 500
                log.warning(
                    "admin.webhook_install_failed",
                    integration_id=str(integration.pk),
                    error=type(exc).__name__,
                )
                self.message_user(
                    request,
                    f"“{integration.name}”: the help-desk webhook could not be installed: "
                    f"{_describe_helpdesk_error(exc, integration)}",
                    messages.ERROR,
                )
            else:
                self.message_user(
                    request,
                    f"“{integration.name}”: help-desk webhook installed, calling "
                    f"{integration_webhook_url(integration=integration)}.",
                    messages.SUCCESS,
                )

    @admin.action(description="Rotate API key", permissions=["change"])
    def rotate_api_key(self, request, queryset):
        asked = self.confirm_action(
            request,
            queryset,
            action="rotate_api_key",
            title="Rotate API keys",
            question="The current API key of these integrations stops working at once; Botpress must be "
            "given the new key, which is shown only once.",
            button="Yes, rotate",
        )
        if asked is not None:
            return asked
        for integration in queryset:
            api_key = integration_api_key_rotate(integration=integration)
            self.message_user(
                request,
                format_html(
                    "New API key of “{}”: <code>{}</code> — copy it now: it is shown only this once.",
                    integration.name,
                    api_key,
                ),
                messages.SUCCESS,
            )
        return None


# --- sessions -------------------------------------------------------------------------------
class MessageInline(ReadOnlyTabularInline):
    model = Message
    verbose_name = "message"
    verbose_name_plural = "message log"
    show_change_link = False  # messages have no page of their own
    fields = (
        "created_at",
        "direction",
        "type",
        "content",
        "author",
        "botpress_message_id",
        "external_message_id",
        "delivery_status",
        "delivery_attempts",
        "delivery_last_error",
    )
    readonly_fields = fields
    ordering = ("created_at", "id")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("author_end_user", "author_agent", "delivery")

    @staticmethod
    def _delivery(message: Message) -> Delivery | None:
        try:
            return message.delivery
        except ObjectDoesNotExist:
            return None

    @admin.display(description="content")
    def content(self, message: Message) -> str:
        payload = message.payload if isinstance(message.payload, dict) else {}
        for key in ("text", "markdown"):
            if payload.get(key):
                return _short(payload[key], 120)
        for key in ("imageUrl", "audioUrl", "videoUrl", "fileUrl", "url"):
            if payload.get(key):
                return _short(payload[key], 120)
        if message.type == "location":
            where = payload.get("address") or f"{payload.get('latitude')}, {payload.get('longitude')}"
            return _short(f"[location] {where}", 120)
        title = payload.get("title") or payload.get("text") or ""
        return _short(f"[{message.type}] {title}", 120)

    @admin.display(description="author")
    def author(self, message: Message) -> str:
        if message.author_agent is not None:
            return f"agent: {message.author_agent}"
        if message.author_end_user is not None:
            return f"end user: {message.author_end_user}"
        return "bot"

    @admin.display(description="delivery")
    def delivery_status(self, message: Message) -> str:
        delivery = self._delivery(message)
        return delivery.get_status_display() if delivery else "-"

    @admin.display(description="attempts")
    def delivery_attempts(self, message: Message):
        delivery = self._delivery(message)
        return delivery.attempts if delivery else "-"

    @admin.display(description="last error")
    def delivery_last_error(self, message: Message) -> str:
        delivery = self._delivery(message)
        return _short(delivery.last_error, 200) if delivery and delivery.last_error else "-"


class SessionDeliveryInline(ReadOnlyTabularInline):
    model = Delivery
    verbose_name = "delivery"
    verbose_name_plural = "deliveries (outbox)"
    fields = (
        "kind",
        "direction",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error_short",
        "created_at",
    )
    readonly_fields = fields
    ordering = ("id",)

    @admin.display(description="last error")
    def last_error_short(self, delivery: Delivery) -> str:
        return _short(delivery.last_error, 120) or "-"


class SessionWebhookEventInline(ReadOnlyTabularInline):
    model = WebhookEvent
    verbose_name = "webhook event"
    verbose_name_plural = "webhook events"
    fields = ("received_at", "event_type", "status", "detail")
    readonly_fields = fields
    ordering = ("received_at", "id")


@admin.register(HitlSession)
class HitlSessionAdmin(ConfirmedActionMixin, ReadOnlyAdmin):
    list_display = (
        "status",
        "integration",
        "end_user_display",
        "agent",
        "ticket_link",
        "created_at",
        "last_activity_at",
        "needs_attention",
    )
    list_filter = ("status", "integration", "needs_attention", "created_at")
    search_fields = ("ticket__external_id", "end_user__email", "end_user__name", "botpress_conversation_id")
    list_select_related = ("integration", "end_user", "agent", "ticket")
    ordering = ("-created_at",)
    actions = ("close_sessions",)
    inlines = (MessageInline, SessionDeliveryInline, SessionWebhookEventInline)
    readonly_fields = ("ticket_link", "ticket_status")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "integration",
                    "end_user",
                    "agent",
                    "botpress_conversation_id",
                    "ticket_link",
                    "ticket_status",
                    "title",
                    "description",
                )
            },
        ),
        (
            "Status",
            {
                "fields": (
                    "status",
                    "needs_attention",
                    "created_at",
                    "assigned_at",
                    "last_activity_at",
                    "stopped_at",
                    "stopped_by",
                    "stop_reason",
                )
            },
        ),
        ("Botpress data", {"fields": ("extras", "message_history"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("integration", "end_user", "agent", "ticket")

    @admin.display(description="end user", ordering="end_user__email")
    def end_user_display(self, session: HitlSession) -> str:
        return str(session.end_user)

    @admin.display(description="ticket", ordering="ticket__external_id")
    def ticket_link(self, session: HitlSession):
        try:
            ticket = session.ticket
        except ObjectDoesNotExist:
            return "-"
        url = _safe_http_url(ticket.url)
        if not url:
            return ticket.external_id
        return format_html(
            '<a href="{}" target="_blank" rel="noopener noreferrer">{}</a>', url, ticket.external_id
        )

    @admin.display(description="ticket status")
    def ticket_status(self, session: HitlSession) -> str:
        try:
            return session.ticket.status or "-"
        except ObjectDoesNotExist:
            return "-"

    # Closing is allowed to whoever may change sessions, although the page itself is read-only.
    def has_close_permission(self, request, obj=None) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    def _close(self, request, sessions) -> None:
        reason = f"closed by {request.user.get_username()} in the admin"
        closed, already = [], []
        for session in sessions:
            if session.status == SessionStatus.STOPPED:
                already.append(session)
                continue
            session_stop(
                session=session,
                stopped_by=StoppedBy.OPERATOR,
                reason=reason,
                close_ticket=True,
                notify_botpress=True,
            )
            closed.append(session)
        if closed:
            self.message_user(
                request,
                f"Closed {len(closed)} session(s); their tickets will be closed and Botpress told.",
                messages.SUCCESS,
            )
        if already:
            names = ", ".join(s.botpress_conversation_id for s in already[:10]) + (
                "…" if len(already) > 10 else ""
            )
            self.message_user(
                request, f"{len(already)} session(s) were already stopped: {names}.", messages.INFO
            )

    @admin.action(description="Close session (closes the ticket and tells Botpress)", permissions=["close"])
    def close_sessions(self, request, queryset):
        asked = self.confirm_action(
            request,
            queryset,
            action="close_sessions",
            title="Close sessions",
            question="Closing a session closes its ticket in the help desk and tells Botpress the human "
            "handoff is over. It cannot be reopened.",
            button="Yes, close",
        )
        if asked is not None:
            return asked
        self._close(request, queryset)
        return None

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        close = path(
            "<path:object_id>/close/",
            self.admin_site.admin_view(self.close_view),
            name="{}_{}_close".format(*info),
        )
        return [close, *super().get_urls()]  # before the catch-all "<path:object_id>/"

    def close_view(self, request, object_id: str):
        """The "Close session" button of the session page (POST only; CSRF by ``admin_view``)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        session = self.get_object(request, unquote(object_id))
        if session is None:
            raise Http404("No such session.")
        if not self.has_close_permission(request, session):
            raise PermissionDenied
        self._close(request, [session])
        return HttpResponseRedirect(
            reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=(quote(session.pk),),
                current_app=self.admin_site.name,
            )
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "show_close_session": self.has_close_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)


# --- deliveries -----------------------------------------------------------------------------
class DeliveryAttemptInline(ReadOnlyTabularInline):
    model = DeliveryAttempt
    verbose_name = "attempt"
    verbose_name_plural = "attempts"
    show_change_link = False
    fields = ("number", "started_at", "duration_ms", "status_code", "outcome", "error")
    readonly_fields = fields
    ordering = ("number",)


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "direction",
        "session_link",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error_short",
    )
    list_filter = ("status", "kind", "direction", "integration")
    search_fields = ("=id", "lane", "session__botpress_conversation_id", "session__ticket__external_id")
    list_select_related = ("session",)
    ordering = ("-id",)
    actions = ("retry_dead_deliveries",)
    inlines = (DeliveryAttemptInline,)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "integration",
                    "session",
                    "message",
                    "kind",
                    "direction",
                    "lane",
                    "idempotency_key",
                )
            },
        ),
        (
            "State",
            {
                "fields": (
                    "status",
                    "attempts",
                    "next_attempt_at",
                    "retry_deadline",
                    "lease_until",
                    "maybe_delivered",
                    "last_status_code",
                    "last_error",
                    "created_at",
                    "updated_at",
                    "completed_at",
                )
            },
        ),
        ("Data", {"fields": ("payload", "result")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("integration", "session", "message")

    @admin.display(description="last error")
    def last_error_short(self, delivery: Delivery) -> str:
        return _short(delivery.last_error, 60) or "-"

    @admin.display(description="session", ordering="session__created_at")
    def session_link(self, delivery: Delivery):
        if delivery.session_id is None:
            return "-"
        target = reverse(
            f"admin:{HitlSession._meta.app_label}_{HitlSession._meta.model_name}_change",
            args=(quote(delivery.session_id),),
            current_app=self.admin_site.name,
        )
        return format_html('<a href="{}">{}</a>', target, delivery.session.botpress_conversation_id)

    def has_retry_permission(self, request, obj=None) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    @admin.action(description="Retry dead deliveries", permissions=["retry"])
    def retry_dead_deliveries(self, request, queryset):
        retried = skipped = 0
        for delivery in queryset:
            if delivery.status != DeliveryStatus.DEAD:
                skipped += 1
                continue
            delivery_retry(delivery=delivery)
            retried += 1
        if retried:
            self.message_user(
                request,
                f"{retried} dead delivery(ies) queued again with a fresh retry budget.",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request, f"{skipped} selected delivery(ies) were not dead and were left alone.", messages.INFO
            )


# --- webhook events -------------------------------------------------------------------------
@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = (
        "received_at",
        "integration",
        "provider",
        "event_type",
        "status",
        "detail_short",
        "remote_addr",
    )
    list_filter = ("status", "provider", "integration")
    search_fields = ("event_type", "dedup_key", "detail")
    list_select_related = ("integration",)
    ordering = ("-received_at",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "received_at",
                    "processed_at",
                    "integration",
                    "provider",
                    "event_type",
                    "status",
                    "detail",
                    "session",
                    "dedup_key",
                    "remote_addr",
                )
            },
        ),
        ("Request", {"fields": ("headers_pretty", "body_pretty")}),
    )
    readonly_fields = ("headers_pretty", "body_pretty")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("integration", "session")

    @admin.display(description="detail")
    def detail_short(self, event: WebhookEvent) -> str:
        return _short(event.detail, 80) or "-"

    @admin.display(description="headers")
    def headers_pretty(self, event: WebhookEvent):
        return _pre(_pretty_json(event.headers, sort_keys=True))

    @admin.display(description="body")
    def body_pretty(self, event: WebhookEvent):
        try:
            return _pre(_pretty_json(json.loads(event.body)))
        except ValueError:
            return _pre(event.body)


# --- people ---------------------------------------------------------------------------------
@admin.register(EndUser)
class EndUserAdmin(ReadOnlyAdmin):
    list_display = ("name", "email", "integration", "botpress_user_id", "external_user_id", "created_at")
    list_filter = ("integration",)
    search_fields = ("name", "email", "botpress_user_id", "external_user_id")
    list_select_related = ("integration",)
    ordering = ("-created_at",)


@admin.register(HumanAgent)
class HumanAgentAdmin(ReadOnlyAdmin):
    list_display = ("name", "email", "integration", "external_user_id", "botpress_user_id", "updated_at")
    list_filter = ("integration",)
    search_fields = ("name", "email", "external_user_id", "botpress_user_id")
    list_select_related = ("integration",)
    ordering = ("name",)
