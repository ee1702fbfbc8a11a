"""The Slack adapter: one thread per HITL session in the agents' channel.

A *ticket* is the thread's root message (its ``ts`` is the ticket id, our reference is in its
message metadata); end-user and bot messages are thread replies under the real author's name
and picture; agents answer in the thread and press Take/Close on the root. Slack has no user
record for the end user: ``external_user_upsert`` returns a stable pseudo id.

Web API calls go through ``slack_sdk``'s ``WebClient`` pointed at the configured base URL
(``https://slack.com/api`` in production) with no retry handlers: errors become outbound
errors at once (``providers.slack.errors``) and the outbox retries, honouring ``Retry-After``.
Methods and parameters: [doc docs.slack.dev/reference/methods/chat.postMessage, chat.update,
chat.postEphemeral, chat.delete, conversations.history, conversations.replies,
conversations.info, users.info, auth.test, files.getUploadURLExternal,
files.completeUploadExternal; code slack_sdk ``web/client.py``].
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from slack_sdk import WebClient

from outbound.http import PermanentError, RetryableError
from outbound.media import MediaFile
from outbound.pacing import PaceRefused, pace_clear, pace_defer, pace_reserve
from providers.base import (
    AgentProfile,
    ConnectionCheck,
    ExternalUserSpec,
    HelpDeskProvider,
    InboundEvent,
    OutboundMessage,
    ParsedWebhook,
    TicketRef,
    TicketSpec,
    WebhookInstallation,
)
from providers.rendering import SEPARATOR, render_payload
from providers.slack import manifest, webhooks
from providers.slack.entity import PRIORITY_EMOJI, SlackHitlSessionSerializer
from providers.slack.errors import slack_call

MEDIA_FIELDS = {"image": "imageUrl", "audio": "audioUrl", "video": "videoUrl", "file": "fileUrl"}
MEDIA_LABELS = {"image": "Image", "audio": "Audio", "video": "Video", "file": "File"}
SESSION_EVENT, TRANSCRIPT_EVENT, MESSAGE_EVENT = "hitl_session", "hitl_transcript", "hitl_message"
CLOSED_EVENT = "hitl_closed"
STATUS_BLOCK, ACTIONS_BLOCK = "hitl_status", "hitl_actions"
SECTION_MAX = 3000  # characters of a section block's text [doc docs.slack.dev/reference/block-kit/blocks/section-block]
HEADER_MAX = 150  # characters of a header block's plain text
ROOT_TRANSCRIPT_MAX = 2500  # a longer transcript goes into the thread, in parts
TEXT_MAX = 39000  # chat.postMessage truncates ``text`` past 40,000 characters
HISTORY_PAGES = 5  # conversations.history pages (200 each) read to find a lost root
USERNAME_MAX = 80
CLOSED_NOTE = (
    ":door: The chat side ended this session (the user left, or it ended on a timeout or by an "
    "operator). Replies in this thread no longer reach the user."
)
STOPPED_REPLY_NOTE = "This session is over: your reply was not sent to the user."


def mrkdwn_escape(text: str) -> str:
    """Text that Slack shows as written: ``&``, ``<`` and ``>`` escaped, so nobody can ping
    ``<!channel>``, mention ``<@U…>`` or forge ``<url|label>`` links [doc docs.slack.dev/
    messaging/formatting-message-text "Escaping text"]."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _ChannelPacer:
    """About one message per second per channel [doc docs.slack.dev/apis/web-api/rate-limits
    (= api.slack.com/docs/rate-limits), "Special Tier": "chat.postMessage generally allows
    posting one message per second per channel, while also maintaining a workspace-wide limit";
    "Posting messages: 1 per second; short bursts >1 allowed"], shared by every worker process
    and machine: the pace of key ``slack:<base url>|<channel>`` in the database
    (``outbound.pacing``), one statement per post. Per-process pacers let two processes post in
    the same second, which Slack answered 429 (the delivery then waited its Retry-After).

    ``reserve`` hands out send slots ``INTERVAL`` apart. A slot within ``MAX_SLEEP`` seconds is
    waited for here; a later one raises ``RetryableError`` with ``retry_after`` without sending
    and without taking the slot, so the outbox reschedules that session's lane head (its order
    kept, nothing dropped) and the worker thread serves other lanes. A 429 from Slack pushes the
    channel's next slot to its ``Retry-After``, for every process.
    """

    KEY_PREFIX = "slack:"
    INTERVAL = 1.05  # a little over a second: arrival times jitter by a few milliseconds
    MAX_SLEEP = 1.5
    FOLLOW_UP_MAX_SLEEP = 60.0  # the rest of one delivery (transcript parts, a message's files)

    def reserve(self, key: str, *, follow_up: bool = False) -> None:
        """Wait for the channel's next slot; ``follow_up``: a later post of a delivery that already
        posted (a transcript part, a message's files), which waits its turn however long rather
        than leave the delivery half done."""
        try:
            slot = pace_reserve(
                key=self.KEY_PREFIX + key,
                interval=self.INTERVAL,
                max_wait=self.FOLLOW_UP_MAX_SLEEP if follow_up else self.MAX_SLEEP,
            )
        except PaceRefused as refused:
            raise RetryableError("Slack channel message pacing (about 1 per second)", 429, refused.wait, "paced")
        if slot.wait > 0:
            time.sleep(slot.wait)

    def penalise(self, key: str, seconds: float) -> None:
        pace_defer(key=self.KEY_PREFIX + key, seconds=seconds)

    def reset(self) -> None:
        """Every Slack channel's pace forgotten (tests)."""
        pace_clear(prefix=self.KEY_PREFIX)


