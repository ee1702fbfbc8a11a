"""Botpress calling an integration: the wire protocol exactly as Botpress sends it.

- `BotpressCaller` sends one operation per POST with the headers of shared/reference/botpress-api.md
  A.2 (`x-bp-operation`, `x-bot-id`, `x-bot-user-id`, `x-integration-id`, `x-integration-alias`,
  `x-webhook-id`, base64-JSON `x-bp-configuration`) and the bodies of A.3 / D.3.
- `BotpressWebhookRelay` plays `https://webhook.botpress.cloud/<webhookId>`: what arrives there is
  relayed to the integration as `webhook_received`, and the integration's answer goes back.
- `RuntimeApi` is the handful of runtime-API calls the Botpress side makes in tests (the bot
  writing a message, the hitl-api integration creating its users), against the runtime stand-in.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any
from urllib.parse import urlencode

import requests

from .server import HttpError, Request, Response, StandinServer

_NO_BODY = object()
# Headers `requests` or the relay set themselves; the rest is passed through as Botpress does.
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "content-type"}


def _bp_id(prefix: str) -> str:
    return f"{prefix}_01{secrets.token_hex(13).upper()}"


class BotpressCaller:
    """Botpress's side of one integration installed in one bot."""

    def __init__(
        self,
        url: str,
        *,
        bot_id: str,
        bot_user_id: str,
        integration_id: str,
        integration_alias: str = "hitl",
        webhook_id: str | None = None,
        configuration: Any = None,
        configuration_type: str | None = None,
        timeout: float = 15.0,
    ):
        self.url = url
        self.bot_id = bot_id
        self.bot_user_id = bot_user_id
        self.integration_id = integration_id
        self.integration_alias = integration_alias
        self.webhook_id = webhook_id or _bp_id("wh")
        self.configuration = {} if configuration is None else configuration
        self.configuration_type = configuration_type
        self.timeout = timeout
        self.http = requests.Session()

    def headers(self, operation: str) -> dict[str, str]:
        headers = {
            "x-bp-operation": operation,
            "x-bot-id": self.bot_id,
            "x-bot-user-id": self.bot_user_id,
            "x-integration-id": self.integration_id,
            "x-integration-alias": self.integration_alias,
            "x-webhook-id": self.webhook_id,
            "x-bp-configuration": base64.b64encode(json.dumps(self.configuration).encode()).decode(),
            "content-type": "application/json",
        }
        if self.configuration_type:
            headers["x-bp-configuration-type"] = self.configuration_type
        return headers

    def send(
        self,
        operation: str,
        body: Any = _NO_BODY,
        *,
        headers: dict[str, str] | None = None,
        omit: tuple[str, ...] = (),
        raw: bytes | None = None,
        url: str | None = None,
    ) -> requests.Response:
        """POST one operation; `headers` override, `omit` drops headers, `raw` replaces the JSON body."""
        sent = {k: v for k, v in (self.headers(operation) | (headers or {})).items() if k not in omit}
        data = raw if raw is not None else (None if body is _NO_BODY else json.dumps(body).encode())
        return self.http.post(url or self.url, data=data, headers=sent, timeout=self.timeout)

    # --- the operations --------------------------------------------------------------------
    def ping(self) -> requests.Response:
        return self.send("ping")

    def register(self, webhook_url: str) -> requests.Response:
        return self.send("register", {"webhookUrl": webhook_url})

    def unregister(self, webhook_url: str) -> requests.Response:
        return self.send("unregister", {"webhookUrl": webhook_url})

    def action(self, type: str, input: Any) -> requests.Response:
        """`action_triggered`: the bare action name (Botpress strips the alias) and its input."""
        return self.send("action_triggered", {"type": type, "input": input})

    def message_created(self, *, conversation: dict, user: dict, message: dict) -> requests.Response:
        body = {
            "type": message["type"],
            "payload": message["payload"],
            "conversation": conversation,
            "user": user,
            "message": message,
        }
        return self.send("message_created", body)

    def webhook_received(
        self, *, method: str, path: str, query: str, headers: dict[str, str], body: str | None
    ) -> requests.Response:
        req: dict[str, Any] = {"method": method, "path": path, "query": query, "headers": headers}
        if body is not None:
            req["body"] = body
        return self.send("webhook_received", {"req": req})


class BotpressWebhookRelay(StandinServer):
    """`webhook.botpress.cloud`: `<base>/<webhookId>/<path>` is relayed as `webhook_received`."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        super().__init__(port, host)
        self._callers: dict[str, BotpressCaller] = {}
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            self.route(method, r"/(?P<webhook_id>[^/]+)(?P<path>/.*)?", self._relay, public=True)

    def webhook_url(self, caller: BotpressCaller) -> str:
        """The public webhook URL of the caller's integration (what `register` carries)."""
        with self.lock:
            self._callers[caller.webhook_id] = caller
        return f"{self.base_url}/{caller.webhook_id}"

    def _relay(self, req: Request) -> Response:
        caller = self._callers.get(req.params["webhook_id"])
        if caller is None:
            raise HttpError(404, "No integration has this webhook id")
        answer = caller.webhook_received(
            method=req.method,
            path=req.params["path"] or "/",
            query=urlencode(req.query, doseq=True),
            headers=dict(req.headers),
            body=req.body.decode("utf-8") if req.body else None,
        )
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        content_type = answer.headers.get("content-type", "application/json")
        return Response(answer.status_code, answer.content, headers, content_type=content_type)


class RuntimeApi:
    """A few runtime-API calls (`/v1/chat/...`) made as one bot's integration, on the runtime stand-in."""

    def __init__(self, base_url: str, *, token: str, bot_id: str, integration_id: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "x-bot-id": bot_id, "x-integration-id": integration_id}
        self.timeout = timeout
        self.http = requests.Session()

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        response = self.http.request(
            method, f"{self.base_url}/v1/chat{path}", json=body, headers=self.headers, timeout=self.timeout
        )
        if response.status_code >= 400:
            raise AssertionError(f"runtime API {method} {path}: {response.status_code} {response.text}")
        return response.json()

    def user_create(self, *, tags: dict, name: str | None = None) -> dict:
        return self.call("POST", "/users", {"tags": tags} | ({"name": name} if name else {}))["user"]

    def user_get(self, user_id: str) -> dict:
        return self.call("GET", f"/users/{user_id}")["user"]

    def user_get_or_create(self, *, tags: dict) -> dict:
        return self.call("POST", "/users/get-or-create", {"tags": tags})["user"]

    def conversation_create(self, *, channel: str, tags: dict) -> dict:
        return self.call("POST", "/conversations", {"channel": channel, "tags": tags})["conversation"]

    def conversation_get(self, conversation_id: str) -> dict:
        return self.call("GET", f"/conversations/{conversation_id}")["conversation"]

    def conversation_get_or_create(self, *, channel: str, tags: dict) -> dict:
        return self.call("POST", "/conversations/get-or-create", {"channel": channel, "tags": tags})["conversation"]

    def message_create(self, *, conversation_id: str, user_id: str, type: str, payload: dict, tags=None) -> dict:
        body = {"conversationId": conversation_id, "userId": user_id, "type": type, "payload": payload}
        return self.call("POST", "/messages", body | {"tags": tags or {}})["message"]

    def message_get(self, message_id: str) -> dict:
        return self.call("GET", f"/messages/{message_id}")["message"]

    def event_create(self, *, type: str, payload: dict) -> dict:
        return self.call("POST", "/events", {"type": type, "payload": payload})["event"]
