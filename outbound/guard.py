"""Requests to URLs that users or operators chose, pinned to an address we checked (anti-SSRF).

A chat user picks media URLs and an operator picks the hitl-api webhook URL; the worker then
connects to them from inside our network. So, for every request and every redirect hop:

- the URL is read once, by the parser the client itself uses (urllib3's ``parse_url``, which
  ``requests`` prepares URLs with), and refused when another parser could read it otherwise:
  userinfo (``user@``), backslashes, control characters or whitespace, a zone id (``%``), or a
  host/port that ``urllib.parse`` reads differently;
- only the allowed schemes (http/https) and ports (80/443 plus a configurable list) pass;
- the host is resolved **once**; every address it resolves to must be public (below), else
  the request is refused; the connection then goes to exactly that address (no second lookup,
  so DNS rebinding cannot swap it), with the original name as ``Host`` header and as TLS SNI
  and certificate hostname;
- an explicit allow-list (``Allowance``) can admit chosen non-public networks, optionally one
  port each, for tests, the demo and local development. It is empty by default.

Why our own adapter: ``advocate`` is unmaintained since 2020 (urllib3 1.x internals);
``requests-hardened`` (maintained, same pinning technique) checks only the first resolved
address, allows loopback only all-or-nothing, and has no port rule or URL-form checks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import idna
import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = {"http": 80, "https": 443}

# Not reachable from the internet, or not ours to reach, beyond what ``is_global`` says
# (IANA special-purpose registries; Python 3.11's ``is_global`` lets multicast, shared
# address space and NAT64 through).
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT, cloud VPCs)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/96",  # IPv4-compatible (deprecated), and :: / ::1
        "64:ff9b::/96",  # NAT64: the translator could reach any IPv4 address
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",  # Teredo 2001::/32 and other IETF protocol assignments
        "2001:db8::/32",
        "2002::/16",  # 6to4: embeds any IPv4 address
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",  # unique local, AWS metadata fd00:ec2::254
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


class AddressRefused(requests.RequestException):
    """The URL or the address it resolves to is outside the rules; nothing was connected to."""


def address_is_public(address: IPAddress) -> bool:
    """Whether ``address`` is a public unicast internet address (an IPv4-mapped one by its IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in _NOT_PUBLIC if net.version == address.version):
        return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


@dataclass(frozen=True)
class Allowance:
    """A non-public network (and optionally one port) that a deployment explicitly allows."""

    network: IPNetwork
    port: int | None = None

    def admits(self, address: IPAddress, port: int) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.version == self.network.version and address in self.network and self.port in (None, port)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in allow-list entry {entry!r}")
    return int(text)


def allowances_parse(value: str) -> tuple[Allowance, ...]:
    """``"127.0.0.1:8211, 10.0.0.0/8, [::1]:9000, ::1"`` → allowances; ``ValueError`` when malformed.

    Addresses and networks only (names are not allow-listed: what counts is where they resolve).
    """
    allowances = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        port = None
        if entry.startswith("["):
            address, _, rest = entry[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"malformed allow-list entry {entry!r}")
                port = _port(rest[1:], entry)
        elif entry.count(":") == 1:
            address, port_text = entry.split(":")
            port = _port(port_text, entry)
        else:
            address = entry
        try:
            allowances.append(Allowance(ipaddress.ip_network(address, strict=False), port))
        except ValueError:
            raise ValueError(f"allow-list entry {entry!r} is not an address or network (e.g. 127.0.0.1:8211)") from None
    return tuple(allowances)


@dataclass(frozen=True)
class AddressPolicy:
    """Where guarded requests may go: schemes, ports for public addresses, allowed exceptions."""

    schemes: frozenset[str] = frozenset({"http", "https"})
    ports: frozenset[int] = frozenset({80, 443})
    allow: tuple[Allowance, ...] = field(default=())
    # Plain http only to allow-listed addresses (credentials-bearing URLs: https on the internet).
    plain_http_only_allowed: bool = False

    def check(self, address: IPAddress, port: int, *, scheme: str = "https") -> None:
        if any(allowance.admits(address, port) for allowance in self.allow):
            return
        if scheme == "http" and self.plain_http_only_allowed:
            raise AddressRefused("plain http is allowed only to allow-listed addresses")
        if not address_is_public(address):
            raise AddressRefused(f"{address} is not a public address")
        if port not in self.ports:
            raise AddressRefused(f"port {port} is not allowed")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # a name or an IP literal, without brackets
    port: int


def _has_control_or_space(text: str) -> bool:
    return any(ord(char) <= 0x20 or ord(char) == 0x7F or char.isspace() for char in text)


