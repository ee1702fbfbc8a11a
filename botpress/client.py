"""Botpress runtime API client (``/v1/chat/...``), acting on behalf of one integration.

Knows nothing of Django. Errors are parsed by Botpress's ``type``; retries follow the official
SDK (network errors and 429/502 for any method, other 5xx for idempotent methods only,
Retry-After honoured). Calls made by the outbox pass ``max_retries=0``: the outbox retries
durably itself, so the client must not also sleep.
"""

from __future__ import annotations

from typing import Any

import requests
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt

from outbound.http import OutboundError, RetryableError, make_session
from outbound.http import request as http_request

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def describe_botpress_error(response: requests.Response) -> tuple[str, str]:
    """Botpress errors are ``{id, code, type, message}``; anything else is "Unknown" (as the SDK)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and all(key in body for key in ("id", "code", "type", "message")):
        return str(body["type"]), str(body["message"])
    return "Unknown", f"An invalid error occurred: HTTP {response.status_code}"


def _should_retry(method: str):
    def predicate(exc: BaseException) -> bool:
        if not isinstance(exc, RetryableError):
            return False
        if exc.status_code is None or exc.status_code in (429, 502):
            return True
        return exc.status_code >= 500 and method in IDEMPOTENT_METHODS

    return predicate


class BotpressClient:
    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        bot_id: str,
        integration_id: str,
        integration_alias: str = "",
        timeout: tuple[float, float] = (5.0, 30.0),
        max_retries: int = 3,
        max_retry_wait: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.session = session or make_session()
        self.headers = {
            "Authorization": f"Bearer {token}",
            "x-bot-id": bot_id,
            "x-integration-id": integration_id,
        }
        if integration_alias:
            self.headers["x-integration-alias"] = integration_alias

    def __repr__(self) -> str:  # never show the token
        return f"BotpressClient({self.base_url!r}, bot={self.headers['x-bot-id']!r})"

    # --- transport --------------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after", None)
        delay = asked if asked is not None else float(state.attempt_number)
        return min(delay, self.max_retry_wait)

    def call(
        self, method: str, path: str, *, json: dict | None = None, params: Any = None, api: str = "/v1/chat"
    ) -> dict:
        def send() -> dict:
            response = http_request(
                self.session,
                method,
                f"{self.base_url}{api}{path}",
                timeout=self.timeout,
                describe_error=describe_botpress_error,
                headers=self.headers,
                json=json,
                params=params,
            )
            return response.json() if response.content else {}

        if not self.max_retries:  # the outbox's calls: it retries durably itself
            return send()
        return retry(
            retry=retry_if_exception(_should_retry(method)),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            reraise=True,
        )(send)()

    # --- users ------------------------------------------------------------------------------
    def user_get(self, user_id: str) -> dict:
        return self.call("GET", f"/users/{user_id}")["user"]

    def user_create(self, *, tags: dict, name: str | None = None, picture_url: str | None = None) -> dict:
        return self.call("POST", "/users", json=_compact({"tags": tags, "name": name, "pictureUrl": picture_url}))[
            "user"
        ]

    def user_get_or_create(
        self, *, tags: dict, name: str | None = None, picture_url: str | None = None, discriminate_by: list[str]
    ) -> dict:
        body = _compact({"tags": tags, "name": name, "pictureUrl": picture_url, "discriminateByTags": discriminate_by})
        return self.call("POST", "/users/get-or-create", json=body)["user"]

    def user_update(
        self, user_id: str, *, tags: dict | None = None, name: str | None = None, picture_url: str | None = None
    ) -> dict:
        body = _compact({"tags": tags, "name": name, "pictureUrl": picture_url})
        return self.call("PUT", f"/users/{user_id}", json=body)["user"]

    def users_list(self, *, page_size: int = 20, tags: dict | None = None) -> list[dict]:
        """One page of the bot's users (a cheap authenticated call for connection checks)."""
        params = {"pageSize": page_size} | {f"tags.{k}": v for k, v in (tags or {}).items()}
        return self.call("GET", "/users", params=params)["users"]

    # --- conversations ----------------------------------------------------------------------
    def conversation_get_or_create(self, *, channel: str, tags: dict, discriminate_by: list[str]) -> dict:
        body = {"channel": channel, "tags": tags, "discriminateByTags": discriminate_by}
        return self.call("POST", "/conversations/get-or-create", json=body)["conversation"]

    def conversation_get(self, conversation_id: str) -> dict:
        return self.call("GET", f"/conversations/{conversation_id}")["conversation"]

    def conversation_update(self, conversation_id: str, *, tags: dict) -> dict:
        return self.call("PUT", f"/conversations/{conversation_id}", json={"tags": tags})["conversation"]

    # --- messages ---------------------------------------------------------------------------
    def message_get_or_create(
        self, *, conversation_id: str, user_id: str, type: str, payload: dict, tags: dict, discriminate_by: list[str]
    ) -> dict:
        """Create a message at most once: a retry finds the message the first try created."""
        body = {
            "conversationId": conversation_id,
            "userId": user_id,
            "type": type,
            "payload": payload,
            "tags": tags,
            "discriminateByTags": discriminate_by,
        }
        return self.call("POST", "/messages/get-or-create", json=body)["message"]

    def message_update(self, message_id: str, *, tags: dict) -> dict:
        return self.call("PUT", f"/messages/{message_id}", json={"tags": tags})["message"]

    def messages_list(self, *, conversation_id: str, tags: dict | None = None) -> list[dict]:
        params = {"conversationId": conversation_id} | {f"tags.{k}": v for k, v in (tags or {}).items()}
        return self.call("GET", "/messages", params=params)["messages"]

    # --- events -----------------------------------------------------------------------------
    def event_create(self, *, type: str, payload: dict) -> dict:
        return self.call("POST", "/events", json={"type": type, "payload": payload})["event"]

    # --- files (Files API, ``/v1/files``) ----------------------------------------------------
    def file_upload(
        self, *, key: str, content: bytes, content_type: str, public: bool = True, tags: dict | None = None
    ) -> dict:
        """Store a file under ``key`` (replacing what the key held) and return the file record.

        Two steps, as the official client's ``uploadFile``: ``PUT /v1/files`` (upsertFile) with
        ``key``, ``size``, ``contentType`` and ``accessPolicies`` answers ``{file: {..., url,
        uploadUrl}}``; the bytes then go in a ``PUT`` to ``uploadUrl`` (a pre-signed URL: no
        Botpress credentials). With the ``public_content`` policy ``file.url`` is permanent and
        opens without credentials [doc botpress.com/docs/api-reference/files-api/openapi/upsertFile,
        "Create files"; code botpress ``packages/client/src/files/upload-file.ts``].
        """
        body = _compact(
            {
                "key": key,
                "size": len(content),
                "contentType": content_type,
                "accessPolicies": ["public_content"] if public else None,
                "tags": tags,
            }
        )
        file = self.call("PUT", "", json=body, api="/v1/files")["file"]
        http_request(
            self.session,
            "PUT",
            file["uploadUrl"],
            timeout=self.timeout,
            describe_error=_describe_upload_error,
            data=content,
            headers={"Content-Type": file.get("contentType") or content_type},
        )
        return file


def _describe_upload_error(response: requests.Response) -> tuple[str, str]:
    """The upload URL is the file store's, which answers in its own terms (not Botpress's envelope)."""
    return "UploadFailed", f"the file store answered HTTP {response.status_code}"


def _compact(body: dict) -> dict:
    """Drop unset optional fields, as the official client does (it never sends undefined)."""
    return {key: value for key, value in body.items() if value is not None}


__all__ = ["BotpressClient", "OutboundError", "describe_botpress_error"]
