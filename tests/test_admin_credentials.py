"""Stored credentials never follow a changed URL: a new help-desk or Botpress URL needs them again.

Otherwise whoever can edit an integration could point it at their own host and have "Test
connection" (or the next delivery) send them the stored tokens.
"""

from __future__ import annotations

import base64

import pytest
from django.urls import reverse

from sessions_app.models import Integration
from sessions_app.services.errors import InvalidInput
from sessions_app.services.integrations import (
    integration_connection_change,
    integration_connection_change_errors,
    integration_create,
)

OLD_URL = "http://127.0.0.1:9"  # nothing listens: the old host never answers
ZD_TOKEN = "zd-stored-token-Mq3Wv8Lp"
BP_TOKEN = "bp-stored-token-Tz6Hn2Rc"
NEW_ZD_TOKEN = "zd-new-host-token-Ka5Xe1Gd"
NEW_BP_TOKEN = "bp-new-host-token-Ys7Bj4Nf"


@pytest.fixture
def integration(db) -> Integration:
    created, _ = integration_create(
        name="Acme",
        provider_base_url=OLD_URL,
        provider_credentials={"email": "gateway@acme.test", "api_token": ZD_TOKEN},
        botpress_api_url=OLD_URL,
        botpress_token=BP_TOKEN,
        botpress_bot_id="bot_cred",
        botpress_integration_id="intg_cred",
    )
    return created


def change_url(integration: Integration) -> str:
    return reverse("admin:sessions_app_integration_change", args=[integration.pk])


def form_data(integration: Integration, **overrides) -> dict:
    return {
        "name": integration.name,
        "is_active": "on",
        "provider_base_url": integration.provider_base_url,
        "credential_zendesk_email": "gateway@acme.test",
        "credential_zendesk_api_token": "",
        "new_webhook_signing_secret": "",
        "botpress_api_url": integration.botpress_api_url,
        "botpress_bot_id": integration.botpress_bot_id,
        "botpress_integration_id": integration.botpress_integration_id,
        "botpress_integration_alias": "",
        "botpress_bot_user_id": "",
        "new_botpress_token": "",
    } | overrides


def tokens_sent(httpserver) -> list[str]:
    """Every credential the host received: Zendesk's basic ``email/token:TOKEN``, Botpress's bearer."""
    found = []
    for request, _ in httpserver.log:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            found.append(base64.b64decode(value).decode().rpartition(":")[2])
        elif scheme == "Bearer":
            found.append(value)
    return found


def test_a_new_url_without_its_credential_is_refused_naming_the_field(admin_client, integration, httpserver):
    new_host = httpserver.url_for("/").rstrip("/")
    response = admin_client.post(change_url(integration), form_data(integration, provider_base_url=new_host))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["credential_zendesk_api_token"]
    assert "help-desk URL changed" in errors["credential_zendesk_api_token"][0]

    response = admin_client.post(change_url(integration), form_data(integration, botpress_api_url=new_host))
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["new_botpress_token"] and "Botpress API URL changed" in errors["new_botpress_token"][0]

    integration.refresh_from_db()
    assert (integration.provider_base_url, integration.botpress_api_url) == (OLD_URL, OLD_URL)
    # A trailing slash or the host's case is not a new address.
    same = admin_client.post(change_url(integration), form_data(integration, provider_base_url="HTTP://127.0.0.1:9/"))
    assert same.status_code == 302


def test_a_new_url_with_its_credential_is_saved(admin_client, integration, httpserver):
    new_host = httpserver.url_for("/").rstrip("/")
    data = form_data(
        integration,
        provider_base_url=new_host,
        credential_zendesk_api_token=NEW_ZD_TOKEN,
        botpress_api_url=new_host,
        new_botpress_token=NEW_BP_TOKEN,
    )
    assert admin_client.post(change_url(integration), data).status_code == 302
    integration.refresh_from_db()
    assert integration.provider_base_url == integration.botpress_api_url == new_host
    assert integration.provider_credentials["api_token"] == NEW_ZD_TOKEN and integration.botpress_token == NEW_BP_TOKEN


def test_test_connection_never_sends_the_old_tokens_to_a_new_host(admin_client, integration, httpserver):
    new_host = httpserver.url_for("/").rstrip("/")
    test_connection = reverse("admin:sessions_app_integration_test_connection", args=[integration.pk])

    refused = form_data(integration, provider_base_url=new_host, botpress_api_url=new_host)
    assert admin_client.post(change_url(integration), refused).status_code == 200
    assert admin_client.post(test_connection).status_code == 200
    assert httpserver.log == []  # the URL did not change, so nothing went to the new host

    accepted = refused | {"credential_zendesk_api_token": NEW_ZD_TOKEN, "new_botpress_token": NEW_BP_TOKEN}
    assert admin_client.post(change_url(integration), accepted).status_code == 302
    assert admin_client.post(test_connection).status_code == 200
    sent = tokens_sent(httpserver)
    assert NEW_ZD_TOKEN in sent and NEW_BP_TOKEN in sent
    assert ZD_TOKEN not in sent and BP_TOKEN not in sent


def test_the_service_rule_for_every_caller(integration):
    """``integration_connection_change`` is what any other path (CLI, API) calls."""
    with pytest.raises(InvalidInput) as raised:
        integration_connection_change(integration=integration, provider_base_url="https://evil.example")
    assert raised.value.field == "provider_credentials"
    with pytest.raises(InvalidInput) as raised:
        integration_connection_change(integration=integration, botpress_api_url="https://127.0.0.1:9")  # scheme
    assert raised.value.field == "botpress_token"
    with pytest.raises(InvalidInput):  # the email alone is not the credential
        integration_connection_change(
            integration=integration,
            provider_base_url="http://127.0.0.1:10",
            provider_credentials={"email": "other@acme.test"},
        )
    assert integration_connection_change_errors(integration=integration, provider_base_url=OLD_URL + "/") == {}

    changed = integration_connection_change(
        integration=integration,
        provider_base_url="https://acme.zendesk.com/",
        provider_credentials={"email": "gateway@acme.test", "api_token": NEW_ZD_TOKEN},
        botpress_token=NEW_BP_TOKEN,
    )
    assert changed == ["provider_base_url", "provider_credentials", "botpress_token"]
    assert integration.provider_base_url == "https://acme.zendesk.com"
    assert integration.botpress_token == NEW_BP_TOKEN
