"""The help desk a chaos run (or benchmark) drives, one class per desk, chosen by ``--provider``.

Each wraps the desk's stand-in: the ``create_integration`` flags with its credentials, how a
session's ticket is found, what an agent does, and how the bot's messages are read back from
the ticket (they are counted at the stand-in, never from the gateway's records).
"""

from __future__ import annotations

import html
import re

from providers.freshdesk.provider import reference_tag
from providers.jsm.provider import reference_marker
from standins.freshdesk import FreshdeskStandin
from standins.jsm import JsmStandin
from standins.slack import SlackStandin
from standins.zendesk import ZendeskStandin

ZD_EMAIL, ZD_TOKEN = "chaos@acme.test", "zd_chaos_token"
FD_API_KEY = "fd_chaos_key"
JSM_EMAIL, JSM_TOKEN = "chaos@acme.test", "jsm_chaos_token"
_TAGS = re.compile(r"<[^>]+>")
_AUTHOR = re.compile(r"^.+? \((?:customer|bot)\): ")


class ChaosDesk:
    kind: str
    api_prefix = r"^/api/v2/"  # the desk's API paths, where the run injects its faults
    tickets_per_second: float | None = None  # the desk's own limit on creating tickets, if any
    standin: ZendeskStandin | FreshdeskStandin | JsmStandin | SlackStandin

    def installed(self, webhook_url: str) -> None:
        """After ``create_integration --install-webhook``: what an operator does by hand in the
        desk (Slack: paste the manifest, which sets the app's Request URL). Default: nothing."""
        return None

    def integration_flags(self) -> list[str]:
        """``create_integration`` arguments naming the desk and its credentials."""
        raise NotImplementedError

    def webhooks_outlast_restarts(self) -> None:
        """The desk keeps retrying a webhook through our web restart (as it does for 5xx)."""
        raise NotImplementedError

    def ticket_ids(self, conversation_ids: set[str]) -> dict[str, int]:
        """``{conversation id: ticket id}`` of the tickets created so far."""
        raise NotImplementedError

    def ticket_texts(self, ticket_id: int) -> list[str]:
        """The plain text of every message on the ticket, oldest first."""
        raise NotImplementedError

    def posted_texts(self) -> list[tuple[str, float]]:
        """``(text, time)`` of each message the gateway posted successfully (from the request log)."""
        raise NotImplementedError

    def agent_reply(self, ticket_id: int, agent_id: int, text: str, *, attachments: list[dict]) -> None:
        self.standin.agent_reply(ticket_id, agent_id, text, attachments=attachments)


class ZendeskChaos(ChaosDesk):
    kind = "zendesk"

    def __init__(self, *, webhook_senders: int = 1) -> None:
        self.standin = ZendeskStandin(email=ZD_EMAIL, api_token=ZD_TOKEN, webhook_senders=webhook_senders).start()

    def integration_flags(self) -> list[str]:
        return ["--provider", "zendesk", "--zendesk-email", ZD_EMAIL, "--zendesk-api-token", ZD_TOKEN]

    def webhooks_outlast_restarts(self) -> None:
        self.standin.webhook_max_retries, self.standin.webhook_retry_delay = 12, 0.1

    def ticket_ids(self, conversation_ids: set[str]) -> dict[str, int]:
        return {t["external_id"]: t["id"] for t in self.standin.tickets() if t.get("external_id") in conversation_ids}

    def ticket_texts(self, ticket_id: int) -> list[str]:
        return [c.get("body", "") for c in self.standin.comments(ticket_id)]

    def posted_texts(self) -> list[tuple[str, float]]:
        posted = []
        for entry in self.standin.requests_log(method="PUT"):
            text = ((entry.get("json") or {}).get("ticket") or {}).get("comment", {}).get("body")
            if isinstance(text, str) and 200 <= (entry.get("status") or 0) < 300:
                posted.append((text, entry["timestamp"]))
        return posted


class FreshdeskChaos(ChaosDesk):
    kind = "freshdesk"

    def __init__(self, *, webhook_senders: int = 1) -> None:  # one sender thread suffices here
        self.standin = FreshdeskStandin(api_key=FD_API_KEY).start()

    def integration_flags(self) -> list[str]:
        return ["--provider", "freshdesk", "--freshdesk-api-key", FD_API_KEY]

    def webhooks_outlast_restarts(self) -> None:
        # Freshdesk's own schedule (3 retries, 5 to 60 minutes apart) compressed to 30 retries 1 s
        # apart: longer than the run's web restart, as Freshdesk's outlasts a deploy.
        self.standin.webhook_retry_delays, self.standin.webhook_time_scale = (1.0,) * 30, 1.0

    def ticket_ids(self, conversation_ids: set[str]) -> dict[str, int]:
        by_tag = {reference_tag(c): c for c in conversation_ids}
        found = {}
        for ticket in self.standin.tickets():
            for tag in ticket.get("tags", []):
                if tag in by_tag:
                    found[by_tag[tag]] = ticket["id"]
        return found

    def ticket_texts(self, ticket_id: int) -> list[str]:
        return [c.get("body_text", "") for c in self.standin.conversations(ticket_id)]

    def posted_texts(self) -> list[tuple[str, float]]:
        posted = []
        for entry in self.standin.requests_log(method="POST", path_regex=r"^/api/v2/tickets/\d+/notes$"):
            body = (entry.get("json") or {}).get("body")
            if isinstance(body, str) and 200 <= (entry.get("status") or 0) < 300:
                posted.append((html.unescape(_TAGS.sub("", body)).strip(), entry["timestamp"]))
        return posted


