"""Integrations: creation, the Botpress credential, and the one place secrets are read."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from functools import cache

from django.conf import settings
from django.db import transaction

from botpress.client import BotpressClient
from outbound.http import make_session
from outbound.media import MediaFile, media_fetch
from providers import provider_class
from providers.base import HelpDeskProvider
from sessions_app.models import Integration, Provider

API_KEY_PREFIX = "hitl_"


def _hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _timeout() -> tuple[float, float]:
    return settings.HITL["HTTP_CONNECT_TIMEOUT"], settings.HITL["HTTP_READ_TIMEOUT"]


@cache
def _http_session():
    """One pooled session per process: keep-alive connections to each remote host are reused."""
    return make_session(pool_size=32)


@transaction.atomic
def integration_create(
    *,
    name: str,
    provider: str = Provider.ZENDESK,
    provider_base_url: str,
    provider_credentials: dict,
    botpress_api_url: str,
    botpress_token: str,
    botpress_bot_id: str,
    botpress_integration_id: str,
    botpress_integration_alias: str = "",
    botpress_bot_user_id: str = "",
    webhook_signing_secret: str = "",
) -> tuple[Integration, str]:
    """Create an integration and return it with its API key, which is never stored in clear."""
    provider_class(provider)  # fail early on an unknown provider
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    integration = Integration(
        name=name,
        provider=provider,
        provider_base_url=provider_base_url.rstrip("/"),
        provider_credentials=provider_credentials,
        botpress_api_url=botpress_api_url.rstrip("/"),
        botpress_token=botpress_token,
        botpress_bot_id=botpress_bot_id,
        botpress_integration_id=botpress_integration_id,
        botpress_integration_alias=botpress_integration_alias,
        botpress_bot_user_id=botpress_bot_user_id,
        webhook_signing_secret=webhook_signing_secret,
        api_key_hash=_hash_api_key(api_key),
        api_key_prefix=api_key[: len(API_KEY_PREFIX) + 4],
    )
    integration.full_clean()
    integration.save()
    return integration, api_key


def integration_api_key_rotate(*, integration: Integration) -> str:
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    integration.api_key_hash = _hash_api_key(api_key)
    integration.api_key_prefix = api_key[: len(API_KEY_PREFIX) + 4]
    integration.save(update_fields=["api_key_hash", "api_key_prefix", "updated_at"])
    return api_key


def integration_authenticate(*, integration_id: str, api_key: str) -> Integration | None:
    """The integration this key belongs to, or None; the same answer for every kind of failure.

    The hash is compared even when the integration does not exist, so timing does not tell
    whether an integration id is real.
    """
    try:
        integration = Integration.objects.get(pk=uuid.UUID(integration_id), is_active=True)
        expected = integration.api_key_hash
    except (ValueError, Integration.DoesNotExist):
        integration, expected = None, "0" * 64
    if hmac.compare_digest(_hash_api_key(api_key).encode(), expected.encode()) and integration:
        return integration
    return None


def integration_webhook_url(*, integration: Integration) -> str:
    return f"{settings.PUBLIC_BASE_URL}/webhooks/{integration.provider}/{integration.pk}/"


def integration_provider(*, integration: Integration) -> HelpDeskProvider:
    """The help-desk adapter with this integration's credentials (the only reader of them)."""
    hitl = settings.HITL

    def fetch(url: str) -> MediaFile:
        return media_fetch(
            url,
            session=_http_session(),
            max_bytes=hitl["MEDIA_MAX_BYTES"],
            timeout=hitl["MEDIA_FETCH_TIMEOUT"],
            allow_private=hitl["MEDIA_ALLOW_PRIVATE_ADDRESSES"],
        )

    return provider_class(integration.provider)(
        base_url=integration.provider_base_url,
        credentials=integration.provider_credentials,
        session=_http_session(),
        timeout=_timeout(),
        media_fetcher=fetch,
    )


def integration_botpress(*, integration: Integration, in_request: bool) -> BotpressClient:
    """A Botpress client for this integration.

    ``in_request``: Botpress is waiting for our answer, so retry in-process like the SDK does;
    otherwise the outbox retries durably and the client must not sleep.
    """
    return BotpressClient(
        base_url=integration.botpress_api_url,
        token=integration.botpress_token,
        bot_id=integration.botpress_bot_id,
        integration_id=integration.botpress_integration_id,
        integration_alias=integration.botpress_integration_alias,
        timeout=_timeout(),
        max_retries=3 if in_request else 0,
        max_retry_wait=settings.HITL["SYNC_RETRY_MAX_WAIT_SECONDS"],
        session=_http_session(),
    )


def integration_webhook_install(*, integration: Integration) -> Integration:
    """Install the help-desk webhook and triggers pointing at us, and keep the signing secret."""
    installation = integration_provider(integration=integration).webhook_install(
        url=integration_webhook_url(integration=integration),
        previous_state=integration.provider_installation,
    )
    integration.webhook_signing_secret = installation.signing_secret
    integration.provider_installation = installation.state
    integration.save(update_fields=["webhook_signing_secret", "provider_installation", "updated_at"])
    return integration
