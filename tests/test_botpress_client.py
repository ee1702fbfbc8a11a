"""The Botpress client's error parsing and SDK-like retries, against a real local HTTP server."""

import json

import pytest
from werkzeug import Response

from botpress.client import BotpressClient
from outbound.http import PermanentError, RetryableError, make_session

ERROR = {"id": "err_20260101000000xABCDEF01", "code": 400, "type": "InvalidPayload", "message": "tags is required"}


@pytest.fixture
def client(httpserver):
    return BotpressClient(
        base_url=httpserver.url_for("/"),
        token="t0k",
        bot_id="bot_1",
        integration_id="intg_1",
        max_retries=3,
        max_retry_wait=0.05,
    )


def test_headers_and_body(client, httpserver):
    httpserver.expect_request(
        "/v1/chat/users/get-or-create",
        method="POST",
        headers={"Authorization": "Bearer t0k", "x-bot-id": "bot_1", "x-integration-id": "intg_1"},
        json={"tags": {"id": "7"}, "name": "Grace", "discriminateByTags": ["id"]},
    ).respond_with_json({"user": {"id": "user_1"}, "meta": {"created": True}})
    assert client.user_get_or_create(tags={"id": "7"}, name="Grace", discriminate_by=["id"]) == {"id": "user_1"}
    assert "t0k" not in repr(client)


def test_errors_are_parsed_by_type(client, httpserver):
    httpserver.expect_request("/v1/chat/events").respond_with_json(ERROR, status=400)
    with pytest.raises(PermanentError) as error:
        client.event_create(type="hitlStopped", payload={})
    assert (error.value.error_type, error.value.status_code, error.value.message) == (
        "InvalidPayload",
        400,
        "tags is required",
    )


def test_a_body_without_id_is_unknown(client, httpserver):
    httpserver.expect_request("/v1/chat/users/u").respond_with_json({"message": "boom"}, status=404)
    with pytest.raises(PermanentError) as error:
        client.user_get("u")
    assert error.value.error_type == "Unknown"


def test_429_is_retried_honouring_retry_after_then_succeeds(client, httpserver):
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) < 3:
            return Response(
                json.dumps(ERROR | {"code": 429, "type": "RateLimited"}),
                status=429,
                headers={"Retry-After": "0"},
                content_type="application/json",
            )
        return Response(json.dumps({"event": {"id": "evt_1"}}), content_type="application/json")

    httpserver.expect_request("/v1/chat/events").respond_with_handler(handler)
    assert client.event_create(type="hitlStopped", payload={"conversationId": "c"})["id"] == "evt_1"
    assert len(calls) == 3


def test_5xx_is_retried_for_put_but_not_for_post(client, httpserver):
    httpserver.expect_request("/v1/chat/messages/m1", method="PUT").respond_with_data("oops", status=503)
    with pytest.raises(RetryableError):
        client.message_update("m1", tags={"a": "b"})
    assert len(httpserver.log) == 4  # 1 + 3 retries
    httpserver.clear_log()
    httpserver.expect_request("/v1/chat/events", method="POST").respond_with_data("oops", status=500)
    with pytest.raises(RetryableError):
        client.event_create(type="x", payload={})
    assert len(httpserver.log) == 1, "a POST is not repeated after a 5xx (it may have happened)"


def test_the_outbox_client_never_retries_in_process(httpserver):
    client = BotpressClient(base_url=httpserver.url_for("/"), token="t", bot_id="b", integration_id="i", max_retries=0)
    httpserver.expect_request("/v1/chat/events").respond_with_data("busy", status=429, headers={"Retry-After": "7"})
    with pytest.raises(RetryableError) as error:
        client.event_create(type="x", payload={})
    assert error.value.retry_after == 7 and len(httpserver.log) == 1


def _plain_environment(monkeypatch, tmp_path) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))


PROXY, BUNDLE = "http://proxy.internal:3128", "/etc/ssl/certs/ca-certificates.crt"


@pytest.mark.parametrize(
    ("variable", "value", "per_request", "setting", "wanted"),
    [
        ("HTTPS_PROXY", PROXY, True, "proxies", {"https": PROXY}),
        ("http_proxy", PROXY, True, "proxies", {"http": PROXY}),
        ("REQUESTS_CA_BUNDLE", BUNDLE, False, "verify", BUNDLE),
        ("CURL_CA_BUNDLE", BUNDLE, False, "verify", BUNDLE),
    ],
)
def test_the_environment_still_configures_requests(
    monkeypatch, tmp_path, variable, value, per_request, setting, wanted
):
    """The sessions skip requests' per-request look at the environment only when it has nothing
    to find there: a proxy is still looked up per URL, a CA bundle is read once."""
    _plain_environment(monkeypatch, tmp_path)
    assert make_session().trust_env is False
    assert make_session().verify is True
    monkeypatch.setenv(variable, value)
    session = make_session()
    assert session.trust_env is per_request
    merged = session.merge_environment_settings("https://api.botpress.cloud/v1/chat", {}, None, None, None)
    assert merged[setting] == wanted or wanted.items() <= merged[setting].items()


def test_a_netrc_file_is_still_used(monkeypatch, tmp_path):
    _plain_environment(monkeypatch, tmp_path)
    assert make_session().trust_env is False
    (tmp_path / "netrc").write_text("machine example.test login a password b\n")
    assert make_session().trust_env is True
