"""Freshdesk for the provider contract suite, through ``standins.freshdesk``."""

from __future__ import annotations

import contextlib

from outbound.http import make_session
from providers.freshdesk import SECRET_HEADER, FreshdeskProvider
from providers.freshdesk import provider as freshdesk_provider
from standins.freshdesk import FreshdeskStandin
from tests.contract.desk import CapturedWebhook, ContractDesk, media_fetch_fake

API_KEY = "fd_contract_key"
# Nothing listens here: the stand-in records each delivery attempt (headers and body) anyway.
RECORDING_URL = "http://127.0.0.1:9/contract-webhook"


class FreshdeskDesk(ContractDesk):
    kind = "freshdesk"
    ticket_create_request = ("POST", r"^/api/v2/tickets$")
    message_post_request = ("POST", r"^/api/v2/tickets/\d+/notes$")

    def __init__(self, standin: FreshdeskStandin):
        self.standin = standin
        self.adapter = FreshdeskProvider(
            base_url=standin.base_url,
            credentials={"api_key": API_KEY},
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
        self.standin.resolve(int(ticket_external_id), int(agent_id))

    def ticket_messages(self, *, ticket_external_id: str) -> dict[str, str]:
        ticket = self.standin.ticket(int(ticket_external_id))
        messages = {f"description-{ticket['id']}": ticket["description"]}
        messages.update({str(c["id"]): c["body"] for c in self.standin.conversations(int(ticket_external_id))})
        return messages

    def ticket_is_closed(self, *, ticket_external_id: str) -> bool:
        return self.standin.ticket(int(ticket_external_id))["status"] == 5

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
        return CapturedWebhook(headers={**webhook.headers, SECRET_HEADER: "forged-secret"}, body=webhook.body)

    def unauthenticated(self, webhook: CapturedWebhook) -> CapturedWebhook:
        headers = {k: v for k, v in webhook.headers.items() if k != SECRET_HEADER}
        return CapturedWebhook(headers=headers, body=webhook.body)


@contextlib.contextmanager
def desk():
    standin = FreshdeskStandin(api_key=API_KEY)
    standin.webhook_retry_delays = ()  # one attempt: nothing listens at the recording URL
    freshdesk_provider.RATE_PACER.reset()
    with standin:
        yield FreshdeskDesk(standin)
