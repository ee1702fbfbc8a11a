"""Zendesk Support for the provider contract suite, through ``standins.zendesk``."""

from __future__ import annotations

import contextlib

from outbound.http import make_session
from providers.zendesk import ZendeskProvider
from providers.zendesk.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER
from standins.zendesk import ZendeskStandin
from tests.contract.desk import CapturedWebhook, ContractDesk, media_fetch_fake

EMAIL, TOKEN = "contract@acme.test", "zd_contract_token"
# Nothing listens here: the stand-in records each delivery attempt (headers and body) anyway.
RECORDING_URL = "http://127.0.0.1:9/contract-webhook"


class ZendeskDesk(ContractDesk):
    kind = "zendesk"
    ticket_create_request = ("POST", r"^/api/v2/tickets\.json$")
    message_post_request = ("PUT", r"^/api/v2/tickets/\d+\.json$")

    def __init__(self, standin: ZendeskStandin):
        self.standin = standin
        self.adapter = ZendeskProvider(
            base_url=standin.base_url,
            credentials={"email": EMAIL, "api_token": TOKEN},
            session=make_session(pool_size=4),
            timeout=(2.0, 5.0),
            media_fetcher=media_fetch_fake,
        )
        self.installation = self.adapter.webhook_install(url=RECORDING_URL, previous_state={})
        self._seen = 0

    def agent_create(self, name: str) -> str:
        return str(self.standin.add_agent(name, f"{name.lower().replace(' ', '.')}@acme.test"))

    def agent_reply(self, *, ticket_external_id: str, agent_id: str, text: str) -> None:
        self.standin.agent_reply(int(ticket_external_id), int(agent_id), text)

    def assign(self, *, ticket_external_id: str, agent_id: str) -> None:
        self.standin.assign(int(ticket_external_id), int(agent_id))

    def solve(self, *, ticket_external_id: str, agent_id: str) -> None:
        self.standin.solve(int(ticket_external_id), int(agent_id))

    def ticket_messages(self, *, ticket_external_id: str) -> dict[str, str]:
        return {str(c["id"]): c["body"] for c in self.standin.comments(int(ticket_external_id))}

    def ticket_is_closed(self, *, ticket_external_id: str) -> bool:
        return self.standin.ticket(int(ticket_external_id))["status"] == "closed"

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
        return CapturedWebhook(headers={**webhook.headers, SIGNATURE_HEADER: "Zm9yZ2Vk"}, body=webhook.body)

    def unauthenticated(self, webhook: CapturedWebhook) -> CapturedWebhook:
        headers = {k: v for k, v in webhook.headers.items() if k not in (SIGNATURE_HEADER, TIMESTAMP_HEADER)}
        return CapturedWebhook(headers=headers, body=webhook.body)


@contextlib.contextmanager
def desk():
    standin = ZendeskStandin(email=EMAIL, api_token=TOKEN)
    standin.webhook_max_retries = 0
    with standin:
        yield ZendeskDesk(standin)
