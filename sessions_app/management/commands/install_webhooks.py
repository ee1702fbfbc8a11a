"""Install (or reinstall) the help-desk webhook and triggers of an integration.

Like ``create_integration``: a help desk that cannot be reached or refuses the credentials is
one line on stderr and exit status 1, and the integration is left as it was.
"""

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from outbound.http import OutboundError
from sessions_app.models import Integration
from sessions_app.services.integrations import integration_webhook_install, integration_webhook_url


class Command(BaseCommand):
    help = "Install the help-desk webhook and triggers that call this gateway, and store the signing secret."

    def add_arguments(self, parser):
        parser.add_argument("integration_id")

    def handle(self, *args, integration_id, **options):
        try:
            integration = Integration.objects.filter(pk=integration_id).first()
        except ValidationError:  # not a UUID
            integration = None
        if integration is None:
            raise CommandError(f"no integration {integration_id}")
        try:
            integration = integration_webhook_install(integration=integration)
        except OutboundError as exc:
            message = f"could not install the help-desk webhook: {exc}; the integration is unchanged"
            raise CommandError(" ".join(message.split())) from None
        self.stdout.write(
            json.dumps(
                {
                    "id": str(integration.pk),
                    "webhook_url": integration_webhook_url(integration=integration),
                    "installation": integration.provider_installation,
                }
            )
        )
