"""Encryption of secrets at rest: Fernet keys from the environment, several at once for rotation.

Fernet (``cryptography``) is AES-128-CBC with an HMAC-SHA256, a random IV and a timestamp per
token; ``MultiFernet`` encrypts with its first key and decrypts with any of them, which is what
key rotation needs (https://cryptography.io/en/latest/fernet/#cryptography.fernet.MultiFernet).

Keys come from ``HITL_ENCRYPTION_KEYS`` (comma-separated, the first one encrypts). Without it, the
embedded default (``make run``: no ``DATABASE_URL``, or ``DJANGO_DEBUG`` on) generates one key once
and keeps it in a file of ``var/`` readable by its owner only; a production setup (``DATABASE_URL``
set and ``DEBUG`` off) refuses to start instead, since a key next to the data protects nothing.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from hitl_gateway.local_keys import local_key

__all__ = ["InvalidToken", "decrypt", "encrypt", "encryption_keys_load"]

KEYS_VARIABLE = "HITL_ENCRYPTION_KEYS"


def _key_valid(key: str) -> bool:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        return False
    return True


def encryption_keys_load(*, configured: list[str], production: bool, key_file: Path) -> list[str]:
    """The Fernet keys to use, newest first; called once, from the settings.

    ``configured``: the keys of ``HITL_ENCRYPTION_KEYS`` (empty when unset). ``production``:
    ``DATABASE_URL`` set and ``DEBUG`` off. ``key_file``: the embedded default's key.
    Raises ``ImproperlyConfigured`` for a malformed key (its value is never shown) or for a
    production setup with no key.
    """
    keys = [key.strip() for key in configured if key.strip()]
    for number, key in enumerate(keys, start=1):
        if not _key_valid(key):
            raise ImproperlyConfigured(
                f"{KEYS_VARIABLE}: key #{number} is not a Fernet key (32 url-safe base64-encoded bytes; "
                'make one with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())")'
            )
    if keys:
        return keys
    if production:
        raise ImproperlyConfigured(
            f"{KEYS_VARIABLE} is not set: with DATABASE_URL set and DEBUG off the gateway refuses to store "
            "integration secrets without an encryption key. Set it to one or more comma-separated Fernet keys "
            '(the first encrypts; make one with: python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"), and keep it apart from the database backups.'
        )
    key = local_key(key_file, make=lambda: Fernet.generate_key().decode())
    if not _key_valid(key):
        raise ImproperlyConfigured(f"{key_file} does not hold a Fernet key: restore it, or set {KEYS_VARIABLE}.")
    return [key]


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    # Keyed on the settings' value, so a test that overrides the keys gets its own MultiFernet.
    return _fernet(tuple(settings.HITL_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    """A Fernet token (url-safe base64 text, about 4/3 of the UTF-8 length plus 73 bytes) made with the first key."""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """The text in ``token``; raises ``InvalidToken`` when no configured key made it (or it was altered).

    Remembered per token and key set: the relay reads the same integration row for every
    message, and decrypting its secrets each time was 3-4 % of a process's CPU per relay (py-spy,
    ``make bench``). A token is unique (random IV), so a stored value that changes is a new
    entry; a key dropped from ``HITL_ENCRYPTION_KEYS`` is a new key set, so its tokens fail as
    they must. Failures are not remembered.
    """
    return _decrypted(tuple(settings.HITL_ENCRYPTION_KEYS), token)


@lru_cache(maxsize=1024)
def _decrypted(keys: tuple[str, ...], token: str) -> str:
    return _fernet(keys).decrypt(token.encode()).decode()
