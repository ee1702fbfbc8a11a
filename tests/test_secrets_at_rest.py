"""Integration secrets are encrypted in the database: what the columns hold, key rotation, the
migration of rows stored before encryption, and the refusal to run in production without a key."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import uuid

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from hitl_gateway.encryption import encryption_keys_load
from sessions_app.fields import SecretUndecryptable
from sessions_app.models import Integration
from sessions_app.services.integrations import (
    integration_botpress_configure,
    integration_create,
    integration_signing_secret_replace,
    integration_url_authenticate,
)
from tests.conftest import ROOT

ZD_TOKEN = "zd-at-rest-token-Qv7Lm2Xw9"
BP_TOKEN = "bp-at-rest-token-Hc4Tn8Ye1"
SIGNING = "whsec-at-rest-current-Pb6Rk3"
SIGNING_OLD = "whsec-at-rest-previous-Ud2Js5"
WEBHOOK_URL = "https://webhook.botpress.cloud/wh-at-rest-Fz9Ka1"
SECRET_COLUMNS = (
    "provider_credentials",
    "botpress_token",
    "webhook_signing_secret",
    "webhook_signing_secret_previous",
    "botpress_url_secret",
    "hitl_api_webhook_url",
)
MIGRATION = ("sessions_app", "0010_e_encrypt_secrets")
BEFORE = ("sessions_app", "0009_a_webhook_robustness")


def make_integration(name: str = "At rest") -> Integration:
    integration, _ = integration_create(
        name=name,
        provider_base_url="https://acme.zendesk.com",
        provider_credentials={"email": "gateway@acme.test", "api_token": ZD_TOKEN},
        botpress_api_url="https://api.botpress.cloud",
        botpress_token=BP_TOKEN,
        botpress_bot_id="bot_at_rest",
        botpress_integration_id="intg_at_rest",
        webhook_signing_secret=SIGNING_OLD,
    )
    changed = integration_signing_secret_replace(integration=integration, secret=SIGNING)
    integration.save(update_fields=changed)
    return integration_botpress_configure(integration=integration, hitl_api_webhook_url=WEBHOOK_URL)


def raw_columns(pk) -> dict[str, str]:
    """The columns as the database holds them, read past the model fields."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(SECRET_COLUMNS)} FROM sessions_app_integration WHERE id = %s",
            [pk.hex if connection.vendor == "sqlite" else pk],
        )
        return dict(zip(SECRET_COLUMNS, (str(v) for v in cursor.fetchone()), strict=True))


def plain_secrets(integration: Integration) -> list[str]:
    return [ZD_TOKEN, BP_TOKEN, SIGNING, SIGNING_OLD, WEBHOOK_URL, "wh-at-rest-Fz9Ka1", integration.botpress_url_secret]


def test_columns_hold_no_plaintext_and_values_round_trip(db):
    integration = make_integration()
    raw = raw_columns(integration.pk)
    dump = " ".join(raw.values())
    for secret in plain_secrets(integration):
        assert secret not in dump
    assert "api_token" not in raw["provider_credentials"] and "gateway@acme.test" not in raw["provider_credentials"]
    for column, value in raw.items():
        Fernet(os.environ["HITL_ENCRYPTION_KEYS"].split(",")[0]).decrypt(value.encode())  # a real token
        assert value.startswith("gAAAAA"), column

    loaded = Integration.objects.get(pk=integration.pk)
    assert loaded.provider_credentials == {"email": "gateway@acme.test", "api_token": ZD_TOKEN}
    assert (loaded.botpress_token, loaded.webhook_signing_secret) == (BP_TOKEN, SIGNING)
    assert (loaded.webhook_signing_secret_previous, loaded.hitl_api_webhook_url) == (SIGNING_OLD, WEBHOOK_URL)
    assert loaded.botpress_url_secret == integration.botpress_url_secret
    # Lookups by the URL secret still work: the row is loaded by id, the secret compared in Python.
    secret = loaded.botpress_url_secret
    assert integration_url_authenticate(integration_id=str(loaded.pk), secret=secret) == loaded
    assert integration_url_authenticate(integration_id=str(loaded.pk), secret=secret[:-1] + "x") is None


