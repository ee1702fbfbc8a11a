"""The one seam through which the gateway names things in Botpress and sends to it.

A ``BotpressSink`` is chosen per integration (``Integration.botpress_transport``):

- ``RuntimeApiSink``: the gateway is (or acts as) the Botpress integration and calls Botpress's
  runtime API: it creates the users and the ``hitl`` conversation, and emits events under the
  integration's own names.
- ``HitlApiSink``: Botpress Hub's "Human in the Loop API" integration owns the Botpress side; it
  names users and conversations by the *remote* ids we issue, and we call its webhooks.

Services and executors only ever talk to this interface, so neither knows which it is.
Adapters here know nothing of Django: plain data in, ids out, ``outbound.http`` errors raised.
"""

from __future__ import annotations

import abc
import hashlib
import uuid
from dataclasses import dataclass
from typing import ClassVar

from botpress.client import BotpressClient
from botpress.hitl_api import HitlApiWebhooks
from botpress.names import EVENTS, HitlNames
from outbound.http import PermanentError

EVENT_ASSIGNED, EVENT_STOPPED = EVENTS
# Tag under which a help-desk message id is kept on a Botpress message (both directions).
EXTERNAL_MESSAGE_TAG = "externalMessageId"
SESSION_TAG = "sessionId"
# Conversation tag holding the help desk's ticket id: the name Botpress's own Zendesk integration
# uses (``integrations/zendesk``: conversation tag ``id`` = ticket id; shared/reference/botpress-hitl.md 3.1).
TICKET_TAG = "id"
# The hitl-api integration tags its users and conversations with the remote id we issued.
HITL_API_TAG = "externalId"
# How the gateway names the bot when it writes as the bot: the runtime API user's ``id`` tag, and
# the remote user id the hitl-api gives the bot's messages (``remoteUserId: "BOT"``).
BOT_AUTHOR_ID, HITL_API_BOT_USER = "hitl-gateway-bot", "BOT"
# Botpress media message types and the payload field holding their URL [botpress-hitl.md 1.4].
MEDIA_URL_FIELDS = {"image": "imageUrl", "audio": "audioUrl", "video": "videoUrl", "file": "fileUrl"}


@dataclass(frozen=True)
class AgentRef:
    """A help-desk agent as a sink needs them; ``botpress_user_id`` is set once Botpress knows them."""

    external_id: str
    name: str = ""
    email: str = ""
    picture_url: str = ""
    botpress_user_id: str = ""


class BotpressSink(abc.ABC):
    #: Whether agents are Botpress users we create and must remember (``agent_user_sync``).
    keeps_agent_users: ClassVar[bool]
    #: Whether the gateway can tag the conversation (``conversation_tag``).
    tags_conversations: ClassVar[bool]

    # --- naming, while Botpress waits for our answer --------------------------------------
    @abc.abstractmethod
    def user_register(self, *, name: str, email: str, picture_url: str) -> str:
        """The id Botpress will use for this end user (the same email gives the same id)."""

    @abc.abstractmethod
    def conversation_open(self, *, session_id: str) -> str:
        """The id Botpress will use for the session's conversation; repeatable for one session."""

    @abc.abstractmethod
    def conversation_resolve(self, botpress_conversation_id: str) -> str | None:
        """Our id of a conversation Botpress names by its own id, when they differ and can be found."""

    # --- to the user, from the outbox -------------------------------------------------------
    def conversation_tag(self, *, conversation_id: str, tags: dict[str, str]) -> None:
        """Set tags on the conversation (declared in the definition); only if ``tags_conversations``."""
        raise NotImplementedError

    def agent_user_sync(self, agent: AgentRef) -> str:
        """Create or update the agent's Botpress user; return its id (only if ``keeps_agent_users``)."""
        raise NotImplementedError

    @abc.abstractmethod
    def message_send(
        self, *, conversation_id: str, author: AgentRef, type: str, payload: dict, external_message_id: str
    ) -> str:
        """Relay an agent's message; return the Botpress message id when Botpress tells it."""

    @abc.abstractmethod
    def bot_author(self, *, bot_user_id: str, name: str) -> AgentRef:
        """The author of a message the gateway sends as the bot (``bot_user_id``: the bot's
        Botpress user when the integration knows it)."""

    @abc.abstractmethod
    def event_emit(self, *, event: str, conversation_id: str, agent: AgentRef | None = None) -> str:
        """Emit ``hitlAssigned`` (with the agent) or ``hitlStopped``; return the event id if known."""

    @abc.abstractmethod
    def message_acknowledge(self, *, message_id: str, tags: dict) -> None:
        """Tag a Botpress message we relayed to the agent, as Botpress's integrations do."""

    def file_publish(self, *, key: str, content: bytes, content_type: str) -> str:
        """Store an agent's file in the bot's Files API, public; return its permanent URL.

        ``key`` is stable per message part, so a retry replaces the same file instead of
        adding one. Raises ``outbound.http`` errors; ``PermanentError`` when this sink has no
        Files API access.
        """
        client = self._files_client()
        if client is None:
            raise PermanentError("no Botpress API token to store files with")
        return client.file_upload(key=key, content=content, content_type=content_type)["url"]

    def _files_client(self) -> BotpressClient | None:
        return None