class JsmChaos(ChaosDesk):
    kind = "jsm"
    api_prefix = r"^/rest/"  # servicedeskapi and the platform API

    def __init__(self, *, webhook_senders: int = 1) -> None:  # one sender thread, as Freshdesk's
        self.standin = JsmStandin(email=JSM_EMAIL, api_token=JSM_TOKEN).start()

    def integration_flags(self) -> list[str]:
        return [
            "--provider",
            "jsm",
            "--jsm-email",
            JSM_EMAIL,
            "--jsm-api-token",
            JSM_TOKEN,
            "--jsm-service-desk-id",
            "1",
            "--jsm-request-type-id",
            "10",
        ]

    def webhooks_outlast_restarts(self) -> None:
        # Jira retries for up to ~30 minutes; compressed to 30 retries 1 s apart, longer than the
        # run's web restart, as Jira's outlast a deploy.
        self.standin.webhook_retry_delays = (1.0,) * 30

    def ticket_ids(self, conversation_ids: set[str]) -> dict[str, int]:
        by_marker = {reference_marker(c): c for c in conversation_ids}
        found = {}
        for issue in self.standin.issues():
            description = issue["fields"]["description"] or ""
            for marker, conversation_id in by_marker.items():
                if marker in description:
                    found[conversation_id] = issue["id"]
        return found

    def ticket_texts(self, ticket_id: int) -> list[str]:
        """Each comment's text without the author it names (every comment is the API account's)."""
        return [_AUTHOR.sub("", c.get("body", "")) for c in self.standin.comments(ticket_id)]

    def posted_texts(self) -> list[tuple[str, float]]:
        posted = []
        path = r"^/rest/servicedeskapi/request/\d+/(comment|attachment)$"
        for entry in self.standin.requests_log(method="POST", path_regex=path):
            data = entry.get("json") or {}
            text = data.get("body") if "body" in data else (data.get("additionalComment") or {}).get("body")
            if isinstance(text, str) and 200 <= (entry.get("status") or 0) < 300:
                posted.append((_AUTHOR.sub("", text), entry["timestamp"]))  # as ``ticket_texts``
        return posted


SLACK_TOKEN, SLACK_SECRET, SLACK_CHANNEL = "xoxb-chaos-token", "chaos-signing-secret", "C0CHAOS"


class SlackChaos(ChaosDesk):
    """One agents' channel, one thread per session. Slack takes about one message per second per
    channel (``SlackStandin.post_interval``, with a burst of ``post_burst``), so the bot-to-agent
    direction of the whole run is paced to that rate: the run lasts at least as many seconds as
    messages go to the channel, and their delays grow with the backlog (the figures say so)."""

    kind = "slack"
    api_prefix = r"^/api/"
    tickets_per_second = 1.0  # a root message each, in the one channel

    def __init__(self, *, webhook_senders: int = 1) -> None:
        self.standin = SlackStandin(bot_token=SLACK_TOKEN, signing_secret=SLACK_SECRET, channel_id=SLACK_CHANNEL)
        self.standin.start()

    def integration_flags(self) -> list[str]:
        return [
            "--provider",
            "slack",
            "--slack-bot-token",
            SLACK_TOKEN,
            "--slack-signing-secret",
            SLACK_SECRET,
            "--slack-channel-id",
            SLACK_CHANNEL,
        ]

    def installed(self, webhook_url: str) -> None:
        self.standin.app_configure(request_url=webhook_url)

    def webhooks_outlast_restarts(self) -> None:
        # Slack's own schedule (at once, +1 min, +5 min) at a tenth of its time: longer than the
        # run's web restart, as Slack's outlasts a deploy.
        self.standin.retry_time_scale = 0.1

    def ticket_ids(self, conversation_ids: set[str]) -> dict[str, str]:
        found = {}
        for root in self.standin.tickets():
            reference = root["metadata"]["event_payload"].get("reference")
            if reference in conversation_ids:
                found[reference] = root["ts"]
        return found

    def ticket_texts(self, ticket_id: str) -> list[str]:
        return [html.unescape(m.get("text", "")) for m in self.standin.thread(ticket_id)]

    def posted_texts(self) -> list[tuple[str, float]]:
        posted = []
        for entry in self.standin.requests_log(method="POST", path_regex=r"^/api/chat\.postMessage$"):
            text = (entry.get("json") or {}).get("text")
            if isinstance(text, str) and (entry.get("json") or {}).get("thread_ts") and entry.get("status") == 200:
                posted.append((html.unescape(text).strip(), entry["timestamp"]))
        return posted


DESKS = {"zendesk": ZendeskChaos, "freshdesk": FreshdeskChaos, "jsm": JsmChaos, "slack": SlackChaos}
