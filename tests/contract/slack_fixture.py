"""Slack for the provider contract suite, through ``standins.slack``.

A ticket is a thread: "assign" is the Take button, "solve" the Close button, an agent reply a
thread reply. Deliveries go to a URL where nothing listens; the stand-in records each attempt.
"""

from __future__ import annotations

import contextlib

from outbound.http import make_session
from providers.slack import SlackProvider
from providers.slack import provider as slack_provider
from providers.slack.webhooks import SIGNATURE_HEADER
from standins.slack import SlackStandin
from tests.contract.desk import CapturedWebhook, ContractDesk, media_fetch_fake

BOT_TOKEN, SIGNING_SECRET, CHANNEL = "xoxb-contract", "contract-signing-secret", "C0CONTRACT"
RECORDING_URL = "http://127.0.0.1:9/contract-webhook"


class SlackDesk(ContractDesk):
    kind = "slack"
    ticket_create_request = ("POST", r"^/api/chat\.postMessage$")
    message_post_request = ("POST", r"^/api/chat\.postMessage$")

    def __init__(self, standin: SlackStandin):
        self.standin = standin
        self.adapter = SlackProvider(
            base_url=standin.base_url + "/api",
            credentials={"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "channel_id": CHANNEL},
            session=make_session(pool_size=4),
            timeout=(2.0, 5.0),
            media_fetcher=media_fetch_fake,
        )
        self.installation = self.adapter.webhook_install(url=RECORDING_URL, previous_state={})
        standin.app_configure(request_url=RECORDING_URL)  # the operator pasted the manifest
        self._seen = 0

    def agent_create(self, name: str) -> str:
        return self.standin.add_agent(name, f"{name.lower().replace(' ', '.')}@acme.test")

    def agent_reply(self, *, ticket_external_id: str, agent_id: str, text: str) -> None:
        self.standin.agent_reply(ticket_external_id, agent_id, text)

    def assign(self, *, ticket_external_id: str, agent_id: str) -> None:
        self.standin.take(ticket_external_id, agent_id)

    def solve(self, *, ticket_external_id: str, agent_id: str) -> None:
        self.standin.close(ticket_external_id, agent_id)

    def ticket_messages(self, *, ticket_external_id: str) -> dict[str, str]:
        from standins.slack import _plain

        root = self.standin.root(ticket_external_id)
        messages = {root["ts"]: _plain(root)}
        messages.update({m["ts"]: m.get("text", "") for m in self.standin.thread(ticket_external_id)})
        return messages

    def ticket_is_closed(self, *, ticket_external_id: str) -> bool:
        metadata = self.standin.root(ticket_external_id).get("metadata") or {}
        return metadata.get("event_payload", {}).get("state") == "closed"

    def webhooks(self) -> list[CapturedWebhook]:
        self.standin.wait_webhooks_idle()
        deliveries = self.standin.webhook_deliveries()
        fresh, self._seen = deliveries[self._seen :], len(deliveries)
        return [
            CapturedWebhook(headers={k.lower(): v for k, v in d["headers"].items()}, body=d["body"])
            for d in fresh
            if d["attempt"] == 1
        ]

    def forged(self, webhook: CapturedWebhook) -> CapturedWebhook:
        return CapturedWebhook(headers={**webhook.headers, SIGNATURE_HEADER: "v0=" + "0" * 64}, body=webhook.body)

    def unauthenticated(self, webhook: CapturedWebhook) -> CapturedWebhook:
        headers = {k: v for k, v in webhook.headers.items() if k != SIGNATURE_HEADER}
        return CapturedWebhook(headers=headers, body=webhook.body)


@contextlib.contextmanager
def desk():
    standin = SlackStandin(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, channel_id=CHANNEL)
    standin.retry_time_scale = 0  # nothing listens at the recording URL: retries at once
    standin.post_burst = 1000  # the suite posts faster than a channel takes; pacing has its own tests
    slack_provider.PACER.reset()
    with standin:
        slack_provider.PACER.INTERVAL, interval = 0.0, slack_provider.PACER.INTERVAL
        try:
            yield SlackDesk(standin)
        finally:
            slack_provider.PACER.INTERVAL = interval
