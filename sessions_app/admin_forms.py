"""Admin forms. Secrets are write-only: a blank secret field keeps the stored value.

No form here ever carries a stored secret back to the browser: the secret inputs are not model
fields (so their initial value is never the stored one) and their widgets never render a value.
"""

from __future__ import annotations

from django import forms
from django.db import models

from providers.registry import provider_spec, provider_specs
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


def credential_form_field(kind: str, name: str) -> str:
    """The admin form's field for credential ``name`` of provider ``kind``."""
    return f"credential_{kind}_{name}"


def _credential_form_fields() -> dict[str, forms.Field]:
    """One input per credential field of every provider's spec; secrets are write-only.

    All are optional here: which are required depends on the provider chosen, so
    ``IntegrationForm.clean`` checks them.
    """
    several = len(provider_specs()) > 1
    fields: dict[str, forms.Field] = {}
    for spec in provider_specs():
        for credential in spec.credential_fields:
            label = f"{credential.label} ({spec.label})" if several else credential.label
            if credential.secret:
                help_text = f"{credential.help_text} {KEEP_HELP}".strip()
                field = _secret_field(label, max_length=512, help_text=help_text)
            else:
                field = forms.CharField(label=label, required=False, max_length=512, help_text=credential.help_text)
            fields[credential_form_field(spec.kind, credential.name)] = field
    return fields


class _IntegrationFormBase(forms.ModelForm):
    """Edits an integration's plain fields; the secrets go through write-only fields.

    The help desk's credential inputs are generated from the providers' specs
    (``credential_<kind>_<name>``, see ``credential_form_field``); only the chosen provider's
    are used, and on edit only those are shown.
    """

    new_botpress_token = _secret_field("Botpress token", max_length=512)
    new_webhook_signing_secret = _secret_field(
        "Webhook signing secret",
        max_length=255,
        help_text=f"{KEEP_HELP} Normally set by the “Install help-desk webhook” action.",
    )

    class Meta:
        model = Integration
        formfield_callback = _formfield
        # Never the stored secrets nor the raw credentials JSON: they are written through the
        # declared fields.
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
        adding = self.instance._state.adding
        if "provider_base_url" in self.fields:
            self.fields["provider_base_url"].help_text = "; ".join(
                f"{spec.label}: {spec.base_url_label}, e.g. {spec.base_url_example}" for spec in provider_specs()
            )
        if not adding:  # the provider is fixed: only its credentials
            stored = self.instance.provider_credentials if isinstance(self.instance.provider_credentials, dict) else {}
            for spec in provider_specs():
                for credential in spec.credential_fields:
                    name = credential_form_field(spec.kind, credential.name)
                    if spec.kind != self.instance.provider:
                        self.fields.pop(name, None)
                    elif name in self.fields and not credential.secret:
                        self.fields[name].required = credential.required
                        if not self.is_bound:
                            self.fields[name].initial = stored.get(credential.name, "")
        else:
            # A new integration needs its credentials now; on edit, blank means "keep".
            self.fields["new_botpress_token"].required = True
            self.fields["new_botpress_token"].help_text = "Write-only: it is never shown again."
            for spec in provider_specs():
                for credential in spec.secret_fields:
                    name = credential_form_field(spec.kind, credential.name)
                    self.fields[name].help_text = f"{credential.help_text} Write-only: it is never shown again."

    @property
    def SECRET_FIELDS(self) -> tuple[str, ...]:
        """The fields whose value must never reach a page; ``IntegrationAdmin`` applies them on save."""
        credentials = tuple(
            credential_form_field(spec.kind, f.name) for spec in provider_specs() for f in spec.secret_fields
        )
        return (*credentials, "new_botpress_token", "new_webhook_signing_secret")

    def _provider(self) -> str:
        return self.instance.provider if not self.instance._state.adding else (self.cleaned_data.get("provider") or "")

    def clean(self):
        cleaned = super().clean()
        kind = self._provider()
        try:
            spec = provider_spec(kind)
        except LookupError:
            return cleaned  # the provider field has its own error
        adding = self.instance._state.adding
        for credential in spec.credential_fields:
            name = credential_form_field(kind, credential.name)
            # On edit a blank secret keeps the stored one.
            if credential.required and not cleaned.get(name) and (adding or not credential.secret):
                self.add_error(name, f"{credential.label} is required for {spec.label}.")
        if not adding:
            # A new help-desk or Botpress URL needs its credential again: the stored one stays home.
            secret_names = [credential_form_field(kind, f.name) for f in spec.secret_fields]
            errors = integration_connection_change_errors(
                integration=self.instance,
                provider_base_url=cleaned.get("provider_base_url"),
                botpress_api_url=cleaned.get("botpress_api_url"),
                provider_credentials_given=all(cleaned.get(name) for name in secret_names),
                botpress_token_given=bool(cleaned.get("new_botpress_token")),
            )
            for field, message in errors.items():
                targets = secret_names if field == "provider_credentials" else ["new_botpress_token"]
                for target in targets or ["provider_base_url"]:
                    if not cleaned.get(target):
                        self.add_error(target, message)
        return cleaned

    def secret_values(self) -> dict[str, str]:
        """The secrets typed in this submission (blank ones omitted: they keep the stored value)."""
        return {name: self.cleaned_data[name] for name in self.SECRET_FIELDS if self.cleaned_data.get(name)}

    def provider_credentials(self, stored: dict | None = None) -> dict:
        """The chosen provider's credentials from this submission, over ``stored`` (on edit): a
        blank secret keeps the stored value, a blank plain field clears it."""
        spec = provider_spec(self._provider())
        credentials = dict(stored or {})
        for credential in spec.credential_fields:
            value = self.cleaned_data.get(credential_form_field(spec.kind, credential.name)) or ""
            if value or not credential.secret:
                credentials[credential.name] = value
        return credentials


# The generated credential inputs are declared fields, so the admin's fieldsets may name them.
IntegrationForm = type(
    "IntegrationForm", (_IntegrationFormBase,), {"__module__": __name__, **_credential_form_fields()}
)


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
