"""How a help desk declares itself to the gateway: one ``ProviderSpec`` per desk.

The gateway (models, admin, ``create_integration``, the definition endpoint, webhook audit,
log redaction, the stand-in launcher) reads only this, so adding a desk touches its own
package, its stand-in and one line of ``providers.registry``. Pure data, importable without
Django: the adapter, entity serializer and stand-in are named by import path
(``"package.module:Name"``) and loaded on use.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class CredentialField:
    name: str  # key in Integration.provider_credentials ("email", "api_token", "api_key")
    label: str  # for the admin form
    secret: bool  # secrets: write-only in the admin, redacted in logs, encrypted at rest
    required: bool = True
    help_text: str = ""


@dataclass(frozen=True)
class Capabilities:
    attachments_out: bool  # end-user/bot media can be uploaded to the ticket
    attachments_in: bool  # agent media reaches the end user
    assignment_signal: bool  # the desk tells us when an agent takes the ticket
    close_signal: bool  # the desk tells us when the ticket is solved/closed


class WebhookInstall(StrEnum):
    API = "api"  # adapter.webhook_install() creates it through the desk's API
    MANUAL = "manual"  # an operator creates it by hand from adapter.webhook_instructions()
    NONE = "none"


@dataclass(frozen=True)
class ProviderSpec:
    kind: str  # "zendesk", "freshdesk" (stored in Integration.provider)
    label: str  # "Zendesk Support", "Freshdesk"
    adapter: str  # import path "providers.zendesk.provider:ZendeskProvider"
    base_url_label: str  # "Zendesk account URL"
    base_url_example: str  # "https://acme.zendesk.com"
    credential_fields: tuple[CredentialField, ...]
    kept_headers: tuple[str, ...]  # webhook headers worth keeping for audit (lower case, never a signature/secret)
    entity_serializer: str  # import path of the DRF serializer of its hitlSession entity
    webhook_install: WebhookInstall
    capabilities: Capabilities
    standin: str = ""  # import path of its stand-in server class, for the launcher/demo/tests

    @property
    def secret_fields(self) -> tuple[CredentialField, ...]:
        return tuple(f for f in self.credential_fields if f.secret)

    def credentials_errors(self, credentials: object) -> dict[str, str]:
        """Why ``credentials`` cannot authenticate with this desk: ``{field name: message}``, empty if fine.

        Every required field needs a non-blank string; a field the spec does not declare is
        refused too (it would be stored, encrypted, and never used).
        """
        if not isinstance(credentials, dict):
            return {"provider_credentials": "must be an object"}
        errors = {}
        for spec_field in self.credential_fields:
            value = credentials.get(spec_field.name, "")
            if not isinstance(value, str):
                errors[spec_field.name] = "must be a string"
            elif spec_field.required and not value.strip():
                errors[spec_field.name] = f"{spec_field.label} is required for {self.label}"
        known = {f.name for f in self.credential_fields}
        for name in sorted(set(credentials) - known):
            errors[str(name)] = f"{self.label} takes no credential named {name!r}"
        return errors


def import_path_load(path: str):
    """The object named by ``"package.module:Name"``."""
    from importlib import import_module

    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"not an import path: {path!r} (expected 'package.module:Name')")
    return getattr(import_module(module), name)
