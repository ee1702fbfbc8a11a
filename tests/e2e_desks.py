"""One help desk as the parametrised end-to-end suite drives it (``tests/test_e2e_desks.py``).

Each ``E2EDesk`` wraps that desk's stand-in: the credentials an integration is created with,
where the gateway's webhook lives, how to find the ticket of a conversation and read what is
on it, what an agent does in the desk's UI, and webhooks that must be refused. The suite's
assertions are the same for every desk; only these few translations differ.
"""

from __future__ import annotations

import abc
import html
import json
import re
from dataclasses import dataclass

from tests.conftest import ZD_EMAIL, ZD_TOKEN

FD_API_KEY = "fd_test_api_key"
JSM_EMAIL, JSM_TOKEN = "gateway@acme.test", "jsm_test_api_token"


# --- Botpress's side, the same for every desk -------------------------------------------------
def create_user(gateway, name="Ada Lovelace", email="ada@example.com") -> str:
    response = gateway.action(
        "createUser", {"name": name, "email": email, "pictureUrl": "https://cdn.example.com/a.png"}
    )
    assert response.status_code == 200, response.text
    return response.json()["userId"]


def start_hitl(gateway, user_id, **extra) -> str:
    body = {"userId": user_id, "title": "Refund request", "messageHistory": []} | extra
    response = gateway.action("startHitl", body)
    assert response.status_code == 200, response.text
    return response.json()["conversationId"]


def zendesk_ticket_for(gateway, conversation_id) -> dict:
    """The Zendesk ticket of a conversation, for the Zendesk-only suites (``gateway`` fixture)."""
    return gateway.zendesk.wait_for(
        lambda: next((t for t in gateway.zendesk.tickets() if t.get("external_id") == conversation_id), None),
        timeout=20,
    )


@dataclass(frozen=True)
class DeskMessage:
    """A message as the desk stores it on the ticket (after its first, the transcript)."""

    id: str
    text: str
    author_id: str
    attachments: int


class E2EDesk(abc.ABC):
    kind: str
    #: (method, path regex) of the ticket-creation request, for the stand-in's fault injection.
    ticket_create_request: tuple[str, str]
    #: (method, path regex) of the look-up by our reference after a lost answer.
    ticket_find_request: tuple[str, str]
    #: The priority the suite asks for in ``hitlSession``, as the desk stores it.
    high_priority: object
    #: Whether a webhook only names the ticket, so the gateway reads it (and finds nothing before
    #: its ticket row is stored).
    doorbell: bool
    #: Whether the same delivery twice has one key (dropped on arrival); else each is stored and
    #: the message id dedupes what the read returns.
    repeat_dropped_by_key: bool = True
    #: Whether an agent's webhook carries our reference, so it finds its session without the Ticket row.
    carries_reference: bool = True

    def __init__(self, standin):
        self.standin = standin

    @abc.abstractmethod
    def credentials(self) -> dict: ...

    def installed(self, webhook_url: str) -> None:
        """After the webhook is installed: what an operator does by hand in the desk (Slack's
        manifest sets the app's Request URL). Default: nothing."""
        return None

    @abc.abstractmethod
    def ticket(self, conversation_id: str) -> dict | None:
        """The desk's ticket carrying our reference (the conversation id), if created."""

    @abc.abstractmethod
    def ticket_fields(self, ticket: dict) -> tuple[str, object, str]:
        """(subject, priority, requester id)."""

    @abc.abstractmethod
    def external_user_id(self, botpress_user_id: str) -> str: ...

    @abc.abstractmethod
    def transcript(self, ticket_id) -> str: ...

    @abc.abstractmethod
    def messages(self, ticket_id) -> list[DeskMessage]:
        """Every message after the ticket's first (the transcript), oldest first."""

    @abc.abstractmethod
    def user_name(self, user_id: str) -> str: ...

    # The agents' actions: the stand-in's own by default.
    def add_agent(self, name: str, email: str) -> int:
        return self.standin.add_agent(name, email)

    def assign(self, ticket_id, agent_id) -> None:
        self.standin.assign(ticket_id, agent_id)

    def agent_reply(self, ticket_id, agent_id, text: str, *, attachments: list[dict] | None = None) -> None:
        self.standin.agent_reply(ticket_id, agent_id, text, attachments=attachments)

    def solve_with_reply(self, ticket_id, agent_id, text: str) -> None:
        """The agent's last reply, then the ticket resolved (Zendesk: one "submit as solved")."""
        self.standin.agent_reply(ticket_id, agent_id, text)
        self.standin.resolve(ticket_id, agent_id)

    @abc.abstractmethod
    def is_closed(self, ticket_id) -> bool: ...

    @abc.abstractmethod
    def refused_webhooks(self, secret: str) -> tuple[bytes, dict[str, dict]]:
        """A webhook body and the header sets that must all be refused (401) with it."""

    @abc.abstractmethod
    def accepted_webhook_headers(self, secret: str, body: bytes) -> dict: ...

    @abc.abstractmethod
    def invalid_webhooks(self) -> list[tuple[bytes, str]]:
        """Bodies that authenticate but are malformed, each with the field a 400 must name."""


