"""The operators' console: see what the gateway relayed, and act on it through the services.

Rules kept here:
- Business logic lives in ``sessions_app.services`` (writes, each audited in
  ``services.operators``) and ``sessions_app.selectors`` (reads); this module only calls them and
  checks permissions. The only domain writes made directly are plain field edits of an
  ``Integration``.
- Records the gateway creates (sessions, messages, deliveries, webhooks, end users, agents, the
  audit trail) are never added, edited or deleted here.
- Acting needs a permission of ``HitlSession``: ``close_session``, ``retry_delivery``,
  ``resend_message`` (the "HITL supervisors" group has them; "HITL operators (read-only)" only
  looks). Buttons are shown only to those who have it, and every URL checks it again.
- Integration secrets are write-only: no page, list, history entry or message ever shows one.
  The gateway API key is shown once, in the message that follows its creation or rotation.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from urllib.parse import urlencode

import structlog
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Exists, OuterRef, QuerySet
from django.http import Http404, HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from rangefilter.filters import DateTimeRangeFilter

from outbound.http import OutboundError
from providers.registry import provider_choices, provider_spec, provider_specs
from providers.rendering import MEDIA, render_payload
from providers.spec import WebhookInstall
from sessions_app import charts, selectors
from sessions_app.admin_forms import IntegrationForm, OperatorReasonForm, credential_form_field
from sessions_app.admin_lifecycle import LifecyclePolicyAdmin  # noqa: F401 - registers the policies' pages
from sessions_app.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Direction,
    EndUser,
    HitlSession,
    HumanAgent,
    Integration,
    Message,
    OperatorAction,
    SessionStatus,
    WebhookEvent,
    WebhookRejection,
)
from sessions_app.services.errors import ServiceError
from sessions_app.services.integrations import (
    integration_api_key_rotate,
    integration_create,
    integration_credentials_hint,
    integration_secrets_redact,
    integration_signing_secret_replace,
    integration_webhook_install,
    integration_webhook_instructions,
    integration_webhook_url,
)
from sessions_app.services.operators import (
    deliveries_retry_by_operator,
    integration_connection_test_by_operator,
    integration_webhook_secret_rotate_by_operator,
    message_resend,
    session_close_by_operator,
    webhooks_reapply_by_operator,
)

log = structlog.get_logger(__name__)

admin.site.site_header = "HITL gateway"
admin.site.site_title = "HITL gateway admin"
admin.site.index_title = "Operations"
# The index leads to the dashboard first.
admin.site.index_template = "admin/sessions_app/index.html"
# No app list down the left of every page: the session list needs the width (1366 px screens);
# the index and the breadcrumbs lead everywhere.
admin.site.enable_nav_sidebar = False

CONFIRMATION_TEMPLATE = "admin/sessions_app/action_confirmation.html"
REASON_TEMPLATE = "admin/sessions_app/operator_action_form.html"


# --- helpers --------------------------------------------------------------------------------
def _short(value, limit: int = 80) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pre(text: str):
    # A class, not an inline style: the Content-Security-Policy refuses inline styles.
    return format_html('<pre class="hitl-pre">{}</pre>', text)


def _pretty_json(value, *, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=sort_keys)


def _safe_http_url(url) -> str:
    """The URL if it is a plain web address (never ``javascript:`` and the like), else ''."""
    return url if isinstance(url, str) and url.lower().startswith(("https://", "http://")) else ""


def _describe_helpdesk_error(exc: Exception, integration: Integration) -> str:
    """A readable, secret-free line for an operator."""
    if isinstance(exc, OutboundError):
        text = str(exc)
        if exc.status_code in (401, 403):
            text += f" ({integration_credentials_hint(integration=integration)})"
    elif isinstance(exc, ServiceError):
        text = exc.message
    else:
        text = f"unexpected error ({type(exc).__name__}: {exc})"
    return _short(integration_secrets_redact(integration=integration, text=text), 300)


def _may(request: HttpRequest, codename: str) -> bool:
    return request.user.has_perm(f"sessions_app.{codename}")


def _admin_url(model: str, view: str, *args, **params) -> str:
    url = reverse(f"admin:sessions_app_{model}_{view}", args=[quote(a) for a in args])
    return f"{url}?{urlencode(params)}" if params else url


def _since_params(field: str, since: datetime) -> dict[str, str]:
    """Query parameters of a ``DateTimeRangeFilter`` on ``field`` from ``since`` on (local time)."""
    local = timezone.localtime(since)
    return {f"{field}__range__gte_0": local.date().isoformat(), f"{field}__range__gte_1": local.strftime("%H:%M:%S")}


# How long, in words (``3 h 05 min``): the selectors' wording, everywhere in the console.
_duration = selectors.duration_text


def _ticket_anchor(ticket):
    """The ticket's id, linked to the help desk when its URL is a plain web address."""
    url = _safe_http_url(ticket.url)
    if not url:
        return ticket.external_id
    return format_html('<a href="{}" target="_blank" rel="noopener noreferrer">{}</a>', url, ticket.external_id)


def _object_or_404(model_admin: admin.ModelAdmin, request, object_id: str):
    """The object an admin view acts on, with the admin's own permission-aware lookup."""
    obj = model_admin.get_object(request, unquote(object_id))
    if obj is None:
        raise Http404(f"No such {model_admin.opts.verbose_name}.")
    return obj


