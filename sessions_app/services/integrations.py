"""Integrations: creation, the Botpress credential, and the one place secrets are read."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from botpress.client import BotpressClient
from botpress.hitl_api import HitlApiWebhooks
from botpress.names import HitlNames, names_errors
from botpress.sink import BotpressSink, HitlApiSink, RuntimeApiSink
from hitl_gateway.compiled import CompiledQuery, run_unpinged
from outbound.guard import AddressPolicy, AddressRefused, guarded_session, url_target
from outbound.http import OutboundError, make_session
from outbound.media import MediaFile, MediaLimits, MediaRefused, media_fetch
from providers import provider_class
from providers.base import HelpDeskProvider
from providers.registry import provider_default, provider_spec
from sessions_app.models import BotpressTransport, Integration, botpress_url_secret_new
from sessions_app.services.errors import InvalidInput

API_KEY_PREFIX = "hitl_"


def _hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _timeout() -> tuple[float, float]:
    return settings.HITL["HTTP_CONNECT_TIMEOUT"], settings.HITL["HTTP_READ_TIMEOUT"]


@cache
def _http_session():
    """One pooled session per process: keep-alive connections to each remote host are reused."""
    return make_session(pool_size=32)


def media_policy() -> AddressPolicy:
    """Where media URLs chosen by chat users may be fetched from: public http(s) only, by default."""
    hitl = settings.HITL
    return AddressPolicy(
        ports=frozenset({80, 443}) | hitl["OUTBOUND_EXTRA_PORTS"], allow=hitl["MEDIA_ALLOW_PRIVATE_ADDRESSES"]
    )


def hitl_api_policy() -> AddressPolicy:
    """Where the hitl-api webhook URL may point: https to a public address, unless allow-listed."""
    hitl = settings.HITL
    return AddressPolicy(
        ports=frozenset({443}) | hitl["OUTBOUND_EXTRA_PORTS"],
        allow=hitl["BOTPRESS_ALLOW_INSECURE_URLS"],
        plain_http_only_allowed=True,
    )


@cache
def _guarded_session(policy: AddressPolicy):
    """One pinned, checked session per policy and process (settings do not change at run time)."""
    return guarded_session(policy=policy, pool_size=16)


@transaction.atomic
def integration_create(
    *,
    name: str,
    provider: str = "",
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
    """Create an integration and return it with its API key, which is never stored in clear.

    ``provider``: a kind of ``providers.registry`` (default: the first). Raises Django's
    ``ValidationError`` for invalid settings, credentials included (see
    ``integration_credentials_validate``).
    """
    provider = provider or provider_default()
    provider_class(provider)  # fail early on an unknown provider
    integration_credentials_validate(provider=provider, credentials=provider_credentials)
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


def integration_credentials_validate(*, provider: str, credentials: object) -> None:
    """Raise ``ValidationError`` (``{"provider_credentials": ["<field>: <why>", ...]}``) unless
    ``credentials`` has every field the provider's spec requires, and no other."""
    errors = provider_spec(provider).credentials_errors(credentials)
    if errors:
        raise ValidationError({"provider_credentials": [f"{name}: {message}" for name, message in errors.items()]})


def integration_secret_credentials_given(*, provider: str, credentials: dict | None) -> bool:
    """Whether ``credentials`` carries a value for every secret field of the provider's spec."""
    credentials = credentials or {}
    return all(
        isinstance(credentials.get(f.name), str) and credentials[f.name].strip()
        for f in provider_spec(provider).secret_fields
    )


def integration_api_key_rotate(*, integration: Integration) -> str:
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    integration.api_key_hash = _hash_api_key(api_key)
    integration.api_key_prefix = api_key[: len(API_KEY_PREFIX) + 4]
    integration.save(update_fields=["api_key_hash", "api_key_prefix", "updated_at"])
    return api_key


_ACTIVE = CompiledQuery(lambda pk: Integration.objects.filter(pk=pk, is_active=True).order_by()[:1])


def integration_authenticate(*, integration_id: str, api_key: str) -> Integration | None:
    """The integration this key belongs to, or None; the same answer for every kind of failure.

    The hash is compared even when the integration does not exist, so timing does not tell
    whether an integration id is real.
    """
    try:
        key = uuid.UUID(integration_id)
        # The request's first statement: it stands in for the health-check ping (``run_unpinged``).
        integration = run_unpinged(lambda: _ACTIVE.first(pk=key))
    except ValueError:
        integration = None
    expected = integration.api_key_hash if integration else "0" * 64
    if hmac.compare_digest(_hash_api_key(api_key).encode(), expected.encode()) and integration:
        return integration
    return None


