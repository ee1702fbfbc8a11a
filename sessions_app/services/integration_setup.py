"""Setting an integration up in one step (``manage.py create_integration``): all or nothing.

Creating the integration and installing its help-desk webhook run in one transaction: when the
help desk cannot be reached or refuses the credentials, the transaction rolls back and nothing
is left behind, so there is never a saved integration whose API key was never shown. A name
already in use is refused unless the caller says what to do with it (``OnExisting``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from django.db import transaction

from sessions_app.models import Integration
from sessions_app.services.errors import Conflict
from sessions_app.services.integrations import (
    integration_create,
    integration_credentials_validate,
    integration_signing_secret_replace,
    integration_webhook_install,
)


class OnExisting(StrEnum):
    """What to do when an integration already has the name.

    ``REFUSE``: raise ``Conflict``. ``UPDATE``: change that integration's settings in place (its
    id, API key, URL secret, sessions and installation are kept; several with the name is a
    ``Conflict``). ``FORCE``: create another integration with the same name, leaving the
    existing ones untouched.
    """

    REFUSE = "refuse"
    UPDATE = "update"
    FORCE = "force"


@dataclass(frozen=True)
class IntegrationSetup:
    integration: Integration
    api_key: str | None  # None when an existing integration was updated: its key is unchanged
    created: bool


def integration_setup(
    *,
    name: str,
    on_existing: OnExisting = OnExisting.REFUSE,
    install_webhook: bool,
    provider: str,
    provider_base_url: str,
    provider_credentials: dict,
    botpress_api_url: str,
    botpress_token: str,
    botpress_bot_id: str,
    botpress_integration_id: str,
    botpress_integration_alias: str = "",
    botpress_bot_user_id: str = "",
    webhook_signing_secret: str = "",
) -> IntegrationSetup:
    """Create (or update) the integration and optionally install its webhook, or change nothing.

    Raises ``Conflict`` for a name in use (see ``OnExisting``), Django's ``ValidationError`` for
    invalid settings (credentials as the provider's spec declares them included), and the help
    desk's ``OutboundError`` when the install fails; in every
    case the database is as it was.
    """
    settings = {
        "provider": provider,
        "provider_base_url": provider_base_url,
        "provider_credentials": provider_credentials,
        "botpress_api_url": botpress_api_url,
        "botpress_token": botpress_token,
        "botpress_bot_id": botpress_bot_id,
        "botpress_integration_id": botpress_integration_id,
        "botpress_integration_alias": botpress_integration_alias,
        "botpress_bot_user_id": botpress_bot_user_id,
    }
    with transaction.atomic():
        existing = list(Integration.objects.select_for_update().filter(name=name).order_by("created_at")[:2])
        if existing and on_existing == OnExisting.REFUSE:
            raise Conflict(f"An integration named {name!r} already exists (id {existing[0].pk}).", field="name")
        if existing and on_existing == OnExisting.UPDATE:
            if len(existing) > 1:
                raise Conflict(f"Several integrations are named {name!r}; change the one you mean in the admin.")
            integration, api_key, created = existing[0], None, False
            _update(integration, settings, webhook_signing_secret)
        else:
            integration, api_key = integration_create(
                name=name, webhook_signing_secret=webhook_signing_secret, **settings
            )
            created = True
        if install_webhook:
            integration = integration_webhook_install(integration=integration)
    return IntegrationSetup(integration=integration, api_key=api_key, created=created)


def _update(integration: Integration, settings: dict, webhook_signing_secret: str) -> None:
    """The given settings on an existing integration; a signing secret only if one is given."""
    integration_credentials_validate(provider=settings["provider"], credentials=settings["provider_credentials"])
    for field, value in settings.items():
        if field in ("provider_base_url", "botpress_api_url"):
            value = value.rstrip("/")
        setattr(integration, field, value)
    if webhook_signing_secret:
        integration_signing_secret_replace(integration=integration, secret=webhook_signing_secret)
    integration.full_clean()
    integration.save()
