"""Stand-in of the Botpress runtime API (`/v1/chat/...`) as a HITL integration sees it.

Follows shared/reference/botpress-api.md sections B and D: the same paths, bodies, status codes and
`{id, code, type, message}` errors, so the gateway's Botpress client is exercised as in production.
Every object belongs to the bot that created it; a bot never sees another bot's objects.

Also the Files API's upsert (`PUT /v1/files`, section F): it answers a pre-signed `uploadUrl`
that takes exactly `size` bytes by `PUT`, and the file's `url`, which serves the bytes once
uploaded: without credentials for `public_content` files, else only with the URL's signature.
"""

from __future__ import annotations

import base64
import copy
import hmac
import itertools
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .server import HttpError, Request, Response, StandinServer, iso_time, ulid

# Error type → HTTP status (reference B.5).
ERROR_TYPES = {
    "Unknown": 500,
    "Internal": 500,
    "Unauthorized": 401,
    "Forbidden": 403,
    "PayloadTooLarge": 413,
    "InvalidPayload": 400,
    "UnsupportedMediaType": 415,
    "MethodNotFound": 405,
    "ResourceNotFound": 404,
    "InvalidJsonSchema": 400,
    "InvalidDataFormat": 400,
    "InvalidIdentifier": 400,
    "RelationConflict": 409,
    "ReferenceConstraint": 409,
    "ResourceLockedConflict": 409,
    "ResourceGone": 410,
    "ReferenceNotFound": 400,
    "InvalidQuery": 400,
    "Runtime": 400,
    "AlreadyExists": 409,
    "RateLimited": 429,
    "PaymentRequired": 402,
    "QuotaExceeded": 403,
    "LimitExceeded": 413,
    "BreakingChanges": 400,
    "OperationTimeout": 504,
}
# The type used when only a status is known (injected faults, routing errors).
_TYPE_FOR_STATUS = {
    400: "InvalidPayload",
    401: "Unauthorized",
    402: "PaymentRequired",
    403: "Forbidden",
    404: "ResourceNotFound",
    405: "MethodNotFound",
    409: "AlreadyExists",
    410: "ResourceGone",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "RateLimited",
    504: "OperationTimeout",
}

# Event name → payload fields that must name an existing object (reference botpress-hitl.md 1.3).
DEFAULT_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "hitlAssigned": ("conversationId", "userId"),
    "hitlStopped": ("conversationId",),
}
TAG_VALUE_MAX = 500
STATE_TYPES = "conversation|user|bot|integration|workflow"
PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 20, 100
_MEDIA_URL_FIELD = {"image": "imageUrl", "audio": "audioUrl", "video": "videoUrl", "file": "fileUrl"}
_HITL_TYPES = ("text", *_MEDIA_URL_FIELD, "bloc")
_BLOC_ITEM_TYPES = ("text", *_MEDIA_URL_FIELD, "location", "markdown")
Store = dict[str, dict[str, Any]]  # object id → object
FILE_ACCESS_POLICIES = ("integrations", "public_content")
FILE_KEY_MAX = 1000


def error_id() -> str:
    """An error id in the client's format: err_<YYYYMMDDHHMMSS>x<8 upper-case hex>."""
    return f"err_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}x{secrets.token_hex(4).upper()}"


def _error(type_: str, message: str) -> HttpError:
    return HttpError(ERROR_TYPES[type_], message, type_)


def _invalid(message: str) -> HttpError:
    return _error("InvalidPayload", message)


@dataclass
class Bot:
    bot_id: str
    token: str
    integration_id: str
    integration_name: str
    event_types: dict[str, tuple[str, ...]]
    # Tag keys the integration's definition declares, per object kind ("user", "conversation",
    # "message"); None: registered without a definition, any key accepted.
    declared_tags: dict[str, frozenset[str]] | None = None

    def tags_of(self, kind: str) -> frozenset[str] | None:
        return None if self.declared_tags is None else self.declared_tags.get(kind, frozenset())


