"""Freshdesk: contacts, tickets, incoming public notes, doorbell webhooks from automation rules."""

from providers.freshdesk.provider import FreshdeskProvider
from providers.freshdesk.webhooks import SECRET_HEADER
from providers.spec import Capabilities, CredentialField, ProviderSpec, WebhookInstall

SPEC = ProviderSpec(
    kind="freshdesk",
    label="Freshdesk",
    adapter="providers.freshdesk.provider:FreshdeskProvider",
    base_url_label="Freshdesk account URL",
    base_url_example="https://acme.freshdesk.com",
    credential_fields=(
        CredentialField(
            name="api_key",
            label="API key",
            secret=True,
            help_text="An admin's API key (Profile settings > View API key); admin rights create the automation rules.",
        ),
    ),
    # Freshdesk sends no delivery id or signature; its rules send the headers we choose, and
    # the secret header is never kept.
    kept_headers=("user-agent", "content-type"),
    entity_serializer="providers.freshdesk.entity:FreshdeskHitlSessionSerializer",
    webhook_install=WebhookInstall.API,
    capabilities=Capabilities(attachments_out=True, attachments_in=True, assignment_signal=True, close_signal=True),
    standin="standins.freshdesk:FreshdeskStandin",
)

__all__ = ["SECRET_HEADER", "SPEC", "FreshdeskProvider"]