class RuntimeApiSink(BotpressSink):
    keeps_agent_users = True
    tags_conversations = True

    def __init__(self, *, client: BotpressClient, names: HitlNames) -> None:
        self.client = client
        self.names = names

    def user_register(self, *, name: str, email: str, picture_url: str) -> str:
        tags = {"role": "end-user"}
        if not email:
            return self.client.user_create(tags=tags, name=name, picture_url=picture_url or None)["id"]
        tags["email"] = email.lower()
        user = self.client.user_get_or_create(
            tags=tags, name=name, picture_url=picture_url or None, discriminate_by=["email"]
        )
        return user["id"]

    def conversation_open(self, *, session_id: str) -> str:
        # Tagged with our id, so a retried call finds the conversation the first one created.
        conversation = self.client.conversation_get_or_create(
            channel=self.names.channel, tags={SESSION_TAG: session_id}, discriminate_by=[SESSION_TAG]
        )
        return conversation["id"]

    def conversation_resolve(self, botpress_conversation_id: str) -> str | None:
        return None  # our id of a conversation is Botpress's id

    def conversation_tag(self, *, conversation_id: str, tags: dict[str, str]) -> None:
        # PUT is a partial update: tags not named (our sessionId) are kept (botpress-api.md B.3).
        self.client.conversation_update(conversation_id, tags=tags)

    def agent_user_sync(self, agent: AgentRef) -> str:
        tags = {"id": agent.external_id, "role": "agent"} | ({"email": agent.email} if agent.email else {})
        user = self.client.user_get_or_create(
            tags=tags, name=agent.name or None, picture_url=agent.picture_url or None, discriminate_by=["id"]
        )
        return user["id"]

    def message_send(
        self, *, conversation_id: str, author: AgentRef, type: str, payload: dict, external_message_id: str
    ) -> str:
        created = self.client.message_get_or_create(
            conversation_id=conversation_id,
            user_id=author.botpress_user_id,
            type=type,
            payload=payload,
            tags={EXTERNAL_MESSAGE_TAG: external_message_id},
            discriminate_by=[EXTERNAL_MESSAGE_TAG],
        )
        return created["id"]

    def bot_author(self, *, bot_user_id: str, name: str) -> AgentRef:
        if not bot_user_id:  # a user standing for the bot, found again by its tag on every call
            tags = {"id": BOT_AUTHOR_ID, "role": "bot"}
            bot_user_id = self.client.user_get_or_create(tags=tags, name=name, discriminate_by=["id"])["id"]
        return AgentRef(external_id=BOT_AUTHOR_ID, name=name, botpress_user_id=bot_user_id)

    def event_emit(self, *, event: str, conversation_id: str, agent: AgentRef | None = None) -> str:
        payload = {"conversationId": conversation_id}
        if event == EVENT_ASSIGNED:
            payload["userId"] = agent.botpress_user_id
        created = self.client.event_create(type=self.names.event(event), payload=payload)
        return created.get("id", "")

    def message_acknowledge(self, *, message_id: str, tags: dict) -> None:
        self.client.message_update(message_id, tags=tags)

    def _files_client(self) -> BotpressClient | None:
        return self.client


