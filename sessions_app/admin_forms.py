"""Admin forms. Secrets are write-only: a blank secret field keeps the stored value.

No form here ever carries a stored secret back to the browser: the secret inputs are not model
fields (so their initial value is never the stored one) and their widgets never render a value.
"""

from __future__ import annotations

from django import forms
from django.db import models

from sessions_app.models import Integration
from sessions_app.services.integrations import integration_connection_change_errors

KEEP_HELP = "Write-only. Leave blank to keep the current value."


def _secret_field(label: str, *, max_length: int, help_text: str = KEEP_HELP) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        max_length=max_length,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text,
    )


def _formfield(db_field, **kwargs):
    if isinstance(db_field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return db_field.formfield(**kwargs)


class IntegrationForm(forms.ModelForm):
    """Edits an integration's plain fields; the secrets go through the ``new_*`` fields."""

    provider_email = forms.EmailField(
        label="Help-desk account email",
        help_text="The help-desk user the gateway authenticates as (Zendesk: an agent or admin's email).",
    )
    new_provider_api_token = _secret_field("Help-desk API token", max_length=512)
    new_botpress_token = _secret_field("Botpress token", max_length=512)
    new_webhook_signing_secret = _secret_field(
        "Webhook signing secret",
        max_length=255,
        help_text=f"{KEEP_HELP} Normally set by the “Install help-desk webhook” action.",
    )

    # The fields whose value must never reach a page; ``IntegrationAdmin`` applies them on save.
    SECRET_FIELDS = ("new_provider_api_token", "new_botpress_token", "new_webhook_signing_secret")

    class Meta:
        model = Integration
        formfield_callback = _formfield
        # Never the stored secrets nor the raw credentials JSON: they are written through the
        # declared fields above.
        fields = [
            "name",
            "provider",
            "provider_base_url",
            "botpress_api_url",
            "botpress_bot_id",
            "botpress_integration_id",
            "botpress_integration_alias",
            "botpress_bot_user_id",
            "is_active",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "provider_email" in self.fields and not self.is_bound and self.instance.pk:
            self.fields["provider_email"].initial = (self.instance.provider_credentials or {}).get("email", "")
        if self.instance._state.adding:
            # A new integration needs its credentials now; on edit, blank means "keep".
            for name in ("new_provider_api_token", "new_botpress_token"):
                if name in self.fields:
                    self.fields[name].required = True
                    self.fields[name].help_text = "Write-only: it is never shown again."

    # The write-only field that takes each credential the service names.
    CREDENTIAL_FIELDS = {"provider_credentials": "new_provider_api_token", "botpress_token": "new_botpress_token"}

    def clean(self):
        cleaned = super().clean()
        if not self.instance._state.adding:
            # A new help-desk or Botpress URL needs its credential again: the stored one stays home.
            errors = integration_connection_change_errors(
                integration=self.instance,
                provider_base_url=cleaned.get("provider_base_url"),
                botpress_api_url=cleaned.get("botpress_api_url"),
                provider_credentials_given=bool(cleaned.get("new_provider_api_token")),
                botpress_token_given=bool(cleaned.get("new_botpress_token")),
            )
            for field, message in errors.items():
                self.add_error(self.CREDENTIAL_FIELDS[field], message)
        return cleaned

    def secret_values(self) -> dict[str, str]:
        """The secrets typed in this submission (blank ones omitted: they keep the stored value)."""
        return {name: self.cleaned_data[name] for name in self.SECRET_FIELDS if self.cleaned_data.get(name)}


class OperatorReasonForm(forms.Form):
    """Why an operator acts; kept in the audit trail (and, for a close, on the session)."""

    reason = forms.CharField(
        label="Reason",
        max_length=2000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Recorded in the audit trail with your name and the time.",
    )

    def __init__(self, *args, required: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = required