PACER = _ChannelPacer()


class SlackProvider(HelpDeskProvider):
    kind = "slack"
    entity_serializer = SlackHitlSessionSerializer
    updates_ticket_head = True

    # --- transport --------------------------------------------------------------------------
    @property
    def channel(self) -> str:
        return str(self.credentials["channel_id"])

    @property
    def api_url(self) -> str:
        """Where the Web API methods are: ``<base>/api/`` (``https://slack.com`` or
        ``https://slack.com/api`` both name ``https://slack.com/api/``)."""
        return self.base_url + ("/" if self.base_url.endswith("/api") else "/api/")

    def _client(self) -> WebClient:
        client = getattr(self, "_web_client", None)
        if client is None:
            client = WebClient(
                token=self.credentials["bot_token"],
                base_url=self.api_url,
                timeout=max(1, round(self.timeout[1])),
                retry_handlers=[],  # 429 and connection errors go to the outbox, not to a sleep here
            )
            self._web_client = client
        return client

    def _call(self, method: str, **kwargs) -> dict:
        """One Web API call (``api_call`` with the method name) as a dict; outbound errors on failure."""
        send = getattr(self._client(), method.replace(".", "_"))  # chat.postMessage → chat_postMessage
        return slack_call(method, lambda: send(**kwargs).data)

    def _post(self, *, follow_up: bool = False, **kwargs) -> dict:
        """``chat.postMessage`` in the agents' channel, paced per channel."""
        key = f"{self.base_url}|{self.channel}"
        PACER.reserve(key, follow_up=follow_up)
        try:
            return self._call("chat.postMessage", channel=self.channel, **kwargs)
        except RetryableError as exc:
            if exc.status_code == 429:
                PACER.penalise(key, exc.retry_after or 1.0)
            raise

    # --- the end user -----------------------------------------------------------------------
    def external_user_upsert(self, user: ExternalUserSpec, *, role: str = "end-user") -> str:
        """No call: Slack keeps no record of people outside the workspace. A stable pseudo id
        (a hash of the Botpress user id) names the author in our messages' metadata."""
        return "bp-" + hashlib.sha256(user.reference.encode()).hexdigest()[:32]

    # --- the thread ---------------------------------------------------------------------------
    def ticket_create(self, spec: TicketSpec, *, idempotency_key: str) -> TicketRef:
        """The root message, then (for a long transcript) the transcript in the thread.

        Slack has no idempotency key. A transcript part that fails after the root was posted
        raises a ``RetryableError`` without a status (an unknown outcome), so the next attempt
        looks the root up (``ticket_find``), which removes an incomplete thread and lets this
        post a whole one again: never two threads for one session, never a truncated transcript.
        """
        description, _, transcript = spec.body.partition(SEPARATOR)
        priority = str(spec.extras.get("priority") or "")
        chunks = [] if len(transcript) <= ROOT_TRANSCRIPT_MAX else _chunks(transcript.split(SEPARATOR))
        payload = {
            "reference": spec.reference,
            "requester": spec.requester_external_id,
            "title": spec.subject[:HEADER_MAX],
            "priority": priority,
            "state": "open",
            "transcript_parts": len(chunks),
        }
        blocks = _root_blocks(spec, description, "" if chunks else transcript, priority)
        text = mrkdwn_escape(f"{spec.subject} ({spec.requester_name or 'someone'}) is waiting for an agent")
        root = self._post(text=text, blocks=blocks, metadata={"event_type": SESSION_EVENT, "event_payload": payload})
        ts = str(root["ts"])
        for index, chunk in enumerate(chunks):
            try:
                self._post(
                    follow_up=True,
                    thread_ts=ts,
                    text=chunk,
                    metadata={
                        "event_type": TRANSCRIPT_EVENT,
                        "event_payload": {"reference": spec.reference, "part": index},
                    },
                )
            except (RetryableError, PermanentError) as exc:
                raise RetryableError(
                    f"transcript part {index + 1}/{len(chunks)} not posted: {exc}", None, exc.retry_after
                ) from exc
        return TicketRef(external_id=ts, status="open", priority=priority, initial_message_id=ts)

    def ticket_find(self, *, reference: str) -> TicketRef | None:
        """The root carrying ``reference`` in its metadata, among the channel's latest messages.

        A root whose transcript is incomplete (an attempt failed half-way) is deleted with its
        parts, and ``None`` returned, so that the thread is posted whole again.
        """
        cursor = None
        for _ in range(HISTORY_PAGES):
            page = self._call(
                "conversations.history", channel=self.channel, limit=200, include_all_metadata=True, **_cursor(cursor)
            )
            for message in page.get("messages") or []:
                payload = _metadata(message, SESSION_EVENT)
                if payload is None or payload.get("reference") != reference:
                    continue
                ts = str(message["ts"])
                wanted = int(payload.get("transcript_parts") or 0)
                parts = [m for m in self._replies(ts) if _metadata(m, TRANSCRIPT_EVENT) is not None] if wanted else []
                if len(parts) < wanted:
                    for part in parts:
                        self._delete(str(part["ts"]))
                    self._delete(ts)
                    return None
                return TicketRef(
                    external_id=ts,
                    status=str(payload.get("state") or "open"),
                    priority=str(payload.get("priority") or ""),
                    initial_message_id=ts,
                )
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None

    def _replies(self, ts: str) -> list[dict]:
        """Every message of the thread (the root first)."""
        messages, cursor = [], None
        for _ in range(50):
            page = self._call(
                "conversations.replies",
                channel=self.channel,
                ts=ts,
                limit=200,
                include_all_metadata=True,
                **_cursor(cursor),
            )
            messages += page.get("messages") or []
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return messages

    def _delete(self, ts: str) -> None:
        try:
            self._call("chat.delete", channel=self.channel, ts=ts)
        except PermanentError as exc:
            if exc.error_type != "message_not_found":
                raise

    def _root(self, ts: str) -> dict:
        """The root message as Slack stores it (blocks and metadata)."""
        page = self._call(
            "conversations.history", channel=self.channel, latest=ts, inclusive=True, limit=1, include_all_metadata=True
        )
        for message in page.get("messages") or []:
            if str(message.get("ts")) == ts:
                return message
        raise PermanentError(f"Slack: the thread's root message {ts} is gone", 404, None, "message_not_found")

    def ticket_head_update(self, *, ticket_external_id: str, state: str, agent_name: str = "") -> None:
        """The root shows who took the session and when, or that it is closed (``chat.update``);
        a closed root loses its buttons. Its metadata keeps the state."""
        root = self._root(ticket_external_id)
        payload = dict(_metadata(root, SESSION_EVENT) or {})
        now = int(time.time())
        stamp = f"<!date^{now}^{{date_short_pretty}} {{time}}|{datetime.fromtimestamp(now, UTC):%Y-%m-%d %H:%M} UTC>"
        if state == "stopped":
            payload["state"], status = "closed", f":white_check_mark: Closed {stamp}"
        else:
            who = mrkdwn_escape(agent_name or "an agent")
            payload["state"], status = "assigned", f":raising_hand: Taken by *{who}* {stamp}"
        blocks = [
            b for b in root.get("blocks") or [] if not (state == "stopped" and b.get("block_id") == ACTIONS_BLOCK)
        ]
        blocks = [_status_block(status) if b.get("block_id") == STATUS_BLOCK else b for b in blocks]
        self._call(
            "chat.update",
            channel=self.channel,
            ts=ticket_external_id,
            text=root.get("text") or "",
            blocks=blocks,
            metadata={"event_type": SESSION_EVENT, "event_payload": payload},
        )

    def ticket_close(self, *, ticket_external_id: str) -> None:
        """The chat side ended the session: a note in the thread (once: a repeat finds it by its
        metadata), and the root shown closed."""
        replies = self._replies(ticket_external_id)
        if not any(_metadata(reply, CLOSED_EVENT) is not None for reply in replies):
            self._post(
                thread_ts=ticket_external_id,
                text=CLOSED_NOTE,
                metadata={"event_type": CLOSED_EVENT, "event_payload": {}},
            )
        root = replies[0] if replies and str(replies[0].get("ts")) == ticket_external_id else None
        if root is None or (_metadata(root, SESSION_EVENT) or {}).get("state") != "closed":
            self.ticket_head_update(ticket_external_id=ticket_external_id, state="stopped")

    def ticket_stopped_reply(self, *, ticket_external_id: str, event: InboundEvent) -> None:
        """An agent replied in a closed thread: an ephemeral note only they see."""
        if event.agent is None or not event.agent.external_id:
            return
        self._call(
            "chat.postEphemeral",
            channel=self.channel,
            user=event.agent.external_id,
            thread_ts=ticket_external_id,
            text=STOPPED_REPLY_NOTE,
        )

    # --- messages ---------------------------------------------------------------------------
    def message_post(self, *, ticket_external_id: str, message: OutboundMessage) -> str:
        """A thread reply under the author's name and picture (``username``/``icon_url``, scope
        ``chat:write.customize``), text escaped, media as links; then the media the fetcher can
        get uploaded into the thread (files upload v2).

        Files are shared after the text: if that fails, the text is posted already, so the error
        has no status (unknown outcome) and the retry finds the text (``message_find``) instead of
        posting it twice; the files' links are in the text either way.
        """
        text, media_urls = _compose(message)
        uploads = self._fetched(media_urls)  # before posting: a failed fetch must not follow a post
        posted = self._post(
            thread_ts=ticket_external_id,
            text=text,
            username=(message.author_name or "User")[:USERNAME_MAX],
            **({"icon_url": message.author_picture_url} if message.author_picture_url else {}),
            unfurl_links=False,
            unfurl_media=False,
            parse="none",
            metadata={"event_type": MESSAGE_EVENT, "event_payload": {"author": message.author_external_id}},
        )
        ts = str(posted["ts"])
        if uploads:
            key = f"{self.base_url}|{self.channel}"
            try:
                PACER.reserve(key, follow_up=True)
                slack_call(
                    "files.upload (v2)",
                    lambda: self._client().files_upload_v2(
                        file_uploads=uploads, channel=self.channel, thread_ts=ticket_external_id
                    ),
                )
            except (RetryableError, PermanentError) as exc:
                raise RetryableError(f"message posted, its files not shared: {exc}", None, exc.retry_after) from exc
        return ts

    def _fetched(self, urls: list[str]) -> list[dict]:
        return [
            {"file": media.content, "filename": media.filename, "title": media.filename}
            for media in self.media_fetched(urls)
        ]

    def message_find(self, *, ticket_external_id: str, message: OutboundMessage, exclude: set[str]) -> str | None:
        """The reply a lost attempt posted: our metadata naming the same author, the same text."""
        text, _ = _compose(message)
        for reply in self._replies(ticket_external_id):
            ts = str(reply.get("ts"))
            payload = _metadata(reply, MESSAGE_EVENT)
            if ts in exclude or payload is None or payload.get("author") != message.author_external_id:
                continue
            if _squash(html.unescape(reply.get("text") or "")) == _squash(html.unescape(text)):
                return ts
        return None

    # --- inbound ----------------------------------------------------------------------------
    @classmethod
    def webhook_verify(cls, *, headers, body, secret, now, window) -> None:
        webhooks.signature_verify(headers=headers, body=body, secret=secret, now=now, window=window)

    @classmethod
    def webhook_parse(cls, *, headers, body, installation=None) -> ParsedWebhook:
        return webhooks.webhook_parse(headers=headers, body=body, installation=installation)

    def agent_profile_fetch(self, *, external_id: str) -> AgentProfile | None:
        """``users.info``: display name (else real name), e-mail (scope ``users:read.email``) and
        the 192 px picture; ``None`` for an unknown user or a bot."""
        try:
            user = self._call("users.info", user=external_id).get("user") or {}
        except PermanentError as exc:
            if exc.error_type in ("user_not_found", "user_not_visible"):
                return None
            raise
        if user.get("is_bot"):
            return None
        profile = user.get("profile") or {}
        name = (
            profile.get("display_name") or profile.get("real_name") or user.get("real_name") or user.get("name") or ""
        )
        picture = profile.get("image_192") or profile.get("image_72") or ""
        return AgentProfile(external_id=external_id, name=name, email=profile.get("email") or "", picture_url=picture)

    def attachment_download(self, *, url: str) -> MediaFile:
        """An agent's file: ``url_private`` needs the bot token [doc docs.slack.dev/messaging/
        working-with-files "Authentication"], sent only to Slack's own hosts (``_own_host``),
        without following redirects: Slack redirects to its sign-in page when the token is
        refused. Size and time limited."""
        return self._attachment_download_own(
            url=url,
            authorization=f"Bearer {self.credentials['bot_token']}",
            describe_error=lambda r: (f"HTTP{r.status_code}", r.reason or ""),
            desk="Slack",
            redirects=None,
            refused="redirected away: the token may not read this file",
        )

    def _own_host(self, url: str) -> bool:
        """The API's host and its file host ``files.<host>``, on the API's scheme."""
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        hosts = {ours.netloc.lower(), f"files.{ours.netloc.lower()}"}
        return theirs.scheme == ours.scheme and (theirs.netloc or "").lower() in hosts

    # --- set-up -----------------------------------------------------------------------------
    def webhook_install(self, *, url: str, previous_state: Mapping) -> WebhookInstallation:
        """Check what the app needs and remember who the bot is; Slack's webhooks are the app's
        Request URLs, set by pasting the manifest (``webhook_instructions``).

        ``auth.test`` (the token), then ``conversations.info`` (the channel exists, and the bot
        is a member: it cannot read the channel's messages otherwise). The signing secret is
        Slack's (Basic Information), taken from the credentials.
        """
        me = self._call("auth.test")
        try:
            channel = self._call("conversations.info", channel=self.channel).get("channel") or {}
        except PermanentError as exc:
            if exc.error_type == "channel_not_found":
                raise PermanentError(
                    f"channel_id: Slack finds no channel {self.channel!r} for this bot (check the id in the "
                    "channel's details; for a private channel invite the bot first)",
                    exc.status_code,
                    None,
                    exc.error_type,
                ) from exc
            raise
        if not channel.get("is_member"):
            raise PermanentError(
                f"channel_id: the bot is not a member of #{channel.get('name') or self.channel}: type "
                f"/invite @{me.get('user') or 'the bot'} in that channel, then install again",
                400,
                None,
                "not_in_channel",
            )
        state = {
            "bot_user_id": me.get("user_id") or "",
            "bot_id": me.get("bot_id") or "",
            "team_id": me.get("team_id") or "",
            "channel_id": self.channel,
            "channel_name": channel.get("name") or "",
            "url": url,
        }
        return WebhookInstallation(signing_secret=str(self.credentials["signing_secret"]), state=state)

    def webhook_uninstall(self, *, state: Mapping) -> None:
        """Nothing we installed: the Slack app is the operator's to remove."""

    def webhook_instructions(self, *, url: str, secret: str) -> str:
        return manifest.instructions(url=url)

    def connection_check(self, *, installation: Mapping) -> ConnectionCheck:
        me = self._call("auth.test")
        channel = self._call("conversations.info", channel=self.channel).get("channel") or {}
        details = {"team": me.get("team") or "", "bot_user_id": me.get("user_id") or "", "channel": channel.get("name")}
        member = bool(channel.get("is_member"))
        summary = f"authenticated as {me.get('user')} in {me.get('team')}; #{channel.get('name')}: "
        return ConnectionCheck(member, summary + ("bot is a member" if member else "bot is NOT a member"), details)


