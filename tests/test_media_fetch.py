"""Media fetched for upload stays within limits: size, redirects, errors, a deadline and a minimum rate.

(Which addresses may be fetched from is ``test_outbound_guard.py``.)
"""

import ipaddress
import time

import pytest

from outbound.guard import AddressPolicy, Allowance, guarded_session
from outbound.media import MediaLimits, MediaRefused, media_fetch
from tests.media_hosts import PNG, MediaHost


@pytest.fixture(scope="module")
def host():
    server = MediaHost().start()
    yield server
    server.stop()


def _fetch(url, port, **limits):
    session = guarded_session(policy=AddressPolicy(allow=(Allowance(ipaddress.ip_network("127.0.0.1/32"), port),)))
    options = {"max_bytes": 1024, "deadline": 3.0, "min_rate": 1000, "grace": 1.0, "connect_timeout": 1.0} | limits
    return media_fetch(url, session=session, limits=MediaLimits(**options))


def test_fetches_within_limits(httpserver):
    httpserver.expect_request("/files/report final.pdf").respond_with_data(b"%PDF-1.4", content_type="application/pdf")
    url = httpserver.url_for("/files/report%20final.pdf").replace("localhost", "127.0.0.1")
    media = _fetch(url, httpserver.port)
    assert (media.filename, media.content_type, media.content) == ("report final.pdf", "application/pdf", b"%PDF-1.4")


def test_refuses_too_large_redirects_and_errors(httpserver):
    httpserver.expect_request("/big").respond_with_data(b"x" * 2048)
    httpserver.expect_request("/redirect").respond_with_data("", status=302, headers={"Location": "/big"})
    httpserver.expect_request("/missing").respond_with_data("", status=404)
    for path in ("/big", "/redirect", "/missing"):
        with pytest.raises(MediaRefused):
            _fetch(httpserver.url_for(path).replace("localhost", "127.0.0.1"), httpserver.port)


def test_a_dripping_server_is_given_up_on_when_it_falls_below_the_minimum_rate(host):
    """100 bytes every 0.5 s (the server that held a worker for 90 s): refused right after the grace."""
    started = time.monotonic()
    with pytest.raises(MediaRefused, match=r"ReadTimeout|too slow"):
        _fetch(host.url("/drip/a.png?bytes=100000&every=0.5&size=100"), host.port, max_bytes=10**6, deadline=15.0)
    assert time.monotonic() - started < 2.0  # grace 1 s, 1000 B/s: 200 B/s cannot keep up


def test_the_deadline_bounds_a_fetch_that_keeps_the_rate(host):
    started = time.monotonic()
    with pytest.raises(MediaRefused):
        # 2,000 B/s keeps above 1,000 B/s, but 20,000 bytes need 10 s: the 2 s deadline ends it.
        _fetch(host.url("/drip/a.png?bytes=20000&every=0.05&size=100"), host.port, max_bytes=10**6, deadline=2.0)
    assert 1.9 < time.monotonic() - started < 2.6


def test_the_deadline_also_bounds_a_server_dripping_its_headers(host):
    """Each header line comes within the socket timeout; only the hard deadline can end this."""
    started = time.monotonic()
    with pytest.raises(MediaRefused):
        _fetch(host.url("/drip-headers/a.png"), host.port, deadline=2.0)
    assert 1.9 < time.monotonic() - started < 2.6


def test_a_slow_but_complete_small_file_is_not_refused_for_its_rate(host):
    # 300 bytes over 1.5 s is below 1,000 B/s on average, but everything arrived before the rate mattered.
    media = _fetch(host.url("/drip/a.png?bytes=300&every=0.5&size=100"), host.port, grace=2.0)
    assert media.content == b"x" * 300


def test_fetches_from_the_allowed_host(host):
    assert _fetch(host.url("/ok/a.png"), host.port).content == PNG


def test_all_the_media_of_one_message_share_one_time_budget(db, settings, host):
    """A bloc of many slow images cannot add up past the task's time limit: the rest go as links."""
    from sessions_app.services.integrations import integration_provider
    from tests.conftest import integration_for

    settings.HITL = {
        **settings.HITL,
        "MEDIA_ALLOW_PRIVATE_ADDRESSES": (Allowance(ipaddress.ip_network("127.0.0.1/32"), host.port),),
        "MEDIA_FETCH_TIMEOUT": 1.5,
        "MEDIA_RATE_GRACE_SECONDS": 10.0,
        "MEDIA_FETCH_BUDGET_SECONDS": 2.8,
    }
    integration, _ = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    fetch = integration_provider(integration=integration).media_fetcher
    host.reset()
    started = time.monotonic()
    for _ in range(4):
        with pytest.raises(MediaRefused):
            fetch(host.url("/drip/a.png?bytes=100000&every=0.1&size=100"))
    assert time.monotonic() - started < 3.3  # 1.5 s, then the 1.3 s left, then nothing
    assert len(host.requests) == 2
