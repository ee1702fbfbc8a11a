"""Freshdesk for the provider contract suite, through ``standins.freshdesk``."""

from __future__ import annotations

import contextlib

from providers.freshdesk import SECRET_HEADER, FreshdeskProvider
from providers.freshdesk import provider as freshdesk_provider
from standins.freshdesk import FreshdeskStandin
from tests.contract.desk import ContractDesk

API_KEY = "fd_contract_key"


class FreshdeskDesk(ContractDesk):
    kind = "freshdesk"
    ticket_create_request = ("POST", r"^/api/v2/tickets$")
    message_post_request = ("POST", r"^/api/v2/tickets/\d+/notes$")
    auth_headers = (SECRET_HEADER,)
    forged_value = "forged-secret"

    def __init__(self, standin: FreshdeskStandin):
        super().__init__(standin, provider=FreshdeskProvider, credentials={"api_key": API_KEY})

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


@contextlib.contextmanager
def desk():
    standin = FreshdeskStandin(api_key=API_KEY)
    standin.webhook_retry_delays = ()  # one attempt: nothing listens at the recording URL
    freshdesk_provider.RATE_PACER.reset()
    with standin:
        yield FreshdeskDesk(standin)