def _idna(host: str) -> str:
    """A host as urllib3 sends it: internationalised names in their ASCII (IDNA) form."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, strict=True, std3_rules=True).decode("ascii").lower()
    except idna.IDNAError:
        return ""


def url_target(url: str, *, policy: AddressPolicy) -> Target:
    """The scheme, host and port the HTTP client will use for ``url``; ``AddressRefused`` if unsafe."""
    if not isinstance(url, str) or _has_control_or_space(url) or "\\" in url:
        raise AddressRefused("URL has control characters, whitespace or backslashes")
    try:
        parsed = parse_url(url)
        stdlib = urlsplit(url)
        stdlib_port = stdlib.port
    except (LocationParseError, ValueError) as exc:
        raise AddressRefused("unparsable URL") from exc
    scheme = (parsed.scheme or "").lower()
    if scheme not in policy.schemes:
        raise AddressRefused(f"scheme {scheme or 'none'!r} is not allowed")
    if parsed.auth is not None or "@" in (stdlib.netloc or ""):
        raise AddressRefused("URL has userinfo")
    host = (parsed.host or "").strip("[]").lower()
    if not host or "%" in host:
        raise AddressRefused("URL has no usable host")
    port = parsed.port or DEFAULT_PORTS[scheme]
    if (_idna(stdlib.hostname or "")) != host or (stdlib_port or DEFAULT_PORTS[scheme]) != port:
        raise AddressRefused("URL is ambiguous")
    return Target(scheme=scheme, host=host, port=port)


def resolve_checked(target: Target, *, policy: AddressPolicy) -> IPAddress:
    """Resolve once; every address must pass ``policy``; the first one is the one to connect to."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, allowed_gai_family(), socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise requests.ConnectionError(f"cannot resolve {target.host}") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise requests.ConnectionError(f"cannot resolve {target.host}")
    for address in addresses:
        policy.check(address, target.port, scheme=target.scheme)
    return addresses[0]


_local = threading.local()


@contextlib.contextmanager
def hard_deadline(seconds: float):
    """Within this block, a guarded request still waiting for its response after ``seconds`` is cut.

    Socket timeouts bound each wait, not the total: a server dripping its status line and
    headers a byte at a time would hold the caller until Celery's time limit. A timer shuts the
    connection's socket down at the deadline, which ends the blocked read with an error.
    """
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = None


def _shut_down(conn) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _DeadlinePoolMixin:
    def _make_request(self, conn, *args, **kwargs):
        until = getattr(_local, "deadline", None)
        if until is None:
            return super()._make_request(conn, *args, **kwargs)
        timer = threading.Timer(max(0.0, until - time.monotonic()), _shut_down, (conn,))
        timer.daemon = True
        timer.start()
        try:
            return super()._make_request(conn, *args, **kwargs)
        finally:
            timer.cancel()


class _HTTPPool(_DeadlinePoolMixin, HTTPConnectionPool):
    pass


class _HTTPSPool(_DeadlinePoolMixin, HTTPSConnectionPool):
    pass


class PinnedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that connects only to an address ``policy`` allows, resolved once.

    The pool is keyed by the pinned address; ``Host``, SNI and certificate checks keep the name.
    Every hop of a redirect goes through ``send`` again, so each one is checked the same way.
    """

    def __init__(self, *, policy: AddressPolicy, **kwargs):
        self.policy = policy
        super().__init__(max_retries=0, **kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        if proxies and any(proxies.values()):
            raise AddressRefused("guarded requests never go through a proxy")
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=None)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        target = url_target(request.url, policy=self.policy)
        address = resolve_checked(target, policy=self.policy)
        host_params["host"] = f"[{address}]" if address.version == 6 else str(address)
        host_params["port"] = target.port
        name = f"[{target.host}]" if ":" in target.host else target.host
        request.headers["Host"] = name if target.port == DEFAULT_PORTS[target.scheme] else f"{name}:{target.port}"
        if target.scheme == "https":
            pool_kwargs["server_hostname"] = target.host
            pool_kwargs["assert_hostname"] = target.host
        return host_params, pool_kwargs

    def get_connection(self, url, proxies=None):  # the unguarded legacy path of HTTPAdapter
        raise NotImplementedError("guarded sessions connect only through get_connection_with_tls_context")


def guarded_session(*, policy: AddressPolicy, pool_size: int = 10, max_redirects: int = 3) -> requests.Session:
    """A session whose every request (and redirect hop) is pinned and checked; no env proxies."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = max_redirects
    adapter = PinnedAdapter(policy=policy, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
