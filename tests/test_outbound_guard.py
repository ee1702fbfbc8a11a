"""SSRF: no URL form a chat user can send makes the worker connect to a non-public address.

Every case goes through the real fetch path (``media_fetch`` on a guarded session) while:
- ``socket.socket.connect`` records every address actually connected to (and refuses all
  non-loopback ones, so nothing leaves the machine);
- ``socket.getaddrinfo`` answers for a few made-up names (including one that rebinds: public on
  the first lookup, loopback on the next) and counts lookups;
- real servers listen on 127.0.0.1: one allow-listed (as the tests' media stand-ins are: the
  escape hatch is on, for that one address and port only), and a forbidden one that must see
  zero requests whatever the URL.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter

import pytest
import requests

from outbound.guard import (
    AddressPolicy,
    AddressRefused,
    Allowance,
    address_is_public,
    allowances_parse,
    guarded_session,
)
from outbound.media import MediaLimits, MediaRefused, media_fetch
from tests.media_hosts import PNG, MediaHost

PUBLIC = "93.184.216.34"  # routable; the connect recorder never lets it out of the machine


@pytest.fixture(scope="module")
def hosts():
    allowed, forbidden = MediaHost().start(), MediaHost().start()
    yield allowed, forbidden
    allowed.stop()
    forbidden.stop()


@pytest.fixture
def net(hosts, monkeypatch):
    """Records connects and lookups; fake DNS for ``*.test`` names."""
    allowed, forbidden = hosts
    allowed.reset()
    forbidden.reset()
    connects: list[tuple[str, int]] = []
    lookups: Counter[str] = Counter()
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
    answers = {
        "internal.test": ["10.0.0.5"],
        "metadata.test": ["169.254.169.254"],
        "mixed.test": [PUBLIC, "127.0.0.1"],
        "v6mapped.test": ["::ffff:127.0.0.1"],
        "media.test": ["127.0.0.1"],
        "xn--bcher-kva.test": ["127.0.0.1"],
        "public.test": [PUBLIC],
    }

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else str(host)
        lookups[name] += 1
        addresses = answers.get(name)
        if name == "rebind.test":  # public first, then loopback: a rebinding DNS server
            addresses = [PUBLIC] if lookups[name] == 1 else ["127.0.0.1"]
        if addresses is None:
            return real_getaddrinfo(host, port, family, type, proto, flags)
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in addresses
        ]

    def connect(sock, address):
        connects.append((address[0], address[1]))
        if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
            raise ConnectionRefusedError("the test network has no route out")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return {"connects": connects, "lookups": lookups, "allowed": allowed, "forbidden": forbidden}


def _session(allowed: MediaHost) -> requests.Session:
    # The escape hatch as the tests' worker uses it: one loopback address and port, no more.
    return guarded_session(policy=AddressPolicy(allow=(Allowance(ipaddress.ip_network("127.0.0.1/32"), allowed.port),)))


def _fetch(net, url: str):
    limits = MediaLimits(max_bytes=1024, deadline=3.0, min_rate=1, grace=1.0, connect_timeout=1.0)
    return media_fetch(url, session=_session(net["allowed"]), limits=limits)


def _nothing_private_connected(net) -> None:
    allowed_target = ("127.0.0.1", net["allowed"].port)
    for address, port in net["connects"]:
        assert (address, port) == allowed_target or address_is_public(ipaddress.ip_address(address)), (
            f"connected to {address}:{port}"
        )
    assert net["forbidden"].requests == [], "the forbidden server was reached"


# F = the forbidden server's port, A = the allowed one's; both on 127.0.0.1.
CASES = [
    # loopback, every spelling
    "http://127.0.0.1:{F}/x.png",
    "http://127.1:{F}/x.png",
    "http://127.0.1:{F}/x.png",
    "http://0x7f000001:{F}/x.png",
    "http://0x7f.0x0.0x0.0x1:{F}/x.png",
    "http://2130706433:{F}/x.png",
    "http://017700000001:{F}/x.png",
    "http://0177.0.0.1:{F}/x.png",
    "http://127.000.000.001:{F}/x.png",
    "http://[::1]:{F}/x.png",
    "http://[0:0:0:0:0:0:0:1]:{F}/x.png",
    "http://[::ffff:127.0.0.1]:{F}/x.png",
    "http://[0:0:0:0:0:ffff:7f00:1]:{F}/x.png",
    "http://[::ffff:7f00:1]:{F}/x.png",
    "http://[::127.0.0.1]:{F}/x.png",
    "http://localhost:{F}/x.png",
    "http://LOCALHOST.:{F}/x.png",
    "http://0.0.0.0:{F}/x.png",
    "http://0:{F}/x.png",
    "http://[::]:{F}/x.png",
    "http://127.0.0.2:{A}/ok/x.png",  # loopback, allowed port, but not the allowed address
    "http://[::1]:{A}/ok/x.png",  # the allowed port on another loopback address
    "http://v6mapped.test:{F}/x.png",
    # userinfo and backslash tricks
    "http://[::1]:{F}\\@1.1.1.1/x.txt",
    "http://1.1.1.1@127.0.0.1:{F}/x.png",
    "http://127.0.0.1:{A}@127.0.0.1:{F}/x.png",
    "http://user:pass@127.0.0.1:{A}/ok/x.png",
    "http://127.0.0.1:{F}\\.example.com/x.png",
    "http://example.com\\@127.0.0.1:{F}/x.png",
    "http://1.1.1.1:80#@127.0.0.1:{F}/x.png",
    "http://1.1.1.1:80?@127.0.0.1:{F}/x.png",
    # encoded hosts
    "http://%31%32%37.0.0.1:{F}/x.png",
    "http://127%2e0%2e0%2e1:{F}/x.png",
    "http://loc%61lhost:{F}/x.png",
    "http://127.0.0.1%00.example.com:{F}/x.png",
    # IDNA
    "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{F}/x.png",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{F}/x.png",  # fullwidth digits
    "http://bücher.test:{F}/x.png",
    # names resolving to non-public addresses; every address counts; rebinding
    "http://internal.test/x.png",
    "http://metadata.test/latest/meta-data/",
    "http://mixed.test/x.png",
    "http://rebind.test/x.png",
    # private, link-local, metadata, multicast, broadcast, translated IPv6 forms
    "http://10.0.0.1/x.png",
    "http://172.16.0.1/x.png",
    "http://192.168.1.1/x.png",
    "http://100.64.0.1/x.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1]/x.png",
    "http://[fe80::1%25lo]:{F}/x.png",
    "http://224.0.0.1/x.png",
    "http://255.255.255.255/x.png",
    "http://[ff02::1]/x.png",
    "http://[2002:7f00:1::]/x.png",
    "http://[64:ff9b::7f00:1]/x.png",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x.png",
    # non-http schemes, no scheme
    "file:///etc/passwd",
    "gopher://127.0.0.1:{F}/_GET%20/",
    "ftp://127.0.0.1:{F}/x.png",
    "dict://127.0.0.1:{F}/info",
    "//127.0.0.1:{F}/x.png",
    "127.0.0.1:{F}/x.png",
    # ports: public addresses on anything but 80/443 (and the configured extras)
    "http://1.1.1.1:22/x.png",
    "http://public.test:6379/x.png",
    "https://public.test:{F}/x.png",
    # redirects (301/302/307/308) from the allowed host to forbidden ones
    "http://127.0.0.1:{A}/redirect/301?to=http://127.0.0.1:{F}/x.png",
    "http://127.0.0.1:{A}/redirect/302?to=http://[::1]:{F}/x.png",
    "http://127.0.0.1:{A}/redirect/307?to=http://169.254.169.254/latest/",
    "http://127.0.0.1:{A}/redirect/308?to=http://localhost:{F}/x.png",
    # control characters and whitespace
    "http://127.0.0.1:{A}/ok/x.png\r\nHost: 127.0.0.1:{F}",
    " http://127.0.0.1:{F}/x.png",
    "http://127.0.0.1:{F}/x.png\t",
    "http://127.0.0.1 :{F}/x.png",
    "http://127.0.0.1:{F}/x png",
]


@pytest.mark.parametrize("template", CASES)
def test_nothing_private_is_ever_connected_to(net, template):
    url = template.format(A=net["allowed"].port, F=net["forbidden"].port)
    with pytest.raises(MediaRefused):
        _fetch(net, url)
    _nothing_private_connected(net)


def test_the_cases_are_many_and_distinct():
    assert len(set(CASES)) == len(CASES) >= 40


def test_rebinding_name_is_resolved_once_and_the_checked_address_is_used(net):
    with pytest.raises(MediaRefused):
        _fetch(net, "http://rebind.test/x.png")
    assert net["lookups"]["rebind.test"] == 1
    assert net["connects"] == [(PUBLIC, 80)], "connected to the address that was checked, nothing else"


def test_allowed_host_is_fetched_through_the_pinned_address_with_its_name(net):
    allowed = net["allowed"]
    media = _fetch(net, f"http://media.test:{allowed.port}/ok/photo.png")
    assert (media.filename, media.content_type, media.content) == ("photo.png", "image/png", PNG)
    assert net["connects"] == [("127.0.0.1", allowed.port)]
    assert net["lookups"]["media.test"] == 1
    (_method, path, headers) = allowed.requests[0]
    assert path == "/ok/photo.png" and headers["Host"] == f"media.test:{allowed.port}"
    _nothing_private_connected(net)


def test_a_guarded_session_rechecks_every_redirect_hop(net):
    """Sessions that follow redirects (the hitl-api POSTs) are refused at the first bad hop."""
    allowed, forbidden = net["allowed"], net["forbidden"]
    session = _session(allowed)
    for status in (301, 302, 307, 308):
        with pytest.raises(AddressRefused):
            session.post(allowed.url(f"/redirect/{status}?to=http://127.0.0.1:{forbidden.port}/x"), json={}, timeout=2)
    assert len(allowed.requests) == 4
    _nothing_private_connected(net)


def test_no_proxy_from_the_environment(net, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{net['forbidden'].port}")
    _fetch(net, net["allowed"].url("/ok/a.png"))
    _nothing_private_connected(net)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("100.64.0.1", False),
        ("198.18.0.1", False),
        ("192.0.0.8", False),
        ("240.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::a00:1", False),
        ("5f00::1", False),
        ("fec0::1", False),
    ],
)
def test_address_rule(address, public):
    assert address_is_public(ipaddress.ip_address(address)) is public


def test_allow_list_syntax():
    assert allowances_parse(" 127.0.0.1:8211, 10.0.0.0/8 ,[::1]:9000, ::1,") == (
        Allowance(ipaddress.ip_network("127.0.0.1/32"), 8211),
        Allowance(ipaddress.ip_network("10.0.0.0/8")),
        Allowance(ipaddress.ip_network("::1/128"), 9000),
        Allowance(ipaddress.ip_network("::1/128")),
    )
    assert allowances_parse("") == ()
    for bad in ("true", "localhost:80", "127.0.0.1:0", "127.0.0.1:http", "[::1]x"):
        with pytest.raises(ValueError):
            allowances_parse(bad)


@pytest.fixture(scope="module")
def tls_host(tmp_path_factory):
    """A media host serving https for ``media.test`` with a certificate from a test CA."""
    import datetime
    import ssl

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder(subject_name=name("test CA"), issuer_name=name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder(subject_name=name("media.test"), issuer_name=ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("media.test")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.pem").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "leaf.pem")
    server_names: list[str | None] = []
    context.sni_callback = lambda sock, server_name, ctx: server_names.append(server_name)
    server = MediaHost()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.start()
    yield server, str(folder / "ca.pem"), server_names
    server.stop()


def test_https_is_pinned_with_the_name_for_sni_and_certificate_checks(net, tls_host):
    server, ca_file, server_names = tls_host
    session = guarded_session(
        policy=AddressPolicy(allow=(Allowance(ipaddress.ip_network("127.0.0.1/32"), server.port),))
    )
    session.verify = ca_file
    limits = MediaLimits(max_bytes=1024, deadline=3.0, connect_timeout=1.0)
    media = media_fetch(f"https://media.test:{server.port}/ok/a.png", session=session, limits=limits)
    assert media.content == PNG
    assert server_names == ["media.test"] and net["connects"] == [("127.0.0.1", server.port)]
    # The certificate is still checked against the URL's host: the bare address does not match it.
    with pytest.raises(MediaRefused, match="SSLError"):
        media_fetch(f"https://127.0.0.1:{server.port}/ok/a.png", session=session, limits=limits)
