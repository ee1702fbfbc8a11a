"""Fetch a media URL for re-upload, within limits, refusing anything but public http(s).

A chat user controls these URLs, so the fetch must not become a way into our network (SSRF):
only http(s), only public addresses (checked on the resolved address we connect to), a size
cap and a timeout. When any check fails the caller posts the URL as a link instead.
"""

from __future__ import annotations

import ipaddress
import mimetypes
import posixpath
import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import requests


class MediaRefused(Exception):
    """The media cannot be fetched within our rules; relay it as a link."""


@dataclass(frozen=True)
class MediaFile:
    filename: str
    content_type: str
    content: bytes


def _check_host(host: str, port: int, *, allow_private: bool) -> None:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise MediaRefused(f"cannot resolve {host}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not allow_private and not address.is_global:
            raise MediaRefused(f"{host} resolves to a non-public address")


def media_fetch(
    url: str,
    *,
    session: requests.Session,
    max_bytes: int,
    timeout: float,
    allow_private: bool = False,
) -> MediaFile:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaRefused("only http(s) URLs are fetched")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    _check_host(parts.hostname, port, allow_private=allow_private)
    try:
        # No redirects: a redirect could lead to an address we did not check.
        with session.get(url, stream=True, timeout=(timeout, timeout), allow_redirects=False) as response:
            if response.status_code != 200:
                raise MediaRefused(f"HTTP {response.status_code}")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise MediaRefused("too large")
            chunks, size = [], 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise MediaRefused("too large")
                chunks.append(chunk)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    except requests.RequestException as exc:
        raise MediaRefused(type(exc).__name__) from exc
    filename = posixpath.basename(unquote(parts.path)) or "attachment"
    if not content_type:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return MediaFile(filename=filename, content_type=content_type, content=b"".join(chunks))
