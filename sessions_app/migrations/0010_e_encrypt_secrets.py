"""Encrypt the integrations' secrets at rest.

Three steps: the columns become text (a Fernet token is longer than its secret, and the JSON
credentials become one token), the existing values are encrypted with the first key of
``HITL_ENCRYPTION_KEYS``, and the fields become the encrypting ones (no schema change). Reversible:
backwards, the values are decrypted, then the columns get their old types back.
"""

import sessions_app.fields
import sessions_app.models
from django.db import migrations, models

from hitl_gateway.encryption import decrypt, encrypt

TEXT_SECRETS = (
    "botpress_token",
    "botpress_url_secret",
    "hitl_api_webhook_url",
    "webhook_signing_secret",
    "webhook_signing_secret_previous",
)
JSON_SECRET = "provider_credentials"


def _rewrite(apps, convert_text, convert_json):
    # The fields are plain text here (step 1): what is read is what the column holds.
    Integration = apps.get_model("sessions_app", "Integration")
    for row in Integration.objects.values("pk", *TEXT_SECRETS, JSON_SECRET).iterator():
        pk = row.pop("pk")
        values = {name: convert_text(value) if value else value for name, value in row.items() if name != JSON_SECRET}
        values[JSON_SECRET] = convert_json(row[JSON_SECRET])
        Integration.objects.filter(pk=pk).update(**values)


def secrets_encrypt(apps, schema_editor):
    _rewrite(apps, encrypt, lambda document: encrypt(document or "{}"))


def secrets_decrypt(apps, schema_editor):
    _rewrite(apps, decrypt, decrypt)


class Migration(migrations.Migration):

    dependencies = [
        ("sessions_app", "0009_a_webhook_robustness"),
    ]

    operations = [
        # 1. Text columns, still holding the plain values.
        migrations.AlterField(
            model_name="integration",
            name="botpress_token",
            field=models.TextField(),
        ),
        migrations.AlterField(
            model_name="integration",
            name="botpress_url_secret",
            field=models.TextField(default=sessions_app.models.botpress_url_secret_new),
        ),
        migrations.AlterField(
            model_name="integration",
            name="hitl_api_webhook_url",
            field=models.TextField(blank=True),
        ),
        migrations.AlterField(
            model_name="integration",
            name="provider_credentials",
            field=models.TextField(blank=True, default="{}"),
        ),
        migrations.AlterField(
            model_name="integration",
            name="webhook_signing_secret",
            field=models.TextField(blank=True),
        ),
        migrations.AlterField(
            model_name="integration",
            name="webhook_signing_secret_previous",
            field=models.TextField(blank=True),
        ),
        # 2. Encrypt what is there.
        migrations.RunPython(secrets_encrypt, secrets_decrypt, elidable=False),
        # 3. The encrypting fields (the columns stay text).
        migrations.AlterField(
            model_name="integration",
            name="botpress_token",
            field=sessions_app.fields.EncryptedTextField(max_length=512),
        ),
        migrations.AlterField(
            model_name="integration",
            name="botpress_url_secret",
            field=sessions_app.fields.EncryptedTextField(
                default=sessions_app.models.botpress_url_secret_new, max_length=64
            ),
        ),
        migrations.AlterField(
            model_name="integration",
            name="hitl_api_webhook_url",
            field=sessions_app.fields.EncryptedURLField(blank=True, max_length=2048),
        ),
        migrations.AlterField(
            model_name="integration",
            name="provider_credentials",
            field=sessions_app.fields.EncryptedJSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name="integration",
            name="webhook_signing_secret",
            field=sessions_app.fields.EncryptedTextField(blank=True, max_length=255),
        ),
        migrations.AlterField(
            model_name="integration",
            name="webhook_signing_secret_previous",
            field=sessions_app.fields.EncryptedTextField(blank=True, max_length=255),
        ),
    ]