# --- rendering ----------------------------------------------------------------------------------
def _cursor(cursor: str | None) -> dict:
    return {"cursor": cursor} if cursor else {}


def _metadata(message: Mapping, event_type: str) -> dict | None:
    metadata = message.get("metadata")
    if isinstance(metadata, dict) and metadata.get("event_type") == event_type:
        payload = metadata.get("event_payload")
        return payload if isinstance(payload, dict) else {}
    return None


def _status_block(text: str) -> dict:
    return {"type": "context", "block_id": STATUS_BLOCK, "elements": [{"type": "mrkdwn", "text": text}]}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_MAX]}}


def _root_blocks(spec: TicketSpec, description: str, transcript: str, priority: str) -> list[dict]:
    who = mrkdwn_escape(spec.requester_name or "Someone")
    if spec.requester_email:
        who += f" ({mrkdwn_escape(spec.requester_email)})"
    fields = [{"type": "mrkdwn", "text": f"*Who is asking*\n{who}"}]
    if priority:
        fields.append({"type": "mrkdwn", "text": f"*Priority*\n{PRIORITY_EMOJI.get(priority, '')} {priority}"})
    blocks: list[dict] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": spec.subject[:HEADER_MAX] or "Untitled", "emoji": False},
        },
        {"type": "section", "fields": fields},
    ]
    if description.strip():
        blocks.append(_section(mrkdwn_escape(description.strip())))
    if transcript.strip():
        blocks.append(_section("*Conversation so far*\n" + mrkdwn_escape(transcript.strip())))
    elif spec.body.count(SEPARATOR):
        blocks.append(_section("_The conversation so far is in the thread._"))
    blocks.append(_status_block(":hourglass_flowing_sand: Waiting for an agent"))
    blocks.append(
        {
            "type": "actions",
            "block_id": ACTIONS_BLOCK,
            "elements": [
                {
                    "type": "button",
                    "action_id": webhooks.ACTION_TAKE,
                    "text": {"type": "plain_text", "text": "Take"},
                    "style": "primary",
                    "value": spec.reference[:2000],
                },
                {
                    "type": "button",
                    "action_id": webhooks.ACTION_CLOSE,
                    "text": {"type": "plain_text", "text": "Close"},
                    "style": "danger",
                    "value": spec.reference[:2000],
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Close this session?"},
                        "text": {
                            "type": "plain_text",
                            "text": "The user is told the conversation with an agent ended.",
                        },
                        "confirm": {"type": "plain_text", "text": "Close"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                    },
                },
            ],
        }
    )
    return blocks


