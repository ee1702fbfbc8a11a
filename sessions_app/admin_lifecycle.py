"""The lifecycle policies' admin pages: one policy per integration, edited on its own page.

The form only checks and collects; saving goes through ``integration_policy_update``, the same
service as the API, so both refuse the same settings and both re-arm the waiting sessions.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin

from sessions_app.models import LifecyclePolicy
from sessions_app.services.lifecycle import FIELDS, integration_policy_update, lifecycle_policy_errors


class LifecyclePolicyForm(forms.ModelForm):
    class Meta:
        model = LifecyclePolicy
        fields = ["integration", *sorted(FIELDS)]
        help_texts = {
            "business_hours": 'Weekday → open intervals, e.g. {"mon": [["09:00", "17:00"]]}; {} = always open.',
            "holidays": 'Closed dates in the time zone, e.g. ["2026-12-25"].',
            "time_zone": "IANA name, e.g. Europe/Paris.",
        }

    def clean(self):
        cleaned = super().clean()
        integration = cleaned.get("integration") or (self.instance.integration if self.instance.pk else None)
        if integration is not None and not self.errors:
            changes = {name: cleaned.get(name) for name in FIELDS}
            for name, message in lifecycle_policy_errors(integration=integration, changes=changes).items():
                self.add_error(name if name in self.fields else None, message)
        return cleaned


@admin.register(LifecyclePolicy)
class LifecyclePolicyAdmin(admin.ModelAdmin):
    form = LifecyclePolicyForm
    list_display = ("integration", "assignment_timeout_minutes", "inactivity_timeout_minutes", "time_zone")
    list_select_related = ("integration",)
    fieldsets = (
        (None, {"fields": ("integration",)}),
        (
            "Assignment timeout",
            {
                "fields": (
                    "assignment_timeout_minutes",
                    "assignment_timeout_message",
                    "assignment_timeout_keep_ticket_open",
                )
            },
        ),
        (
            "Inactivity timeout",
            {
                "fields": (
                    "inactivity_timeout_minutes",
                    "inactivity_timeout_message",
                    "inactivity_warning_minutes",
                    "inactivity_warning_message",
                )
            },
        ),
        (
            "Business hours",
            {"fields": ("business_hours", "time_zone", "holidays", "outside_hours_message", "outside_hours_close")},
        ),
    )

    def get_readonly_fields(self, request, obj=None):
        return ("integration",) if obj is not None else ()

    def save_model(self, request, obj: LifecyclePolicy, form: LifecyclePolicyForm, change: bool) -> None:
        changes = {name: form.cleaned_data.get(name) for name in FIELDS}
        saved = integration_policy_update(integration=obj.integration, changes=changes)
        obj.pk, obj._state.adding, obj._state.db = saved.pk, False, saved._state.db
