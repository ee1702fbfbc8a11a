"""Setting a help desk's webhook up by hand: the admin shows the rules, a command prints them."""

from __future__ import annotations

import dataclasses
import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from providers.registry import provider_spec
from providers.spec import WebhookInstall
from sessions_app.services.integrations import integration_create
from tests.conftest import BOT_ID, BP_INTEGRATION_ID, BP_TOKEN

pytestmark = pytest.mark.django_db


def _integration(provider: str, credentials: dict):
    integration, _ = integration_create(
        name=f"Acme on {provider}",
        provider=provider,
        provider_base_url=f"https://acme.{provider}.com",
        provider_credentials=credentials,
        botpress_api_url="https://api.botpress.cloud",
        botpress_token=BP_TOKEN,
        botpress_bot_id=BOT_ID,
        botpress_integration_id=BP_INTEGRATION_ID,
    )
    return integration


def test_the_command_prints_the_rules_with_a_secret_it_keeps(settings):
    settings.PUBLIC_BASE_URL = "https://gateway.example.com"
    integration = _integration("freshdesk", {"api_key": "fd-key"})
    assert not integration.webhook_signing_secret

    out = io.StringIO()
    call_command("webhook_instructions", str(integration.pk), stdout=out)
    integration.refresh_from_db()
    secret = integration.webhook_signing_secret
    assert secret, "the rules need a secret: one was made and stored"
    text = out.getvalue()
    assert f"https://gateway.example.com/webhooks/freshdesk/{integration.pk}/" in text
    assert f"X-Hitl-Webhook-Secret: {secret}" in text and "Trigger webhook" in text

    again = io.StringIO()
    call_command("webhook_instructions", str(integration.pk), stdout=again)
    integration.refresh_from_db()
    assert integration.webhook_signing_secret == secret and again.getvalue() == text, "asking again changes nothing"


def test_the_command_refuses_a_desk_with_nothing_to_do_by_hand_and_unknown_ids():
    zendesk = _integration("zendesk", {"email": "a@acme.test", "api_token": "zd-token"})
    with pytest.raises(CommandError, match="no webhook to set up by hand"):
        call_command("webhook_instructions", str(zendesk.pk), stdout=io.StringIO())
    with pytest.raises(CommandError, match="no integration"):
        call_command("webhook_instructions", "not-a-uuid", stdout=io.StringIO())


def test_the_admin_shows_the_rules_of_a_manual_desk_without_the_secret(admin_client, monkeypatch):
    manual = dataclasses.replace(provider_spec("freshdesk"), webhook_install=WebhookInstall.MANUAL)
    monkeypatch.setattr("sessions_app.admin.provider_spec", lambda kind: manual if kind == "freshdesk" else None)
    integration = _integration("freshdesk", {"api_key": "fd-key"})
    integration.webhook_signing_secret = "shared-secret-never-shown"
    integration.provider_installation = {"rule_ids": ["1", "2"], "url": "https://x"}
    integration.save()

    page = admin_client.get(reverse("admin:sessions_app_integration_change", args=[integration.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Set up by hand" in html and "Trigger webhook" in html
    assert "shared-secret-never-shown" not in html
    assert f"manage.py webhook_instructions {integration.pk}" in html
    assert "2 rule(s)" in html


def test_the_admin_offers_the_rules_of_an_api_desk_only_until_it_is_installed(admin_client):
    integration = _integration("freshdesk", {"api_key": "fd-key"})
    url = reverse("admin:sessions_app_integration_change", args=[integration.pk])
    assert "Set up by hand" in admin_client.get(url).content.decode()
    integration.provider_installation = {"rule_ids": ["1", "2"], "url": "https://x"}
    integration.save()
    assert "Set up by hand" not in admin_client.get(url).content.decode()
