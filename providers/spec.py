"""What a help desk declares about itself, once, next to its adapter (the provider boundary).

The gateway (admin form, CLI flags, credential validation, log redaction, definition endpoint,
stand-in launcher) reads these declarations instead of naming a help desk.
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
    kept_headers: tuple[str, ...]  # webhook headers worth keeping for audit (lower case, never a secret)
    entity_serializer: str  # import path of the DRF serializer of its hitlSession entity
    webhook_install: WebhookInstall
    capabilities: Capabilities
    standin: str = ""  # import path of its stand-in server class, for the launcher/demo/tests
