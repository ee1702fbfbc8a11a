"""Create an integration from the command line and print what Botpress and the help desk need.

All or nothing: if ``--install-webhook`` fails (help desk unreachable, credentials refused),
nothing is saved and one line on stderr says why (exit status 1), so no integration is left
whose API key was never printed. A name in use is refused unless ``--update`` or ``--force``.

The help desk's credentials are the fields its spec declares (``providers.spec``), given as
``--credential NAME=VALUE`` or with the flag generated per provider and field,
``--<kind>-<name-with-dashes>``; a value given both ways is taken from ``--credential``.
"""

import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from outbound.http import OutboundError
from providers.registry import provider_default, provider_spec, provider_specs
from sessions_app.services.errors import Conflict
from sessions_app.services.integration_setup import OnExisting, integration_setup
from sessions_app.services.integrations import integration_webhook_url


class Command(BaseCommand):
    help = "Create an integration (one Botpress bot + one help-desk account); prints JSON with its API key."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        specs = provider_specs()
        parser.add_argument("--provider", default=provider_default(), choices=[spec.kind for spec in specs])
        parser.add_argument(
            "--provider-url",
            required=True,
            help="Help-desk account URL ("
            + "; ".join(f"{spec.label}: e.g. {spec.base_url_example}" for spec in specs)
            + ")",
        )
        parser.add_argument(
            "--credential",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A help-desk credential field of the provider's spec (repeat for each)",
        )
        for spec in specs:
            for credential in spec.credential_fields:
                parser.add_argument(
                    _flag(spec.kind, credential.name),
                    dest=_dest(spec.kind, credential.name),
                    default="",
                    help=f"{spec.label}: {credential.label}. {credential.help_text}".strip(),
                )
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
            help="Install the help-desk webhook and triggers now (calls the help desk); on failure nothing is saved",
        )
        existing = parser.add_mutually_exclusive_group()
        existing.add_argument(
            "--update",
            action="store_true",
            help="If an integration has this name, change its settings (its id and API key are kept)",
        )
        existing.add_argument(
            "--force",
            action="store_true",
            help="Create a new integration even if one has this name (the existing one is left as it is)",
        )

    def handle(self, *args, **o):
        credentials = _credentials(o)
        on_existing = OnExisting.UPDATE if o["update"] else OnExisting.FORCE if o["force"] else OnExisting.REFUSE
        try:
            setup = integration_setup(
                name=o["name"],
                on_existing=on_existing,
                install_webhook=o["install_webhook"],
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
            raise CommandError(f"invalid integration: {exc.message_dict}") from None
        except Conflict as exc:
            raise CommandError(f"{exc.message} Pass --update to change it or --force to create another.") from None
        except OutboundError as exc:
            raise CommandError(
                _one_line(f"could not install the help-desk webhook: {exc}; nothing was saved")
            ) from None
        integration, api_key = setup.integration, setup.api_key
        base = f"{settings.PUBLIC_BASE_URL}/api/v1/integrations/{integration.pk}"
        self.stdout.write(
            json.dumps(
                {
                    "id": str(integration.pk),
                    "created": setup.created,
                    # Shown once; null after --update, which keeps the existing key.
                    "api_key": api_key,
                    "api_base_url": base,
                    "webhook_urls": [integration_webhook_url(integration=integration)],
                    "webhook_installed": bool(integration.provider_installation),
                }
            )
        )


def _flag(kind: str, name: str) -> str:
    return f"--{kind}-{name}".replace("_", "-")


def _dest(kind: str, name: str) -> str:
    return f"credential_{kind}_{name}"


def _credentials(options: dict) -> dict:
    """The chosen provider's credentials from the per-spec flags and ``--credential``; a missing
    required one, one of another provider or an unknown name is a ``CommandError``."""
    spec = provider_spec(options["provider"])
    credentials = {
        f.name: options[_dest(spec.kind, f.name)] for f in spec.credential_fields if options[_dest(spec.kind, f.name)]
    }
    for other in provider_specs():
        if other.kind == spec.kind:
            continue
        given = [_flag(other.kind, f.name) for f in other.credential_fields if options[_dest(other.kind, f.name)]]
        if given:
            raise CommandError(f"{', '.join(given)}: not a {spec.label} credential (--provider {spec.kind})")
    for item in options["credential"]:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"--credential {name!r}: expected NAME=VALUE")
        credentials[name.strip()] = value
    errors = spec.credentials_errors(credentials)
    if errors:
        flags = {f.name: f"{_flag(spec.kind, f.name)} (or --credential {f.name}=...)" for f in spec.credential_fields}
        raise CommandError(
            "; ".join(f"{flags.get(name, f'--credential {name}')}: {message}" for name, message in errors.items())
        )
    return credentials


def _one_line(text: str) -> str:
    return " ".join(text.split())
