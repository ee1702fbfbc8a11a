"""Stand-in of Slack for one workspace and one app: the Web API methods the gateway uses, the
Events API and interactivity deliveries, and the agents working in the channel.

Follows shared/reference/helpdesk-apis.md section 4 and Slack's reference pages
(docs.slack.dev/reference/methods/<method>): token auth (``Authorization: Bearer xoxb-…`` or a
``token`` argument), arguments as JSON, form or query string; every refusal is HTTP 200 with
``{"ok": false, "error": "<code>"}``; a real HTTP 429 with ``Retry-After`` when
``chat.postMessage`` goes over about one message per second per channel (a short burst
allowed). Methods: ``auth.test``, ``conversations.info|history|replies``, ``chat.postMessage|
update|delete|postEphemeral``, ``users.info``, ``files.getUploadURLExternal`` → POST to the
pre-signed ``upload_url`` → ``files.completeUploadExternal``; files served at ``url_private``
only with the token.

Events (``message``, ``reaction_added``) are delivered as signed ``event_callback`` envelopes
(signature v0 over ``v0:{timestamp}:{body}``) to the app's Request URL, from one sender thread
in order; an answer other than 2xx within 3 seconds is retried up to 3 times (immediately,
+1 min, +5 min, compressed by ``retry_time_scale``) with ``X-Slack-Retry-Num`` and
``X-Slack-Retry-Reason``; ``X-Slack-No-Retry: 1`` on an error answer stops them. Button
presses are signed ``block_actions`` payloads, form-encoded (``payload=<JSON>``), not retried.
The app's URLs are set as an operator pastes the manifest (``app_configure``).

The agents' side (Python methods, control API, and the channel page at ``/app/``): add an
agent, reply in a thread (with files), press Take/Close, react ✅.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

from .server import HttpError, Request, Response, WebhookAnswer, WebhookCall, WebhookStandin

MAX_TEXT = 40000
MAX_BLOCKS = 50
_METADATA_TYPE = re.compile(r"^[a-zA-Z0-9_]{1,255}$")
RETRY_DELAYS = (0.0, 60.0, 300.0)  # Slack's: at once, after 1 minute, after 5 minutes
HTML_TYPE = "text/html; charset=utf-8"


class _SlackError(HttpError):
    """An ``ok: false`` answer (HTTP 200 unless said otherwise)."""

    def __init__(self, code: str, status: int = 200, headers: dict[str, str] | None = None):
        super().__init__(status, code, code, headers=headers)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackStandin(WebhookStandin):
    """Slack for one app (bot token, signing secret) in one workspace with an agents' channel."""

    event_timeout = 3.0  # seconds Slack waits for a 2xx
    retry_time_scale = 1 / 600  # 60 s → 0.1 s
    post_interval = 1.0  # seconds between messages per channel once the burst is spent
    post_burst = 5  # messages a channel takes at once

    def __init__(
        self,
        bot_token: str = "xoxb-standin-token",
        signing_secret: str = "standin-signing-secret",
        channel_id: str = "C0AGENTS",
        port: int = 0,
        host: str = "127.0.0.1",
    ):
        super().__init__(port, host)
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.channel_id = channel_id
        self.team_id, self.bot_user_id, self.bot_id, self.app_id = "T0STANDIN", "U0BOT", "B0BOT", "A0APP"
        self.request_url = self.interactivity_url = ""
        self.reset_state()
        methods = {
            "auth.test": self._auth_test,
            "conversations.info": self._conversations_info,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "users.info": self._users_info,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
        }
        for name, handler in methods.items():
            for verb in ("GET", "POST"):
                self.route(verb, rf"/api/{re.escape(name)}", self._method(handler))
        self.route("POST", r"/upload/v1/(?P<id>F\w+)", self._upload, public=True)
        self.route("GET", r"/files-pri/(?P<team>\w+)-(?P<id>F\w+)/(?P<name>[^/]+)", self._file_private, public=True)
        self.route("GET", r"/app/?", self._page, public=True)
        self.route("POST", r"/app/act", self._page_act, public=True)
        self.control_route("POST", "agents", self._control_add_agent)
        self.control_route("POST", "app", self._control_app)
        self.control_route("POST", "actions", self._control_action)

    # ----------------------------------------------------------------- state
    def reset_state(self) -> None:
        self._sender.reset()
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._users: dict[str, dict] = {}
        self._channels: dict[str, dict] = {}
        self._messages: dict[str, list[dict]] = {}  # channel → messages, oldest first (replies too)
        self._by_ts: dict[tuple[str, str], dict] = {}  # (channel, ts) → message
        self._replies: dict[tuple[str, str], list[dict]] = {}  # (channel, thread ts) → replies, oldest first
        self._files: dict[str, dict] = {}
        self._ephemeral: list[dict] = []
        self._deliveries: list[dict] = []
        self._post_times: dict[str, tuple[float, float]] = {}
        self._users[self.bot_user_id] = {
            "id": self.bot_user_id,
            "name": "hitl",
            "is_bot": True,
            "profile": {"display_name": "Botpress HITL", "real_name": "Botpress HITL", "bot_id": self.bot_id},
        }
        self._add_channel(self.channel_id, "agents", member=True)
        self._add_channel("C0ELSEWHERE", "random", member=False)

    def _add_channel(self, channel_id: str, name: str, *, member: bool) -> None:
        self._channels[channel_id] = {"id": channel_id, "name": name, "is_member": member}
        self._messages[channel_id] = []

    def app_configure(self, *, request_url: str, interactivity_url: str = "") -> None:
        """What pasting the manifest does: where events and button presses go."""
        with self.lock:
            self.request_url = request_url
            self.interactivity_url = interactivity_url or request_url

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    # ----------------------------------------------------------------- views for tests
    def messages(self, channel: str | None = None) -> list[dict]:
        with self.lock:
            return json.loads(json.dumps(self._messages[channel or self.channel_id]))

    def roots(self) -> list[dict]:
        with self.lock:
            found = [m for m in self._messages[self.channel_id] if m.get("thread_ts") in (None, m["ts"])]
            return json.loads(json.dumps(found))

    def tickets(self) -> list[dict]:
        """The sessions' roots (messages carrying ``hitl_session`` metadata), oldest first."""
        return [m for m in self.roots() if (m.get("metadata") or {}).get("event_type") == "hitl_session"]

    def root(self, ts: str) -> dict:
        with self.lock:
            return json.loads(json.dumps(self._by_ts[(self.channel_id, ts)]))

    def thread(self, ts: str) -> list[dict]:
        """The replies of a thread, oldest first (not the root)."""
        with self.lock:
            return json.loads(json.dumps(self._replies.get((self.channel_id, ts), [])))

    def file(self, file_id: str) -> dict:
        with self.lock:
            return dict(self._files[file_id])

    def ephemeral(self) -> list[dict]:
        with self.lock:
            return list(self._ephemeral)

    def user(self, user_id: str) -> dict:
        with self.lock:
            return dict(self._users[user_id])

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"channels": self._channels, "messages": self._messages, "ephemeral": self._ephemeral}

    # ----------------------------------------------------------------- API machinery
    def error_response(self, err: HttpError) -> Response:
        """Slack's refusals are ``{"ok": false, "error": code}``; an unknown method is one too."""
        if isinstance(err, _SlackError):
            return Response(err.status, {"ok": False, "error": err.type}, dict(err.headers))
        if err.status == 404:
            return Response(200, {"ok": False, "error": "unknown_method"})
        code = {429: "ratelimited", 401: "invalid_auth", 400: "invalid_arguments"}.get(err.status, "internal_error")
        return Response(err.status, {"ok": False, "error": code}, dict(err.headers))

    def rate_limit_response(self, retry_after: int) -> Response:
        return Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})

    def _arguments(self, req: Request) -> dict[str, Any]:
        """Query string, form or JSON arguments, as Slack takes them."""
        args: dict[str, Any] = {k: v[0] for k, v in req.query.items()}
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json" and req.body:
            if req.json_error or not isinstance(req.data, dict):
                raise _SlackError("invalid_json")
            args.update(req.data)
        elif req.body:
            args.update({k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()})
        return args

    def _method(self, handler):
        def run(req: Request) -> dict:
            args = self._arguments(req)
            auth = req.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else str(args.pop("token", "") or "")
            if not token:
                raise _SlackError("not_authed")
            if not hmac.compare_digest(token.encode(), self.bot_token.encode()):
                raise _SlackError("invalid_auth")
            return {"ok": True, **handler(args)}

        return run

    def _channel(self, args: dict, key: str = "channel") -> dict:
        channel = self._channels.get(str(args.get(key) or ""))
        if channel is None:
            raise _SlackError("channel_not_found")
        return channel

    def _find(self, channel_id: str, ts: str) -> dict | None:
        return self._by_ts.get((channel_id, ts))

    def _store(self, channel_id: str, message: dict) -> None:
        self._messages[channel_id].append(message)
        self._by_ts[(channel_id, message["ts"])] = message
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != message["ts"]:
            self._replies.setdefault((channel_id, thread_ts), []).append(message)

    @staticmethod
    def _json_arg(args: dict, key: str, error: str) -> Any:
        value = args.get(key)
        if isinstance(value, str) and value:
            try:
                return json.loads(value)
            except ValueError:
                raise _SlackError(error) from None
        return value

    # ----------------------------------------------------------------- methods
    def _auth_test(self, args: dict) -> dict:
        return {
            "url": f"{self.base_url}/",
            "team": "Stand-in workspace",
            "user": "hitl",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
        }

    def _conversations_info(self, args: dict) -> dict:
        channel = self._channel(args)
        return {"channel": {**channel, "is_channel": True, "is_private": False, "is_archived": False}}

    def _message_view(self, message: dict, with_metadata: bool) -> dict:
        view = {k: v for k, v in message.items() if not k.startswith("_") and (with_metadata or k != "metadata")}
        if "files" in view:
            view["files"] = [self._file_view(self._files[f]) for f in message["files"]]
        return view

    def _page_of(self, items: list[dict], args: dict, with_metadata: bool) -> dict:
        try:
            limit = min(max(int(args.get("limit") or 100), 1), 999)
            offset = int(args.get("cursor") or 0)
        except ValueError:
            raise _SlackError("invalid_arguments") from None
        page = items[offset : offset + limit]
        more = offset + limit < len(items)
        return {
            "messages": [self._message_view(m, with_metadata) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(offset + limit) if more else ""},
        }

    def _conversations_history(self, args: dict) -> dict:
        channel = self._channel(args)
        if not channel["is_member"]:
            raise _SlackError("not_in_channel")
        inclusive = str(args.get("inclusive", "")).lower() in ("1", "true")
        latest, oldest = float(args.get("latest") or "inf"), float(args.get("oldest") or 0)
        top = [
            m
            for m in reversed(self._messages[channel["id"]])
            if m.get("thread_ts") in (None, m["ts"])
            and (oldest < float(m["ts"]) < latest or (inclusive and float(m["ts"]) in (latest, oldest)))
        ]
        return self._page_of(top, args, str(args.get("include_all_metadata", "")).lower() in ("1", "true"))

    def _conversations_replies(self, args: dict) -> dict:
        channel = self._channel(args)
        ts = str(args.get("ts") or "")
        root = self._find(channel["id"], ts)
        if root is None:
            raise _SlackError("thread_not_found")
        thread = [root, *self._replies.get((channel["id"], ts), [])]
        return self._page_of(thread, args, str(args.get("include_all_metadata", "")).lower() in ("1", "true"))

    def _pace(self, channel_id: str) -> None:
        """About one message per second per channel with short bursts: a token bucket holding
        ``post_burst`` messages, refilled one per ``post_interval`` seconds; empty → HTTP 429."""
        now = time.monotonic()
        tokens, since = self._post_times.get(channel_id, (float(self.post_burst), now))
        tokens = min(float(self.post_burst), tokens + (now - since) / self.post_interval)
        if tokens < 1:
            retry = max(1, int((1 - tokens) * self.post_interval + 0.999))
            self._post_times[channel_id] = (tokens, now)
            raise _SlackError("ratelimited", 429, {"Retry-After": str(retry)})
        self._post_times[channel_id] = (tokens - 1, now)

    def _validated_message(self, args: dict, *, update: bool = False) -> dict:
        text = args.get("text")
        blocks = self._json_arg(args, "blocks", "invalid_blocks")
        if text is not None and not isinstance(text, str):
            raise _SlackError("invalid_arguments")
        if blocks is not None and (not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS):
            raise _SlackError("invalid_blocks")
        for block in blocks or []:
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise _SlackError("invalid_blocks")
            text_obj = block.get("text")
            if isinstance(text_obj, dict) and len(str(text_obj.get("text", ""))) > 3000:
                raise _SlackError("invalid_blocks")
        if not update and not (text or "").strip() and not blocks:
            raise _SlackError("no_text")
        if text and len(text) > MAX_TEXT:
            raise _SlackError("msg_too_long")
        metadata = self._json_arg(args, "metadata", "invalid_metadata_format")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not _METADATA_TYPE.fullmatch(metadata["event_type"])
            or not isinstance(metadata.get("event_payload", {}), dict)
        ):
            raise _SlackError("invalid_metadata_format")
        out: dict[str, Any] = {}
        if text is not None:
            out["text"] = text
        if blocks is not None:
            out["blocks"] = blocks
        if metadata is not None:
            out["metadata"] = {"event_type": metadata["event_type"], "event_payload": metadata.get("event_payload", {})}
        return out

    def _chat_post_message(self, args: dict) -> dict:
        channel = self._channel(args)
        if not channel["is_member"]:
            raise _SlackError("not_in_channel")
        fields = self._validated_message(args)
        thread_ts = str(args.get("thread_ts") or "")
        if thread_ts and self._find(channel["id"], thread_ts) is None:
            raise _SlackError("thread_not_found")
        self._pace(channel["id"])
        message = {
            "type": "message",
            "ts": self._next_ts(),
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": fields.get("text", ""),
            **fields,
        }
        if thread_ts:
            message["thread_ts"] = thread_ts
            self._count_reply(channel["id"], thread_ts)
        for key in ("username", "icon_url"):
            if args.get(key):
                message[key] = str(args[key])
        self._store(channel["id"], message)
        self._event(channel["id"], self._message_view(message, False) | {"channel": channel["id"]})
        return {"channel": channel["id"], "ts": message["ts"], "message": self._message_view(message, True)}

    def _count_reply(self, channel_id: str, thread_ts: str) -> None:
        root = self._find(channel_id, thread_ts)
        if root is not None:
            root["thread_ts"] = thread_ts
            root["reply_count"] = root.get("reply_count", 0) + 1

    def _chat_update(self, args: dict) -> dict:
        channel = self._channel(args)
        message = self._find(channel["id"], str(args.get("ts") or ""))
        if message is None:
            raise _SlackError("message_not_found")
        if message.get("bot_id") != self.bot_id:
            raise _SlackError("cant_update_message")
        fields = self._validated_message(args, update=True)
        previous = self._message_view(message, False)
        message.update(fields)
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        self._event(
            channel["id"],
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": channel["id"],
                "hidden": True,
                "ts": self._next_ts(),
                "message": self._message_view(message, False),
                "previous_message": previous,
            },
        )
        return {"channel": channel["id"], "ts": message["ts"], "text": message.get("text", "")}

    def _chat_delete(self, args: dict) -> dict:
        channel = self._channel(args)
        message = self._find(channel["id"], str(args.get("ts") or ""))
        if message is None:
            raise _SlackError("message_not_found")
        if message.get("bot_id") != self.bot_id:
            raise _SlackError("cant_delete_message")
        self._messages[channel["id"]].remove(message)
        self._by_ts.pop((channel["id"], message["ts"]), None)
        if message.get("thread_ts") and message["thread_ts"] != message["ts"]:
            self._replies[(channel["id"], message["thread_ts"])].remove(message)
        self._event(
            channel["id"],
            {
                "type": "message",
                "subtype": "message_deleted",
                "channel": channel["id"],
                "hidden": True,
                "deleted_ts": message["ts"],
                "ts": self._next_ts(),
            },
        )
        return {"channel": channel["id"], "ts": message["ts"]}

    def _chat_post_ephemeral(self, args: dict) -> dict:
        channel = self._channel(args)
        user = str(args.get("user") or "")
        if user not in self._users:
            raise _SlackError("user_not_found")
        fields = self._validated_message(args)
        self._ephemeral.append({"channel": channel["id"], "user": user, "thread_ts": args.get("thread_ts"), **fields})
        return {"message_ts": self._next_ts()}

    def _users_info(self, args: dict) -> dict:
        user = self._users.get(str(args.get("user") or ""))
        if user is None:
            raise _SlackError("user_not_found")
        return {"user": user}

    def _files_get_upload_url(self, args: dict) -> dict:
        filename = str(args.get("filename") or "")
        length = str(args.get("length") or "")
        if not filename or not length.isdigit() or int(length) < 1:
            raise _SlackError("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self._files[file_id] = {"id": file_id, "name": filename, "size": int(length), "content": None, "shared": False}
        return {"upload_url": f"{self.base_url}/upload/v1/{file_id}", "file_id": file_id}

    def _upload(self, req: Request) -> Response:
        with self.lock:
            item = self._files.get(req.params["id"])
            if item is None or item["content"] is not None:
                return Response(404, "Not found", content_type="text/plain")
            item["content"] = req.body
            item["mimetype"] = _mimetype(item["name"])
        return Response(200, f"OK - {len(req.body)}", content_type="text/plain")

    def _files_complete_upload(self, args: dict) -> dict:
        files = self._json_arg(args, "files", "invalid_arguments")
        if not isinstance(files, list) or not files:
            raise _SlackError("invalid_arguments")
        items = []
        for entry in files:
            item = self._files.get(str((entry or {}).get("id") or ""))
            if item is None or item["content"] is None:
                raise _SlackError("file_not_found")
            item["title"] = str(entry.get("title") or item["name"])
            items.append(item)
        channel_id = str(args.get("channel_id") or "")
        if channel_id:
            channel = self._channel(args, "channel_id")
            if not channel["is_member"]:
                raise _SlackError("not_in_channel")
            self._pace(channel_id)
            message = {
                "type": "message",
                "subtype": "file_share",
                "ts": self._next_ts(),
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "text": str(args.get("initial_comment") or ""),
                "files": [item["id"] for item in items],
                "upload": True,
            }
            thread_ts = str(args.get("thread_ts") or "")
            if thread_ts:
                if self._find(channel_id, thread_ts) is None:
                    raise _SlackError("thread_not_found")
                message["thread_ts"] = thread_ts
                self._count_reply(channel_id, thread_ts)
            self._store(channel_id, message)
            for item in items:
                item["shared"] = True
            self._event(channel_id, self._message_view(message, False) | {"channel": channel_id})
        return {"files": [{"id": item["id"], "title": item["title"]} for item in items]}

    def _file_view(self, item: dict) -> dict:
        private = f"{self.base_url}/files-pri/{self.team_id}-{item['id']}/{item['name']}"
        return {
            "id": item["id"],
            "name": item["name"],
            "title": item.get("title", item["name"]),
            "mimetype": item.get("mimetype", "application/octet-stream"),
            "size": item["size"],
            "url_private": private,
            "url_private_download": private + "?download=1",
        }

    def _file_private(self, req: Request) -> Response:
        with self.lock:
            item = self._files.get(req.params["id"])
            auth = req.headers.get("authorization", "")
            if item is None or item["content"] is None:
                return Response(404, "Not found", content_type="text/plain")
            if not hmac.compare_digest(auth.encode(), f"Bearer {self.bot_token}".encode()):
                # Slack sends an unauthenticated browser to its sign-in page.
                return Response(302, b"", {"Location": f"{self.base_url}/signin"}, content_type="text/html")
            return Response(200, item["content"], content_type=item.get("mimetype", "application/octet-stream"))

    # ----------------------------------------------------------------- events and interactivity
    def _event(self, channel_id: str, event: dict) -> None:
        """Queue an Events API delivery (only for a channel the bot is in, as Slack does)."""
        if not self._channels[channel_id]["is_member"] or not self.request_url:
            return
        event_id = f"Ev{next(self._ids):010d}"
        envelope = {
            "token": "deprecated-verification-token",
            "team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": {**event, "event_ts": event.get("ts") or self._next_ts()},
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [{"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True}],
        }
        body = json.dumps(envelope).encode()
        self._enqueue({"url": self.request_url, "body": body, "type": "application/json", "retries": True})

    def _interaction(self, payload: dict) -> None:
        if not self.interactivity_url:
            return
        body = urlencode({"payload": json.dumps(payload)}).encode()
        self._enqueue(
            {"url": self.interactivity_url, "body": body, "type": "application/x-www-form-urlencoded", "retries": False}
        )

    def _enqueue(self, delivery: dict) -> None:
        self._sender.enqueue({**delivery, "reason": ""})

    # Queueing, in order from one sender, faults and the retry loop are ``server.WebhookSender``'s;
    # what is Slack's: the request signed per attempt, the retry headers and schedule, the record.
    def _webhook_call(self, delivery: dict, attempt: int) -> WebhookCall:
        """The attempt's request, signed with a fresh timestamp; a retry says its number and why."""
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": delivery["type"],
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": sign(self.signing_secret, timestamp, delivery["body"]),
        }
        if attempt > 1:
            headers |= {"X-Slack-Retry-Num": str(attempt - 1), "X-Slack-Retry-Reason": delivery["reason"]}
        return WebhookCall("POST", delivery["url"], headers, delivery["body"], self.event_timeout)

    def _webhook_record(self, delivery: dict, attempt: int, call: WebhookCall, answer: WebhookAnswer) -> None:
        error = None
        if answer.status is None:
            error = "http_timeout" if answer.timed_out else f"connection_failed: {answer.error.partition(':')[0]}"
        self._deliveries.append(
            {
                "attempt": attempt,
                "url": call.url,
                "headers": dict(call.headers),
                "body": call.body,
                "status": answer.status,
                "error": error,
            }
        )

    def _webhook_retry_wait(self, delivery: dict, attempt: int, answer: WebhookAnswer) -> float | None:
        """Events: up to ``len(RETRY_DELAYS)`` retries after an answer other than 2xx, or none in
        ``event_timeout``; ``X-Slack-No-Retry: 1`` on the answer stops them. Button presses: none."""
        if _answered(answer) or not delivery["retries"] or attempt > len(RETRY_DELAYS):
            return None
        if answer.status is not None:
            no_retry = {k.lower(): v for k, v in answer.headers.items()}.get("x-slack-no-retry") == "1"
            if no_retry:
                return None
        delivery["reason"] = (
            "http_error" if answer.status is not None else "http_timeout" if answer.timed_out else "connection_failed"
        )
        return RETRY_DELAYS[attempt - 1] * self.retry_time_scale

    def _webhook_redeliver(
        self, delivery: dict, attempt: int, call: WebhookCall, answer: WebhookAnswer
    ) -> WebhookCall | None:
        """A "duplicate" fault: Slack thought the answer late and sends the same event again, as its next retry."""
        if not _answered(answer) or not delivery["retries"]:
            return None
        headers = call.headers | {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "http_timeout"}
        return WebhookCall(call.method, call.url, headers, call.body, call.timeout)

    # ----------------------------------------------------------------- the agents
    def add_agent(self, name: str, email: str = "") -> str:
        """A human member of the workspace and of the agents' channel; returns their user id."""
        with self.lock:
            user_id = f"U{next(self._ids):08d}"
            handle = re.sub(r"[^a-z0-9]+", ".", name.lower()).strip(".") or user_id.lower()
            self._users[user_id] = {
                "id": user_id,
                "team_id": self.team_id,
                "name": handle,
                "real_name": name,
                "is_bot": False,
                "profile": {
                    "display_name": name,
                    "real_name": name,
                    "email": email,
                    "image_72": f"https://avatars.example.com/{user_id}-72.png",
                    "image_192": f"https://avatars.example.com/{user_id}-192.png",
                },
            }
            return user_id

    def _human(self, user_id: str) -> dict:
        user = self._users.get(user_id)
        if user is None or user.get("is_bot"):
            raise KeyError(f"no agent {user_id}")
        return user

    def agent_reply(
        self, thread_ts: str, agent_id: str, text: str, *, attachments: list[dict] | None = None, channel: str = ""
    ) -> dict:
        """An agent writes in a thread, with files (``{"filename", "content_type", "content"}``)."""
        with self.lock:
            channel_id = channel or self.channel_id
            self._human(agent_id)
            if self._find(channel_id, thread_ts) is None:
                raise KeyError(f"no message {thread_ts}")
            message: dict[str, Any] = {
                "type": "message",
                "ts": self._next_ts(),
                "user": agent_id,
                "text": text,
                "client_msg_id": secrets.token_hex(8),
                "thread_ts": thread_ts,
                "team": self.team_id,
            }
            files = []
            for attachment in attachments or []:
                file_id = f"F{next(self._ids):08d}"
                content = attachment["content"]
                self._files[file_id] = {
                    "id": file_id,
                    "name": attachment["filename"],
                    "title": attachment["filename"],
                    "mimetype": attachment.get("content_type") or _mimetype(attachment["filename"]),
                    "size": len(content),
                    "content": content,
                    "shared": True,
                }
                files.append(file_id)
            if files:
                message["subtype"], message["files"], message["upload"] = "file_share", files, False
            self._store(channel_id, message)
            self._count_reply(channel_id, thread_ts)
            self._event(channel_id, self._message_view(message, False) | {"channel": channel_id})
            return self._message_view(message, False)

    def press(self, thread_ts: str, agent_id: str, action_id: str) -> None:
        """An agent presses a button of the root message (``block_actions``), as Slack sends it."""
        with self.lock:
            user = self._human(agent_id)
            root = self._find(self.channel_id, thread_ts)
            if root is None:
                raise KeyError(f"no message {thread_ts}")
            button = next(
                (
                    element
                    for block in root.get("blocks") or []
                    if block.get("type") == "actions"
                    for element in block.get("elements") or []
                    if element.get("action_id") == action_id
                ),
                None,
            )
            if button is None:
                raise KeyError(f"the message has no button {action_id}")
            action_ts = f"{time.time():.6f}"
            payload = {
                "type": "block_actions",
                "user": {"id": user["id"], "username": user["name"], "name": user["name"], "team_id": self.team_id},
                "api_app_id": self.app_id,
                "token": "deprecated-verification-token",
                "container": {
                    "type": "message",
                    "message_ts": root["ts"],
                    "channel_id": self.channel_id,
                    "is_ephemeral": False,
                },
                "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}",
                "team": {"id": self.team_id, "domain": "standin"},
                "channel": {"id": self.channel_id, "name": self._channels[self.channel_id]["name"]},
                "message": self._message_view(root, False),
                "response_url": f"{self.base_url}/actions/{secrets.token_hex(8)}",
                "actions": [
                    {
                        "action_id": action_id,
                        "block_id": next(
                            (b.get("block_id") for b in root["blocks"] if button in (b.get("elements") or [])), ""
                        ),
                        "text": button.get("text"),
                        "value": button.get("value", ""),
                        "style": button.get("style"),
                        "type": "button",
                        "action_ts": action_ts,
                    }
                ],
            }
            self._interaction(payload)

    def take(self, thread_ts: str, agent_id: str) -> None:
        self.press(thread_ts, agent_id, "hitl_take")

    def close(self, thread_ts: str, agent_id: str) -> None:
        self.press(thread_ts, agent_id, "hitl_close")

    def react(self, thread_ts: str, agent_id: str, reaction: str = "white_check_mark") -> None:
        with self.lock:
            self._human(agent_id)
            root = self._find(self.channel_id, thread_ts)
            if root is None:
                raise KeyError(f"no message {thread_ts}")
            root.setdefault("reactions", []).append({"name": reaction, "users": [agent_id], "count": 1})
            self._event(
                self.channel_id,
                {
                    "type": "reaction_added",
                    "user": agent_id,
                    "reaction": reaction,
                    "item_user": root.get("user"),
                    "item": {"type": "message", "channel": self.channel_id, "ts": thread_ts},
                    "ts": self._next_ts(),
                },
            )

    # ----------------------------------------------------------------- control API
    def _control_add_agent(self, req: Request) -> Response:
        data = req.json() or {}
        return Response(201, {"id": self.add_agent(str(data["name"]), str(data.get("email", "")))})

    def _control_app(self, req: Request) -> dict:
        data = req.json() or {}
        self.app_configure(
            request_url=str(data["request_url"]), interactivity_url=str(data.get("interactivity_url", ""))
        )
        return {}

    def _control_action(self, req: Request) -> dict:
        data = req.json() or {}
        action, ts, agent = str(data["action"]), str(data["thread_ts"]), str(data["agent_id"])
        if action == "reply":
            return self.agent_reply(ts, agent, str(data.get("text", "")))
        if action in ("take", "close"):
            self.press(ts, agent, f"hitl_{action}")
        elif action == "react":
            self.react(ts, agent, str(data.get("reaction") or "white_check_mark"))
        else:
            raise ValueError("action must be reply, take, close or react")
        return {}

    # ----------------------------------------------------------------- the channel page (demo)
    def _page(self, req: Request) -> Response:
        """The agents' channel as an agent sees it: each thread with its replies and buttons."""
        agents = [u for u in self._users.values() if not u.get("is_bot")]
        if not agents:
            self.add_agent("Demo Agent", "agent@demo.test")
            agents = [u for u in self._users.values() if not u.get("is_bot")]
        options = "".join(
            f'<option value="{html.escape(a["id"])}">{html.escape(a["real_name"])}</option>' for a in agents
        )
        rows = []
        for root in reversed([m for m in self._messages[self.channel_id] if m.get("thread_ts") in (None, m["ts"])]):
            head = html.escape(_plain(root))
            replies = "".join(
                f"<li><b>{html.escape(self._author(m))}</b>: {html.escape(m.get('text', ''))}{self._file_names(m)}</li>"
                for m in self._replies.get((self.channel_id, root["ts"]), [])
            )
            ts = html.escape(root["ts"])
            rows.append(
                f'<section><pre>{head}</pre><ul>{replies}</ul><form method="post" action="/app/act">'
                f'<input type="hidden" name="thread_ts" value="{ts}"><select name="agent_id">{options}</select>'
                '<input name="text" placeholder="Reply in thread" size="40">'
                '<button name="action" value="reply">Reply</button><button name="action" value="take">Take</button>'
                '<button name="action" value="react">React ✅</button>'
                '<button name="action" value="close">Close</button>'
                "</form></section>"
            )
        body = (
            "<!doctype html><meta charset=utf-8><title>#agents — Slack stand-in</title>"
            "<style>body{font:14px sans-serif;max-width:60em;margin:auto}section{border:1px solid #ccc;"
            "margin:1em 0;padding:.5em}pre{white-space:pre-wrap}</style><meta http-equiv=refresh content=5>"
            f"<h1>#{html.escape(self._channels[self.channel_id]['name'])}</h1>"
            + ("".join(rows) or "<p>No sessions yet.</p>")
        )
        return Response(200, body, {"Cache-Control": "no-store"}, content_type=HTML_TYPE)

    def _page_act(self, req: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        action, ts, agent = form.get("action", ""), form.get("thread_ts", ""), form.get("agent_id", "")
        try:
            if action == "reply" and form.get("text", "").strip():
                self.agent_reply(ts, agent, form["text"])
            elif action in ("take", "close"):
                self.press(ts, agent, f"hitl_{action}")
            elif action == "react":
                self.react(ts, agent)
        except KeyError as exc:
            raise HttpError(404, str(exc)) from None
        return Response(303, b"", {"Location": "/app/"}, content_type="text/plain")

    def _file_names(self, message: dict) -> str:
        names = [html.escape(self._files[f]["name"]) for f in message.get("files", []) if f in self._files]
        return f" [{', '.join(names)}]" if names else ""

    def _author(self, message: dict) -> str:
        if message.get("username"):
            return message["username"]
        user = self._users.get(message.get("user", ""), {})
        return user.get("real_name") or user.get("profile", {}).get("display_name") or message.get("user", "?")


def _plain(message: dict) -> str:
    """A root message's blocks as text, for the channel page."""
    lines = []
    for block in message.get("blocks") or []:
        if isinstance(block.get("text"), dict):
            lines.append(block["text"].get("text", ""))
        for item in block.get("fields") or []:
            lines.append(item.get("text", ""))
        for item in block.get("elements") or []:
            if item.get("type") == "mrkdwn":
                lines.append(item.get("text", ""))
    text = "\n".join(lines) or message.get("text", "")
    # Slack renders <!date^epoch^format|fallback> in the reader's time zone; the page shows the fallback.
    return html.unescape(re.sub(r"<!date\^[^|>]*\|([^>]*)>", r"\1", text))


def _mimetype(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _answered(answer: WebhookAnswer) -> bool:
    return answer.status is not None and 200 <= answer.status < 300