class ConfirmedActionMixin:
    """Actions that cannot be undone ask first, like Django's own "delete selected"."""

    def confirm_action(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        *,
        action: str,
        title: str,
        question: str,
        button: str,
        reason_form: OperatorReasonForm | None = None,
    ) -> TemplateResponse | None:
        """None once the operator has confirmed (and given a valid reason, if one is asked)."""
        if request.POST.get("confirm") == "yes" and (reason_form is None or reason_form.is_valid()):
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
            "reason_form": reason_form,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, CONFIRMATION_TEMPLATE, context)


# A URL typed without a scheme is an HTTPS one (Django 6's default, chosen now).
URL_OVERRIDES = {models.URLField: {"assume_scheme": "https"}}


class NoWrites:
    """Records only the gateway writes: operators look, they do not add, edit or delete."""

    formfield_overrides = URL_OVERRIDES

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(NoWrites, admin.ModelAdmin):
    class Media:
        css = {"all": ("sessions_app/console.css",)}


class ReadOnlyTabularInline(NoWrites, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True


ROTATE_QUESTION = (
    "The current API key stops working at once; Botpress must be given the new key, which is shown only once."
)

# The Botpress connection, the same on the add and the change page.
BOTPRESS_FIELDSET = (
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
)


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
        "webhook_state",
        "webhook_manual_steps",
        "signing_secret_set",
        "last_webhook",
        "webhooks_rejected_24h",
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
                            *(
                                credential_form_field(spec.kind, f.name)
                                for spec in provider_specs()
                                for f in spec.credential_fields
                            ),
                            "new_webhook_signing_secret",
                        ),
                        "description": "Fill in the credentials of the help desk you choose; the others are ignored.",
                    },
                ),
                BOTPRESS_FIELDSET,
            )
        return (
            (None, {"fields": ("name", "is_active")}),
            (
                "Help desk",
                {
                    "fields": (
                        "provider",
                        "provider_base_url",
                        *(
                            credential_form_field(obj.provider, f.name)
                            for f in provider_spec(obj.provider).credential_fields
                        ),
                        "helpdesk_bot_user_id",
                    )
                },
            ),
            (
                "Help-desk webhook",
                {
                    "fields": (
                        "webhook_url",
                        "webhook_installed",
                        "webhook_state",
                        *(("webhook_manual_steps",) if self._manual_steps_shown(obj) else ()),
                        "signing_secret_set",
                        "new_webhook_signing_secret",
                        "last_webhook",
                        "webhooks_rejected_24h",
                    ),
                    "description": "Installed with the “Install help-desk webhook” button above. “Test connection” "
                    "asks the help desk whether the webhook and its triggers are still active.",
                },
            ),
            BOTPRESS_FIELDSET,
            (
                "Gateway API key",
                {
                    "fields": ("api_key_prefix",),
                    "description": "Only the first characters are kept; the “Rotate API key” button above "
                    "issues a new key.",
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

    @admin.display(description="Installation")
    def webhook_state(self, obj: Integration) -> str:
        state = obj.provider_installation or {}
        if not state:
            return "not installed"
        if "webhook_id" in state:
            triggers = state.get("trigger_ids") or []
            return f"webhook {state['webhook_id']}, {len(triggers)} trigger(s)"
        # Any other desk: what it installed, counted ("2 rule(s)").
        counted = [f"{len(v)} {k.removesuffix('_ids')}(s)" for k, v in state.items() if isinstance(v, list)]
        return ", ".join(counted) or "installed"

    @staticmethod
    def _manual_steps_shown(obj: Integration) -> bool:
        """A desk installed by hand, or an API-installed one that is not installed yet."""
        install = provider_spec(obj.provider).webhook_install
        return install == WebhookInstall.MANUAL or (install == WebhookInstall.API and not obj.provider_installation)

    @admin.display(description="Set up by hand")
    def webhook_manual_steps(self, obj: Integration):
        steps = integration_webhook_instructions(integration=obj, reveal_secret=False)
        return format_html("<pre>{}</pre>", steps) if steps else "-"

    @admin.display(boolean=True, description="Signing secret set")
    def signing_secret_set(self, obj: Integration) -> bool:
        return bool(obj.webhook_signing_secret)

    @admin.display(description="Last webhook received")
    def last_webhook(self, obj: Integration):
        event = obj.webhook_events.order_by("-received_at").first() if obj.pk else None
        if event is None:
            return "none yet"
        return format_html(
            '<a href="{}">{}</a> — {}',
            _admin_url("webhookevent", "change", event.pk),
            timezone.localtime(event.received_at).strftime("%Y-%m-%d %H:%M:%S"),
            event.get_status_display(),
        )

    @admin.display(description="Rejected in the last 24 h")
    def webhooks_rejected_24h(self, obj: Integration):
        if not obj.pk:
            return "-"
        since = selectors.rejections_since(now=timezone.now(), window=selectors.WINDOWS["24h"])
        count = selectors.webhook_rejections_count(since=since, integration=obj)
        url = _admin_url(
            "webhookrejection", "changelist", integration__id__exact=obj.pk, **_since_params("bucket", since)
        )
        return format_html('<a href="{}">{}</a>', url, count)

    def save_model(self, request, obj: Integration, form: IntegrationForm, change: bool) -> None:
        secrets = form.secret_values()
        if change:
            self._save_edit(obj, form, secrets)
            return
        created, api_key = integration_create(
            name=obj.name,
            provider=obj.provider,
            provider_base_url=obj.provider_base_url,
            provider_credentials=form.provider_credentials(),
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
        new_credentials = form.provider_credentials(stored=credentials)
        if new_credentials != credentials:
            obj.provider_credentials = new_credentials
            update_fields.add("provider_credentials")
        if "new_botpress_token" in secrets:
            obj.botpress_token = secrets["new_botpress_token"]
            update_fields.add("botpress_token")
        if "new_webhook_signing_secret" in secrets:
            update_fields.update(
                integration_signing_secret_replace(integration=obj, secret=secrets["new_webhook_signing_secret"])
            )
        if update_fields:
            obj.save(update_fields=[*sorted(update_fields), "updated_at"])

    def _install_webhook(self, request, integration: Integration) -> None:
        try:
            integration_webhook_install(integration=integration)
        except Exception as exc:  # noqa: BLE001 - any help-desk failure is reported, not a 500
            log.warning("admin.webhook_install_failed", integration_id=str(integration.pk), error=type(exc).__name__)
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

    def _rotate_api_key(self, request, integration: Integration) -> None:
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

    @admin.action(description="Install help-desk webhook", permissions=["change"])
    def install_webhook(self, request, queryset):
        for integration in queryset:
            self._install_webhook(request, integration)

    @admin.action(description="Rotate API key", permissions=["change"])
    def rotate_api_key(self, request, queryset):
        asked = self.confirm_action(
            request,
            queryset,
            action="rotate_api_key",
            title="Rotate API keys",
            question=ROTATE_QUESTION,
            button="Yes, rotate",
        )
        if asked is not None:
            return asked
        for integration in queryset:
            self._rotate_api_key(request, integration)
        return None

    def install_webhook_view(self, request, object_id: str):
        """The page's "Install help-desk webhook" button (POST, CSRF by ``admin_view``)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        integration = _object_or_404(self, request, object_id)
        if not self.has_change_permission(request, integration):
            raise PermissionDenied
        self._install_webhook(request, integration)
        return HttpResponseRedirect(_admin_url("integration", "change", integration.pk))

    def rotate_api_key_view(self, request, object_id: str):
        """The page's "Rotate API key" button: asks first, then shows the new key once."""
        integration = _object_or_404(self, request, object_id)
        if not self.has_change_permission(request, integration):
            raise PermissionDenied
        form = forms.Form(request.POST if request.method == "POST" else None)  # nothing to ask but "sure?"
        if request.method == "POST" and form.is_valid():
            self._rotate_api_key(request, integration)
            return HttpResponseRedirect(_admin_url("integration", "change", integration.pk))
        return _reason_page(
            self,
            request,
            integration,
            title=f"Rotate the API key of “{integration.name}”",
            question=ROTATE_QUESTION,
            button="Rotate the API key",
            form=form,
        )

    # --- object tools: test connection, rotate the webhook secret ----------------------------
    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/test-connection/",
                wrap(self.test_connection_view),
                name="{}_{}_test_connection".format(*info),
            ),
            path(
                "<path:object_id>/install-webhook/",
                wrap(self.install_webhook_view),
                name="{}_{}_install_webhook".format(*info),
            ),
            path(
                "<path:object_id>/rotate-api-key/",
                wrap(self.rotate_api_key_view),
                name="{}_{}_rotate_api_key".format(*info),
            ),
            path(
                "<path:object_id>/rotate-webhook-secret/",
                wrap(self.rotate_webhook_secret_view),
                name="{}_{}_rotate_webhook_secret".format(*info),
            ),
            *super().get_urls(),
        ]

    def test_connection_view(self, request, object_id: str):
        """Calls the help desk and Botpress with the stored credentials (POST; anyone who may look)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        integration = _object_or_404(self, request, object_id)
        if not self.has_view_permission(request, integration):
            raise PermissionDenied
        answers = integration_connection_test_by_operator(integration=integration, operator=request.user)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Connection test of “{integration.name}”",
            "opts": self.opts,
            "original": integration,
            "answers": answers,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/sessions_app/integration/connection_test.html", context)

    def rotate_webhook_secret_view(self, request, object_id: str):
        integration = _object_or_404(self, request, object_id)
        if not self.has_change_permission(request, integration):
            raise PermissionDenied
        form = OperatorReasonForm(request.POST if request.method == "POST" else None, required=False)
        if request.method == "POST" and form.is_valid():
            try:
                integration_webhook_secret_rotate_by_operator(
                    integration=integration, operator=request.user, reason=form.cleaned_data["reason"]
                )
            except Exception as exc:  # noqa: BLE001 - any help-desk failure is reported, not a 500
                self.message_user(
                    request,
                    f"The webhook secret was not rotated: {_describe_helpdesk_error(exc, integration)}",
                    messages.ERROR,
                )
            else:
                self.message_user(
                    request,
                    "The help desk issued a new webhook signing secret; the gateway stored it and checks "
                    "webhooks with it from now on.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(_admin_url("integration", "change", integration.pk))
        return _reason_page(
            self,
            request,
            integration,
            title=f"Rotate the webhook signing secret of “{integration.name}”",
            question="The help desk issues a new signing secret and the gateway stores it. Webhooks signed "
            "with the old one are refused from then on.",
            button="Rotate the secret",
            form=form,
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "show_connection_tools": True,
            "can_rotate_webhook_secret": self.has_change_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)


def _reason_page(model_admin, request, obj, *, title: str, question: str, button: str, form, preview=None):
    """The page that asks an operator to confirm an action and say why."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "question": question,
        "button": button,
        "form": form,
        "opts": model_admin.opts,
        "original": obj,
        "preview": preview,
        "cancel_url": _admin_url(model_admin.opts.model_name, "change", obj.pk),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, REASON_TEMPLATE, context)


# --- sessions -------------------------------------------------------------------------------
class ProviderFilter(admin.SimpleListFilter):
    """The help desk, from the choices (no query over the sessions to list them)."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        return provider_choices()

    def queryset(self, request, queryset):
        return queryset.filter(integration__provider=self.value()) if self.value() else queryset


class FailedDeliveriesFilter(admin.SimpleListFilter):
    title = "failed deliveries"
    parameter_name = "failed_deliveries"

    def lookups(self, request, model_admin):
        return (("dead", "Has dead deliveries"), ("failing", "Has deliveries being retried"), ("none", "None"))

    def queryset(self, request, queryset):
        deliveries = Delivery.objects.filter(session=OuterRef("pk"))
        dead = Exists(deliveries.filter(status=DeliveryStatus.DEAD))
        failing = Exists(deliveries.filter(selectors.delivery_failing_q()))
        if self.value() == "dead":
            return queryset.filter(dead)
        if self.value() == "failing":
            return queryset.filter(failing)
        if self.value() == "none":
            return queryset.exclude(dead).exclude(failing)
        return queryset


class ReachedFilter(admin.SimpleListFilter):
    """The sessions the dashboard's response times are computed over."""

    title = "reached"
    parameter_name = "reached"

    def lookups(self, request, model_admin):
        return (("assigned", "An agent was assigned"), ("replied", "An agent replied"))

    def queryset(self, request, queryset):
        if self.value() == "assigned":
            return queryset.filter(assigned_at__isnull=False)
        if self.value() == "replied":
            replies = Message.objects.filter(session=OuterRef("pk"), direction=Direction.TO_USER)
            return queryset.filter(Exists(replies))
        return queryset


class ProblemFilter(admin.SimpleListFilter):
    """The list's problem badge as a filter (``selectors.PROBLEMS``)."""

    title = "problem"
    parameter_name = "problem"

    def lookups(self, request, model_admin):
        return list(selectors.PROBLEMS.items())

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return selectors.sessions_with_problem(queryset=queryset, problem=self.value())


class AgentFilter(admin.RelatedFieldListFilter):
    """Agents by name (the related filter would list them in database order)."""

    def field_choices(self, field, request, model_admin):
        return [(a.pk, str(a)) for a in HumanAgent.objects.order_by("name", "email")]


class SessionChangeList(ChangeList):
    """The list never needs the sessions' big JSON and text columns."""

    def get_queryset(self, request, exclude_parameters=None):
        return super().get_queryset(request, exclude_parameters).defer("message_history", "extras", "description")


@admin.register(HitlSession)
class HitlSessionAdmin(ConfirmedActionMixin, ReadOnlyAdmin):
    # Seven narrow columns: the list fits a 1366 px screen beside its filters without scrolling.
    list_display = (
        "status_text",
        "end_user_display",
        "title_display",
        "agent",
        "ticket_link",
        "problem",
        "started",
    )
    list_display_links = ("status_text",)
    list_filter = (
        "status",
        "integration",
        ProviderFilter,
        ("created_at", DateTimeRangeFilter),
        ("stopped_at", DateTimeRangeFilter),
        FailedDeliveriesFilter,
        ReachedFilter,
        ("agent", AgentFilter),
        ProblemFilter,
    )
    # Searching is ``selectors.session_search``; a field here only makes the admin show the box.
    search_fields = ("botpress_conversation_id",)
    search_help_text = "Ticket id, conversation id, end-user email or name, or words of any message."
    list_select_related = ("integration", "end_user", "agent", "ticket")
    # One count query, not two: the unfiltered total of 100,000 rows is not worth a second scan.
    show_full_result_count = False
    ordering = ("-created_at",)
    actions = ("close_sessions",)
    readonly_fields = ("ticket_link", "ticket_status")
    # Folded: the page opens on a summary line and the conversation (see the change form template).
    fieldsets = (
        (
            "Session record",
            {
                "classes": ("collapse",),
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
                ),
            },
        ),
        (
            "Status fields",
            {
                "classes": ("collapse",),
                "fields": (
                    "status",
                    "needs_attention",
                    "created_at",
                    "assigned_at",
                    "last_activity_at",
                    "stopped_at",
                    "stopped_by",
                    "stop_reason",
                ),
            },
        ),
        # ``messageHistory`` opens the conversation on the page, marked "before handoff".
        ("Botpress data", {"fields": ("extras",), "classes": ("collapse",)}),
    )

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("integration", "end_user", "agent", "ticket")
        return selectors.session_list_annotate(queryset)

    def get_changelist(self, request, **kwargs):
        return SessionChangeList

    def get_search_results(self, request, queryset, search_term):
        return selectors.session_search(queryset=queryset, term=search_term), False

    @admin.display(description="status", ordering="status")
    def status_text(self, session: HitlSession):
        return format_html(
            '<span class="status-dot status-{}"></span>{}', session.status, selectors.session_status_text(session)
        )

    @admin.display(description="end user", ordering="end_user__email")
    def end_user_display(self, session: HitlSession) -> str:
        return str(session.end_user)

    @admin.display(description="title", ordering="title")
    def title_display(self, session: HitlSession):
        return format_html('<span class="cell-title" title="{}">{}</span>', session.title, session.title or "-")

    @admin.display(description="ticket", ordering="ticket__external_id")
    def ticket_link(self, session: HitlSession):
        ticket = getattr(session, "ticket", None)
        if ticket is None:
            return "-"
        status = format_html(' <span class="ticket-status">{}</span>', ticket.status) if ticket.status else ""
        return format_html("{}{}", _ticket_anchor(ticket), status)

    @admin.display(description="ticket status")
    def ticket_status(self, session: HitlSession) -> str:
        ticket = getattr(session, "ticket", None)
        return (ticket.status or "-") if ticket else "-"

    @admin.display(description="started", ordering="created_at")
    def started(self, session: HitlSession) -> str:
        local = timezone.localtime(session.created_at)
        return local.strftime("%H:%M") if local.date() == timezone.localdate() else local.strftime("%d %b %H:%M")

    @admin.display(description="problem")
    def problem(self, session: HitlSession):
        text = selectors.session_problem(session)
        return format_html('<span class="problem-badge">{}</span>', text) if text else ""

    @admin.display(description="waited", ordering="waited")
    def time_to_assignment(self, session: HitlSession) -> str:
        if session.assigned_at:
            return _duration(session.assigned_at - session.created_at)
        if session.status == SessionStatus.PENDING:
            return f"{_duration(timezone.now() - session.created_at)} so far"
        return ""

    # --- permissions ------------------------------------------------------------------------
    def has_close_permission(self, request, obj=None) -> bool:
        return _may(request, "close_session")

    def has_retry_permission(self, request, obj=None) -> bool:
        return _may(request, "retry_delivery")

    def has_resend_permission(self, request, obj=None) -> bool:
        return _may(request, "resend_message")

    # --- closing ----------------------------------------------------------------------------
    def _close(self, request, sessions, reason: str) -> None:
        closed, already = [], []
        for session in sessions:
            if session_close_by_operator(session=session, operator=request.user, reason=reason) is None:
                already.append(session)
            else:
                closed.append(session)
        if closed:
            self.message_user(
                request,
                f"Closed {len(closed)} session(s); their tickets will be closed and Botpress told.",
                messages.SUCCESS,
            )
        if already:
            names = ", ".join(s.botpress_conversation_id for s in already[:10]) + ("…" if len(already) > 10 else "")
            self.message_user(request, f"{len(already)} session(s) were already stopped: {names}.", messages.INFO)

    @admin.action(description="Close session (closes the ticket and tells Botpress)", permissions=["close"])
    def close_sessions(self, request, queryset):
        form = OperatorReasonForm(request.POST if request.POST.get("confirm") == "yes" else None)
        asked = self.confirm_action(
            request,
            queryset,
            action="close_sessions",
            title="Close sessions",
            question="Closing a session closes its ticket in the help desk and tells Botpress the human "
            "handoff is over. It cannot be reopened.",
            button="Yes, close",
            reason_form=form,
        )
        if asked is not None:
            return asked
        self._close(request, queryset, form.cleaned_data["reason"])
        return None

    # --- the session page's buttons, and the dashboard -------------------------------------
    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [  # before the catch-all "<path:object_id>/"
            path("dashboard/", wrap(self.dashboard_view), name="{}_{}_dashboard".format(*info)),
            path("<path:object_id>/close/", wrap(self.close_view), name="{}_{}_close".format(*info)),
            path("<path:object_id>/retry/", wrap(self.retry_view), name="{}_{}_retry".format(*info)),
            path(
                "<path:object_id>/resend/<int:message_id>/",
                wrap(self.resend_view),
                name="{}_{}_resend".format(*info),
            ),
            *super().get_urls(),
        ]

    def _back(self, session: HitlSession) -> HttpResponseRedirect:
        return HttpResponseRedirect(_admin_url("hitlsession", "change", session.pk))

    def close_view(self, request, object_id: str):
        """The "Close session" button: a page asking why, then the close (CSRF by ``admin_view``)."""
        session = _object_or_404(self, request, object_id)
        if not self.has_close_permission(request, session):
            raise PermissionDenied
        form = OperatorReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            self._close(request, [session], form.cleaned_data["reason"])
            return self._back(session)
        if not session.is_active and request.method != "POST":
            self.message_user(request, "This session is already stopped.", messages.INFO)
            return self._back(session)
        return _reason_page(
            self,
            request,
            session,
            title=f"Close {session}",
            question="Closing the session closes its ticket in the help desk and tells Botpress the human "
            "handoff is over (hitlStopped). It cannot be reopened.",
            button="Close the session",
            form=form,
        )

    def retry_view(self, request, object_id: str):
        """Retry the session's dead deliveries, or the one named by ``delivery`` (POST)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        session = _object_or_404(self, request, object_id)
        if not self.has_retry_permission(request, session):
            raise PermissionDenied
        deliveries = session.deliveries.filter(status=DeliveryStatus.DEAD)
        if request.POST.get("delivery"):
            deliveries = deliveries.filter(pk=request.POST["delivery"])
        retried = deliveries_retry_by_operator(
            deliveries=list(deliveries), operator=request.user, reason=request.POST.get("reason", "")
        )
        if retried:
            self.message_user(
                request, f"{len(retried)} dead delivery(ies) queued again with a fresh retry budget.", messages.SUCCESS
            )
        else:
            self.message_user(request, "No dead delivery to retry.", messages.INFO)
        return self._back(session)

    def resend_view(self, request, object_id: str, message_id: int):
        session = _object_or_404(self, request, object_id)
        if not self.has_resend_permission(request, session):
            raise PermissionDenied
        message = get_object_or_404(Message, pk=message_id, session=session)
        form = OperatorReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                copy = message_resend(message=message, operator=request.user, reason=form.cleaned_data["reason"])
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Message #{message.pk} will be sent again (as message #{copy.pk}).",
                    messages.SUCCESS,
                )
            return self._back(session)
        where = "the ticket" if message.direction == Direction.TO_AGENT else "Botpress (the end user)"
        return _reason_page(
            self,
            request,
            session,
            title=f"Resend message #{message.pk}",
            question=f"A copy of this message is sent to {where} once more, after whatever is already "
            "queued for this session. The recipient sees it twice.",
            button="Resend",
            form=form,
            preview=_message_view(message),
        )

    def dashboard_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        figures = selectors.dashboard_get()
        context = {
            **self.admin_site.each_context(request),
            "title": "Dashboard",
            "opts": self.opts,
            "d": figures,
            "cards": _dashboard_cards(figures, self.list_display),
            "durations": _dashboard_durations(figures),
            "charts": _dashboard_charts(figures),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/sessions_app/dashboard.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        session = self.get_object(request, unquote(object_id))
        extra = {}
        if session is not None:
            story = selectors.session_story(session=session)
            may_retry = self.has_retry_permission(request, session)
            may_resend = self.has_resend_permission(request, session) and session.is_active
            extra = {
                "story": story,
                "ticket_link": _ticket_anchor(session.ticket) if hasattr(session, "ticket") else "-",
                "waited": self.time_to_assignment(session),
                "ended": selectors.session_end_text(session),
                "priority": selectors.session_priority(session),
                "history": [_history_view(entry) for entry in story.history],
                "timeline": [_message_view(m, may_resend=may_resend) for m in story.messages],
                "deliveries": [_delivery_view(d) for d in story.deliveries],
                "webhooks": [_webhook_view(w) for w in story.webhooks],
                "show_reapply": _may(request, "reapply_webhook"),
                "show_close_session": self.has_close_permission(request, session) and session.is_active,
                "show_retry": may_retry,
                "show_resend": may_resend,
            }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})


# Presentation of the session page: plain dicts the template lays out.
def _message_parts(message_type: str, payload: dict) -> list[dict]:
    if message_type == "bloc":
        parts = []
        for item in payload.get("items") or []:
            if isinstance(item, dict):
                parts += _message_parts(item.get("type", ""), item.get("payload") or {})
        return parts
    if message_type in MEDIA:
        label, key = MEDIA[message_type]
        url = _safe_http_url(payload.get(key))
        return [
            {
                # Media, images included, are links: the operator's browser loads no end user's URL.
                "kind": "link",
                "kind_label": message_type,
                "url": url,
                "label": payload.get("title") or label,
                "raw": payload.get(key, ""),
            }
        ]
    return [{"kind": "text", "text": render_payload(message_type, payload)}]


def _message_view(message: Message, *, may_resend: bool = False) -> dict:
    payload = message.payload if isinstance(message.payload, dict) else {}
    if message.author_agent is not None:
        author, role = f"agent: {message.author_agent}", "agent"
    elif message.author_end_user is not None:
        author, role = f"end user: {message.author_end_user}", "user"
    else:
        author, role = "bot", "bot"
    delivery = getattr(message, "delivery", None)
    # Only a delivered message can be sent again; one that is not has its delivery retried.
    delivered = delivery is not None and delivery.status == DeliveryStatus.SUCCEEDED
    return {
        "message": message,
        "side": "right" if message.direction == Direction.TO_USER else "left",
        "role": role,
        "author": author,
        "parts": _message_parts(message.type, payload),
        "delivery": delivery,
        "outcome": selectors.delivery_outcome(delivery=delivery) if delivery is not None else "",
        "resend_url": (
            _admin_url("hitlsession", "resend", message.session_id, message.pk) if may_resend and delivered else ""
        ),
    }


def _history_view(entry: selectors.HistoryEntry) -> dict:
    return {
        "author": entry.author,
        "role": entry.role,
        "type": entry.type,
        "parts": _message_parts(entry.type, entry.payload),
    }


def _delivery_view(delivery: Delivery) -> dict:
    attempts = list(delivery.attempt_log.all())
    return {
        "delivery": delivery,
        "attempts": [{"attempt": a, "words": _attempt_words(a)} for a in attempts],
        "outcome": selectors.delivery_outcome(delivery=delivery),
    }


def _attempt_words(attempt: DeliveryAttempt) -> str:
    if attempt.outcome in (DeliveryStatus.SUCCEEDED, DeliveryStatus.SKIPPED):
        return "delivered" if attempt.outcome == DeliveryStatus.SUCCEEDED else "not needed"
    words = selectors.failure_words(
        error=attempt.error, status_code=attempt.status_code, duration_ms=attempt.duration_ms
    )
    return f"{'outcome unknown' if words.delivered is None else 'not delivered'}: {words.reason}"


def _webhook_view(event: WebhookEvent) -> dict:
    try:
        body = _pretty_json(json.loads(event.body))
    except ValueError:
        body = event.body
    return {"event": event, "headers": _pretty_json(event.headers, sort_keys=True), "body": body}


def _dashboard_cards(d: selectors.Dashboard, list_display) -> list[dict]:
    oldest_first = {"o": str(list_display.index("started") + 1)}
    return [
        {
            "label": "Waiting for an agent",
            "value": d.waiting,
            "url": _admin_url("hitlsession", "changelist", status__exact="pending", **oldest_first),
            "note": f"longest wait {_duration(d.longest_wait)}" if d.waiting else "nobody waiting",
            "alert": bool(d.longest_wait and d.longest_wait > timedelta(minutes=15)),
        },
        {
            "label": "Assigned",
            "value": d.assigned,
            "url": _admin_url("hitlsession", "changelist", status__exact="assigned"),
        },
        {
            "label": "Stopped today",
            "value": d.stopped_today,
            "url": _admin_url(
                "hitlsession", "changelist", status__exact="stopped", **_since_params("stopped_at", d.today)
            ),
        },
        {
            "label": "Ended by timeout, 24 h",
            "value": d.ended_by_policy_24h,
            "url": _admin_url(
                "hitlsession",
                "changelist",
                stopped_by__exact="policy",
                **_since_params("stopped_at", d.now - selectors.WINDOWS["24h"]),
            ),
            "note": "lifecycle policies: timeouts, business hours",
        },
        {
            "label": "Tickets not created",
            "value": d.tickets_not_created,
            "url": _admin_url("hitlsession", "changelist", problem="ticket"),
            "alert": d.tickets_not_created > 0,
            "note": "the help desk has no ticket: nobody can answer"
            if d.tickets_not_created
            else "every ticket exists",
        },
        {
            "label": "Sessions needing attention",
            "value": d.sessions_needing_attention,
            "url": _admin_url("hitlsession", "changelist", problem="any"),
            "alert": d.sessions_needing_attention > 0,
            "note": "no ticket, a failed delivery or webhook",
        },
        {
            "label": "Deliveries dead",
            "value": d.deliveries_dead,
            "url": _admin_url("delivery", "changelist", status__exact="dead"),
            "alert": d.deliveries_dead > 0,
            "note": "gave up; retry them from the session",
        },
        {
            "label": "Deliveries failing",
            "value": d.deliveries_failing,
            "url": _admin_url("delivery", "changelist", state="failing"),
            "note": "being retried",
        },
        {
            "label": "Webhooks failed",
            "value": d.webhooks_failed,
            "url": _admin_url("webhookevent", "changelist", status__exact="failed"),
            "alert": d.webhooks_failed > 0,
            "note": "see the reason; re-apply them from the list or the session",
        },
        {
            "label": "Webhooks rejected (24 h)",
            "value": d.webhooks_rejected_24h,
            # Counters, one row per integration, reason and hour: the figure is their sum.
            "url": _admin_url(
                "webhookrejection",
                "changelist",
                **_since_params("bucket", selectors.rejections_since(now=d.now, window=selectors.WINDOWS["24h"])),
            ),
            "note": f"{d.webhooks_rejected_7d} in 7 days",
            "alert": d.webhooks_rejected_24h > 0,
        },
    ]


def _dashboard_durations(d: selectors.Dashboard) -> list[dict]:
    rows = []
    for metric, label in (("assignment", "Time to assignment"), ("first_reply", "Time to first agent reply")):
        for window, span in selectors.WINDOWS.items():
            p = d.durations[metric][window]
            rows.append(
                {
                    "label": label,
                    "window": window,
                    "count": p.count,
                    "median": _duration(p.median),
                    "p90": _duration(p.p90),
                    "url": _admin_url(
                        "hitlsession",
                        "changelist",
                        reached="assigned" if metric == "assignment" else "replied",
                        **_since_params("created_at", d.now - span),
                    ),
                }
            )
    return rows


def _duration_unit(longest: timedelta | None) -> tuple[str, float]:
    """The unit a chart of durations reads best in: ``("s", 1)``, ``("min", 60)`` or ``("h", 3600)``."""
    seconds = longest.total_seconds() if longest else 0
    if seconds < 120:
        return "s", 1
    return ("min", 60) if seconds < 7200 else ("h", 3600)


def _short_number(value: float) -> str:
    """``7.5``, ``12``, ``0.3``: a chart label, short enough to sit over a bar."""
    return f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"


def _dashboard_charts(d: selectors.Dashboard) -> list[dict]:
    hourly = [
        charts.Point(
            timezone.localtime(hour).strftime("%H:00"),
            n,
            f"{timezone.localtime(hour):%H:00} to {timezone.localtime(hour):%H}:59: {n} session{'s' if n != 1 else ''}",
        )
        for hour, n in d.started_per_hour
    ]
    medians = [median for _, median in d.assignment_median_per_day if median is not None]
    unit, per_unit = _duration_unit(max(medians, default=None))
    daily = [
        charts.Point(
            day.strftime("%d %b"),
            (median.total_seconds() / per_unit) if median is not None else None,
            f"{day:%d %b}: median {_duration(median)}" if median is not None else f"{day:%d %b}: nobody assigned",
        )
        for day, median in d.assignment_median_per_day
    ]
    return [
        charts.bar_chart(
            hourly,
            title="Sessions started per hour, last 24 h",
            y_label="sessions",
            x_label="hour started (local time)",
            empty_text="No session started in the last 24 hours.",
        ),
        charts.bar_chart(
            daily,
            title=f"Median time to assignment per day, last {selectors.TREND_DAYS} days",
            y_label=f"median wait ({unit})",
            x_label="day the session started",
            empty_text=f"No session was assigned to an agent in the last {selectors.TREND_DAYS} days.",
            value_text=_short_number,
            integer=False,
        ),
    ]


# --- deliveries -----------------------------------------------------------------------------
class DeliveryAttemptInline(ReadOnlyTabularInline):
    model = DeliveryAttempt
    verbose_name = "attempt"
    verbose_name_plural = "attempts"
    show_change_link = False
    fields = ("number", "started_at", "duration_ms", "what_happened", "error")
    readonly_fields = fields
    ordering = ("number",)

    @admin.display(description="what happened")
    def what_happened(self, attempt: DeliveryAttempt) -> str:
        return _attempt_words(attempt)


class DeliveryStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("failing", "Failing (pending, last attempt failed)"),)

    def queryset(self, request, queryset):
        return queryset.filter(selectors.delivery_failing_q()) if self.value() == "failing" else queryset


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "direction",
        "session_link",
        "outcome",
        "attempts",
        "next_attempt_at",
    )
    list_filter = (
        "status",
        DeliveryStateFilter,
        "kind",
        "direction",
        "integration",
        ("created_at", DateTimeRangeFilter),
    )
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
                    "outcome",
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

    readonly_fields = ("outcome",)

    def get_queryset(self, request):
        # The attempts in one query for the whole page: the outcome reads the last one.
        return (
            super()
            .get_queryset(request)
            .select_related("integration", "session", "message")
            .prefetch_related("attempt_log")
        )

    @admin.display(description="outcome", ordering="status")
    def outcome(self, delivery: Delivery):
        return format_html(
            '<span class="outcome {}">{}</span>', delivery.status, selectors.delivery_outcome(delivery=delivery)
        )

    @admin.display(description="session", ordering="session__created_at")
    def session_link(self, delivery: Delivery):
        if delivery.session_id is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            _admin_url("hitlsession", "change", delivery.session_id),
            delivery.session.botpress_conversation_id,
        )

    def has_retry_permission(self, request, obj=None) -> bool:
        return _may(request, "retry_delivery")

    @admin.action(description="Retry dead deliveries", permissions=["retry"])
    def retry_dead_deliveries(self, request, queryset):
        deliveries = list(queryset)
        retried = deliveries_retry_by_operator(deliveries=deliveries, operator=request.user)
        skipped = len(deliveries) - len(retried)
        if retried:
            self.message_user(
                request,
                f"{len(retried)} dead delivery(ies) queued again with a fresh retry budget.",
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
    list_filter = ("status", "provider", "integration", ("received_at", DateTimeRangeFilter))
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
    actions = ("reapply_webhooks",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("integration", "session")

    def has_reapply_permission(self, request, obj=None) -> bool:
        return _may(request, "reapply_webhook")

    def _reapply(self, request, events) -> None:
        queued = webhooks_reapply_by_operator(
            events=events, operator=request.user, reason=request.POST.get("reason", "")
        )
        if queued:
            self.message_user(request, f"{len(queued)} failed webhook(s) queued to be applied again.", messages.SUCCESS)
        else:
            self.message_user(request, "No failed webhook to re-apply (only accepted webhooks are).", messages.INFO)

    @admin.action(description="Re-apply failed webhooks", permissions=["reapply"])
    def reapply_webhooks(self, request, queryset):
        self._reapply(request, list(queryset))

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/reapply/",
                self.admin_site.admin_view(self.reapply_view),
                name="{}_{}_reapply".format(*info),
            ),
            *super().get_urls(),
        ]

    def reapply_view(self, request, object_id: str):
        """The session page's "Re-apply" button (POST, CSRF by ``admin_view``); back to that page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        event = _object_or_404(self, request, object_id)
        if not self.has_reapply_permission(request, event):
            raise PermissionDenied
        self._reapply(request, [event])
        if event.session_id:
            return HttpResponseRedirect(_admin_url("hitlsession", "change", event.session_id))
        return HttpResponseRedirect(_admin_url("webhookevent", "change", event.pk))

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


