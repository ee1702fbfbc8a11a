"""Create an integration from the command line and print what Botpress and the help desk need."""

import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from sessions_app.models import Provider
from sessions_app.services.integrations import (
    integration_create,
    integration_webhook_install,
    integration_webhook_url,
)


class Command(BaseCommand):
    help = "Create an integration (one Botpress bot + one help-desk account); prints JSON with its API key."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--provider", default=Provider.ZENDESK, choices=Provider.values)
        parser.add_argument(
            "--provider-url", required=True, help="Help-desk account URL, e.g. https://acme.zendesk.com"
        )
        parser.add_argument("--zendesk-email", default="", help="Agent email for Zendesk API-token auth")
        parser.add_argument("--zendesk-api-token", default="")
        parser.add_argument("--webhook-secret", default="", help="Signing secret, if the webhook already exists")
        parser.add_argument("--botpress-url", default="https://api.botpress.cloud")
        parser.add_argument("--botpress-token", required=True)
        parser.add_argument("--bot-id", required=True)
        parser.add_argument("--integration-id", required=True, help="Botpress integration id (x-integration-id)")
        parser.add_argument("--integration-alias", default="")
        parser.add_argument("--bot-user-id", default="", help="Botpress user id of the bot")
        parser.add_argument(
            "--install-webhook",
            action="store_true",
            help="Install the help-desk webhook and triggers now (calls the help desk)",
        )

    def handle(self, *args, **o):
        credentials = {}
        if o["provider"] == Provider.ZENDESK:
            if not o["zendesk_email"] or not o["zendesk_api_token"]:
                raise CommandError("--zendesk-email and --zendesk-api-token are required for Zendesk")
            credentials = {"email": o["zendesk_email"], "api_token": o["zendesk_api_token"]}
        try:
            integration, api_key = integration_create(
                name=o["name"],
                provider=o["provider"],
                provider_base_url=o["provider_url"],
                provider_credentials=credentials,
                botpress_api_url=o["botpress_url"],
                botpress_token=o["botpress_token"],
                botpress_bot_id=o["bot_id"],
                botpress_integration_id=o["integration_id"],
                botpress_integration_alias=o["integration_alias"],
                botpress_bot_user_id=o["bot_user_id"],
                webhook_signing_secret=o["webhook_secret"],
            )
        except ValidationError as exc:
            raise CommandError(f"invalid integration: {exc.message_dict}") from exc
        if o["install_webhook"]:
            integration_webhook_install(integration=integration)
        base = f"{settings.PUBLIC_BASE_URL}/api/v1/integrations/{integration.pk}"
        self.stdout.write(
            json.dumps(
                {
                    "id": str(integration.pk),
                    "api_key": api_key,
                    "api_base_url": base,
                    "webhook_urls": [integration_webhook_url(integration=integration)],
                    "webhook_installed": bool(integration.provider_installation),
                }
            )
        )
