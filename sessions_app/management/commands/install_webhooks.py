"""Install (or reinstall) the help-desk webhook and triggers of an integration."""

import json

from django.core.management.base import BaseCommand, CommandError

from sessions_app.models import Integration
from sessions_app.services.integrations import integration_webhook_install, integration_webhook_url


class Command(BaseCommand):
    help = "Install the help-desk webhook and triggers that call this gateway, and store the signing secret."

    def add_arguments(self, parser):
        parser.add_argument("integration_id")

    def handle(self, *args, integration_id, **options):
        integration = Integration.objects.filter(pk=integration_id).first()
        if integration is None:
            raise CommandError(f"no integration {integration_id}")
        integration = integration_webhook_install(integration=integration)
        self.stdout.write(
            json.dumps(
                {
                    "id": str(integration.pk),
                    "webhook_url": integration_webhook_url(integration=integration),
                    "installation": integration.provider_installation,
                }
            )
        )
