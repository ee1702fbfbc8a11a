"""Client of the webhook endpoints of Botpress Hub's "Human in the Loop API" integration.

``plus/hitl-api`` exposes three endpoints under the bot's webhook URL
(``https://webhook.botpress.cloud/<webhookId>``), described by ``openapi/hitl-api-botpress-webhook.json``.
The integration checks no credential: the webhook id in the URL is the secret, so the URL is
never logged. Bodies are exactly the documented ones; nothing else is sent.
"""

from __future__ import annotations

import requests

from botpress.client import describe_botpress_error
from outbound.http import make_session
from outbound.http import request as http_request


class HitlApiWebhooks:
    def __init__(self, *, webhook_url: str, timeout: tuple[float, float], session: requests.Session | None = None):
        self.webhook_url = webhook_url.rstrip("/")
        self.timeout = timeout
        self.session = session or make_session()

    def __repr__(self) -> str:  # the URL holds the bot's webhook id
        return "HitlApiWebhooks(<webhook url>)"

    def _post(self, path: str, body: dict) -> None:
        http_request(
            self.session,
            "POST",
            f"{self.webhook_url}{path}",
            timeout=self.timeout,
            describe_error=describe_botpress_error,
            json=body,
        )

    def message_from_agent(
        self, *, remote_conversation_id: str, remote_user_id: str, message_type: str, payload: dict
    ) -> None:
        body = {
            "remoteConversationId": remote_conversation_id,
            "remoteUserId": remote_user_id,
            "messageType": message_type,
            "payload": payload,
        }
        self._post("/message-from-agent", body)

    def agent_assigned(self, *, remote_conversation_id: str, remote_user_id: str) -> None:
        self._post("/agent-assigned", {"remoteConversationId": remote_conversation_id, "remoteUserId": remote_user_id})

    def stop_hitl(self, *, remote_conversation_id: str) -> None:
        self._post("/stop-hitl", {"remoteConversationId": remote_conversation_id})
