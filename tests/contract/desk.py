"""What the provider contract suite needs from a help desk: ``ContractDesk``, one subclass per desk.

A desk's fixture module (``tests/contract/<kind>_fixture.py``) defines ``desk()``, a context
manager yielding a ready ``ContractDesk``: its stand-in started, an adapter built with the
stand-in's credentials, and the webhook installed (through the API, or as an operator would
by hand) towards a URL that only records, so the suite reads what the desk sent.
"""

from __future__ import annotations

import abc
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass

from outbound.http import make_session
from outbound.media import MediaFile
from providers.base import HelpDeskProvider, WebhookInstallation

# Nothing listens here: the stand-in records each delivery attempt (headers and body) anyway.
RECORDING_URL = "http://127.0.0.1:9/contract-webhook"


@dataclass(frozen=True)
class CapturedWebhook:
    headers: Mapping[str, str]  # lower-case names
    body: bytes


def media_fetch_fake(url: str) -> MediaFile:
    """Stands in for the guarded media fetcher: a small file named after the URL."""
    filename = url.rsplit("/", 1)[-1] or "file"
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return MediaFile(filename=filename, content_type=content_type, content=b"contract-test-bytes " + url.encode())


class ContractDesk(abc.ABC):
    kind: str
    adapter: HelpDeskProvider
    standin: object  # a ``standins.server.StandinServer``: ``add_fault``/``clear_faults`` are used
    installation: WebhookInstallation  # the signing secret (or shared secret) and stored state

    # (method, path regex) of the requests the suite breaks with the stand-in's fault injection.
    ticket_create_request: tuple[str, str]
    message_post_request: tuple[str, str]
    # The headers that authenticate the desk's webhooks, and a wrong value for the first one.
    auth_headers: tuple[str, ...]
    forged_value: str

    def __init__(self, standin, *, provider: type[HelpDeskProvider], credentials: Mapping, base_url: str = "") -> None:
        """The desk's adapter with the stand-in's ``credentials`` (at ``base_url``, the stand-in's
        own by default) and the fake media fetcher; our webhook installed towards ``RECORDING_URL``."""
        self.standin = standin
        self.adapter = provider(
            base_url=base_url or standin.base_url,
            credentials=credentials,
            session=make_session(pool_size=4),
            timeout=(2.0, 5.0),
            media_fetcher=media_fetch_fake,
        )
        self.installation = self.adapter.webhook_install(url=RECORDING_URL, previous_state={})
        self._seen = 0

    def agent_create(self, name: str) -> str:
        """A human agent of the desk; returns their id."""
        return str(self.standin.add_agent(name, f"{name.lower().replace(' ', '.')}@acme.test"))

    @abc.abstractmethod
    def agent_reply(self, *, ticket_external_id: str, agent_id: str, text: str) -> None:
        """The agent answers publicly from the desk's own interface (so the desk sends its webhook)."""

    @abc.abstractmethod
    def assign(self, *, ticket_external_id: str, agent_id: str) -> None: ...

    @abc.abstractmethod
    def solve(self, *, ticket_external_id: str, agent_id: str) -> None:
        """Resolve the ticket from the desk's interface (Zendesk "solved", Freshdesk "Resolved")."""

    @abc.abstractmethod
    def ticket_messages(self, *, ticket_external_id: str) -> dict[str, str]:
        """The ticket's messages as the desk stores them: ``{message id: text or HTML}``."""

    @abc.abstractmethod
    def ticket_is_closed(self, *, ticket_external_id: str) -> bool: ...

    def webhooks(self) -> list[CapturedWebhook]:
        """The webhooks the desk sent since the last call, oldest first (waits for delivery): the
        first attempt of each, as the stand-in recorded it (nothing listens at the URL)."""
        self.standin.wait_webhooks_idle()
        deliveries = self.standin.webhook_deliveries()
        fresh, self._seen = deliveries[self._seen :], len(deliveries)
        return [
            CapturedWebhook(headers={k.lower(): v for k, v in d["headers"].items()}, body=d["body"])
            for d in fresh
            if d["attempt"] == 1
        ]

    def forged(self, webhook: CapturedWebhook) -> CapturedWebhook:
        """The same webhook with wrong authentication (a bad signature or shared secret)."""
        return CapturedWebhook(headers={**webhook.headers, self.auth_headers[0]: self.forged_value}, body=webhook.body)

    def unauthenticated(self, webhook: CapturedWebhook) -> CapturedWebhook:
        """The same webhook without its authentication headers."""
        headers = {k: v for k, v in webhook.headers.items() if k not in self.auth_headers}
        return CapturedWebhook(headers=headers, body=webhook.body)
