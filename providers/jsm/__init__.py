"""Jira Service Management Cloud: customers, requests, comments, signed admin webhooks."""

from providers.jsm.provider import JsmProvider
from providers.jsm.webhooks import SIGNATURE_HEADER
from providers.spec import Capabilities, CredentialField, ProviderSpec, WebhookInstall

SPEC = ProviderSpec(
    kind="jsm",
    label="Jira Service Management",
    adapter="providers.jsm.provider:JsmProvider",
    base_url_label="Jira site URL",
    base_url_example="https://acme.atlassian.net",
    credential_fields=(
        CredentialField(
            name="email",
            label="Atlassian account e-mail",
            secret=False,
            help_text="The account the gateway acts as; Jira admin rights create customers and the webhook.",
        ),
        CredentialField(
            name="api_token",
            label="API token",
            secret=True,
            help_text="id.atlassian.com > Security > API tokens (Basic auth; OAuth 2.0 is not supported).",
        ),
        CredentialField(
            name="service_desk_id",
            label="Service desk id",
            secret=False,
            help_text="GET /rest/servicedeskapi/servicedesk lists them; checked at set-up.",
        ),
        CredentialField(
            name="request_type_id",
            label="Request type id",
            secret=False,
            help_text="GET /rest/servicedeskapi/servicedesk/{id}/requesttype; its required fields are checked.",
        ),
        CredentialField(
            name="comment_visibility",
            label="End-user and bot comments",
            secret=False,
            required=False,
            help_text="internal (default: agents only) or public (the customer is e-mailed a copy of each).",
        ),
    ),
    # The signature is never kept; the identifier, retry count and flow are worth the audit.
    kept_headers=(
        "content-type",
        "user-agent",
        "x-atlassian-webhook-identifier",
        "x-atlassian-webhook-retry",
        "x-atlassian-webhook-flow",
    ),
    entity_serializer="providers.jsm.entity:JsmHitlSessionSerializer",
    webhook_install=WebhookInstall.API,
    capabilities=Capabilities(attachments_out=True, attachments_in=True, assignment_signal=True, close_signal=True),
    standin="standins.jsm:JsmStandin",
)

__all__ = ["SIGNATURE_HEADER", "SPEC", "JsmProvider"]
