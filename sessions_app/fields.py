"""Model fields whose value is encrypted in the database (see ``hitl_gateway.encryption``).

The column holds a Fernet token (text); Python code sees the plain value. Fernet tokens are
randomised, so the database cannot compare them: every lookup but ``isnull`` is refused (a
silent never-matching filter would be worse), and a secret is found by loading its row by id,
then comparing in Python. A value no configured key decrypts raises ``SecretUndecryptable``:
reads fail closed, never with the ciphertext taken for the secret.
"""

from __future__ import annotations

import json

from django.core import validators
from django.db import models

from hitl_gateway.encryption import InvalidToken, decrypt, encrypt


class SecretUndecryptable(Exception):
    """A stored secret that none of ``HITL_ENCRYPTION_KEYS`` decrypts (a key was dropped, or the row was altered)."""


class EncryptedField(models.TextField):
    """The shared part: encrypt on the way in, decrypt on the way out, no lookups."""

    def get_lookup(self, lookup_name):
        return super().get_lookup(lookup_name) if lookup_name == "isnull" else None

    def get_transform(self, name):
        return None

    def _decrypt(self, token: str) -> str:
        try:
            return decrypt(token)
        except InvalidToken:
            label = f"{self.model.__name__}.{self.name}" if hasattr(self, "model") else self.name
            raise SecretUndecryptable(
                f"{label} cannot be decrypted with HITL_ENCRYPTION_KEYS: the key that encrypted it is "
                "missing (add it back after the current key) or the stored value was altered"
            ) from None


class EncryptedTextField(EncryptedField):
    """A secret string. The empty string is stored as is, so "is it set?" needs no key.

    ``max_length`` limits the plain value (the column is text: a token is longer than its value).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.max_length is not None:
            self.validators.append(validators.MaxLengthValidator(self.max_length))

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return self._decrypt(value)


class EncryptedURLField(EncryptedTextField):
    """A secret URL (it embeds a credential), validated like ``URLField``."""

    default_validators = [validators.URLValidator()]


class EncryptedJSONField(EncryptedField):
    """A secret JSON document (a dict of credentials), encrypted whole: its keys are hidden too."""

    def get_prep_value(self, value):
        if value is None:
            return None
        return encrypt(json.dumps(value, separators=(",", ":"), sort_keys=True))

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return json.loads(self._decrypt(value))

    def to_python(self, value):
        # A serialised value (``loaddata``) is the JSON text made by ``value_to_string``.
        return json.loads(value) if isinstance(value, str) else value

    def value_to_string(self, obj):
        return json.dumps(self.value_from_object(obj))
