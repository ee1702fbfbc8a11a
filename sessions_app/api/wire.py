"""The integration wire protocol transport: Botpress calls the gateway as its HITL integration.

``POST /botpress/<integration id>/<secret>/`` with ``x-bp-operation``. The SDK checks no
credential, so: the secret in the URL (constant time; a wrong one looks like an unknown
integration), then ``x-bot-id`` and ``x-integration-id`` against the integration. Inputs are
validated by the REST API's serializers and go to the same services; answers are the SDK's
(``botpress.wire``). The URL holds the secret, so Django never logs it: we log without it.
"""

from __future__ import annotations

import structlog
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from botpress import wire
from outbound.http import OutboundError, RetryableError
from sessions_app.api import actions, contract
from sessions_app.api.errors import flatten_errors
from sessions_app.models import BotpressTransport, Integration
from sessions_app.services.errors import InvalidInput, ServiceError, UpstreamUnavailable
from sessions_app.services.integrations import (
    integration_botpress_names,
    integration_botpress_register,
    integration_url_authenticate,
    integration_webhook_uninstall,
)
from sessions_app.services.sessions import message_relay_to_agent
from sessions_app.services.webhooks import webhook_receive

log = structlog.get_logger(__name__)
BODY_METHODS = ("POST", "PUT", "PATCH")  # the SDK reads a body only for these


@csrf_exempt
def botpress_wire(request, integration_id: str, secret: str, subpath: str | None = None):
    integration = integration_url_authenticate(integration_id=integration_id, secret=secret)
    if integration is None:
        return _error(wire.WireError("Unauthorized", "Unknown integration, or wrong secret in the URL."), None)
    if (subpath or "").strip("/") == "health":
        return _unlogged(HttpResponse("ok", content_type="text/plain"))
    try:
        ctx = wire.context_parse({name.lower(): value for name, value in request.headers.items()})
    except wire.ContextMissing as exc:
        return _unlogged(JsonResponse({"error": str(exc)}, status=500))
    operation = ctx.operation
    try:
        if ctx.bot_id != integration.botpress_bot_id or ctx.integration_id != integration.botpress_integration_id:
            raise wire.WireError("Forbidden", "x-bot-id and x-integration-id are not this integration's.")
        if integration.botpress_transport != BotpressTransport.RUNTIME_API:
            raise wire.WireError("Forbidden", "This integration reaches Botpress through the hitl-api, not this URL.")
        handler = OPERATIONS.get(operation)
        if handler is None:
            raise wire.invalid_payload(f"Unknown operation {operation}")
        result = handler(integration, ctx, request.body if request.method in BODY_METHODS else None)
    except wire.WireError as exc:
        return _error(exc, integration, operation)
    except ServiceError as exc:
        return _error(_from_service(exc), integration, operation)
    except OutboundError as exc:  # the help desk, during register/unregister
        status = 500 if isinstance(exc, RetryableError) else 400
        return _error(wire.runtime_error(f"The help desk answered: {exc}", status=status), integration, operation)
    except Exception:
        log.exception("botpress_wire.crashed", integration_id=str(integration.pk), operation=operation)
        return _error(wire.unexpected_error(), integration, operation)
    response = result if isinstance(result, HttpResponse) else JsonResponse(result)
    log.info("botpress_wire", integration_id=str(integration.pk), operation=operation, status=response.status_code)
    return _unlogged(response)


def _unlogged(response: HttpResponse) -> HttpResponse:
    response._has_been_logged = True  # Django would log the path, which holds the secret
    return response


def _error(exc: wire.WireError, integration: Integration | None, operation: str = "") -> HttpResponse:
    log.info(
        "botpress_wire.error",
        integration_id=str(integration.pk) if integration else None,
        operation=operation,
        status=exc.status,
        type=exc.type,
        message=exc.message,
    )
    return _unlogged(JsonResponse(exc.body(), status=exc.status))


def _from_service(exc: ServiceError) -> wire.WireError:
    """A service's refusal as the SDK's error: bad input is InvalidPayload, the rest Runtime."""
    message = f"{exc.field}: {exc.message}" if exc.field else exc.message
    metadata = {"fields": {exc.field: [exc.message]}} if exc.field else None
    if isinstance(exc, InvalidInput):
        return wire.invalid_payload(message, metadata=metadata)
    if isinstance(exc, UpstreamUnavailable):  # transient: a 500 makes Botpress retry
        return wire.runtime_error(message, status=500)
    return wire.runtime_error(message, metadata=metadata)


def _invalid_fields(errors: dict) -> wire.WireError:
    """Field-level errors, named in the message (Botpress shows it) and listed in ``metadata``."""
    fields = flatten_errors(errors)
    summary = "; ".join(f"{path}: {' '.join(messages)}" for path, messages in fields.items())
    return wire.invalid_payload(f"Invalid input: {summary}", metadata={"fields": fields})


