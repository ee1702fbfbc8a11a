"""Jira Service Management for the provider contract suite, through ``standins.jsm``."""

from __future__ import annotations

import contextlib

from outbound.http import make_session
from providers.jsm import SIGNATURE_HEADER, JsmProvider
from providers.jsm import provider as jsm_provider
from standins.jsm import JsmStandin
from tests.contract.desk import CapturedWebhook, ContractDesk, media_fetch_fake

EMAIL, TOKEN = "contract@acme.test", "jsm_contract_token"
# Nothing listens here: the stand-in records each delivery attempt (headers and body) anyway.
RECORDING_URL = "http://127.0.0.1:9/contract-webhook"


class JsmDesk(ContractDesk):
    kind = "jsm"
    ticket_create_request = ("POST", r"^/rest/servicedeskapi/request$")
    message_post_request = ("POST", r"^/rest/servicedeskapi/request/\d+/(comment|attachment)$")

    def __init__(self, standin: JsmStandin):
        self.standin = standin
        credentials = {"email": EMAIL, "api_token": TOKEN, "service_desk_id": "1", "request_type_id": "10"}
        self.adapter = JsmProvider(
            base_url=standin.base_url,
            credentials=credentials,
            session=make_session(pool_size=4),
            timeout=(2.0, 5.0),
            media_fetcher=media_fetch_fake,
        )
        self.installation = self.adapter.webhook_install(url=RECORDING_URL, previous_state={})
        self._seen = 0

    def agent_create(self, name: str) -> str:
        return self.standin.add_agent(name, f"{name.lower().replace(' ', '.')}@acme.test")

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
        return CapturedWebhook(headers={**webhook.headers, SIGNATURE_HEADER: "sha256=" + "0" * 64}, body=webhook.body)

    def unauthenticated(self, webhook: CapturedWebhook) -> CapturedWebhook:
        headers = {k: v for k, v in webhook.headers.items() if k != SIGNATURE_HEADER}
        return CapturedWebhook(headers=headers, body=webhook.body)


@contextlib.contextmanager
def desk():
    standin = JsmStandin(email=EMAIL, api_token=TOKEN)
    standin.webhook_retry_delays = ()  # one attempt: nothing listens at the recording URL
    jsm_provider.FIELDS_CACHE.reset()
    with standin:
        yield JsmDesk(standin)
