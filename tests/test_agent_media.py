"""Agents' files: downloaded with credentials only from the help desk's own host, stored in
Botpress's Files API (stand-in as strict as the real one), sent as text to the hitl-api."""

from __future__ import annotations

import base64
import ipaddress
from urllib.parse import urlsplit

import pytest
import requests
from werkzeug import Response

from botpress.client import BotpressClient
from botpress.sink import AgentRef, HitlApiSink
from outbound.guard import AddressPolicy, Allowance, guarded_session
from outbound.http import PermanentError, RetryableError, make_session
from outbound.media import MediaLimits, media_fetch
from providers.base import AttachmentUnavailable
from providers.zendesk.provider import ZendeskProvider
from tests.conftest import BOT_ID, BP_INTEGRATION_ID, BP_TOKEN

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
CREDENTIALS = {"email": "gateway@acme.test", "api_token": "secret-token"}
AUTH = "Basic " + base64.b64encode(b"gateway@acme.test/token:secret-token").decode()


def _provider(base_url, **kwargs):
    def fetch(url):  # the guarded public fetch, allowing only this test's loopback server
        port = urlsplit(url).port
        allow = tuple(Allowance(ipaddress.ip_network(net), port) for net in ("127.0.0.1/32", "::1/128"))
        session = guarded_session(policy=AddressPolicy(allow=allow))
        return media_fetch(url, session=session, limits=MediaLimits(max_bytes=1024, deadline=2.0))

    options = {"media_max_bytes": 1024, "media_timeout": 2.0} | kwargs
    return ZendeskProvider(
        base_url=base_url,
        credentials=CREDENTIALS,
        session=make_session(),
        timeout=(2, 2),
        media_fetcher=fetch,
        **options,
    )


def _own_and_other(httpserver):
    """The same test server named two ways: our Zendesk host, and another host."""
    port = httpserver.port
    return f"http://127.0.0.1:{port}", f"http://localhost:{port}"


def _authorizations(httpserver, path):
    return [request.headers.get("Authorization") for request, _ in httpserver.log if request.path == path]


def test_own_host_attachments_are_downloaded_with_credentials(httpserver):
    own, _ = _own_and_other(httpserver)
    httpserver.expect_request("/attachments/token/AbC/", headers={"Authorization": AUTH}).respond_with_data(
        PNG, content_type="image/png"
    )
    file = _provider(own).attachment_download(url=f"{own}/attachments/token/AbC/?name=screenshot.png")
    assert (file.filename, file.content_type, file.content) == ("screenshot.png", "image/png", PNG)


def test_other_hosts_never_get_credentials(httpserver):
    own, other = _own_and_other(httpserver)
    httpserver.expect_request("/cdn/pic.png").respond_with_data(PNG, content_type="image/png")
    file = _provider(own).attachment_download(url=f"{other}/cdn/pic.png")
    assert file.content == PNG
    assert _authorizations(httpserver, "/cdn/pic.png") == [None]


def test_a_redirect_to_another_host_is_followed_without_credentials(httpserver):
    own, other = _own_and_other(httpserver)
    httpserver.expect_request("/attachments/token/R/").respond_with_response(
        Response(status=302, headers={"Location": f"{other}/store/signed.png?sig=1"})
    )
    httpserver.expect_request("/store/signed.png").respond_with_data(PNG, content_type="image/png")
    file = _provider(own).attachment_download(url=f"{own}/attachments/token/R/?name=a.png")
    assert file.content == PNG
    assert _authorizations(httpserver, "/attachments/token/R/") == [AUTH]
    assert _authorizations(httpserver, "/store/signed.png") == [None]


def test_a_refused_redirect_elsewhere_is_not_a_public_link(httpserver):
    own, other = _own_and_other(httpserver)
    httpserver.expect_request("/attachments/token/G/").respond_with_response(
        Response(status=302, headers={"Location": f"{other}/store/gone.png"})
    )
    httpserver.expect_request("/store/gone.png").respond_with_data("nope", status=404)
    with pytest.raises(AttachmentUnavailable) as raised:
        _provider(own).attachment_download(url=f"{own}/attachments/token/G/?name=g.png")
    assert raised.value.link_ok is False  # the agent's link needs our credentials


def test_redirects_on_the_own_host_stop_at_the_desks_count(httpserver):
    own, _ = _own_and_other(httpserver)
    for hop in range(4):  # Zendesk follows three
        httpserver.expect_request(f"/loop/{hop}").respond_with_response(
            Response(status=302, headers={"Location": f"/loop/{hop + 1}"})
        )
    with pytest.raises(AttachmentUnavailable, match="too many redirects"):
        _provider(own).attachment_download(url=f"{own}/loop/0")
    assert _authorizations(httpserver, "/loop/3") == [AUTH]