class ZendeskE2E(E2EDesk):
    kind = "zendesk"
    ticket_create_request = ("POST", r"^/api/v2/tickets")
    ticket_find_request = ("GET", r"^/api/v2/tickets\.json$")
    high_priority = "high"
    doorbell = False

    def credentials(self) -> dict:
        return {"email": ZD_EMAIL, "api_token": ZD_TOKEN}

    def ticket(self, conversation_id):
        return next((t for t in self.standin.tickets() if t.get("external_id") == conversation_id), None)

    def ticket_fields(self, ticket):
        return ticket["subject"], ticket["priority"], str(ticket["requester_id"])

    def external_user_id(self, botpress_user_id):
        return str(next(u for u in self.standin.users() if u.get("external_id") == botpress_user_id)["id"])

    def transcript(self, ticket_id):
        return self.standin.comments(ticket_id)[0]["body"]

    def messages(self, ticket_id):
        return [
            DeskMessage(str(c["id"]), c["body"], str(c["author_id"]), len(c["attachments"]))
            for c in self.standin.comments(ticket_id)[1:]
        ]

    def user_name(self, user_id):
        return next(u for u in self.standin.users() if str(u["id"]) == user_id)["name"]

    def solve_with_reply(self, ticket_id, agent_id, text):
        self.standin.agent_reply(ticket_id, agent_id, text, solve=True)

    def is_closed(self, ticket_id):
        return self.standin.ticket(ticket_id)["status"] == "closed"

    def refused_webhooks(self, secret):
        from datetime import UTC, datetime, timedelta

        from providers.zendesk.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_compute

        body = json.dumps({"type": "ticketAssigned", "ticketId": "1", "externalId": "x"}).encode()
        now = datetime.now(UTC)
        fresh = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        stale = (now - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def signed(timestamp, key=secret, payload=body):
            return {
                SIGNATURE_HEADER: signature_compute(secret=key, timestamp=timestamp, body=payload),
                TIMESTAMP_HEADER: timestamp,
            }

        return body, {
            "missing": {},
            "forged": signed(fresh, key="not-the-secret"),
            "stale": signed(stale),  # outside the replay window
            "tampered": signed(fresh, payload=body + b" "),  # signed for another body
        }

    def accepted_webhook_headers(self, secret, body):
        from datetime import UTC, datetime

        from providers.zendesk.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_compute

        fresh = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {SIGNATURE_HEADER: signature_compute(secret=secret, timestamp=fresh, body=body), TIMESTAMP_HEADER: fresh}

    def invalid_webhooks(self):
        return [(b"not json", "body"), (json.dumps({"type": "ticketAssigned"}).encode(), "ticketId")]


class FreshdeskE2E(E2EDesk):
    kind = "freshdesk"
    ticket_create_request = ("POST", r"^/api/v2/tickets$")
    ticket_find_request = ("GET", r"^/api/v2/(search/)?tickets$")
    high_priority = 3
    doorbell = True
    repeat_dropped_by_key = False
    carries_reference = False

    def credentials(self) -> dict:
        return {"api_key": FD_API_KEY}

    def ticket(self, conversation_id):
        from providers.freshdesk.provider import reference_tag

        tag = reference_tag(conversation_id)
        return next((t for t in self.standin.tickets() if tag in t.get("tags", [])), None)

    def ticket_fields(self, ticket):
        return ticket["subject"], ticket["priority"], str(ticket["requester_id"])

    def external_user_id(self, botpress_user_id):
        contacts = self.standin.contacts()
        return str(next(c for c in contacts if c.get("unique_external_id") == botpress_user_id)["id"])

    def transcript(self, ticket_id):
        return self.standin.ticket(ticket_id)["description_text"]

    def messages(self, ticket_id):
        return [
            DeskMessage(str(c["id"]), c["body_text"], str(c["user_id"]), len(c["attachments"]))
            for c in self.standin.conversations(ticket_id)
        ]

    def user_name(self, user_id):
        return next(c for c in self.standin.contacts() if str(c["id"]) == user_id)["name"]

    def is_closed(self, ticket_id):
        return self.standin.ticket(ticket_id)["status"] == 5

    def refused_webhooks(self, secret):
        from providers.freshdesk import SECRET_HEADER

        body = json.dumps({"ticket_id": "1", "status": "Open", "performer": "agent"}).encode()
        return body, {
            "missing": {},
            "forged": {SECRET_HEADER: secret[:-1] + ("A" if secret[-1] != "A" else "B")},
            "empty": {SECRET_HEADER: ""},
        }

    def accepted_webhook_headers(self, secret, body):
        from providers.freshdesk import SECRET_HEADER

        return {SECRET_HEADER: secret}

    def invalid_webhooks(self):
        return [(b"not json", "body"), (json.dumps({"status": "2"}).encode(), "ticket_id")]


class JsmE2E(E2EDesk):
    """Jira Service Management: every comment is the API account's, so a message's author is
    the one its text names ("Ada Lovelace (customer): ..."), as an agent reads it."""

    kind = "jsm"
    ticket_create_request = ("POST", r"^/rest/servicedeskapi/request$")
    ticket_find_request = ("GET", r"^/rest/servicedeskapi/request$")
    high_priority = "High"
    doorbell = True
    repeat_dropped_by_key = True  # X-Atlassian-Webhook-Identifier
    carries_reference = False  # a doorbell: it names the issue only

    _PREFIX = re.compile(r"^(?P<name>.+?) \((?P<role>customer|bot)\): (?P<text>.*)$", re.DOTALL)
    _FILES = re.compile(r"^(?:\[\^[^\]]+\]|![^!]+!)$", re.MULTILINE)

    def credentials(self) -> dict:
        return {"email": JSM_EMAIL, "api_token": JSM_TOKEN, "service_desk_id": "1", "request_type_id": "10"}

    def ticket(self, conversation_id):
        from providers.jsm.provider import reference_marker

        marker = reference_marker(conversation_id)
        return next((i for i in self.standin.issues() if marker in (i["fields"]["description"] or "")), None)

    def ticket_fields(self, ticket):
        fields = ticket["fields"]
        return fields["summary"], fields["priority"]["name"], fields["reporter"]["accountId"]

    def external_user_id(self, botpress_user_id):
        from providers.jsm.provider import reference_marker

        key = reference_marker(botpress_user_id)
        return next(account for account, name in self.standin.user_properties() if name == key)

    def transcript(self, ticket_id):
        return self.standin.issue(ticket_id)["fields"]["description"]

    def messages(self, ticket_id):
        messages = []
        for comment in self.standin.comments(ticket_id):
            match = self._PREFIX.match(comment["body"])
            if match is None:
                continue  # an agent's comment
            files = self._FILES.findall(match["text"])
            text = self._FILES.sub("", match["text"]).strip()
            if match["role"] == "bot":
                author = f"bot:{match['name']}"
            else:
                author = next(a["accountId"] for a in self.standin.accounts() if a["displayName"] == match["name"])
            messages.append(DeskMessage(comment["id"], text, author, len(files)))
        return messages

    def user_name(self, user_id):
        if user_id.startswith("bot:"):
            return user_id[4:]
        return next(a for a in self.standin.accounts() if a["accountId"] == user_id)["displayName"]

    def is_closed(self, ticket_id):
        return self.standin.issue(ticket_id)["fields"]["status"]["statusCategory"]["key"] == "done"

    def refused_webhooks(self, secret):
        from providers.jsm.webhooks import IDENTIFIER_HEADER, SIGNATURE_HEADER, signature_compute

        body = json.dumps(
            {"webhookEvent": "jira:issue_updated", "issue": {"id": "1"}, "changelog": {"items": []}}
        ).encode()
        sha1 = "sha1=" + signature_compute(secret=secret, body=body).split("=", 1)[1][:40]
        return body, {
            "missing": {IDENTIFIER_HEADER: "a"},
            "forged": {IDENTIFIER_HEADER: "b", SIGNATURE_HEADER: signature_compute(secret="not-it", body=body)},
            "other method": {IDENTIFIER_HEADER: "c", SIGNATURE_HEADER: sha1},
        }

    def accepted_webhook_headers(self, secret, body):
        from providers.jsm.webhooks import IDENTIFIER_HEADER, SIGNATURE_HEADER, signature_compute

        return {SIGNATURE_HEADER: signature_compute(secret=secret, body=body), IDENTIFIER_HEADER: "accepted"}

    def invalid_webhooks(self):
        issue_updated = {"webhookEvent": "jira:issue_updated", "issue": {}}
        return [(b"not json", "body"), (json.dumps(issue_updated).encode(), "issue.id")]


DESKS = {"zendesk": ZendeskE2E, "freshdesk": FreshdeskE2E, "jsm": JsmE2E}


SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_CHANNEL = "xoxb-e2e-token", "e2e-signing-secret", "C0E2EAGENTS"


class SlackE2E(E2EDesk):
    """A ticket is a thread: its id is the root's ``ts``; "assign" is the Take button, "resolve"
    the Close button. Slack sends its events to the URL pasted with the manifest (``installed``)."""

    kind = "slack"
    ticket_create_request = ("POST", r"^/api/chat\.postMessage$")
    ticket_find_request = ("GET", r"^/api/conversations\.history$")
    high_priority = "high"
    doorbell = False
    carries_reference = False

    def credentials(self) -> dict:
        return {"bot_token": SLACK_BOT_TOKEN, "signing_secret": SLACK_SIGNING_SECRET, "channel_id": SLACK_CHANNEL}

    def installed(self, webhook_url: str) -> None:
        self.standin.app_configure(request_url=webhook_url)

    @staticmethod
    def _session(message: dict) -> dict:
        metadata = message.get("metadata") or {}
        return metadata.get("event_payload", {}) if metadata.get("event_type") == "hitl_session" else {}

    def ticket(self, conversation_id):
        root = next((m for m in self.standin.tickets() if self._session(m).get("reference") == conversation_id), None)
        return root and root | {"id": root["ts"]}

    def ticket_fields(self, ticket):
        payload = self._session(ticket)
        return payload["title"], payload["priority"], payload["requester"]

    def external_user_id(self, botpress_user_id):
        from providers.base import ExternalUserSpec
        from providers.slack import SlackProvider

        spec = ExternalUserSpec(reference=botpress_user_id, name="")
        return SlackProvider.external_user_upsert(None, spec)  # a pure function of the reference

    def transcript(self, ticket_id):
        from standins.slack import _plain

        parts = [m.get("text", "") for m in self.standin.thread(ticket_id) if _event_type(m) == "hitl_transcript"]
        return html.unescape("\n\n".join([_plain(self.standin.root(ticket_id)), *parts]))

    def messages(self, ticket_id):
        """Thread replies but the transcript; a file share of ours counts as the files of the reply
        before it (the gateway posts a message's text, then uploads its files into the thread)."""
        found: list[DeskMessage] = []
        for m in self.standin.thread(ticket_id):
            if _event_type(m) == "hitl_transcript":
                continue
            if m.get("subtype") == "file_share" and m.get("bot_id") and found and not m.get("text"):
                last = found[-1]
                found[-1] = DeskMessage(last.id, last.text, last.author_id, last.attachments + len(m["files"]))
                continue
            author = (m.get("metadata") or {}).get("event_payload", {}).get("author") or m.get("user", "")
            found.append(DeskMessage(m["ts"], html.unescape(m.get("text", "")), author, len(m.get("files", []))))
        return found

    def user_name(self, user_id):
        for m in self.standin.messages():
            if (m.get("metadata") or {}).get("event_payload", {}).get("author") == user_id:
                return m.get("username", "")
        return self.standin.user(user_id)["real_name"]

    def assign(self, ticket_id, agent_id):
        self.standin.take(ticket_id, agent_id)

    def solve_with_reply(self, ticket_id, agent_id, text):
        self.standin.agent_reply(ticket_id, agent_id, text)
        self.standin.close(ticket_id, agent_id)

    def is_closed(self, ticket_id):
        return self._session(self.standin.root(ticket_id)).get("state") == "closed"

    def _event_body(self) -> bytes:
        event = {"type": "message", "channel": SLACK_CHANNEL, "user": "U0E2E", "text": "x"}
        event |= {"ts": "1700000001.000002", "thread_ts": "1700000001.000001"}
        return json.dumps({"type": "event_callback", "event_id": "Ev0E2E", "team_id": "T0", "event": event}).encode()

    def refused_webhooks(self, secret):
        import time

        from standins.slack import sign

        body, now = self._event_body(), str(int(time.time()))
        stale = str(int(time.time()) - 600)
        return body, {
            "missing": {},
            "forged": {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": sign("not-the-secret", now, body)},
            "stale": {"X-Slack-Request-Timestamp": stale, "X-Slack-Signature": sign(secret, stale, body)},
            "no timestamp": {"X-Slack-Signature": sign(secret, now, body)},
        }

    def accepted_webhook_headers(self, secret, body):
        import time

        from standins.slack import sign

        now = str(int(time.time()))
        return {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": sign(secret, now, body)}

    def invalid_webhooks(self):
        no_id = {"type": "event_callback", "team_id": "T0", "event": {"type": "message", "channel": SLACK_CHANNEL}}
        return [(b"not json", "body"), (json.dumps(no_id).encode(), "event_id")]


def _event_type(message: dict) -> str:
    return (message.get("metadata") or {}).get("event_type", "")


DESKS["slack"] = SlackE2E
