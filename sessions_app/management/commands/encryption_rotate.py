"""Re-encrypt every stored secret with the first key of HITL_ENCRYPTION_KEYS (after adding a new key)."""

from django.core.management.base import BaseCommand, CommandError

from sessions_app.fields import SecretUndecryptable
from sessions_app.services.encryption import secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the first key of HITL_ENCRYPTION_KEYS. Rotation: put the new "
        "key first (keep the old ones after it), restart, run this, then remove the old keys."
    )

    def handle(self, *args, **options):
        try:
            counts = secrets_reencrypt()
        except SecretUndecryptable as exc:
            raise CommandError(str(exc)) from None
        for model, count in counts.items():
            self.stdout.write(f"{model}: {count} row(s) re-encrypted with the first key")