def test_the_served_file_name_wins_over_the_urls(httpserver):
    own, _ = _own_and_other(httpserver)
    httpserver.expect_request("/attachments/token/N/").respond_with_data(
        b"%PDF",
        content_type="application/pdf",
        headers={"Content-Disposition": 'attachment; filename="refund.pdf"; x=1'},
    )
    file = _provider(own).attachment_download(url=f"{own}/attachments/token/N/?name=x")
    assert (file.filename, file.content) == ("refund.pdf", b"%PDF")


@pytest.mark.parametrize(
    ("response", "error", "link_ok"),
    [
        (Response(b"x" * 2048, content_type="image/png"), AttachmentUnavailable, False),
        (
            Response('{"error": "RecordNotFound"}', status=404, content_type="application/json"),
            AttachmentUnavailable,
            False,
        ),
        (Response("down", status=503), RetryableError, None),
    ],
)
def test_download_failures(httpserver, response, error, link_ok):
    own, _ = _own_and_other(httpserver)
    httpserver.expect_request("/attachments/token/F/").respond_with_response(response)
    with pytest.raises(error) as raised:
        _provider(own).attachment_download(url=f"{own}/attachments/token/F/?name=f.png")
    if link_ok is not None:
        assert raised.value.link_ok is link_ok


def test_a_refused_foreign_image_keeps_its_link(httpserver):
    own, other = _own_and_other(httpserver)
    httpserver.expect_request("/gone.png").respond_with_data("nope", status=404)
    with pytest.raises(AttachmentUnavailable) as raised:
        _provider(own).attachment_download(url=f"{other}/gone.png")
    assert raised.value.link_ok is True


# --- Botpress Files API (against the stand-in) ------------------------------------------------
def _client(botpress, **kwargs):
    options = {"token": BP_TOKEN, "bot_id": BOT_ID, "integration_id": BP_INTEGRATION_ID} | kwargs
    return BotpressClient(base_url=botpress.base_url, max_retries=0, **options)


def test_file_upload_gives_a_public_url_that_serves_the_bytes(botpress):
    file = _client(botpress).file_upload(key="hitl-gateway/s/1/shot.png", content=PNG, content_type="image/png")
    assert file["accessPolicies"] == ["public_content"] and file["size"] == len(PNG)
    served = requests.get(file["url"], timeout=5)
    assert served.status_code == 200 and served.content == PNG and served.headers["Content-Type"] == "image/png"
    [upsert] = botpress.requests_log(method="PUT", path_regex=r"^/v1/files$")
    assert upsert["json"] == {
        "key": "hitl-gateway/s/1/shot.png",
        "size": len(PNG),
        "contentType": "image/png",
        "accessPolicies": ["public_content"],
    }
    again = _client(botpress).file_upload(key="hitl-gateway/s/1/shot.png", content=b"new", content_type="image/png")
    assert again["id"] == file["id"] and len(botpress.files()) == 1, "the same key is replaced, not duplicated"
    assert requests.get(file["url"], timeout=5).content == b"new"


def test_files_api_is_as_strict_as_botpress(botpress):
    with pytest.raises(PermanentError) as denied:
        _client(botpress, token="wrong").file_upload(key="k", content=PNG, content_type="image/png")
    assert denied.value.status_code == 401
    base = f"{botpress.base_url}/v1/files"
    headers = {"Authorization": f"Bearer {BP_TOKEN}", "x-bot-id": BOT_ID, "x-integration-id": BP_INTEGRATION_ID}
    for body in (
        {"size": 3},
        {"key": "k"},
        {"key": "k", "size": -1},
        {"key": "k", "size": 3, "accessPolicies": ["all"]},
    ):
        answer = requests.put(base, json=body, headers=headers, timeout=5)
        assert answer.status_code == 400 and answer.json()["type"] == "InvalidPayload", body
    private = requests.put(base, json={"key": "p", "size": 3}, headers=headers, timeout=5).json()["file"]
    assert requests.put(private["uploadUrl"], data=b"toolong", timeout=5).status_code == 400, "size is enforced"
    assert requests.put(private["uploadUrl"] + "x", data=b"abc", timeout=5).status_code == 403, "the URL is signed"
    assert requests.put(private["uploadUrl"], data=b"abc", timeout=5).status_code == 200
    unsigned = private["url"].split("?")[0]
    assert requests.get(unsigned, timeout=5).status_code == 403, "a private file needs its signed URL"
    assert requests.get(private["url"], timeout=5).content == b"abc"


def test_hitl_api_sink_sends_media_as_a_link_in_text():
    sent = []

    class Webhooks:
        def message_from_agent(self, **kwargs):
            sent.append(kwargs)

    sink = HitlApiSink(webhooks=Webhooks(), namespace="n", lookup=None)
    sink.message_send(
        conversation_id="c",
        author=AgentRef(external_id="7"),
        type="image",
        payload={"imageUrl": "https://files.test/a.png", "title": "a.png"},
        external_message_id="1:1",
    )
    assert sent[0]["message_type"] == "text" and sent[0]["payload"] == {"text": "a.png: https://files.test/a.png"}
    with pytest.raises(PermanentError):
        sink.file_publish(key="k", content=PNG, content_type="image/png")
