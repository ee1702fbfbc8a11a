"""The lifecycle policy as an inline of the integration's admin page.

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
        fields = sorted(FIELDS)
        help_texts = {
            "business_hours": 'Weekday → open intervals, e.g. {"mon": [["09:00", "17:00"]]}; {} = always open.',
            "holidays": 'Closed dates in the time zone, e.g. ["2026-12-25"].',
            "time_zone": "IANA name, e.g. Europe/Paris.",
        }

    def clean(self):
        cleaned = super().clean()
        integration = self.instance.integration if self.instance.integration_id else None
        if integration is not None and not self.errors:
            changes = {name: cleaned.get(name) for name in FIELDS}
            for name, message in lifecycle_policy_errors(integration=integration, changes=changes).items():
                self.add_error(name, message)
        return cleaned


class LifecyclePolicyInline(admin.StackedInline):
    model = LifecyclePolicy
    form = LifecyclePolicyForm
    can_delete = False
    max_num = min_num = 1
    verbose_name_plural = "Session lifecycle policy (timeouts, business hours)"

    @staticmethod
    def policy_save(*, formset, integration) -> None:
        """Save the inline through the service (called by the integration admin's ``save_formset``)."""
        for form in formset.forms:
            if form.has_changed() or not form.instance.pk:
                changes = {name: form.cleaned_data.get(name) for name in FIELDS}
                integration_policy_update(integration=integration, changes=changes)
