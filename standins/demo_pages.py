"""The demo's two web pages: an end-user chat on the Botpress stand-in, an agent desk on the Zendesk one.

`ChatBotpress` plays the bot and the webchat: before a handoff it answers by itself; "talk to a
human" calls the gateway's `createUser` and `startHitl` with the conversation so far, later
messages go to the gateway's `hitl` channel endpoint and "end the session" calls `stopHitl`; all of
it over HTTP with the integration's API key, as a Botpress bot does. What the gateway sends back
(agent messages, `hitlAssigned`, `hitlStopped`) is read from the stand-in's own Botpress state.

`DeskZendesk` serves the agent desk at `/agent/` (the path of the ticket URLs the gateway stores,
so the admin's ticket links open it). Its buttons call the stand-in's agent simulation under
`/__standin__/`, which fires the installed triggers: real signed webhooks to the gateway.

Demo routes bypass the stand-in's API machinery (lock, request log, faults): a chat request waits
for the gateway, which meanwhile calls this very stand-in.
"""

from __future__ import annotations

import base64
import binascii
import html
import itertools
import json
import re
import string
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from .botpress import BotpressStandin
from .freshdesk import FreshdeskStandin
from .jsm import STATUSES as JSM_STATUSES
from .jsm import JsmStandin
from .server import HttpError, Request, Response, iso_time, ulid
from .slack import SlackStandin
from .zendesk import ZendeskStandin

PAGES = Path(__file__).resolve().parent / "pages"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
HTML = "text/html; charset=utf-8"
BOT_NAME = "Demo bot"
HANDOFF_CHOICE = {"label": "Talk to a human", "value": "human"}
ASKS_FOR_HUMAN = re.compile(r"\b(human|agent|person|someone)\b", re.IGNORECASE)
# What the chat's attach button takes (Botpress's webchat has its own, larger, limit).
ATTACHMENT_MAX_BYTES = 5 * 1024 * 1024


def _page(name: str) -> Response:
    return Response(200, (PAGES / name).read_bytes(), {"Cache-Control": "no-store"}, content_type=HTML)


@dataclass(frozen=True)
class DeskPage:
    """One desk's agent page: ``pages/desk.html`` (shared by every desk, driven by ``desk.js``)
    in that desk's words. ``ticket_path``: where a ticket's page is; ``solve_action``: the
    control action the solve button calls."""

    desk_class: str  # the page's CSS theme
    product: str
    view: str  # what the desk calls its agents' interface
    ticket_path: str
    solve_action: str
    solve_label: str
    webhooks_summary: str

    def response(self, req: Request) -> Response:
        values = {name: html.escape(value) for name, value in asdict(self).items()}
        values["title"] = html.escape(f"{self.view.capitalize()} · {self.product} stand-in")
        page = string.Template((PAGES / "desk.html").read_text()).substitute(values)
        return Response(200, page.encode(), {"Cache-Control": "no-store"}, content_type=HTML)


# (theme, product, view, ticket path, solve action, solve label, webhooks summary)
ZENDESK_PAGE = DeskPage(
    "zendesk", "Zendesk", "agent desk", "/agent/tickets/", "solve", "Solve",
    "Signed webhooks this ticket sent to the gateway",
)  # fmt: skip
FRESHDESK_PAGE = DeskPage(
    "freshdesk", "Freshdesk", "agent desk", "/a/tickets/", "resolve", "Resolve",
    "Automation-rule webhooks (doorbells) this ticket sent to the gateway",
)  # fmt: skip
JSM_PAGE = DeskPage(
    "jsm", "Jira Service Management", "agent view", "/jira/tickets/", "resolve", "Resolve this issue",
    "Signed admin webhooks (X-Hub-Signature) this request sent to the gateway",
)  # fmt: skip


def _static(req: Request) -> Response:
    path = PAGES / req.params["name"]
    if not path.is_file():
        raise HttpError(404, f"No such file: {req.params['name']}")
    return Response(200, path.read_bytes(), {"Cache-Control": "no-store"}, content_type=STATIC_TYPES[path.suffix])


