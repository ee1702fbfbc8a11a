"""A bot with Botpress Hub's "Human in the Loop API" integration (`plus/hitl-api`) installed.

Plays both sides of that integration's contract, as its published source behaves:
- it calls the external service (`<endpointBaseUrl>/ping`, `/createRemoteUser`,
  `/createRemoteConversation`, `/botSendsMessage`, `/closeRemoteTicket`) with the bodies the
  integration sends: zod objects strip unknown keys, so `createRemoteConversation` carries only
  `title` and `description` of the plugin's startHitl input;
- it serves the integration's webhook endpoints (`<webhook URL>/message-from-agent`,
  `/agent-assigned`, `/stop-hitl`) and does what its handler does, on the runtime stand-in:
  get-or-create the conversation and user tagged `externalId`, then create the message or event.

Every body, in both directions, and every answer of the external service are validated against
the two OpenAPI documents, strictly (no property the document does not name); what fails is kept
in `violations()`. Fault injection on the webhook endpoints is StandinServer's.
"""

from __future__ import annotations

import copy
import json
import secrets
from pathlib import Path
from typing import Any

import jsonschema
import requests

from .botpress_caller import RuntimeApi
from .server import HttpError, Request, Response, StandinServer

OPENAPI_DIR = Path(__file__).resolve().parent.parent / "botpress" / "openapi"
EXTERNAL_SERVICE = "hitl-api-external-service.json"
BOTPRESS_WEBHOOK = "hitl-api-botpress-webhook.json"
TAG = "externalId"
BOT_USER = "BOT"
# What the integration's zod schemas keep of the plugin's startHitl input.
CONVERSATION_FIELDS = ("title", "description", "messages")


def openapi_document(name: str) -> dict:
    return json.loads((OPENAPI_DIR / name).read_text())


