"""Slack for the provider contract suite, through ``standins.slack``.

A ticket is a thread: "assign" is the Take button, "solve" the Close button, an agent reply a
thread reply. Deliveries go to a URL where nothing listens; the stand-in records each attempt.
"""

from __future__ import annotations

import contextlib

from providers.slack import SlackProvider
from providers.slack import provider as slack_provider
from providers.slack.webhooks import SIGNATURE_HEADER
from standins.slack import SlackStandin
from tests.contract.desk import RECORDING_URL, ContractDesk

BOT_TOKEN, SIGNING_SECRET, CHANNEL = "xoxb-contract", "contract-signing-secret", "C0CONTRACT"


class SlackDesk(ContractDesk):
    kind = "slack"
    ticket_create_request = ("POST", r"^/api/chat\.postMessage$")
    message_post_request = ("POST", r"^/api/chat\.postMessage$")
    auth_headers = (SIGNATURE_HEADER,)
    forged_value = "v0=" + "0" * 64

    def __init__(self, standin: SlackStandin):
        credentials = {"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "channel_id": CHANNEL}
        super().__init__(standin, provider=SlackProvider, credentials=credentials, base_url=standin.base_url + "/api")
        standin.app_configure(request_url=RECORDING_URL)  # the operator pasted the manifest

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
