"""The integration wire protocol, as the official SDK's server speaks it (Botpress → integration).

One POST per operation, named by ``x-bp-operation``, with the bot's context in headers. What is
answered mirrors ``@botpress/sdk``'s ``serve()`` and integration handler: a missing header gives
500 ``{"error": "Missing bot header"}`` (it throws before the error mapping); a handler's
``InvalidPayload`` or ``Runtime`` error gives its code (400) and ``{id, code, type, message}``;
anything unexpected gives 500 with a ``Runtime`` body, which Botpress treats as transient.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hitl_gateway.limits import json_loads_checked

OPERATIONS = (
    "webhook_received",
    "message_created",
    "message_updated",
    "conversation_updated",
    "action_triggered",
    "register",
    "unregister",
    "ping",
    "create_user",
    "create_conversation",
)
# Required headers, in the order the SDK reads them, with the message of its error.
REQUIRED_HEADERS = (
    ("x-bot-id", "Missing bot header"),
    ("x-bot-user-id", "Missing bot user header"),
    ("x-integration-id", "Missing integration header"),
    ("x-integration-alias", "Missing integration alias header"),
    ("x-webhook-id", "Missing webhook header"),
    ("x-bp-operation", "Missing operation header"),
    ("x-bp-configuration", "Missing configuration header"),
)
# Error type → the code Botpress gives it (``@botpress/client`` errors).
ERROR_CODES = {"InvalidPayload": 400, "Runtime": 400, "Unauthorized": 401, "Forbidden": 403, "PayloadTooLarge": 413}
UNEXPECTED = (
    "An unexpected error occurred in the integration. Bot owners: Check logs for more informations. "
    "Integration owners: throw a RuntimeError to return a custom error message instead."
)


class ContextMissing(Exception):
    """A required header is absent or unreadable: answered before any error mapping."""


class WireError(Exception):
    """An error the SDK would map to ``{id, code, type, message}`` at ``status``."""

    def __init__(self, type: str, message: str, *, status: int | None = None, metadata: dict | None = None):
        super().__init__(message)
        self.type = type
        self.message = message
        self.code = ERROR_CODES[type]
        self.status = status or self.code
        self.metadata = metadata

    def body(self) -> dict:
        body = {"id": error_id(), "code": self.code, "type": self.type, "message": self.message}
        if self.metadata:
            body["metadata"] = self.metadata
        return body


def invalid_payload(message: str, **kwargs: Any) -> WireError:
    return WireError("InvalidPayload", message, **kwargs)


def runtime_error(message: str, **kwargs: Any) -> WireError:
    return WireError("Runtime", message, **kwargs)


def unexpected_error() -> WireError:
    """What the SDK answers for an error that is neither Runtime nor InvalidPayload: 500, Runtime body."""
    return WireError("Runtime", UNEXPECTED, status=500)


def error_id() -> str:
    """An error id in the Botpress client's format: ``err_<YYYYMMDDHHMMSS>x<8 upper-case hex>``."""
    return f"err_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}x{secrets.token_hex(4).upper()}"


@dataclass(frozen=True)
class WireContext:
    bot_id: str
    bot_user_id: str
    integration_id: str
    integration_alias: str
    webhook_id: str
    operation: str
    configuration: Any
    configuration_type: str | None = None


def context_parse(headers: Mapping[str, str]) -> WireContext:
    """The bot's context from lower-cased headers; raises ``ContextMissing`` like the SDK."""
    values = {}
    for name, message in REQUIRED_HEADERS:
        value = headers.get(name)
        if not value:
            raise ContextMissing(message)
        values[name] = value
    try:
        configuration = json_loads_checked(base64.b64decode(values["x-bp-configuration"], validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ContextMissing(f"Invalid configuration header: {exc}") from None
    return WireContext(
        bot_id=values["x-bot-id"],
        bot_user_id=values["x-bot-user-id"],
        integration_id=values["x-integration-id"],
        integration_alias=values["x-integration-alias"],
        webhook_id=values["x-webhook-id"],
        operation=values["x-bp-operation"],
        configuration=configuration,
        configuration_type=headers.get("x-bp-configuration-type") or None,
    )


def body_parse(body: bytes | None) -> Any:
    """The SDK's ``parseBody``: no body is "Missing body", bad JSON an InvalidPayload with its reason.

    Also refused as bad JSON: nesting deeper than ``limits.MAX_JSON_DEPTH`` and NaN/infinities;
    strings come back without NUL or unpaired surrogates (``limits.json_loads_checked``).
    """
    if not body:
        raise invalid_payload("Missing body")
    try:
        return json_loads_checked(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_payload(f"Invalid JSON body: {exc}") from None


def action_response(output: Any) -> dict:
    """``action_triggered``'s answer; the gateway bills nothing, so the cost is 0."""
    return {"output": output, "meta": {"cost": 0}}