def test_empty_values_and_unicode_round_trip(db):
    integration = make_integration()
    Integration.objects.filter(pk=integration.pk).update(
        webhook_signing_secret="", provider_credentials={"email": "é@x.test", "api_token": "tök€n-∞", "n": [1, None]}
    )
    raw = raw_columns(integration.pk)
    assert raw["webhook_signing_secret"] == ""  # "not set" needs no key, and tells nothing else
    loaded = Integration.objects.get(pk=integration.pk)
    assert loaded.webhook_signing_secret == ""
    assert loaded.provider_credentials == {"email": "é@x.test", "api_token": "tök€n-∞", "n": [1, None]}


def test_database_lookups_on_secrets_are_refused(db):
    """A randomised token never equals another: such a filter would silently match nothing."""
    make_integration()
    with pytest.raises(FieldError):
        list(Integration.objects.filter(botpress_token=BP_TOKEN))
    with pytest.raises(FieldError):
        list(Integration.objects.filter(botpress_url_secret__startswith="a"))
    assert Integration.objects.filter(webhook_signing_secret__isnull=False).count() == 1


def test_a_value_no_key_decrypts_fails_closed(db, settings):
    integration = make_integration()
    assert Integration.objects.get(pk=integration.pk).botpress_token  # decrypted (and remembered) once
    settings.HITL_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(SecretUndecryptable) as raised:  # a remembered value does not outlive its key
        Integration.objects.get(pk=integration.pk)
    message = str(raised.value)
    assert "Integration." in message and "HITL_ENCRYPTION_KEYS" in message
    assert not any(secret in message for secret in plain_secrets(integration))


def test_rotation_command_reencrypts_with_the_first_key(db, settings):
    old_key, new_key = settings.HITL_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    integration = make_integration()
    second = make_integration("Second")
    before = raw_columns(integration.pk)

    settings.HITL_ENCRYPTION_KEYS = [new_key, old_key]
    assert Integration.objects.get(pk=integration.pk).botpress_token == BP_TOKEN  # old key still decrypts
    updated_at = Integration.objects.get(pk=integration.pk).updated_at
    out = io.StringIO()
    call_command("encryption_rotate", stdout=out)
    assert "Integration: 2 row(s) re-encrypted" in out.getvalue()

    after = raw_columns(integration.pk)
    for column in SECRET_COLUMNS:
        assert after[column] != before[column]
        Fernet(new_key).decrypt(after[column].encode())  # made with the new key
        with pytest.raises(InvalidToken):
            Fernet(old_key).decrypt(after[column].encode())
    # The old key can go now.
    settings.HITL_ENCRYPTION_KEYS = [new_key]
    for pk in (integration.pk, second.pk):
        loaded = Integration.objects.get(pk=pk)
        assert loaded.provider_credentials["api_token"] == ZD_TOKEN and loaded.botpress_token == BP_TOKEN
        assert loaded.webhook_signing_secret_previous == SIGNING_OLD
    assert Integration.objects.get(pk=integration.pk).updated_at == updated_at


def test_rotation_command_names_a_missing_key(db, settings):
    make_integration()
    settings.HITL_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="cannot be decrypted with HITL_ENCRYPTION_KEYS") as raised:
        call_command("encryption_rotate")
    assert BP_TOKEN not in str(raised.value)


# --- the migration --------------------------------------------------------------------------
def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


def _model_at(node):
    return MigrationExecutor(connection).loader.project_state([node]).apps.get_model("sessions_app", "Integration")