@admin.register(WebhookRejection)
class WebhookRejectionAdmin(ReadOnlyAdmin):
    """Webhooks refused for authentication, counted per integration, reason and hour."""

    list_display = ("bucket", "integration", "reason", "count", "last_at")
    list_filter = ("reason", "integration", ("bucket", DateTimeRangeFilter))
    list_select_related = ("integration",)
    ordering = ("-bucket", "reason")
    fields = ("integration", "reason", "bucket", "count", "first_at", "last_at", "samples_pretty")
    readonly_fields = ("samples_pretty",)

    @admin.display(description="last samples (never the signature)")
    def samples_pretty(self, rejection: WebhookRejection):
        return _pre(_pretty_json(rejection.samples))


# --- the audit trail ------------------------------------------------------------------------
@admin.register(OperatorAction)
class OperatorActionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "username", "action", "session_link", "integration", "reason_short")
    list_filter = ("action", ("created_at", DateTimeRangeFilter), "integration")
    search_fields = ("username", "reason", "session__botpress_conversation_id")
    list_select_related = ("session", "integration")
    ordering = ("-created_at", "-id")
    fields = ("created_at", "username", "user", "action", "reason", "session", "integration", "detail_pretty")
    readonly_fields = ("detail_pretty",)

    @admin.display(description="session")
    def session_link(self, action: OperatorAction):
        if action.session_id is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            _admin_url("hitlsession", "change", action.session_id),
            action.session.botpress_conversation_id,
        )

    @admin.display(description="reason")
    def reason_short(self, action: OperatorAction) -> str:
        return _short(action.reason, 80) or "-"

    @admin.display(description="detail")
    def detail_pretty(self, action: OperatorAction):
        return _pre(_pretty_json(action.detail, sort_keys=True))


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