def _redirect(location: str) -> Callable[[Request], Response]:
    return lambda req: Response(302, None, {"Location": location})


def _json_object(req: Request) -> dict[str, Any]:
    body = req.json() if req.body else {}
    if not isinstance(body, dict):
        raise HttpError(400, "The body must be a JSON object")
    return body


def _webhooks_by_ticket(
    deliveries: list[dict[str, Any]], ticket_of: Callable[[dict], Any], kind_of: Callable[[dict], str]
) -> dict[str, list[dict[str, Any]]]:
    """A desk's sent webhooks for its agent view, by ticket: when, what, and how each attempt went."""
    webhooks: dict[str, list[dict[str, Any]]] = {}
    for delivery in deliveries:
        try:
            sent = json.loads(delivery["body"])
        except ValueError:
            continue
        webhooks.setdefault(str(ticket_of(sent)), []).append(
            {
                "at": delivery["timestamp"],
                "type": kind_of(sent),
                "status": delivery["status"],
                "error": delivery["error"],
                "attempt": delivery["attempt"],
            }
        )
    return webhooks


class DemoPages:
    """Mixin for a stand-in: serves page and demo routes before (and apart from) its API routes."""

    def demo_route(self, method: str, pattern: str, handler: Callable[[Request], Any]) -> None:
        routes = self.__dict__.setdefault("_demo_routes", [])
        routes.append((method, re.compile(pattern), handler))

    def serve_request(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        matches = [(m, r, h) for m, r, h in self.__dict__.get("_demo_routes", []) if r.fullmatch(path)]
        if not matches:
            super().serve_request(handler)
            return
        req = self._parse(handler)
        try:
            _, regex, route = next((m for m in matches if m[0] == req.method), (None, None, None))
            if route is None:
                raise HttpError(405, f"Method {req.method} is not allowed on {path}")
            req.params = regex.fullmatch(path).groupdict()
            result = route(req)
            resp = result if isinstance(result, Response) else Response(200, result)
        except HttpError as err:
            resp = Response(err.status, {"error": err.type or "error", "message": err.message})
        except Exception:
            traceback.print_exc()
            resp = Response(500, {"error": "internal", "message": "Internal demo error, see the demo's output"})
        self._send(handler, resp)


# --------------------------------------------------------------------- the chat (Botpress side)
@dataclass
class Chat:
    """One visitor's chat with the demo bot, and the HITL sessions it handed over."""

    id: str
    name: str
    email: str
    user_id: str = ""
    entries: list[dict[str, Any]] = field(default_factory=list)  # what the user and the bot said
    calls: list[dict[str, Any]] = field(default_factory=list)  # the bot's calls to the gateway
    sessions: list[dict[str, Any]] = field(default_factory=list)  # {conversationId, endedByUser}
    busy: bool = False  # a gateway call is under way


@dataclass
class Gateway:
    url: str
    integration_id: str
    api_key: str


class ChatBotpress(DemoPages, BotpressStandin):
    """The Botpress stand-in, plus the end-user chat page at `/chat/` and its `/__demo__/chats` API."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        super().__init__(port, host)
        self.gateway: Gateway | None = None
        self._chats: dict[str, Chat] = {}
        self._chats_lock = threading.Lock()
        self._entry_ids = itertools.count(1)
        self.demo_route("GET", "/", _redirect("/chat/"))
        self.demo_route("GET", "/chat/?", lambda req: _page("chat.html"))
        self.demo_route("GET", r"/__demo__/static/(?P<name>[\w-]+\.(?:css|js))", _static)
        self.demo_route("POST", "/__demo__/chats", self._chat_create)
        self.demo_route("GET", r"/__demo__/chats/(?P<id>\w+)", lambda req: self._view(self._chat(req)))
        self.demo_route("POST", r"/__demo__/chats/(?P<id>\w+)/messages", self._chat_message)
        self.demo_route("POST", r"/__demo__/chats/(?P<id>\w+)/handoff", self._chat_handoff)
        self.demo_route("POST", r"/__demo__/chats/(?P<id>\w+)/attachments", self._chat_attach)
        self.demo_route("POST", r"/__demo__/chats/(?P<id>\w+)/end", self._chat_end)

    def connect_gateway(self, url: str, integration_id: str, api_key: str) -> None:
        """Give the bot what a Botpress bot's HITL integration is configured with."""
        self.gateway = Gateway(url.rstrip("/"), integration_id, api_key)

    # ----------------------------------------------------------------- chat state
    def _chat(self, req: Request) -> Chat:
        chat = self._chats.get(req.params["id"])
        if chat is None:
            raise HttpError(404, "No such chat (the demo was restarted?)")
        return chat

    def _say(self, chat: Chat, kind: str, type_: str, payload: dict[str, Any], to_gateway: bool = False) -> None:
        """Record a message of the user ("user"), the bot ("bot") or a notice ("notice")."""
        with self._chats_lock:
            chat.entries.append(
                {
                    "id": f"local_{next(self._entry_ids)}",
                    "kind": kind,
                    "type": type_,
                    "payload": payload,
                    "at": iso_time(),
                    "toGateway": to_gateway,
                }
            )

    def _active_session(self, chat: Chat) -> dict[str, Any] | None:
        session = chat.sessions[-1] if chat.sessions else None
        if session is None or session["endedByUser"] or self._events_of(session["conversationId"], "hitlStopped"):
            return None
        return session

    def _events_of(self, conversation_id: str, type_: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events(type_) if e["payload"].get("conversationId") == conversation_id]

    # ----------------------------------------------------------------- endpoints
    def _chat_create(self, req: Request) -> Response:
        body = _json_object(req)
        chat = Chat(
            id=ulid().lower(),
            name=str(body.get("name") or "Ada Lovelace"),
            email=str(body.get("email") or "ada@example.com"),
        )
        with self._chats_lock:
            self._chats[chat.id] = chat
        greeting = "Hi! I am the demo bot. I only repeat what you say, but I can hand you over to a human agent."
        self._say(chat, "bot", "choice", {"text": greeting, "options": [HANDOFF_CHOICE]})
        return Response(201, self._view(chat))

    def _chat_message(self, req: Request) -> dict[str, Any]:
        chat = self._chat(req)
        text = str(_json_object(req).get("text") or "").strip()
        if not text:
            raise HttpError(400, "Type a message first")
        session = self._active_session(chat)
        if session is None:
            self._say(chat, "user", "text", {"text": text})
            if ASKS_FOR_HUMAN.search(text):
                return self._handoff(chat)
            reply = f"You said “{text}”. I am only a demo bot: ask for a human to reach an agent."
            self._say(chat, "bot", "text", {"text": reply})
            return self._view(chat)
        # With an agent: the message goes to the gateway, as the HITL plugin forwards it.
        self._say(chat, "user", "text", {"text": text}, to_gateway=True)
        body = {
            "conversationId": session["conversationId"],
            "messageId": f"msg_{ulid()}",
            "userId": chat.user_id,
            "type": "text",
            "payload": {"text": text},
        }
        self._call_gateway(chat, "hitl message", "channels/hitl/messages", body)
        return self._view(chat)

    def _chat_attach(self, req: Request) -> dict[str, Any]:
        """The attach button: the file goes to Botpress's file store, the chat gets an image or file message.

        Body: ``{"name", "contentType", "data": <base64>}``. The file is uploaded as a webchat
        does, through this stand-in's Files API (upsert, then the pre-signed upload), public, so
        the gateway fetches it from its URL; with an agent on the chat the message goes to the
        gateway's hitl channel like a typed one.
        """
        chat = self._chat(req)
        body = _json_object(req)
        name = re.sub(r"[^\w.-]+", "_", str(body.get("name") or ""))[-100:].strip("._") or "file"
        content_type = str(body.get("contentType") or "application/octet-stream")[:100]
        try:
            data = base64.b64decode(str(body.get("data") or ""), validate=True)
        except binascii.Error:
            raise HttpError(400, "The file is not valid base64") from None
        if not data:
            raise HttpError(400, "Choose a non-empty file first")
        if len(data) > ATTACHMENT_MAX_BYTES:
            raise HttpError(413, f"The demo chat takes files up to {ATTACHMENT_MAX_BYTES // 2**20} MB")
        url = self._file_host(name=name, content_type=content_type, data=data)
        type_ = "image" if content_type.startswith("image/") else "file"
        payload = {"imageUrl": url} if type_ == "image" else {"fileUrl": url, "title": name}
        session = self._active_session(chat)
        if session is None:
            self._say(chat, "user", type_, payload)
            reply = "Thanks for the file. I am only a demo bot: ask for a human to show it to an agent."
            self._say(chat, "bot", "text", {"text": reply})
            return self._view(chat)
        self._say(chat, "user", type_, payload, to_gateway=True)
        body = {
            "conversationId": session["conversationId"],
            "messageId": f"msg_{ulid()}",
            "userId": chat.user_id,
            "type": type_,
            "payload": payload,
        }
        self._call_gateway(chat, "hitl message", "channels/hitl/messages", body)
        return self._view(chat)

    def _file_host(self, *, name: str, content_type: str, data: bytes) -> str:
        """Upload ``data`` through the Files API as the demo bot; return the file's public URL."""
        bot = next(iter(self._bots.values()), None)
        if bot is None:
            raise HttpError(503, "The demo bot is not registered yet")
        headers = {
            "Authorization": f"Bearer {bot.token}",
            "x-bot-id": bot.bot_id,
            "x-integration-id": bot.integration_id,
        }
        upsert = requests.put(
            f"{self.base_url}/v1/files",
            json={
                "key": f"demo-chat/{ulid().lower()}/{name}",
                "size": len(data),
                "contentType": content_type,
                "accessPolicies": ["public_content"],
            },
            headers=headers,
            timeout=10,
        )
        upsert.raise_for_status()
        file = upsert.json()["file"]
        requests.put(file["uploadUrl"], data=data, timeout=30).raise_for_status()
        return file["url"]

    def _chat_handoff(self, req: Request) -> dict[str, Any]:
        chat = self._chat(req)
        body = _json_object(req)
        chat.name = str(body.get("name") or chat.name).strip() or chat.name
        chat.email = str(body.get("email") or chat.email).strip() or chat.email
        return self._handoff(chat, said=HANDOFF_CHOICE["label"])

    def _handoff(self, chat: Chat, said: str = "") -> dict[str, Any]:
        """createUser, then startHitl with the conversation so far, like Botpress's HITL card."""
        with self._chats_lock:
            if chat.busy or self._active_session(chat) is not None:
                raise HttpError(409, "A human agent is already on this chat")
            chat.busy = True
        try:
            if said:
                self._say(chat, "user", "text", {"text": said})
            self._say(chat, "bot", "text", {"text": "Sure, I am handing you over to a human agent."})
            user = self._call_gateway(
                chat, "createUser", "actions/createUser", {"name": chat.name, "email": chat.email}
            )
            if user is None:
                return self._view(chat)
            chat.user_id = user["userId"]
            history = [
                {
                    "source": {"type": "user", "userId": chat.user_id} if e["kind"] == "user" else {"type": "bot"},
                    "type": e["type"],
                    "payload": e["payload"],
                }
                for e in chat.entries
                if e["kind"] in ("user", "bot") and not e["toGateway"]
            ]
            started = self._call_gateway(
                chat,
                "startHitl",
                "actions/startHitl",
                {
                    "userId": chat.user_id,
                    "title": f"Chat with {chat.name}",
                    "description": f"{chat.name} asked the demo bot for a human agent.",
                    "hitlSession": {"priority": "normal", "chatbotName": BOT_NAME},
                    "messageHistory": history,
                },
            )
            if started is not None:
                chat.sessions.append({"conversationId": started["conversationId"], "endedByUser": False})
                self._say(chat, "notice", "text", {"text": "Handed over to the help desk: an agent will join soon."})
            return self._view(chat)
        finally:
            chat.busy = False

    def _chat_end(self, req: Request) -> dict[str, Any]:
        chat = self._chat(req)
        session = self._active_session(chat)
        if session is None:
            raise HttpError(409, "No human agent is on this chat")
        stopped = self._call_gateway(
            chat, "stopHitl", "actions/stopHitl", {"conversationId": session["conversationId"]}
        )
        if stopped is not None:
            session["endedByUser"] = True
            self._say(chat, "notice", "text", {"text": "You ended the session. You are back with the demo bot."})
        return self._view(chat)

    def _call_gateway(self, chat: Chat, name: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST to the gateway with the integration's key; record the call; None (and a notice) on failure."""
        if self.gateway is None:
            raise HttpError(503, "The demo bot is not connected to a gateway")
        path = f"/api/v1/integrations/{self.gateway.integration_id}/{path}"
        call = {"at": iso_time(), "direction": "out", "title": name, "what": f"POST {path}", "request": body}
        try:
            resp = requests.post(
                self.gateway.url + path,
                json=body,
                headers={"Authorization": f"Bearer {self.gateway.api_key}"},
                timeout=30,
            )
            answer = resp.json() if resp.content else {}
            call |= {"status": resp.status_code, "response": answer}
        except (requests.RequestException, ValueError) as exc:
            resp, answer = None, None
            call |= {"status": None, "response": f"{type(exc).__name__}: {exc}"}
        with self._chats_lock:
            chat.calls.append(call)
        if resp is not None and resp.ok:
            return answer
        detail = answer.get("message") if isinstance(answer, dict) else call["response"]
        self._say(chat, "notice", "text", {"text": f"The gateway refused {name} ({call['status']}): {detail}"})
        return None

    # ----------------------------------------------------------------- what the page shows
    def _view(self, chat: Chat) -> dict[str, Any]:
        """The chat as the page draws it: the timeline, the mode, and what went over the wire."""
        users = {u["id"]: u.get("name") or u["id"] for u in self.users()}
        with self._chats_lock:
            entries = [dict(e) for e in chat.entries]
            trace = [dict(c) for c in chat.calls]
            sessions = [dict(s) for s in chat.sessions]
        agent = ""
        for session in sessions:
            conversation_id = session["conversationId"]
            # What the gateway wrote into the hitl conversation through the runtime API.
            for message in self.messages(conversation_id=conversation_id):
                author = users.get(message["userId"], "Agent")
                entries.append(
                    {
                        "id": message["id"],
                        "kind": "agent",
                        "author": author,
                        "type": message["type"],
                        "payload": message["payload"],
                        "at": message["createdAt"],
                    }
                )
                trace.append(self._incoming(message, f"message from {author}", "POST /v1/chat/messages"))
            for event in self._events_of(conversation_id):
                if event["type"] == "hitlAssigned":
                    agent = users.get(event["payload"].get("userId"), "An agent")
                    text = f"{agent} joined the conversation."
                else:
                    text = f"{agent or 'The agent'} ended the session. You are back with the demo bot."
                notice = {"id": event["id"], "kind": "notice", "type": "text", "payload": {"text": text}}
                entries.append(notice | {"at": event["createdAt"]})
                trace.append(self._incoming(event, event["type"], "POST /v1/chat/events"))
        active = self._active_session(chat)
        if active is None:
            mode = "bot"
        elif self._events_of(active["conversationId"], "hitlAssigned"):
            mode = "agent"
        else:
            mode = "waiting"
        return {
            "id": chat.id,
            "name": chat.name,
            "email": chat.email,
            "mode": mode,
            "agent": agent if mode == "agent" else "",
            "busy": chat.busy,
            "conversationId": active["conversationId"] if active else "",
            "entries": sorted(entries, key=lambda e: e["at"]),
            "trace": sorted(trace, key=lambda c: c["at"]),
        }

    @staticmethod
    def _incoming(obj: dict[str, Any], title: str, what: str) -> dict[str, Any]:
        """A call the gateway made to this stand-in, for the page's "behind the scenes" list."""
        return {"at": obj["createdAt"], "direction": "in", "title": title, "what": what, "request": obj["payload"]}


# --------------------------------------------------------------------- the desk (Zendesk side)
class DeskZendesk(DemoPages, ZendeskStandin):
    """The Zendesk stand-in, plus the agent desk page at `/agent/` and its read-only `/__demo__/desk`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.demo_route("GET", "/", _redirect("/agent/"))
        self.demo_route("GET", r"/agent/?(?:tickets/\d+/?)?", ZENDESK_PAGE.response)
        self.demo_route("GET", r"/__demo__/static/(?P<name>[\w-]+\.(?:css|js))", _static)
        self.demo_route("GET", "/__demo__/desk", lambda req: self.desk())

    def desk(self) -> dict[str, Any]:
        """Agents and tickets (newest first) with their comments and the webhooks they fired."""
        users = {u["id"]: u for u in self.users()}
        webhooks = _webhooks_by_ticket(
            self.webhook_deliveries(),
            ticket_of=lambda sent: sent.get("ticketId"),
            kind_of=lambda sent: sent.get("type"),
        )

        def name(user_id: Any) -> str | None:
            return users[user_id]["name"] if user_id in users else None

        tickets = []
        for ticket in sorted(self.tickets(), key=lambda t: t["id"], reverse=True):
            comments = [
                {
                    "id": c["id"],
                    "author": name(c["author_id"]) or str(c["author_id"]),
                    "role": users.get(c["author_id"], {}).get("role", ""),
                    "body": c["body"],
                    "public": c["public"],
                    "via": c["via"]["channel"],
                    "at": c["created_at"],
                    "attachments": [{"name": a["file_name"], "url": a["content_url"]} for a in c["attachments"]],
                }
                for c in self.comments(ticket["id"])
            ]
            tickets.append(
                {
                    "id": ticket["id"],
                    "subject": ticket["subject"] or "(no subject)",
                    "status": ticket["status"],
                    "priority": ticket["priority"],
                    "requester": name(ticket["requester_id"]),
                    "assignee": name(ticket["assignee_id"]),
                    "assigneeId": ticket["assignee_id"],
                    "externalId": ticket["external_id"],
                    "createdAt": ticket["created_at"],
                    "updatedAt": ticket["updated_at"],
                    "comments": comments,
                    "webhooks": webhooks.get(str(ticket["id"]), []),
                }
            )
        agents = [
            {"id": u["id"], "name": u["name"], "email": u["email"]} for u in users.values() if u["role"] == "agent"
        ]
        return {"agents": agents, "tickets": tickets}


# --------------------------------------------------------------------- the desk (Freshdesk side)
class DeskFreshdesk(DemoPages, FreshdeskStandin):
    """The Freshdesk stand-in, plus the same agent desk page at `/a/` (Freshdesk's ticket URLs).

    Its buttons call the agent simulation, which runs the installed automation rules: doorbell
    webhooks to the gateway, which then reads the ticket through the API.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.demo_route("GET", "/", _redirect("/a/"))
        self.demo_route("GET", r"/a/?(?:tickets/\d+/?)?", FRESHDESK_PAGE.response)
        self.demo_route("GET", r"/__demo__/static/(?P<name>[\w-]+\.(?:css|js))", _static)
        self.demo_route("GET", "/__demo__/desk", lambda req: self.desk())

    def desk(self) -> dict[str, Any]:
        """Agents and tickets (newest first): the description, then the conversations, and doorbells."""
        with self.lock:
            agents = {a["id"]: a["contact"]["name"] for a in self._agents.values()}
            contacts = {c["id"]: c["name"] for c in self._contacts.values()}
        webhooks = _webhooks_by_ticket(
            self.webhook_deliveries(),
            ticket_of=lambda sent: sent.get("ticket_id"),
            kind_of=lambda sent: f"doorbell ({sent.get('performer', '?')})",
        )

        def role(user_id: int) -> str:
            return "admin" if user_id == self.api_agent_id else "agent" if user_id in agents else "end-user"

        tickets = []
        for ticket in sorted(self.tickets(), key=lambda t: t["id"], reverse=True):
            description = {
                "id": 0,
                "author": contacts.get(ticket["requester_id"], "?"),
                "role": "end-user",
                "body": ticket["description_text"],
                "public": True,
                "via": "chat",
                "at": ticket["created_at"],
                "attachments": [],
            }
            comments = [description] + [
                {
                    "id": c["id"],
                    "author": agents.get(c["user_id"]) or contacts.get(c["user_id"]) or str(c["user_id"]),
                    "role": role(c["user_id"]),
                    "body": c["body_text"],
                    "public": not c["private"],
                    "via": ("incoming " if c["incoming"] else "") + ("reply" if c["source"] == 0 else "note"),
                    "at": c["created_at"],
                    "attachments": [{"name": a["name"], "url": a["attachment_url"]} for a in c["attachments"]],
                }
                for c in self.conversations(ticket["id"])
            ]
            tickets.append(
                {
                    "id": ticket["id"],
                    "subject": ticket["subject"] or "(no subject)",
                    "status": {2: "open", 3: "pending", 4: "resolved", 5: "closed"}[ticket["status"]],
                    "priority": {1: "low", 2: "medium", 3: "high", 4: "urgent"}[ticket["priority"]],
                    "requester": contacts.get(ticket["requester_id"]),
                    "assignee": agents.get(ticket["responder_id"]),
                    "assigneeId": ticket["responder_id"],
                    "externalId": None,
                    "createdAt": ticket["created_at"],
                    "updatedAt": ticket["updated_at"],
                    "comments": comments,
                    "webhooks": webhooks.get(str(ticket["id"]), []),
                }
            )
        humans = [{"id": i, "name": n, "email": ""} for i, n in agents.items() if i != self.api_agent_id]
        return {"agents": humans, "tickets": tickets}


# --------------------------------------------------------------------- the desk (JSM side)
class DeskJsm(DemoPages, JsmStandin):
    """The Jira Service Management stand-in, plus the agent view at `/jira/` (and `/browse/<key>`).

    Its buttons call the agent simulation (reply to customer, assign, "Resolve this issue"),
    which fires the registered admin webhook: signed doorbells that make the gateway read the
    request. Every comment the gateway wrote is the API account's, naming its real author.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.demo_route("GET", "/", _redirect("/jira/"))
        self.demo_route("GET", r"/jira/?(?:tickets/\d+/?)?", JSM_PAGE.response)
        self.demo_route("GET", r"/browse/(?P<key>[A-Z][A-Z0-9_]*-\d+)", self._browse)
        self.demo_route("GET", r"/__demo__/static/(?P<name>[\w-]+\.(?:css|js))", _static)
        self.demo_route("GET", "/__demo__/desk", lambda req: self.desk())
        # The shared desk page's actions, in the names it uses.
        self.control_route("POST", r"tickets/(?P<id>\d+)/(?P<action>reply|assign|resolve)", self._page_action)

    def _browse(self, req: Request) -> Response:
        """A request's agent URL (what the gateway stores) opens it in the agent view."""
        issue = next((i for i in self.issues() if i["key"] == req.params["key"]), None)
        if issue is None:
            raise HttpError(404, f"No request {req.params['key']}")
        return _redirect(f"/jira/tickets/{issue['id']}")(req)

    def _page_action(self, req: Request) -> dict[str, Any]:
        body, issue_id = _json_object(req), req.params["id"]
        agent_id = str(body.get("agent_id") or "")
        if req.params["action"] == "assign":
            return {"issue": self.assign(issue_id, agent_id)}
        if req.params["action"] == "resolve":
            return {"issue": self.resolve(issue_id, agent_id)}
        text = str(body.get("body") or "")
        return {"comment": self.agent_reply(issue_id, agent_id, text, attachments=body.get("attachments") or [])}

    def desk(self) -> dict[str, Any]:
        """Agents and requests (newest first): the description, then the comments, and webhooks."""
        accounts = {a["accountId"]: a for a in self.accounts()}
        webhooks = _webhooks_by_ticket(
            self.webhook_deliveries(),
            ticket_of=lambda sent: (sent.get("issue") or {}).get("id"),
            kind_of=lambda sent: f"{sent.get('webhookEvent')} ({sent.get('issue_event_type_name', '')})",
        )

        def role(account_id: str) -> str:
            if account_id == self.api_account_id:
                return "admin"
            return "agent" if accounts.get(account_id, {}).get("accountType") == "atlassian" else "end-user"

        tickets = []
        for issue in sorted(self.issues(), key=lambda i: int(i["id"]), reverse=True):
            fields = issue["fields"]
            files = {a["filename"]: a["content"] for a in fields["attachment"]}
            description = {
                "id": 0,
                "author": fields["reporter"]["displayName"],
                "role": "end-user",
                "body": fields["description"] or "",
                "public": True,
                "via": "api",
                "at": fields["created"],
                "attachments": [],
            }
            comments = [description] + [
                {
                    "id": c["id"],
                    "author": c["author"]["displayName"],
                    "role": role(c["author"]["accountId"]),
                    "body": c["body"],
                    "public": c["jsdPublic"],
                    "via": "api" if c["author"]["accountId"] == self.api_account_id else "web",
                    "at": c["created"],
                    "attachments": [
                        {"name": name, "url": url}
                        for name, url in files.items()
                        if f"[^{name}]" in c["body"] or f"!{name}" in c["body"]
                    ],
                }
                for c in self.comments(issue["id"])
            ]
            status = fields["status"]
            done = status["statusCategory"]["key"] == "done"
            tickets.append(
                {
                    "id": int(issue["id"]),
                    "subject": f"{issue['key']} {fields['summary'] or '(no summary)'}",
                    "status": "resolved" if done else status["name"].lower(),
                    "priority": fields["priority"]["name"].lower(),
                    "requester": fields["reporter"]["displayName"],
                    "assignee": (fields["assignee"] or {}).get("displayName"),
                    "assigneeId": (fields["assignee"] or {}).get("accountId"),
                    "externalId": None,
                    "createdAt": fields["created"],
                    "updatedAt": fields["created"],
                    "comments": comments,
                    "webhooks": webhooks.get(issue["id"], []),
                }
            )
        agents = [
            {"id": a["accountId"], "name": a["displayName"], "email": a["emailAddress"]}
            for a in accounts.values()
            if a["accountType"] == "atlassian" and a["accountId"] != self.api_account_id
        ]
        return {"agents": agents, "tickets": tickets, "statuses": {k: v[0] for k, v in JSM_STATUSES.items()}}


# --------------------------------------------------------------------- the desk (Slack side)
class DeskSlack(DemoPages, SlackStandin):
    """The Slack stand-in, whose agents' channel page (``/app/``) is the desk: each thread with its
    replies, and Reply, Take, React ✅ and Close as an agent. Those send real signed events and
    button presses to the Request URL the demo's integration gave it (``installed``).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.demo_route("GET", "/", _redirect("/app/"))

    def installed(self, webhook_url: str) -> None:
        """What the operator does after creating the integration: paste the manifest."""
        self.app_configure(request_url=webhook_url)