def _chunks(entries: list[str], limit: int = SECTION_MAX) -> list[str]:
    """Transcript entries joined into thread messages of at most ``limit`` characters each,
    escaped; an entry longer than that is cut into pieces."""
    chunks, current = [], ""
    for entry in (mrkdwn_escape(e.strip()) for e in entries if e.strip()):
        while len(entry) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(entry[:limit])
            entry = entry[limit:]
        candidate = f"{current}\n\n{entry}" if current else entry
        if len(candidate) > limit:
            chunks.append(current)
            candidate = entry
        current = candidate
    if current:
        chunks.append(current)
    return chunks


def _compose(message: OutboundMessage) -> tuple[str, list[str]]:
    """The reply's escaped text (every part of a bloc, media as labelled links) and the media URLs."""
    single = [{"type": message.type, "payload": message.payload}]
    items = message.payload.get("items", []) if message.type == "bloc" else single
    texts, media = [], []
    for item in items:
        kind, payload = item.get("type", ""), item.get("payload", {})
        if kind in MEDIA_FIELDS:
            url, title = str(payload.get(MEDIA_FIELDS[kind], "")), payload.get("title", "")
            label = f"{MEDIA_LABELS[kind]}: {title}" if title else MEDIA_LABELS[kind]
            texts.append(mrkdwn_escape(f"{label}\n{url}"))
            if urlsplit(url).scheme in ("http", "https"):
                media.append(url)
        else:
            texts.append(mrkdwn_escape(render_payload(kind, payload)))
    return ("\n\n".join(t for t in texts if t) or " ")[:TEXT_MAX], media


def _squash(text: str) -> str:
    return " ".join(text.split())
