"""Print the rules an operator creates by hand in the help desk so that it calls this gateway.

For a desk whose webhook cannot be installed through its API (``WebhookInstall.MANUAL``), or an
API-installed desk whose key may not create it (one without admin rights). The output
holds the webhook secret the rules must send: an integration without one gets one first.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from sessions_app.models import Integration
from sessions_app.services.integrations import integration_webhook_instructions


class Command(BaseCommand):
    help = "Print the help-desk rules (events, conditions, URL, header, body) to create by hand."

    def add_arguments(self, parser):
        parser.add_argument("integration_id")

    def handle(self, *args, integration_id, **options):
        try:
            integration = Integration.objects.filter(pk=integration_id).first()
        except ValidationError:  # not a UUID
            integration = None
        if integration is None:
            raise CommandError(f"no integration {integration_id}")
        steps = integration_webhook_instructions(integration=integration, reveal_secret=True)
        if not steps:
            raise CommandError(f"{integration.get_provider_display()} has no webhook to set up by hand")
        self.stdout.write(steps, ending="" if steps.endswith("\n") else "\n")