def _object(value: object, name: str) -> dict:
    if not isinstance(value, dict):
        raise wire.invalid_payload(f"{name}: must be an object")
    return value


def _string(value: object, name: str, max_length: int = contract.ID_MAX) -> str:
    """A non-empty string no longer than what stores it (an id, unless told otherwise)."""
    if not isinstance(value, str) or not value:
        raise wire.invalid_payload(f"{name}: must be a non-empty string")
    if len(value) > max_length:
        raise wire.invalid_payload(f"{name}: must be at most {max_length} characters")
    return value


# --- operations: each translates and calls one service ----------------------------------------
def _ping(integration: Integration, ctx: wire.WireContext, body: bytes | None) -> dict:
    return {}


def _no_handler(integration: Integration, ctx: wire.WireContext, body: bytes | None) -> dict:
    """Operations the integration has no handler for: the SDK answers 200 ``{}``."""
    return {}


def _register(integration: Integration, ctx: wire.WireContext, body: bytes | None) -> dict:
    webhook_url = _string(_object(wire.body_parse(body), "body").get("webhookUrl"), "webhookUrl", contract.URL_MAX)
    integration_botpress_register(integration=integration, webhook_url=webhook_url, bot_user_id=ctx.bot_user_id)
    return {}


def _unregister(integration: Integration, ctx: wire.WireContext, body: bytes | None) -> dict:
    _object(wire.body_parse(body), "body")
    integration_webhook_uninstall(integration=integration)
    return {}


def _action_triggered(integration: Integration, ctx: wire.WireContext, body: bytes | None) -> dict:
    data = _object(wire.body_parse(body), "body")
    name = data.get("type")
    if not name:
        raise wire.invalid_payload("Missing action type")
    if not isinstance(name, str):
        raise wire.invalid_payload("type: must be a string")
    action = integration_botpress_names(integration=integration).interface_action(name)
    if action is None:
        raise wire.invalid_payload(f"Action {name} not found")
    serializer = actions.action_input(integration, action, _object(data.get("input"), "input"))
    if not serializer.is_valid():
        raise _invalid_fields(serializer.errors)
    return wire.action_response(actions.ACTIONS[action].run(integration, serializer.validated_data))


def _message_created(integration: Integration, ctx: wire.WireContext, body: bytes | None) -> dict:
    data = _object(wire.body_parse(body), "body")
    conversation = _object(data.get("conversation"), "conversation")
    channel, kind = conversation.get("channel"), data.get("type")
    if not isinstance(channel, str) or not isinstance(kind, str):
        raise wire.invalid_payload("conversation.channel and type: must be strings")
    if channel != integration_botpress_names(integration=integration).channel:
        raise wire.invalid_payload(f"Channel {channel} not found")
    if kind not in contract.CHANNEL_PAYLOADS:
        raise wire.invalid_payload(f"Message of type {kind} not found in channel {channel}")
    message = contract.ChannelMessage(data={"type": kind, "payload": data.get("payload")})
    if not message.is_valid():
        raise _invalid_fields(message.errors)
    message_relay_to_agent(
        integration=integration,
        conversation_id=_string(conversation.get("id"), "conversation.id"),
        type=kind,
        payload=message.validated_data["payload"],
        botpress_message_id=_string(_object(data.get("message"), "message").get("id"), "message.id"),
        sender_user_id=_string(_object(data.get("user"), "user").get("id"), "user.id"),
        acknowledge=True,
    )
    return {}


def _webhook_received(integration: Integration, ctx: wire.WireContext, body: bytes | None) -> HttpResponse:
    """A help-desk webhook Botpress relays: the same handler as our own webhook URL.

    Its answer is the handler's ``{status, headers, body}``, which Botpress relays back.
    """
    req = _object(_object(wire.body_parse(body), "body").get("req"), "req")
    if str(req.get("method", "")).upper() != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    headers, raw = req.get("headers") or {}, req.get("body") or ""
    if not isinstance(headers, dict) or not isinstance(raw, str):
        raise wire.invalid_payload("req.headers must be an object and req.body a string")
    outcome = webhook_receive(
        integration_id=str(integration.pk),
        provider=integration.provider,
        headers={str(name): str(value) for name, value in headers.items() if value is not None},
        body=raw.encode(),
        remote_addr=None,
    )
    return JsonResponse(outcome.body, status=outcome.status_code)


OPERATIONS = {
    "ping": _ping,
    "register": _register,
    "unregister": _unregister,
    "action_triggered": _action_triggered,
    "message_created": _message_created,
    "webhook_received": _webhook_received,
    "message_updated": _no_handler,
    "conversation_updated": _no_handler,
    "create_user": _no_handler,
    "create_conversation": _no_handler,
}
