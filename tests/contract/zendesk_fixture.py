"""Zendesk Support for the provider contract suite, through ``standins.zendesk``."""

from __future__ import annotations

import contextlib

from providers.zendesk import ZendeskProvider
from providers.zendesk.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER
from standins.zendesk import ZendeskStandin
from tests.contract.desk import ContractDesk

EMAIL, TOKEN = "contract@acme.test", "zd_contract_token"


class ZendeskDesk(ContractDesk):
    kind = "zendesk"
    ticket_create_request = ("POST", r"^/api/v2/tickets\.json$")
    message_post_request = ("PUT", r"^/api/v2/tickets/\d+\.json$")
    auth_headers = (SIGNATURE_HEADER, TIMESTAMP_HEADER)
    forged_value = "Zm9yZ2Vk"

    def __init__(self, standin: ZendeskStandin):
        super().__init__(standin, provider=ZendeskProvider, credentials={"email": EMAIL, "api_token": TOKEN})

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


@contextlib.contextmanager
def desk():
    standin = ZendeskStandin(email=EMAIL, api_token=TOKEN)
    standin.webhook_max_retries = 0
    with standin:
        yield ZendeskDesk(standin)
