"""Jira Service Management for the provider contract suite, through ``standins.jsm``."""

from __future__ import annotations

import contextlib

from providers.jsm import SIGNATURE_HEADER, JsmProvider
from providers.jsm import provider as jsm_provider
from standins.jsm import JsmStandin
from tests.contract.desk import ContractDesk

EMAIL, TOKEN = "contract@acme.test", "jsm_contract_token"


class JsmDesk(ContractDesk):
    kind = "jsm"
    ticket_create_request = ("POST", r"^/rest/servicedeskapi/request$")
    message_post_request = ("POST", r"^/rest/servicedeskapi/request/\d+/(comment|attachment)$")
    auth_headers = (SIGNATURE_HEADER,)
    forged_value = "sha256=" + "0" * 64

    def __init__(self, standin: JsmStandin):
        credentials = {"email": EMAIL, "api_token": TOKEN, "service_desk_id": "1", "request_type_id": "10"}
        super().__init__(standin, provider=JsmProvider, credentials=credentials)

    def agent_reply(self, *, ticket_external_id: str, agent_id: str, text: str) -> None:
        self.standin.agent_reply(ticket_external_id, agent_id, text)

    def assign(self, *, ticket_external_id: str, agent_id: str) -> None:
        self.standin.assign(ticket_external_id, agent_id)

    def solve(self, *, ticket_external_id: str, agent_id: str) -> None:
        self.standin.resolve(ticket_external_id, agent_id)

    def ticket_messages(self, *, ticket_external_id: str) -> dict[str, str]:
        issue = self.standin.issue(ticket_external_id)
        messages = {f"description-{issue['id']}": issue["fields"]["description"] or ""}
        messages.update({c["id"]: c["body"] for c in self.standin.comments(ticket_external_id)})
        return messages

    def ticket_is_closed(self, *, ticket_external_id: str) -> bool:
        return self.standin.issue(ticket_external_id)["fields"]["status"]["statusCategory"]["key"] == "done"


@contextlib.contextmanager
def desk():
    standin = JsmStandin(email=EMAIL, api_token=TOKEN)
    standin.webhook_retry_delays = ()  # one attempt: nothing listens at the recording URL
    jsm_provider.FIELDS_CACHE.reset()
    with standin:
        yield JsmDesk(standin)
