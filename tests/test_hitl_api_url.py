"""The hitl-api webhook URL (chosen through the API) cannot make the worker POST into our network.

Checked on save (https, form, literal addresses) and again at POST time, resolved and pinned,
with the same address rule as media; ``HITL_ALLOW_INSECURE_BOTPRESS_URLS`` admits chosen
loopback/private addresses (and plain http to them) for development, the demo and the tests.
"""

from __future__ import annotations

import socket

import pytest
from rest_framework.test import APIClient

from outbound.guard import allowances_parse
from outbound.http import PermanentError
from sessions_app.services.errors import InvalidInput
from sessions_app.services.integrations import (
    integration_api_key_rotate,
    integration_botpress_configure,
    integration_botpress_sink,
)
from tests.conftest import integration_for
from tests.media_hosts import MediaHost


@pytest.fixture(scope="module")
def bot_host():
    server = MediaHost().start()
    yield server
    server.stop()


@pytest.fixture
def integration(db):
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    return integration


def _allow(settings, value: str) -> None:
    settings.HITL = {**settings.HITL, "BOTPRESS_ALLOW_INSECURE_URLS": allowances_parse(value)}


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/wh_1",  # plain http
        "https://127.0.0.1/wh_1",
        "https://[::1]/wh_1",
        "https://[::ffff:127.0.0.1]/wh_1",
        "https://10.1.2.3/wh_1",
        "https://169.254.169.254/latest",
        "https://user:pw@hooks.example.com/wh_1",
        "https://hooks.example.com\\@127.0.0.1/wh_1",
        "https://hooks.example.com:6379/wh_1",
        "ftp://hooks.example.com/wh_1",
    ],
)
def test_the_api_refuses_urls_into_our_network(integration, url):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {integration_api_key_rotate(integration=integration)}")
    response = client.patch(
        f"/api/v1/integrations/{integration.pk}/botpress",
        {"transport": "hitl_api", "hitlApiWebhookUrl": url},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "hitlApiWebhookUrl" in response.json()["fields"]
    integration.refresh_from_db()
    assert integration.hitl_api_webhook_url == ""


def test_https_public_names_are_accepted_and_checked_again_when_posting(integration, bot_host, monkeypatch):
    """A name is saved unresolved; at POST time it resolves to loopback: refused, nothing sent."""
    integration_botpress_configure(
        integration=integration, transport="hitl_api", hitl_api_webhook_url="https://bot-hooks.test/wh_1"
    )
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "bot-hooks.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", bot_host.port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    sink = integration_botpress_sink(integration=integration, in_request=False)
    with pytest.raises(PermanentError, match="address refused"):
        sink.webhooks.stop_hitl(remote_conversation_id="c1")
    assert bot_host.requests == []


def test_the_allow_list_admits_a_local_bot_over_http(integration, bot_host, settings):
    url = bot_host.url("/wh_1")
    with pytest.raises(InvalidInput):
        integration_botpress_configure(integration=integration, transport="hitl_api", hitl_api_webhook_url=url)
    _allow(settings, f"127.0.0.1:{bot_host.port + 1}")  # another port: still refused
    with pytest.raises(InvalidInput):
        integration_botpress_configure(integration=integration, transport="hitl_api", hitl_api_webhook_url=url)
    _allow(settings, f"127.0.0.1:{bot_host.port}")
    integration_botpress_configure(integration=integration, transport="hitl_api", hitl_api_webhook_url=url)
    bot_host.reset()
    sink = integration_botpress_sink(integration=integration, in_request=False)
    sink.webhooks.stop_hitl(remote_conversation_id="c1")
    assert [(method, path) for method, path, _ in bot_host.requests] == [("POST", "/wh_1/stop-hitl")]


def test_a_url_saved_while_allowed_is_refused_at_post_time_once_disallowed(integration, bot_host, settings):
    _allow(settings, "127.0.0.1")
    integration_botpress_configure(
        integration=integration, transport="hitl_api", hitl_api_webhook_url=bot_host.url("/wh_1")
    )
    _allow(settings, "")
    bot_host.reset()
    sink = integration_botpress_sink(integration=integration, in_request=False)
    with pytest.raises(PermanentError):
        sink.webhooks.stop_hitl(remote_conversation_id="c1")
    assert bot_host.requests == []