def _event_types(declared: Mapping[str, Sequence[str]] | Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """Normalise a bot's declared events to name → required reference fields.

    A plain list of names (e.g. renamed events) infers the fields from the name: "...Assigned" needs
    conversationId + userId like hitlAssigned, "...Stopped" needs conversationId like hitlStopped.
    """
    if declared is None:
        return dict(DEFAULT_EVENT_TYPES)
    if isinstance(declared, Mapping):
        return {name: tuple(fields) for name, fields in declared.items()}
    inferred = {}
    for name in declared:
        lowered = name.lower()
        if "assign" in lowered:
            inferred[name] = DEFAULT_EVENT_TYPES["hitlAssigned"]
        elif "stop" in lowered:
            inferred[name] = DEFAULT_EVENT_TYPES["hitlStopped"]
        else:
            inferred[name] = ()
    return inferred


# --------------------------------------------------------------------- body validation
def _body(req: Request) -> dict[str, Any]:
    data = req.json()
    if not isinstance(data, dict):
        raise _invalid("The request body must be a JSON object")
    return data


def _string(body: dict[str, Any], name: str, *, required: bool = False, nullable: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise _invalid(f"'{name}' is required")
        if name in body and not nullable:
            raise _invalid(f"'{name}' must be a string")
        return None
    if not isinstance(value, str) or (required and not value):
        raise _invalid(f"'{name}' must be a non-empty string" if required else f"'{name}' must be a string")
    return value


def _object(body: dict[str, Any], name: str, *, required: bool = False, nullable: bool = False) -> Any:
    """An optional or required JSON object field; `nullable` lets a required field be an explicit null."""
    if required and (name not in body or (body[name] is None and not nullable)):
        raise _invalid(f"'{name}' is required")
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise _invalid(f"'{name}' must be an object")
    return value


def _tags(
    body: dict[str, Any], *, required: bool, allow_delete: bool, declared: frozenset[str] | None = None
) -> dict[str, Any]:
    """A flat string → string map; null/"" values (deletions) only where `allow_delete`.

    `declared`: the tag keys the integration's definition declares for this kind of object
    (`user.tags`, `channels.<ch>.conversation.tags`, `channels.<ch>.message.tags`); Botpress
    refuses any other key (reference B.3; the error type is not documented: InvalidPayload).
    """
    name = "tags"
    tags = _object(body, name, required=required)
    if tags is None:
        return {}
    for key, value in tags.items():
        if declared is not None and key not in declared:
            raise _invalid(f"Tag '{key}' is not declared by the integration (declared: {', '.join(sorted(declared))})")
        if value is None or value == "":
            if not allow_delete:
                raise _invalid(f"'{name}.{key}' must be a non-empty string")
        elif not isinstance(value, str):
            raise _invalid(f"'{name}.{key}' must be a string")
        elif len(value) > TAG_VALUE_MAX:
            raise _invalid(f"'{name}.{key}' must be at most {TAG_VALUE_MAX} characters")
    return tags


def _string_map(body: dict[str, Any], name: str) -> dict[str, str] | None:
    value = _object(body, name)
    if value is not None and not all(isinstance(v, str) for v in value.values()):
        raise _invalid(f"'{name}' must map strings to strings")
    return value


def _discriminate(body: dict[str, Any], tags: dict[str, Any]) -> dict[str, str]:
    """The tags a get-or-create must match: the `discriminateByTags` subset, else every non-empty tag."""
    keys = body.get("discriminateByTags")
    if keys is None:
        return {k: v for k, v in tags.items() if v}
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _invalid("'discriminateByTags' must be an array of strings")
    for key in keys:
        if not tags.get(key):
            raise _invalid(f"'discriminateByTags' names '{key}', which must have a value in 'tags'")
    return {k: tags[k] for k in keys}


def _apply_tags(target: dict[str, str], tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        if value:
            target[key] = value
        else:
            target.pop(key, None)


def _hitl_payload(msg_type: str, payload: dict[str, Any]) -> None:
    """Check a `hitl` channel message payload (reference botpress-hitl.md 1.4)."""
    if msg_type not in _HITL_TYPES:
        raise _invalid(f"Message type '{msg_type}' is not supported by channel 'hitl'")
    _payload_fields(msg_type, payload, "payload")
    for name in ("userId", "additionalData"):
        if name in payload and not isinstance(payload[name], str):
            raise _invalid(f"'payload.{name}' must be a string")
    if len(payload.get("additionalData", "")) > TAG_VALUE_MAX:
        raise _invalid(f"'payload.additionalData' must be at most {TAG_VALUE_MAX} characters")


def _payload_fields(kind: str, payload: Any, where: str) -> None:
    if not isinstance(payload, dict):
        raise _invalid(f"'{where}' must be an object")

    def text(name: str, *, optional: bool = False) -> None:
        value = payload.get(name)
        if optional and value is None:
            return
        if not isinstance(value, str) or not value:
            raise _invalid(f"'{where}.{name}' is required and must be a non-empty string")

    if kind == "text":
        text("text")
    elif kind in _MEDIA_URL_FIELD:
        text(_MEDIA_URL_FIELD[kind])
        text("title", optional=True)
    elif kind == "markdown":
        text("markdown")
    elif kind == "location":
        for name in ("latitude", "longitude"):
            if not isinstance(payload.get(name), int | float) or isinstance(payload.get(name), bool):
                raise _invalid(f"'{where}.{name}' is required and must be a number")
        text("address", optional=True)
        text("title", optional=True)
    elif kind == "bloc":
        items = payload.get("items")
        if not isinstance(items, list):
            raise _invalid(f"'{where}.items' is required and must be an array")
        for index, item in enumerate(items):
            item_where = f"{where}.items[{index}]"
            if not isinstance(item, dict) or item.get("type") not in _BLOC_ITEM_TYPES:
                raise _invalid(f"'{item_where}.type' must be one of {', '.join(_BLOC_ITEM_TYPES)}")
            _payload_fields(item["type"], item.get("payload"), f"{item_where}.payload")


# --------------------------------------------------------------------- the stand-in
class BotpressStandin(StandinServer):
    """The runtime API for one or more bots, each reached by one integration.

    Auth choices (the real answers for these cases are not documented, reference D.2.1):
    missing/unknown bearer token → 401 Unauthorized; missing `x-bot-id` or `x-integration-id`
    → 400 InvalidPayload (a required header is part of the request's payload); `x-bot-id` or
    `x-integration-id` that is not the token's bot/integration → 403 Forbidden (authenticated but
    not allowed to act for that bot). `reset()` keeps the registered bots.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        super().__init__(port, host)
        self._bots: dict[str, Bot] = {}
        self.reset_state()
        v1 = "/v1/chat"
        for method, pattern, handler in [
            ("POST", "/users", self._create_user),
            ("POST", "/users/get-or-create", self._get_or_create_user),
            ("GET", "/users", self._list_users),
            ("GET", "/users/(?P<id>[^/]+)", self._get_user),
            ("PUT", "/users/(?P<id>[^/]+)", self._update_user),
            ("DELETE", "/users/(?P<id>[^/]+)", self._delete_user),
            ("POST", "/conversations", self._create_conversation),
            ("POST", "/conversations/get-or-create", self._get_or_create_conversation),
            ("GET", "/conversations", self._list_conversations),
            ("GET", "/conversations/(?P<id>[^/]+)", self._get_conversation),
            ("PUT", "/conversations/(?P<id>[^/]+)", self._update_conversation),
            ("DELETE", "/conversations/(?P<id>[^/]+)", self._delete_conversation),
            ("POST", "/messages", self._create_message),
            ("POST", "/messages/get-or-create", self._get_or_create_message),
            ("GET", "/messages", self._list_messages),
            ("GET", "/messages/(?P<id>[^/]+)", self._get_message),
            ("PUT", "/messages/(?P<id>[^/]+)", self._update_message),
            ("DELETE", "/messages/(?P<id>[^/]+)", self._delete_message),
            ("POST", "/events", self._create_event),
            ("GET", "/events", self._list_events),
            ("GET", "/events/(?P<id>[^/]+)", self._get_event),
            ("GET", f"/states/(?P<type>{STATE_TYPES})/(?P<id>[^/]+)/(?P<name>[^/]+)", self._get_state),
            ("POST", f"/states/(?P<type>{STATE_TYPES})/(?P<id>[^/]+)/(?P<name>[^/]+)", self._set_state),
            ("PATCH", f"/states/(?P<type>{STATE_TYPES})/(?P<id>[^/]+)/(?P<name>[^/]+)", self._patch_state),
            (
                "POST",
                f"/states/(?P<type>{STATE_TYPES})/(?P<id>[^/]+)/(?P<name>[^/]+)/get-or-set",
                self._get_or_set_state,
            ),
            ("POST", "/integrations/configure", self._configure_integration),
        ]:
            self.route(method, v1 + pattern, handler)
        self.route("PUT", "/v1/files", self._upsert_file)
        # The file store: pre-signed upload URLs and file URLs, reached without Botpress credentials.
        self.route("PUT", "/files-store/upload/(?P<id>[^/]+)", self._store_upload, public=True)
        self.route("GET", "/files-store/(?P<id>[^/]+)/(?P<name>[^/]+)", self._store_download, public=True)
        self.control_route("POST", "bots", self._control_add_bot)

    # ----------------------------------------------------------------- test API
    def add_bot(
        self,
        bot_id: str,
        token: str,
        integration_id: str,
        event_types: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
        integration_name: str = "hitl",
        declared_tags: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Register a bot reachable with `token`, whose integration declares `event_types`.

        `event_types` maps event names to the payload fields that must reference existing objects
        (default hitlAssigned/hitlStopped), or lists names whose fields are inferred (see _event_types).
        `declared_tags` (``{"user": [...], "conversation": [...], "message": [...]}``), as the
        integration's definition declares them: any other tag key is then refused.
        """
        if not (bot_id and token and integration_id):
            raise ValueError("bot_id, token and integration_id are required")
        with self.lock:
            events = _event_types(event_types)
            tags = None if declared_tags is None else {k: frozenset(v) for k, v in declared_tags.items()}
            self._bots[bot_id] = Bot(bot_id, token, integration_id, integration_name, events, tags)

    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._users.values()))

    def conversations(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._conversations.values()))

    def messages(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """Messages oldest first, optionally of one conversation."""
        with self.lock:
            return copy.deepcopy([m for m in self._messages.values() if conversation_id in (None, m["conversationId"])])

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy([e for e in self._events.values() if type in (None, e["type"])])

    def states(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._states.values()))

    def files(self) -> list[dict[str, Any]]:
        """File records (without their upload URLs), oldest first."""
        with self.lock:
            return copy.deepcopy(list(self._files.values()))

    def file_content(self, file_id: str) -> bytes | None:
        with self.lock:
            return self._file_contents.get(file_id)

    def reset_state(self) -> None:
        self._users: Store = {}
        self._conversations: Store = {}
        self._messages: Store = {}
        self._events: Store = {}
        self._states: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._files: Store = {}
        self._file_contents: dict[str, bytes] = {}  # file id → uploaded bytes
        self._file_secret = secrets.token_hex(16)
        self._owner: dict[str, str] = {}  # object id → bot id
        self._participants: dict[str, set[str]] = {}  # conversation id → user ids
        # conversation id → its messages by id, oldest first: a get-or-create looks only there
        # (a scan of every message made the stand-in's cost per message grow through a long run)
        self._conversation_messages: dict[str, Store] = {}
        # Per conversation, (tag, value) -> the ids of messages that had it: a get-or-create finds
        # its message without reading the whole conversation, as Botpress's index does (a scan
        # made every later phase of a run pay for the messages of the earlier ones). Stale entries
        # (a tag changed since, a message deleted) are filtered by checking the message itself.
        self._message_tag_index: dict[str, dict[tuple[str, str], dict[str, None]]] = {}
        self._message_order: dict[str, int] = {}  # message id -> creation order
        self._message_sequence = itertools.count()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(
                {
                    "users": list(self._users.values()),
                    "conversations": list(self._conversations.values()),
                    "messages": list(self._messages.values()),
                    "events": list(self._events.values()),
                    "states": list(self._states.values()),
                    "files": list(self._files.values()),
                }
            )

    def _control_add_bot(self, req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise ValueError("the bot must be a JSON object")
        self.add_bot(**body)
        return Response(201, {})

    # ----------------------------------------------------------------- HTTP plumbing
    def error_response(self, err: HttpError) -> Response:
        type_ = err.type or _TYPE_FOR_STATUS.get(err.status, "Internal" if err.status >= 500 else "Unknown")
        body = {"id": error_id(), "code": err.status, "type": type_, "message": err.message or type_}
        return Response(err.status, body, dict(err.headers))

    def rate_limit_response(self, retry_after: int) -> Response:
        err = _error("RateLimited", "Too many requests, please retry later")
        err.headers["Retry-After"] = str(retry_after)
        return self.error_response(err)

    def authenticate(self, req: Request) -> Bot:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        bot = next((b for b in self._bots.values() if b.token == token), None)
        if scheme.lower() != "bearer" or not token or bot is None:
            raise _error("Unauthorized", "A valid 'Authorization: Bearer <token>' header is required")
        bot_id = req.headers.get("x-bot-id")
        if not bot_id:
            raise _invalid("The 'x-bot-id' header is required")
        if bot_id != bot.bot_id:
            raise _error("Forbidden", f"The token is not allowed to act for bot '{bot_id}'")
        integration_id = req.headers.get("x-integration-id")
        if not integration_id:
            raise _invalid("The 'x-integration-id' header is required")
        if integration_id != bot.integration_id:
            raise _error("Forbidden", f"Integration '{integration_id}' is not installed on bot '{bot_id}'")
        return bot

    # ----------------------------------------------------------------- helpers
    def _own(self, collection: Store, object_id: str, bot: Bot) -> dict[str, Any] | None:
        if self._owner.get(object_id) != bot.bot_id:
            return None
        return collection.get(object_id)

    def _get(self, collection: Store, object_id: str, bot: Bot, kind: str) -> dict[str, Any]:
        """An object named in the path: 404 ResourceNotFound when unknown."""
        obj = self._own(collection, object_id, bot)
        if obj is None:
            raise _error("ResourceNotFound", f"{kind} '{object_id}' doesn't exist")
        return obj

    def _ref(self, collection: Store, object_id: Any, bot: Bot, field: str) -> dict[str, Any]:
        """An object named in the body: 400 ReferenceNotFound when unknown."""
        obj = self._own(collection, object_id, bot) if isinstance(object_id, str) else None
        if obj is None:
            raise _error("ReferenceNotFound", f"'{field}' references '{object_id}', which doesn't exist")
        return obj

    def _insert(self, collection: Store, obj: dict[str, Any], bot: Bot) -> dict[str, Any]:
        collection[obj["id"]] = obj
        self._owner[obj["id"]] = bot.bot_id
        return obj

    def _mine(self, collection: Store, bot: Bot) -> list[dict[str, Any]]:
        return [obj for oid, obj in collection.items() if self._owner.get(oid) == bot.bot_id]

    @staticmethod
    def _touch(obj: dict[str, Any]) -> None:
        obj["updatedAt"] = iso_time()

    @staticmethod
    def _new(prefix: str) -> dict[str, Any]:
        now = iso_time()
        return {"id": f"{prefix}_{ulid()}", "createdAt": now, "updatedAt": now}

    @staticmethod
    def _tag_filter(req: Request) -> dict[str, str]:
        return {k[len("tags.") :]: v[0] for k, v in req.query.items() if k.startswith("tags.")}

    @staticmethod
    def _page(req: Request, items: list[dict[str, Any]], key: str) -> dict[str, Any]:
        """One page of `items` with an opaque `nextToken` (the offset, base64-encoded)."""
        try:
            size = int(req.arg("pageSize") or PAGE_SIZE_DEFAULT)
            token = req.arg("nextToken")
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except ValueError:
            raise _error("InvalidQuery", "'pageSize' or 'nextToken' is invalid") from None
        if size < 1 or start < 0:
            raise _error("InvalidQuery", "'pageSize' must be positive")
        end = start + min(size, PAGE_SIZE_MAX)
        meta = {"nextToken": base64.urlsafe_b64encode(str(end).encode()).decode()} if end < len(items) else {}
        return {key: items[start:end], "meta": meta}

    # ----------------------------------------------------------------- users
    def _user_fields(self, user: dict[str, Any], body: dict[str, Any]) -> None:
        for name in ("name", "pictureUrl"):
            if name in body:
                value = _string(body, name, nullable=True)
                if value is None:
                    user.pop(name, None)
                else:
                    user[name] = value
        for name in ("properties", "attributes"):
            value = _string_map(body, name)
            if value is not None:
                user.setdefault(name, {}).update(value)

    def _create_user(self, req: Request) -> dict[str, Any]:
        body = _body(req)
        tags = _tags(body, required=True, allow_delete=False, declared=req.auth.tags_of("user"))
        user = self._new("user") | {"tags": dict(tags)}
        self._user_fields(user, body)
        return {"user": self._insert(self._users, user, req.auth)}

    def _get_or_create_user(self, req: Request) -> dict[str, Any]:
        body = _body(req)
        tags = _tags(body, required=True, allow_delete=True, declared=req.auth.tags_of("user"))
        wanted = _discriminate(body, tags)
        user = next(
            (u for u in self._mine(self._users, req.auth) if wanted and _matches(u, wanted)),
            None,
        )
        created = user is None
        if created:
            user = self._insert(self._users, self._new("user") | {"tags": {}}, req.auth)
        else:
            self._touch(user)
        _apply_tags(user["tags"], tags)
        self._user_fields(user, body)
        return {"user": user, "meta": {"created": created}}

    def _get_user(self, req: Request) -> dict[str, Any]:
        return {"user": self._get(self._users, req.params["id"], req.auth, "User")}

    def _update_user(self, req: Request) -> dict[str, Any]:
        user = self._get(self._users, req.params["id"], req.auth, "User")
        body = _body(req)
        tags = _tags(body, required=False, allow_delete=True, declared=req.auth.tags_of("user"))
        self._user_fields(user, body)
        _apply_tags(user["tags"], tags)
        self._touch(user)
        return {"user": user}

    def _delete_user(self, req: Request) -> dict[str, Any]:
        self._get(self._users, req.params["id"], req.auth, "User")
        del self._users[req.params["id"]]
        return {}

    def _list_users(self, req: Request) -> dict[str, Any]:
        users = self._mine(self._users, req.auth)
        conversation_id = req.arg("conversationId")
        if conversation_id:
            members = self._participants.get(conversation_id, set())
            users = [u for u in users if u["id"] in members]
        wanted = self._tag_filter(req)
        return self._page(req, [u for u in users if _matches(u, wanted)], "users")

    # ----------------------------------------------------------------- conversations
    def _create_conversation(self, req: Request) -> dict[str, Any]:
        body = _body(req)
        channel = _string(body, "channel", required=True)
        tags = _tags(body, required=True, allow_delete=False, declared=req.auth.tags_of("conversation"))
        return {"conversation": self._insert_conversation(req.auth, channel, tags, body)}

    def _insert_conversation(self, bot: Bot, channel: str, tags: dict[str, Any], body: dict[str, Any]) -> Any:
        conversation = self._new("conv") | {
            "channel": channel,
            "integration": bot.integration_name,
            "tags": {k: v for k, v in tags.items() if v},
            "messageCount": 0,
        }
        properties = _string_map(body, "properties")
        if properties is not None:
            conversation["properties"] = dict(properties)
        self._participants[conversation["id"]] = set()
        return self._insert(self._conversations, conversation, bot)

    def _get_or_create_conversation(self, req: Request) -> dict[str, Any]:
        body = _body(req)
        channel = _string(body, "channel", required=True)
        tags = _tags(body, required=True, allow_delete=True, declared=req.auth.tags_of("conversation"))
        wanted = _discriminate(body, tags)
        conversation = next(
            (
                c
                for c in self._mine(self._conversations, req.auth)
                if wanted and c["channel"] == channel and _matches(c, wanted)
            ),
            None,
        )
        if conversation is None:
            return {
                "conversation": self._insert_conversation(req.auth, channel, tags, body),
                "meta": {"created": True},
            }
        _apply_tags(conversation["tags"], tags)
        self._touch(conversation)
        return {"conversation": conversation, "meta": {"created": False}}

    def _get_conversation(self, req: Request) -> dict[str, Any]:
        return {"conversation": self._get(self._conversations, req.params["id"], req.auth, "Conversation")}

    def _update_conversation(self, req: Request) -> dict[str, Any]:
        conversation = self._get(self._conversations, req.params["id"], req.auth, "Conversation")
        body = _body(req)
        tags = _tags(body, required=False, allow_delete=True, declared=req.auth.tags_of("conversation"))
        properties = _string_map(body, "properties")
        _apply_tags(conversation["tags"], tags)
        if properties is not None:
            conversation.setdefault("properties", {}).update(properties)
        self._touch(conversation)
        return {"conversation": conversation}

    def _delete_conversation(self, req: Request) -> dict[str, Any]:
        conversation_id = req.params["id"]
        self._get(self._conversations, conversation_id, req.auth, "Conversation")
        del self._conversations[conversation_id]
        self._messages = {k: m for k, m in self._messages.items() if m["conversationId"] != conversation_id}
        self._conversation_messages.pop(conversation_id, None)
        self._message_tag_index.pop(conversation_id, None)
        return {}

    def _list_conversations(self, req: Request) -> dict[str, Any]:
        channel = req.arg("channel")
        participants = set(req.query.get("participantIds", []))
        wanted = self._tag_filter(req)
        conversations = [
            c
            for c in self._mine(self._conversations, req.auth)
            if channel in (None, c["channel"])
            and participants <= self._participants.get(c["id"], set())
            and _matches(c, wanted)
        ]
        return self._page(req, conversations, "conversations")

    # ----------------------------------------------------------------- messages
    def _message_input(self, req: Request, *, get_or_create: bool) -> tuple[dict[str, Any], ...]:
        body = _body(req)
        for name in ("userId", "conversationId", "type"):
            _string(body, name, required=True)
        payload = _object(body, "payload", required=not get_or_create)
        tags = _tags(body, required=True, allow_delete=get_or_create, declared=req.auth.tags_of("message"))
        schedule = _object(body, "schedule")
        if schedule is not None and "dateTime" not in schedule and "delay" not in schedule:
            raise _invalid("'schedule' needs 'dateTime' or 'delay'")
        if body.get("origin") not in (None, "synthetic"):
            raise _invalid("'origin' must be 'synthetic'")
        conversation = self._ref(self._conversations, body["conversationId"], req.auth, "conversationId")
        self._ref(self._users, body["userId"], req.auth, "userId")
        return body, conversation, payload or {}, tags

    def _add_message(
        self, bot: Bot, body: dict[str, Any], conversation: dict[str, Any], payload: dict[str, Any], tags: Any
    ) -> dict[str, Any]:
        if conversation["channel"] == "hitl":
            _hitl_payload(body["type"], payload)
        message = self._new("msg") | {
            "type": body["type"],
            "payload": payload,
            # Every call here carries x-integration-id, i.e. acts for the integration: incoming.
            "direction": "incoming",
            "userId": body["userId"],
            "conversationId": conversation["id"],
            "tags": {k: v for k, v in tags.items() if v},
        }
        if body.get("origin"):
            message["origin"] = body["origin"]
        conversation["messageCount"] += 1
        self._touch(conversation)
        self._participants[conversation["id"]].add(body["userId"])
        self._conversation_messages.setdefault(conversation["id"], {})[message["id"]] = message
        self._message_order[message["id"]] = next(self._message_sequence)
        self._message_tags_indexed(message)
        return self._insert(self._messages, message, bot)

    def _message_tags_indexed(self, message: dict[str, Any]) -> None:
        index = self._message_tag_index.setdefault(message["conversationId"], {})
        for pair in message["tags"].items():
            index.setdefault(pair, {})[message["id"]] = None

    def _message_tagged(self, conversation_id: str, wanted: dict[str, str], bot: Bot) -> dict[str, Any] | None:
        """The conversation's first-created message of ``bot`` whose tags hold ``wanted``."""
        if not wanted:
            return None
        messages = self._conversation_messages.get(conversation_id, {})
        candidates = self._message_tag_index.get(conversation_id, {}).get(next(iter(wanted.items())), {})
        found = [
            message
            for message_id in candidates
            if (message := messages.get(message_id)) is not None
            and self._owner.get(message_id) == bot.bot_id
            and _matches(message, wanted)
        ]
        return min(found, key=lambda message: self._message_order[message["id"]]) if found else None

    def _create_message(self, req: Request) -> dict[str, Any]:
        body, conversation, payload, tags = self._message_input(req, get_or_create=False)
        return {"message": self._add_message(req.auth, body, conversation, payload, tags)}

    def _get_or_create_message(self, req: Request) -> dict[str, Any]:
        """Idempotent on the discriminating tags within the conversation: a retry returns the original."""
        body, conversation, payload, tags = self._message_input(req, get_or_create=True)
        message = self._message_tagged(conversation["id"], _discriminate(body, tags), req.auth)
        if message is None:
            return {
                "message": self._add_message(req.auth, body, conversation, payload, tags),
                "meta": {"created": True},
            }
        _apply_tags(message["tags"], tags)
        self._message_tags_indexed(message)
        self._touch(message)
        return {"message": message, "meta": {"created": False}}

    def _get_message(self, req: Request) -> dict[str, Any]:
        return {"message": self._get(self._messages, req.params["id"], req.auth, "Message")}

    def _update_message(self, req: Request) -> dict[str, Any]:
        message = self._get(self._messages, req.params["id"], req.auth, "Message")
        body = _body(req)
        tags = _tags(body, required=False, allow_delete=True, declared=req.auth.tags_of("message"))
        payload = _object(body, "payload")
        if payload is not None:
            if self._conversations[message["conversationId"]]["channel"] == "hitl":
                _hitl_payload(message["type"], payload)
            message["payload"] = payload
        _apply_tags(message["tags"], tags)
        self._message_tags_indexed(message)
        self._touch(message)
        return {"message": message}

    def _delete_message(self, req: Request) -> dict[str, Any]:
        message = self._get(self._messages, req.params["id"], req.auth, "Message")
        del self._messages[message["id"]]
        self._conversation_messages.get(message["conversationId"], {}).pop(message["id"], None)
        self._conversations[message["conversationId"]]["messageCount"] -= 1
        return {}

    def _list_messages(self, req: Request) -> dict[str, Any]:
        """Newest first, as the hitl plugin expects when it reads 'the last user message'."""
        conversation_id = req.arg("conversationId")
        wanted = self._tag_filter(req)
        messages = [
            m
            for m in reversed(self._mine(self._messages, req.auth))
            if conversation_id in (None, m["conversationId"]) and _matches(m, wanted)
        ]
        return self._page(req, messages, "messages")

    # ----------------------------------------------------------------- events
    def _create_event(self, req: Request) -> dict[str, Any]:
        bot: Bot = req.auth
        body = _body(req)
        event_type = _string(body, "type", required=True)
        payload = _object(body, "payload", required=True)
        if event_type not in bot.event_types:
            declared = ", ".join(bot.event_types) or "none"
            raise _invalid(f"Event type '{event_type}' is not declared by the integration ({declared})")
        references = {
            "conversationId": self._conversations,
            "userId": self._users,
            "messageId": self._messages,
        }
        for name in bot.event_types[event_type]:
            if not isinstance(payload.get(name), str) or not payload[name]:
                raise _invalid(f"'payload.{name}' is required for event '{event_type}'")
            self._ref(references[name], payload[name], bot, f"payload.{name}")
        schedule = _object(body, "schedule")
        if schedule is not None and "dateTime" not in schedule and "delay" not in schedule:
            raise _invalid("'schedule' needs 'dateTime' or 'delay'")
        event = {"id": f"evt_{ulid()}", "createdAt": iso_time(), "type": event_type, "payload": payload}
        for name, collection in references.items():
            if body.get(name) is not None:
                event[name] = self._ref(collection, body[name], bot, name)["id"]
        event |= {"status": "scheduled" if schedule else "pending", "failureReason": None}
        return {"event": self._insert(self._events, event, bot)}

    def _get_event(self, req: Request) -> dict[str, Any]:
        return {"event": self._get(self._events, req.params["id"], req.auth, "Event")}

    def _list_events(self, req: Request) -> dict[str, Any]:
        filters = {
            name: req.arg(name)
            for name in ("type", "conversationId", "userId", "messageId", "status")
            if req.arg(name) is not None
        }
        events = [e for e in self._mine(self._events, req.auth) if all(e.get(k) == v for k, v in filters.items())]
        return self._page(req, events, "events")

    # ----------------------------------------------------------------- states
    def _state_key(self, req: Request) -> tuple[str, str, str, str]:
        """The state's key, after checking that the object it hangs on exists (404 otherwise)."""
        bot: Bot = req.auth
        state_type, object_id = req.params["type"], req.params["id"]
        if state_type == "conversation":
            self._get(self._conversations, object_id, bot, "Conversation")
        elif state_type == "user":
            self._get(self._users, object_id, bot, "User")
        elif state_type == "bot" and object_id != bot.bot_id:
            raise _error("ResourceNotFound", f"Bot '{object_id}' doesn't exist")
        elif state_type == "integration" and object_id != bot.integration_id:
            raise _error("ResourceNotFound", f"Integration '{object_id}' doesn't exist")
        return bot.bot_id, state_type, object_id, req.params["name"]

    def _current_state(self, key: tuple[str, str, str, str]) -> dict[str, Any] | None:
        state = self._states.get(key)
        if state is not None and state.get("expiresAt") and state["expiresAt"] <= iso_time():
            del self._states[key]
            return None
        return state

    def _write_state(self, key: tuple[str, str, str, str], body: dict[str, Any]) -> dict[str, Any]:
        payload = _object(body, "payload", required=True, nullable=True)
        expiry = body.get("expiry")
        if expiry is not None and (not isinstance(expiry, int) or isinstance(expiry, bool) or expiry < 0):
            raise _invalid("'expiry' must be a number of milliseconds")
        bot_id, state_type, object_id, name = key
        previous = self._states.get(key)
        state = self._new("state") if previous is None else previous
        state |= {"botId": bot_id, "name": name, "type": state_type, "payload": payload}
        if state_type in ("conversation", "user"):
            state[f"{state_type}Id"] = object_id
        if expiry is not None:
            state["expiresAt"] = iso_time(time.time() + expiry / 1000)
        elif "expiry" in body:
            state.pop("expiresAt", None)
        self._touch(state)
        if payload is None:  # setting null clears the state
            self._states.pop(key, None)
        else:
            self._states[key] = state
        return state

    def _get_state(self, req: Request) -> dict[str, Any]:
        key = self._state_key(req)
        state = self._current_state(key)
        if state is None:
            raise _error("ResourceNotFound", f"State '{key[3]}' of {key[1]} '{key[2]}' doesn't exist")
        return {"state": state, "meta": {"cached": False}}

    def _set_state(self, req: Request) -> dict[str, Any]:
        key = self._state_key(req)
        self._current_state(key)  # drops an expired state, so the new one starts afresh
        return {"state": self._write_state(key, _body(req))}

    def _get_or_set_state(self, req: Request) -> dict[str, Any]:
        key = self._state_key(req)
        body = _body(req)
        state = self._current_state(key) or self._write_state(key, body)
        return {"state": state, "meta": {"cached": False}}

    def _patch_state(self, req: Request) -> dict[str, Any]:
        key = self._state_key(req)
        body = _body(req)
        patch = _object(body, "payload", required=True)
        state = self._current_state(key)
        if state is None:
            raise _error("ResourceNotFound", f"State '{key[3]}' of {key[1]} '{key[2]}' doesn't exist")
        return {"state": self._write_state(key, body | {"payload": state["payload"] | patch})}

    # ----------------------------------------------------------------- integration
    def _configure_integration(self, req: Request) -> dict[str, Any]:
        body = _body(req)
        _string(body, "identifier", nullable=True)
        return {}

    # ----------------------------------------------------------------- files
    def _upsert_file(self, req: Request) -> dict[str, Any]:
        """upsertFile: create or replace the bot's file under `key`; its content comes by `uploadUrl`."""
        bot = req.auth
        body = _body(req)
        key = _string(body, "key", required=True)
        if len(key) > FILE_KEY_MAX:
            raise _invalid(f"'key' must be at most {FILE_KEY_MAX} characters")
        size = body.get("size")
        if isinstance(size, bool) or not isinstance(size, int | float) or size < 0 or size != int(size):
            raise _invalid("'size' is required and must be a non-negative integer")
        content_type = _string(body, "contentType") or "application/octet-stream"
        policies = body.get("accessPolicies", [])
        if not isinstance(policies, list) or any(p not in FILE_ACCESS_POLICIES for p in policies):
            raise _invalid(f"'accessPolicies' must be an array of {', '.join(FILE_ACCESS_POLICIES)}")
        tags = _tags(body, required=False, allow_delete=False)
        if "index" in body and not isinstance(body["index"], bool):
            raise _invalid("'index' must be a boolean")
        existing = next((f for f in self._mine(self._files, bot) if f["key"] == key), None)
        file = existing or self._insert(self._files, self._new("file") | {"botId": bot.bot_id, "key": key}, bot)
        self._touch(file)
        file.update(
            size=int(size),
            contentType=content_type,
            tags=dict(tags),
            metadata=body.get("metadata") or {},
            accessPolicies=list(dict.fromkeys(policies)),
            index=bool(body.get("index", False)),
            status="upload_pending",
        )
        self._file_contents.pop(file["id"], None)  # updating a file erases its content
        name = key.rsplit("/", 1)[-1] or "file"
        file["url"] = f"{self.base_url}/files-store/{file['id']}/{name}"
        if "public_content" not in file["accessPolicies"]:
            file["url"] += f"?sig={self._sign('read', file['id'])}"
        upload_url = f"{self.base_url}/files-store/upload/{file['id']}?sig={self._sign('write', file['id'])}"
        return {"file": copy.deepcopy(file) | {"uploadUrl": upload_url}}

    def _sign(self, action: str, file_id: str) -> str:
        return hmac.new(self._file_secret.encode(), f"{action}:{file_id}".encode(), "sha256").hexdigest()[:32]

    def _signed(self, req: Request, action: str, file_id: str) -> bool:
        return hmac.compare_digest(req.arg("sig") or "", self._sign(action, file_id))

    def _store_upload(self, req: Request) -> Response:
        """The pre-signed upload: exactly the declared size, as the file store enforces."""
        file = self._files.get(req.params["id"])
        if file is None or not self._signed(req, "write", file["id"]):
            return Response(403, "SignatureDoesNotMatch", content_type="text/plain")
        if len(req.body) != file["size"]:
            return Response(400, "The body does not have the size declared for the file", content_type="text/plain")
        self._file_contents[file["id"]] = req.body
        file["status"] = "upload_completed"
        self._touch(file)
        return Response(200, None)

    def _store_download(self, req: Request) -> Response:
        file = self._files.get(req.params["id"])
        if file is None or file["status"] != "upload_completed":
            return Response(404, "NoSuchKey", content_type="text/plain")
        if "public_content" not in file["accessPolicies"] and not self._signed(req, "read", file["id"]):
            return Response(403, "AccessDenied", content_type="text/plain")
        return Response(200, self._file_contents[file["id"]], content_type=file["contentType"])


def _matches(obj: dict[str, Any], wanted: dict[str, str]) -> bool:
    return all(obj["tags"].get(k) == v for k, v in wanted.items())