def test_migration_encrypts_existing_plaintext_rows_and_back(transactional_db):
    _migrate([BEFORE])
    try:
        Old = _model_at(BEFORE)
        pk = uuid.uuid4()
        Old.objects.create(
            id=pk,
            name="Stored in clear",
            provider_base_url="https://acme.zendesk.com",
            provider_credentials={"email": "gateway@acme.test", "api_token": ZD_TOKEN},
            webhook_signing_secret=SIGNING,
            webhook_signing_secret_previous=SIGNING_OLD,
            botpress_token=BP_TOKEN,
            botpress_bot_id="bot_old",
            botpress_integration_id="intg_old",
            api_key_hash="0" * 64,
            api_key_prefix="hitl_abcd",
            botpress_url_secret="url-secret-stored-in-clear-123",
            hitl_api_webhook_url=WEBHOOK_URL,
        )
        Old.objects.create(
            id=uuid.uuid4(), name="No secrets yet", provider_base_url="https://x.test", botpress_token=BP_TOKEN
        )
        assert ZD_TOKEN in raw_columns(pk)["provider_credentials"]

        _migrate([MIGRATION])
        raw = raw_columns(pk)
        for secret in (ZD_TOKEN, BP_TOKEN, SIGNING, SIGNING_OLD, WEBHOOK_URL, "url-secret-stored-in-clear-123"):
            assert secret not in " ".join(raw.values())
        New = (
            MigrationExecutor(connection)
            .loader.project_state([MIGRATION])
            .apps.get_model("sessions_app", "Integration")
        )
        row = New.objects.get(pk=pk)
        assert row.provider_credentials == {"email": "gateway@acme.test", "api_token": ZD_TOKEN}
        assert (row.botpress_token, row.webhook_signing_secret, row.webhook_signing_secret_previous) == (
            BP_TOKEN,
            SIGNING,
            SIGNING_OLD,
        )
        assert (row.botpress_url_secret, row.hitl_api_webhook_url) == ("url-secret-stored-in-clear-123", WEBHOOK_URL)
        empty = New.objects.get(name="No secrets yet")
        assert (empty.provider_credentials, empty.webhook_signing_secret, empty.hitl_api_webhook_url) == ({}, "", "")

        _migrate([BEFORE])  # backwards: the plain values again
        raw = raw_columns(pk)
        assert raw["botpress_token"] == BP_TOKEN and raw["webhook_signing_secret"] == SIGNING
        assert ZD_TOKEN in raw["provider_credentials"]
        Old = _model_at(BEFORE)
        assert Old.objects.get(pk=pk).provider_credentials["api_token"] == ZD_TOKEN
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


# --- the keys -------------------------------------------------------------------------------
def test_production_without_keys_is_refused(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="HITL_ENCRYPTION_KEYS is not set"):
        encryption_keys_load(configured=[], production=True, key_file=tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_a_malformed_key_is_refused_without_being_shown(tmp_path):
    good = Fernet.generate_key().decode()
    with pytest.raises(ImproperlyConfigured, match="key #2 is not a Fernet key") as raised:
        encryption_keys_load(configured=[good, "not-a-key-Vw3Ds"], production=True, key_file=tmp_path / "k")
    assert "not-a-key-Vw3Ds" not in str(raised.value)
    assert encryption_keys_load(configured=[f" {good} ", ""], production=True, key_file=tmp_path / "k") == [good]


def test_the_embedded_default_keeps_one_private_key(tmp_path):
    key_file = tmp_path / "var" / "encryption.key"
    first = encryption_keys_load(configured=[], production=False, key_file=key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert encryption_keys_load(configured=[], production=False, key_file=key_file) == first
    Fernet(first[0])
    assert [p.name for p in key_file.parent.iterdir()] == ["encryption.key"]  # no temporary left behind


def _settings_process(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("HITL_ENCRYPTION_KEYS", "DATABASE_URL", "DJANGO_DEBUG")}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print('started')"],
        cwd=ROOT,
        env=base | {"DJANGO_SETTINGS_MODULE": "hitl_gateway.settings", "HITL_VAR_DIR": str(tmp_path)} | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_gateway_refuses_to_start_in_production_without_a_key(tmp_path):
    refused = _settings_process(tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/nowhere")
    assert refused.returncode != 0 and "started" not in refused.stdout
    assert "ImproperlyConfigured" in refused.stderr and "HITL_ENCRYPTION_KEYS is not set" in refused.stderr
    assert not (tmp_path / "encryption.key").exists()

    key = Fernet.generate_key().decode()
    given = _settings_process(tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/x", HITL_ENCRYPTION_KEYS=key)
    assert given.returncode == 0 and "started" in given.stdout, given.stderr
    # The embedded default (no DATABASE_URL) makes its own key and keeps it in var/.
    embedded = _settings_process(tmp_path)
    assert embedded.returncode == 0 and "started" in embedded.stdout, embedded.stderr
    assert stat.S_IMODE((tmp_path / "encryption.key").stat().st_mode) == 0o600
