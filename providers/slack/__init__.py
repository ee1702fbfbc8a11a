"""Slack: one thread per HITL session in the agents' channel (Events API, interactivity, Web API)."""

from providers.slack.provider import SlackProvider
from providers.spec import Capabilities, CredentialField, ProviderSpec, WebhookInstall

SPEC = ProviderSpec(
    kind="slack",
    label="Slack",
    adapter="providers.slack.provider:SlackProvider",
    base_url_label="Slack URL (the Web API is under /api)",
    base_url_example="https://slack.com",
    credential_fields=(
        CredentialField(
            name="bot_token",
            label="Bot User OAuth Token",
            secret=True,
            help_text="xoxb-… from the app's OAuth & Permissions page after installing it.",
        ),
        CredentialField(
            name="signing_secret",
            label="Signing Secret",
            secret=True,
            help_text="From the app's Basic Information page; verifies every event and button press.",
        ),
        CredentialField(
            name="channel_id",
            label="Agents' channel id",
            secret=False,
            help_text="C… (channel details); invite the bot to it first (/invite @bot).",
        ),
    ),
    # Slack's retry headers are worth keeping; the signature and timestamp are not.
    kept_headers=("user-agent", "content-type", "x-slack-retry-num", "x-slack-retry-reason"),
    entity_serializer="providers.slack.entity:SlackHitlSessionSerializer",
    webhook_install=WebhookInstall.API,
    capabilities=Capabilities(attachments_out=True, attachments_in=True, assignment_signal=True, close_signal=True),
    standin="standins.slack:SlackStandin",
)

__all__ = ["SPEC", "SlackProvider"]