class HitlApiSink(BotpressSink):
    """Botpress Hub's ``plus/hitl-api``: we issue the remote ids and call its three webhooks.

    Its ``closeRemoteTicket`` names a conversation by Botpress's id, which the contract never
    tells us; ``lookup`` (a runtime API client, if the integration has a token that can read the
    conversation) resolves it through the ``externalId`` tag the hitl-api puts on it.
    """

    keeps_agent_users = False
    # The hitl-api contract has no call that tags a conversation, and the conversation is the
    # Hub integration's, not ours: the ticket id is not put on it.
    tags_conversations = False

    def __init__(self, *, webhooks: HitlApiWebhooks, namespace: str, lookup: BotpressClient | None = None) -> None:
        self.webhooks = webhooks
        self.namespace = namespace
        self.lookup = lookup

    def user_register(self, *, name: str, email: str, picture_url: str) -> str:
        if not email:
            return f"user_{uuid.uuid4().hex}"
        # Derived from the email, like the runtime API's get-or-create by email.
        return "user_" + hashlib.sha256(f"{self.namespace}:{email.lower()}".encode()).hexdigest()[:32]

    def conversation_open(self, *, session_id: str) -> str:
        return session_id

    def conversation_resolve(self, botpress_conversation_id: str) -> str | None:
        if self.lookup is None:
            return None
        try:
            conversation = self.lookup.conversation_get(botpress_conversation_id)
        except PermanentError:  # unknown to Botpress, or the token may not read it
            return None
        tags = conversation.get("tags") or {}
        # Read as the integration the tag is bare; read as the bot it is prefixed ("plus/hitl-api:").
        return next(
            (value for key, value in tags.items() if key == HITL_API_TAG or key.endswith(f":{HITL_API_TAG}")), None
        )

    def message_send(
        self, *, conversation_id: str, author: AgentRef, type: str, payload: dict, external_message_id: str
    ) -> str:
        if type in MEDIA_URL_FIELDS:  # ``/message-from-agent`` relays text: the file goes as its link
            url, title = payload.get(MEDIA_URL_FIELDS[type], ""), payload.get("title", "")
            type, payload = "text", {"text": f"{title}: {url}" if title else url}
        self.webhooks.message_from_agent(
            remote_conversation_id=conversation_id,
            remote_user_id=author.external_id,
            message_type=type,
            payload=payload,
        )
        return ""  # the hitl-api answers without the message it created

    def bot_author(self, *, bot_user_id: str, name: str) -> AgentRef:
        # The remote user id the hitl-api itself uses for the bot's messages.
        return AgentRef(external_id=HITL_API_BOT_USER, name=name)

    def event_emit(self, *, event: str, conversation_id: str, agent: AgentRef | None = None) -> str:
        if event == EVENT_ASSIGNED:
            self.webhooks.agent_assigned(remote_conversation_id=conversation_id, remote_user_id=agent.external_id)
        elif event == EVENT_STOPPED:
            self.webhooks.stop_hitl(remote_conversation_id=conversation_id)
        else:
            raise ValueError(f"no hitl-api endpoint for event {event!r}")
        return ""

    def message_acknowledge(self, *, message_id: str, tags: dict) -> None:
        """The hitl-api has no acknowledgement: its messages carry no ids back to us."""

    def _files_client(self) -> BotpressClient | None:
        return self.lookup  # a runtime API token, when the integration has one
