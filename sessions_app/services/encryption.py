"""Secrets at rest: re-encrypting them with the newest key, after a key rotation."""

from __future__ import annotations

from django.apps import apps
from django.db import models, transaction

from sessions_app.fields import EncryptedField


def _encrypted_fields(model: type[models.Model]) -> list[str]:
    return [field.name for field in model._meta.concrete_fields if isinstance(field, EncryptedField)]


def secrets_reencrypt() -> dict[str, int]:
    """Write every encrypted value of this app again, so it is encrypted with the first key.

    For a key rotation: put the new key first in ``HITL_ENCRYPTION_KEYS``, run this, then drop
    the old key. Each row is locked while it is rewritten, so a concurrent edit is not undone.
    Returns the number of rows rewritten per model (``{"Integration": 3}``). Raises
    ``SecretUndecryptable`` (nothing of that row written) when a value no configured key decrypts.
    """
    counts = {}
    for model in apps.get_app_config("sessions_app").get_models():
        fields = _encrypted_fields(model)
        if not fields:
            continue
        counts[model.__name__] = 0
        for pk in model.objects.order_by("pk").values_list("pk", flat=True).iterator():
            with transaction.atomic():
                # ``update``, not ``save``: no ``auto_now`` timestamp moves for a re-encryption.
                row = model.objects.select_for_update().filter(pk=pk).values(*fields).first()
                if row is None:  # deleted meanwhile
                    continue
                model.objects.filter(pk=pk).update(**row)
            counts[model.__name__] += 1
    return counts
