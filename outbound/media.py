"""Fetch a media URL for re-upload, within limits, refusing anything but public http(s).

A chat user controls these URLs, so the fetch must not become a way into our network (SSRF):
the session must be a guarded one (``outbound.guard.guarded_session``: URL read once, name
resolved once, every address checked, connection pinned to it). Redirects are not followed.
A slow server must not hold a worker either: the whole fetch has a deadline and, after a
short grace period, a minimum average rate. When any rule fails the caller posts the URL as
a link instead (``MediaRefused``); it never retries.
"""

from __future__ import annotations

import mimetypes
import posixpath
import time
from dataclasses import dataclass
from urllib.parse import unquote

import requests
import urllib3
from urllib3.util import parse_url

from outbound.guard import AddressPolicy, AddressRefused, hard_deadline, url_target

CHUNK = 64 * 1024


class MediaRefused(Exception):
    """The media cannot be fetched within our rules; relay it as a link."""


@dataclass(frozen=True)
class MediaFile:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class MediaLimits:
    """``max_bytes``: size cap. ``deadline``: seconds for the whole fetch (connect to last byte).

    ``min_rate``: bytes per second the body must average once ``grace`` seconds have passed
    (a server dripping a few bytes at a time is given up on early, not at the deadline).
    ``connect_timeout``: seconds to connect (within the deadline).
    """

    max_bytes: int
    deadline: float = 15.0
    min_rate: float = 10 * 1024
    grace: float = 3.0
    connect_timeout: float = 5.0


def media_fetch(url: str, *, session: requests.Session, limits: MediaLimits) -> MediaFile:
    """Fetch ``url`` whole, or raise ``MediaRefused`` (refused address, HTTP error, too big/slow)."""
    try:
        url_target(url, policy=AddressPolicy())  # the URL-form rules, before anything is sent
    except AddressRefused as exc:
        raise MediaRefused(str(exc)) from exc
    started = time.monotonic()
    try:
        # No redirects: a redirect is relayed as the link (the guard would check each hop anyway).
        with (
            hard_deadline(limits.deadline),
            session.get(
                url,
                stream=True,
                timeout=(min(limits.connect_timeout, limits.deadline), limits.deadline),
                allow_redirects=False,
            ) as response,
        ):
            if response.status_code != 200:
                raise MediaRefused(f"HTTP {response.status_code}")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise MediaRefused("too large")
            content = _read_body(response, started=started, limits=limits)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise MediaRefused(type(exc).__name__) from exc
    filename = posixpath.basename(unquote(parse_url(url).path or "")) or "attachment"
    if not content_type:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return MediaFile(filename=filename, content_type=content_type, content=content)


def _read_body(response: requests.Response, *, started: float, limits: MediaLimits) -> bytes:
    """Read as bytes arrive; each socket wait ends when the deadline or the minimum rate would be missed.

    With ``size`` bytes read, the average rate holds until ``size / min_rate`` seconds after the
    start (never before ``grace``), so the next bytes must arrive by then: a complete body is
    never refused for its rate, a dripping one is given up on as soon as it falls behind.
    """
    raw = response.raw
    chunks, size = [], 0
    while True:
        now = time.monotonic()
        wait = min(limits.deadline, max(limits.grace, size / limits.min_rate)) - (now - started)
        if wait <= 0:
            reason = "the deadline" if now - started >= limits.deadline else "the minimum rate"
            raise MediaRefused(f"too slow: {size} bytes in {now - started:.1f} s, below {reason}")
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(wait)
        chunk = raw.read1(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limits.max_bytes:
            raise MediaRefused("too large")
        chunks.append(chunk)