def _strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` wherever properties are listed and it is unset."""
    if isinstance(schema, dict):
        strict = {key: _strict(value) for key, value in schema.items()}
        if "properties" in strict and "additionalProperties" not in strict:
            strict["additionalProperties"] = False
        return strict
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


class OpenApiContract:
    """One OpenAPI document's request and response schemas, checked with JSON Schema."""

    def __init__(self, document: dict):
        self.document = document
        self.components = _strict(document.get("components", {}))

    def _operation(self, path: str) -> dict:
        return self.document["paths"][path]["post"]

    def request_schema(self, path: str) -> dict | None:
        content = self._operation(path).get("requestBody", {}).get("content", {})
        return content.get("application/json", {}).get("schema")

    def response_schema(self, path: str, status: str = "200") -> dict | None:
        content = self._operation(path)["responses"].get(status, {}).get("content", {})
        return content.get("application/json", {}).get("schema")

    def errors(self, schema: dict | None, instance: Any) -> list[str]:
        if schema is None:
            return []
        root = _strict(copy.deepcopy(schema)) | {"components": self.components}
        validator = jsonschema.Draft7Validator(root)
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in validator.iter_errors(instance)
        ]


class HitlApiBot(StandinServer):
    """The bot's `plus/hitl-api` integration, on top of the runtime stand-in `runtime`."""

    def __init__(
        self,
        *,
        runtime: RuntimeApi,
        endpoint_base_url: str = "",
        webhook_id: str | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ):
        super().__init__(port, host)
        self.runtime = runtime
        self.endpoint_base_url = endpoint_base_url  # the integration's configuration
        self.webhook_id = webhook_id or f"wh_{secrets.token_hex(12)}"
        self.external_service = OpenApiContract(openapi_document(EXTERNAL_SERVICE))
        self.botpress_webhook = OpenApiContract(openapi_document(BOTPRESS_WEBHOOK))
        self.http = requests.Session()
        self.reset_state()
        self.route(
            "POST",
            r"/(?P<webhook_id>[^/]+)(?P<endpoint>/message-from-agent|/agent-assigned|/stop-hitl)",
            self._webhook,
            public=True,
        )

    @property
    def webhook_url(self) -> str:
        """What Botpress shows as the integration's webhook URL (`https://webhook.botpress.cloud/<id>`)."""
        return f"{self.base_url}/{self.webhook_id}"

    def reset_state(self) -> None:
        self._calls: list[dict[str, Any]] = []

    def calls(self, endpoint: str | None = None, direction: str | None = None) -> list[dict[str, Any]]:
        """Every exchange: direction `to_service` (we called it) or `to_bot` (it called a webhook)."""
        with self.lock:
            return copy.deepcopy(
                [c for c in self._calls if endpoint in (None, c["endpoint"]) and direction in (None, c["direction"])]
            )

    def violations(self) -> list[dict[str, Any]]:
        return [call for call in self.calls() if call["violations"]]

    # ----------------------------------------------------------------- Botpress → the service
    def call(self, endpoint: str, body: Any) -> requests.Response:
        """POST `<endpointBaseUrl><endpoint>` and check what went and what came back."""
        response = self.http.post(f"{self.endpoint_base_url}{endpoint}", json=body, timeout=15)
        violations = self.external_service.errors(self.external_service.request_schema(endpoint), body)
        answer: Any = None
        if response.ok:
            try:
                answer = response.json() if response.content else None
            except ValueError:
                violations.append("(answer): not JSON")
            schema = self.external_service.response_schema(endpoint)
            if schema is not None:
                violations += [f"answer {v}" for v in self.external_service.errors(schema, answer)]
        with self.lock:
            self._calls.append(
                {
                    "direction": "to_service",
                    "endpoint": endpoint,
                    "body": body,
                    "status": response.status_code,
                    "answer": answer,
                    "violations": violations,
                }
            )
        return response

    def _ok(self, response: requests.Response) -> dict:
        if not response.ok:
            raise AssertionError(f"the service refused: {response.status_code} {response.text}")
        return response.json()

    def register(self) -> requests.Response:
        """Saving the integration in Botpress pings the service."""
        return self.call("/ping", {"type": "ping"})

    def create_user(self, *, name: str, email: str | None = None, picture_url: str | None = None) -> str:
        """The plugin's createUser: the remote user, then a Botpress user tagged with its id."""
        payload = {"role": "end-user", "name": name}
        payload |= {"pictureUrl": picture_url} if picture_url else {}
        payload |= {"email": email} if email else {}
        remote = self._ok(self.call("/createRemoteUser", {"type": "createRemoteUser", "payload": payload}))
        return self.runtime.user_create(tags={TAG: f"{remote['id']}"})["id"]

    def start_hitl(self, *, user_id: str, title: str | None = None, description: str | None = None, **rest) -> str:
        """The plugin's startHitl: `userId`, `hitlSession`, `messageHistory` are stripped on the way."""
        plugin_input = {"userId": user_id, "title": title, "description": description, **rest}
        payload = {k: v for k, v in plugin_input.items() if k in CONVERSATION_FIELDS and v is not None}
        remote = self._ok(
            self.call("/createRemoteConversation", {"type": "createRemoteConversation", "payload": payload})
        )
        return self.runtime.conversation_create(channel="hitl", tags={TAG: remote["id"]})["id"]

    def send_message(self, conversation_id: str, payload: dict) -> requests.Response:
        """A message the plugin put in the HITL conversation (`payload.userId` = its author, if any)."""
        conversation = self.runtime.conversation_get(conversation_id)
        author = self.runtime.user_get(payload["userId"])["tags"][TAG] if payload.get("userId") else BOT_USER
        body = {
            "type": "botSendsMessage",
            "remoteConversationId": conversation["tags"][TAG],
            "remoteUserId": author,
            "payload": payload,
        }
        return self.call("/botSendsMessage", body)

    def stop_hitl(self, conversation_id: str) -> requests.Response:
        """stopHitl sends Botpress's id of the conversation, as the integration does."""
        body = {"type": "closeRemoteTicket", "payload": {"botpressConversationId": conversation_id}}
        return self.call("/closeRemoteTicket", body)

    # ----------------------------------------------------------------- the service → Botpress
    def _webhook(self, req: Request) -> Response:
        if req.params["webhook_id"] != self.webhook_id:
            raise HttpError(404, "No integration has this webhook id")
        endpoint = req.params["endpoint"]
        body = req.json()
        violations = self.botpress_webhook.errors(self.botpress_webhook.request_schema(endpoint), body)
        call = {"direction": "to_bot", "endpoint": endpoint, "body": body, "status": 200, "violations": violations}
        self._calls.append(call)
        if violations:
            call["status"] = 400
            raise HttpError(400, "; ".join(violations))
        conversation = self.runtime.conversation_get_or_create(channel="hitl", tags={TAG: body["remoteConversationId"]})
        if endpoint == "/stop-hitl":
            self.runtime.event_create(type="hitlStopped", payload={"conversationId": conversation["id"]})
            return Response(200, {})
        user = self.runtime.user_get_or_create(tags={TAG: body["remoteUserId"]})
        if endpoint == "/agent-assigned":
            self.runtime.event_create(
                type="hitlAssigned", payload={"conversationId": conversation["id"], "userId": user["id"]}
            )
        else:
            self.runtime.message_create(
                conversation_id=conversation["id"],
                user_id=user["id"],
                type=body["messageType"],
                payload=body["payload"],
            )
        return Response(200, {})
