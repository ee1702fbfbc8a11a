"""Media fetched for upload stays within limits and never reaches private addresses."""

import pytest

from outbound.http import make_session
from outbound.media import MediaRefused, media_fetch


def _fetch(url, **kwargs):
    options = {"session": make_session(), "max_bytes": 1024, "timeout": 2.0, "allow_private": True} | kwargs
    return media_fetch(url, **options)


def test_fetches_within_limits(httpserver):
    httpserver.expect_request("/files/report final.pdf").respond_with_data(b"%PDF-1.4", content_type="application/pdf")
    media = _fetch(httpserver.url_for("/files/report%20final.pdf"))
    assert (media.filename, media.content_type, media.content) == ("report final.pdf", "application/pdf", b"%PDF-1.4")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "http://127.0.0.1:1/a.png",
        "http://10.0.0.1/a.png",
        "http://[::1]/a.png",
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_refuses_non_http_and_private_addresses(url):
    with pytest.raises(MediaRefused):
        _fetch(url, allow_private=False)


def test_refuses_too_large_redirects_and_errors(httpserver):
    httpserver.expect_request("/big").respond_with_data(b"x" * 2048)
    httpserver.expect_request("/redirect").respond_with_data("", status=302, headers={"Location": "/big"})
    httpserver.expect_request("/missing").respond_with_data("", status=404)
    for path in ("/big", "/redirect", "/missing"):
        with pytest.raises(MediaRefused):
            _fetch(httpserver.url_for(path))