def integration_webhook_url(*, integration: Integration) -> str:
    return f"{settings.PUBLIC_BASE_URL}/webhooks/{integration.provider}/{integration.pk}/"


# --- where the stored credentials may be sent -------------------------------------------------
def _endpoint(url: str) -> tuple[str, str, int | None, str]:
    """What makes two URLs the same endpoint: scheme, host, port (default filled in), path."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def integration_connection_change_errors(
    *,
    integration: Integration,
    provider_base_url: str | None = None,
    botpress_api_url: str | None = None,
    provider_credentials_given: bool = False,
    botpress_token_given: bool = False,
) -> dict[str, str]:
    """Why a change of the help-desk or Botpress URL is refused: ``{field: message}``, empty if allowed.

    The stored credentials were given for the URLs they were stored with; kept across a change of
    URL, the next call (a "Test connection", a delivery) would send them to the new host, which
    whoever can edit the URL may own. So a new URL (other scheme, host, port or path; case and a
    trailing slash do not count) needs its credential again. ``None`` means "unchanged";
    ``*_given``: the change also sets that credential. Fields: ``provider_credentials``
    (the secret fields of the provider's spec) and ``botpress_token``.
    """
    errors = {}
    if (
        provider_base_url is not None
        and not provider_credentials_given
        and _endpoint(provider_base_url) != _endpoint(integration.provider_base_url)
    ):
        labels = " and ".join(f.label for f in provider_spec(integration.provider).secret_fields) or "credentials"
        errors["provider_credentials"] = (
            f"The help-desk URL changed: enter the help-desk {labels} again (the stored one is never sent "
            "to a new address)."
        )
    if (
        botpress_api_url is not None
        and not botpress_token_given
        and _endpoint(botpress_api_url) != _endpoint(integration.botpress_api_url)
    ):
        errors["botpress_token"] = (
            "The Botpress API URL changed: enter the Botpress token again (the stored one is never sent "
            "to a new address)."
        )
    return errors


def integration_connection_change(
    *,
    integration: Integration,
    provider_base_url: str | None = None,
    provider_credentials: dict | None = None,
    botpress_api_url: str | None = None,
    botpress_token: str | None = None,
) -> list[str]:
    """Change where and with what the gateway reaches the help desk and Botpress; ``None`` keeps a value.

    Does not save: returns the fields to save, so callers save them with their own changes.
    Raises ``InvalidInput`` (field ``provider_credentials`` or ``botpress_token``) when a URL
    changes without its credential (see ``integration_connection_change_errors``).
    """
    errors = integration_connection_change_errors(
        integration=integration,
        provider_base_url=provider_base_url,
        botpress_api_url=botpress_api_url,
        provider_credentials_given=provider_credentials is not None
        and integration_secret_credentials_given(provider=integration.provider, credentials=provider_credentials),
        botpress_token_given=bool(botpress_token),
    )
    if errors:
        field, message = next(iter(errors.items()))
        raise InvalidInput(message, field=field)
    changed = []
    for name, value in (
        ("provider_base_url", provider_base_url and provider_base_url.rstrip("/")),
        ("provider_credentials", provider_credentials),
        ("botpress_api_url", botpress_api_url and botpress_api_url.rstrip("/")),
        ("botpress_token", botpress_token),
    ):
        if value is not None and value != getattr(integration, name):
            setattr(integration, name, value)
            changed.append(name)
    return changed


def integration_provider(*, integration: Integration) -> HelpDeskProvider:
    """The help-desk adapter with this integration's credentials (the only reader of them)."""
    hitl = settings.HITL

    limits = MediaLimits(
        max_bytes=hitl["MEDIA_MAX_BYTES"],
        deadline=hitl["MEDIA_FETCH_TIMEOUT"],
        min_rate=hitl["MEDIA_MIN_RATE"],
        grace=hitl["MEDIA_RATE_GRACE_SECONDS"],
        connect_timeout=hitl["HTTP_CONNECT_TIMEOUT"],
    )

    # One provider serves one delivery: all the media of one message (a bloc may carry many)
    # share this budget, so the delivery ends well within the task's time limit.
    budget_until = time.monotonic() + hitl["MEDIA_FETCH_BUDGET_SECONDS"]

    def fetch(url: str) -> MediaFile:
        remaining = budget_until - time.monotonic()
        if remaining < 1:
            raise MediaRefused("this message's time for media is spent")
        limited = replace(limits, deadline=min(limits.deadline, remaining))
        return media_fetch(url, session=_guarded_session(media_policy()), limits=limited)

    return provider_class(integration.provider)(
        base_url=integration.provider_base_url,
        credentials=integration.provider_credentials,
        session=_http_session(),
        timeout=_timeout(),
        media_fetcher=fetch,
        media_max_bytes=hitl["MEDIA_MAX_BYTES"],
        media_timeout=hitl["MEDIA_FETCH_TIMEOUT"],
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


def integration_signing_secret_replace(*, integration: Integration, secret: str) -> list[str]:
    """Set a new webhook signing secret, keeping the old one for the grace period.

    Does not save: returns the fields to save, so callers save them with their own changes.
    """
    if secret == integration.webhook_signing_secret:
        return []
    integration.webhook_signing_secret_previous = integration.webhook_signing_secret
    integration.webhook_signing_secret_changed_at = timezone.now()
    integration.webhook_signing_secret = secret
    return ["webhook_signing_secret", "webhook_signing_secret_previous", "webhook_signing_secret_changed_at"]


def integration_signing_secrets(*, integration: Integration) -> list[str]:
    """The secrets a webhook may be signed with now: the current one, and the previous in its grace."""
    secrets = [integration.webhook_signing_secret]
    changed_at = integration.webhook_signing_secret_changed_at
    grace = timedelta(seconds=settings.HITL["WEBHOOK_SECRET_GRACE_SECONDS"])
    # The dates first: the previous secret is decrypted only during its grace period.
    if changed_at and timezone.now() - changed_at <= grace and integration.webhook_signing_secret_previous:
        secrets.append(integration.webhook_signing_secret_previous)
    return secrets


def integration_webhook_install(*, integration: Integration, url: str = "") -> Integration:
    """Install the help-desk webhook and triggers, and keep the signing secret.

    They point at our webhook URL, or at ``url``: Botpress's webhook URL of the integration,
    which relays what arrives there to us as ``webhook_received``.
    """
    installation = integration_provider(integration=integration).webhook_install(
        url=url or integration_webhook_url(integration=integration),
        previous_state=integration.provider_installation,
    )
    changed = integration_signing_secret_replace(integration=integration, secret=installation.signing_secret)
    integration.provider_installation = installation.state
    integration.save(update_fields=[*changed, "provider_installation", "updated_at"])
    return integration


SECRET_PLACEHOLDER = "<the webhook secret: manage.py webhook_instructions {id}>"


def integration_webhook_instructions(*, integration: Integration, reveal_secret: bool) -> str:
    """The rules an operator creates by hand in the help desk (``HelpDeskProvider.webhook_instructions``).

    For a desk whose webhook is installed by hand (``WebhookInstall.MANUAL``), or by hand after
    all when the API key may not create it. ``reveal_secret``: the shared secret itself (the
    management command, for an operator with shell access), else a placeholder naming that
    command (the admin keeps secrets write-only). An integration without a secret gets a new
    one first, which the rules then carry. "" when the desk has nothing to set up by hand.
    """
    if reveal_secret and not integration.webhook_signing_secret:
        changed = integration_signing_secret_replace(integration=integration, secret=secrets.token_urlsafe(32))
        integration.save(update_fields=[*changed, "updated_at"])
    secret = integration.webhook_signing_secret if reveal_secret else SECRET_PLACEHOLDER.format(id=integration.pk)
    return integration_provider(integration=integration).webhook_instructions(
        url=integration_webhook_url(integration=integration), secret=secret
    )


def integration_webhook_uninstall(*, integration: Integration) -> Integration:
    """Remove the help-desk webhook and triggers we installed; what is already gone is fine."""
    integration_provider(integration=integration).webhook_uninstall(state=integration.provider_installation)
    integration.webhook_signing_secret, integration.provider_installation = "", {}
    integration.save(update_fields=["webhook_signing_secret", "provider_installation", "updated_at"])
    return integration


# --- Botpress, natively ---------------------------------------------------------------------
def integration_botpress_register(*, integration: Integration, webhook_url: str, bot_user_id: str) -> Integration:
    """Botpress's ``register``: remember the bot's user and install the help-desk webhook.

    The webhook points at Botpress's webhook URL, as Botpress's own integrations do, so the
    help desk reaches us through Botpress (``webhook_received``) like everything else.
    """
    if bot_user_id and bot_user_id != integration.botpress_bot_user_id:
        integration.botpress_bot_user_id = bot_user_id
        integration.save(update_fields=["botpress_bot_user_id", "updated_at"])
    return integration_webhook_install(integration=integration, url=webhook_url)


def _secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def integration_url_authenticate(*, integration_id: str, secret: str) -> Integration | None:
    """The integration whose Botpress URLs carry this secret, or None, alike for every failure.

    Digests of equal length are compared, in constant time, even for an unknown integration.
    """
    try:
        integration = Integration.objects.get(pk=uuid.UUID(integration_id), is_active=True)
        expected = integration.botpress_url_secret
    except (ValueError, Integration.DoesNotExist):
        integration, expected = None, ""
    matches = hmac.compare_digest(_secret_digest(secret), _secret_digest(expected or "\0unset"))
    return integration if matches and integration and expected else None


def integration_url_secret_rotate(*, integration: Integration) -> str:
    """A new secret: the old wire and hitl-api URLs stop working at once."""
    integration.botpress_url_secret = botpress_url_secret_new()
    integration.save(update_fields=["botpress_url_secret", "updated_at"])
    return integration.botpress_url_secret


def integration_botpress_endpoints(*, integration: Integration) -> dict[str, str]:
    """The URLs Botpress calls: the wire protocol's, and the hitl-api's ``endpointBaseUrl``."""
    base, secret = settings.PUBLIC_BASE_URL, integration.botpress_url_secret
    return {
        "wire_url": f"{base}/botpress/{integration.pk}/{secret}/",
        "hitl_api_base_url": f"{base}/hitl-api/{integration.pk}/{secret}",
    }


def integration_botpress_names(*, integration: Integration) -> HitlNames:
    return HitlNames.from_config(integration.botpress_names)


def integration_botpress_configure(
    *,
    integration: Integration,
    transport: str | None = None,
    names: dict | None = None,
    hitl_api_webhook_url: str | None = None,
) -> Integration:
    """Choose how the gateway speaks to Botpress; ``None`` leaves a setting as it is."""
    if transport is not None:
        if transport not in BotpressTransport.values:
            raise InvalidInput(f"must be one of {', '.join(BotpressTransport.values)}", field="transport")
        integration.botpress_transport = transport
    if names is not None:
        errors = names_errors(names)
        if errors:
            path, message = next(iter(errors.items()))
            raise InvalidInput(message, field=f"names.{path}".rstrip("."))
        integration.botpress_names = names
    if hitl_api_webhook_url is not None:
        if hitl_api_webhook_url:
            _hitl_api_webhook_url_check(hitl_api_webhook_url)
        integration.hitl_api_webhook_url = hitl_api_webhook_url.rstrip("/")
    if integration.botpress_transport == BotpressTransport.HITL_API and not integration.hitl_api_webhook_url:
        raise InvalidInput("The hitl-api transport needs the bot's webhook URL.", field="hitlApiWebhookUrl")
    integration.save(update_fields=["botpress_transport", "botpress_names", "hitl_api_webhook_url", "updated_at"])
    return integration


def _hitl_api_webhook_url_check(url: str) -> None:
    """Refuse at once what the worker would refuse; a name is resolved and checked at POST time."""
    policy = hitl_api_policy()
    try:
        target = url_target(url, policy=policy)
        try:
            policy.check(ipaddress.ip_address(target.host), target.port, scheme=target.scheme)
        except ValueError:  # a name, not an address
            if not policy.allow and (target.scheme != "https" or target.port not in policy.ports):
                raise AddressRefused("only https on an allowed port") from None
    except AddressRefused as exc:
        raise InvalidInput(
            f"must be an https URL of a public host ({exc}); see HITL_ALLOW_INSECURE_BOTPRESS_URLS",
            field="hitlApiWebhookUrl",
        ) from exc


def integration_botpress_sink(*, integration: Integration, in_request: bool) -> BotpressSink:
    """How this integration reaches Botpress: its runtime API, or the hitl-api's webhooks."""
    if integration.botpress_transport == BotpressTransport.HITL_API:
        webhooks = HitlApiWebhooks(
            webhook_url=integration.hitl_api_webhook_url,
            timeout=_timeout(),
            session=_guarded_session(hitl_api_policy()),
        )
        lookup = integration_botpress(integration=integration, in_request=in_request)
        return HitlApiSink(webhooks=webhooks, namespace=str(integration.pk), lookup=lookup)
    return RuntimeApiSink(
        client=integration_botpress(integration=integration, in_request=in_request),
        names=integration_botpress_names(integration=integration),
    )


def integration_bot_reference(*, integration: Integration) -> str:
    """The bot's reference (external id) in the help desk, for its help-desk user."""
    return integration.botpress_bot_user_id or f"botpress-bot:{integration.botpress_bot_id}"


# --- operators' console ---------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectionAnswer:
    """What one remote service answered a connection test, in words fit for any operator."""

    system: str
    ok: bool
    summary: str
    details: dict = field(default_factory=dict)


def _integration_secrets(integration: Integration) -> list[str]:
    credentials = integration.provider_credentials if isinstance(integration.provider_credentials, dict) else {}
    try:
        secret_fields = provider_spec(integration.provider).secret_fields
    except LookupError:
        secret_fields = ()
    values = (
        integration.botpress_token,
        integration.webhook_signing_secret,
        integration.webhook_signing_secret_previous,
        integration.api_key_hash,
        *(credentials.get(f.name) for f in secret_fields),
        getattr(integration, "botpress_url_secret", ""),
        getattr(integration, "hitl_api_webhook_url", ""),
    )
    # Very short values would redact ordinary words; a real secret is never that short.
    return sorted({v for v in values if isinstance(v, str) and len(v) >= 6}, key=len, reverse=True)


def integration_secrets_redact(*, integration: Integration, text: str) -> str:
    """``text`` without any of the integration's secrets: remote error messages may echo them."""
    for secret in _integration_secrets(integration):
        text = text.replace(secret, "[redacted]")
    return text


def _failure(system: str, exc: Exception, hint: str) -> ConnectionAnswer:
    if isinstance(exc, OutboundError):
        text = str(exc) + (f" ({hint})" if exc.status_code in (401, 403) else "")
        return ConnectionAnswer(system, False, text, {"status_code": exc.status_code})
    return ConnectionAnswer(system, False, f"unexpected error ({type(exc).__name__}: {exc})")


def integration_credentials_hint(*, integration: Integration) -> str:
    """What to check when the help desk refuses the credentials, in the words of its spec."""
    labels = " and ".join(f.label for f in provider_spec(integration.provider).credential_fields)
    return f"check the help-desk {labels}"


def _helpdesk_answer(integration: Integration) -> ConnectionAnswer:
    system = integration.get_provider_display()
    try:
        check = integration_provider(integration=integration).connection_check(
            installation=integration.provider_installation or {}
        )
    except Exception as exc:  # noqa: BLE001 - every failure is an answer to report
        return _failure(system, exc, integration_credentials_hint(integration=integration))
    details = dict(check.details)
    # The endpoint may embed a credential (a Botpress webhook id): say only whether it is ours.
    endpoint = details.pop("webhook_endpoint", None)
    if endpoint is not None:
        details["webhook_points_at_this_gateway"] = endpoint == integration_webhook_url(integration=integration)
    return ConnectionAnswer(system, check.ok, check.summary, details)


def _botpress_answer(integration: Integration) -> ConnectionAnswer:
    client = integration_botpress(integration=integration, in_request=False)
    try:
        if integration.botpress_bot_user_id:
            user = client.user_get(integration.botpress_bot_user_id)
            summary = f"authenticated; the bot's user {user.get('name') or user.get('id')} exists"
        else:
            users = client.users_list(page_size=1)
            summary = f"authenticated; listing the bot's users works ({len(users)} shown)"
    except Exception as exc:  # noqa: BLE001 - every failure is an answer to report
        return _failure("Botpress", exc, "check the Botpress token, bot id and integration id")
    return ConnectionAnswer("Botpress", True, summary, {"bot_id": integration.botpress_bot_id})


def integration_connection_test(*, integration: Integration) -> list[ConnectionAnswer]:
    """Call the help desk and Botpress with the stored credentials and say what each answered.

    Harmless reads only; never raises for a remote failure, and no answer carries a secret.
    """
    answers = [_helpdesk_answer(integration), _botpress_answer(integration)]
    return [
        ConnectionAnswer(a.system, a.ok, integration_secrets_redact(integration=integration, text=a.summary), a.details)
        for a in answers
    ]


def integration_webhook_secret_rotate(*, integration: Integration) -> Integration:
    """Have the help desk issue a new webhook signing secret, and keep it.

    A webhook signed with the new secret that arrives before our save (one round trip) is rejected.
    """
    if not (integration.provider_installation or {}).get("webhook_id"):
        raise InvalidInput("The help-desk webhook is not installed: install it first.", field="integration")
    secret = integration_provider(integration=integration).webhook_secret_rotate(
        state=integration.provider_installation
    )
    changed = integration_signing_secret_replace(integration=integration, secret=secret)
    integration.save(update_fields=[*changed, "updated_at"])
    return integration
