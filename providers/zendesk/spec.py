"""Zendesk Support's declaration to the gateway (``providers.spec``)."""

from providers.spec import Capabilities, CredentialField, ProviderSpec, WebhookInstall

SPEC = ProviderSpec(
    kind="zendesk",
    label="Zendesk Support",
    adapter="providers.zendesk.provider:ZendeskProvider",
    base_url_label="Zendesk account URL",
    base_url_example="https://acme.zendesk.com",
    credential_fields=(
        CredentialField(
            name="email",
            label="Agent email",
            secret=False,
            help_text="The Zendesk agent or admin the gateway authenticates as (API-token auth).",
        ),
        CredentialField(
            name="api_token",
            label="API token",
            secret=True,
            help_text="Admin Center → Apps and integrations → Zendesk API → API tokens.",
        ),
    ),
    # Worth keeping for the audit trail; never the signature [doc developer.zendesk.com
    # "Verifying webhook authenticity"]: the timestamp alone proves nothing.
    kept_headers=(
        "content-type",
        "user-agent",
        "x-zendesk-account-id",
        "x-zendesk-webhook-id",
        "x-zendesk-webhook-invocation-id",
        "x-zendesk-webhook-signature-timestamp",
    ),
    entity_serializer="providers.zendesk.entity:ZendeskHitlSessionSerializer",
    webhook_install=WebhookInstall.API,
    capabilities=Capabilities(attachments_out=True, attachments_in=True, assignment_signal=True, close_signal=True),
    standin="standins.zendesk:ZendeskStandin",
)
