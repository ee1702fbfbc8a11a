"""No credential of an integration ever reaches a log line (issue 10, finding 4).

Every endpoint is driven with bad input, wrong credentials and forced exceptions while every
configured log handler (root at DEBUG, Django's loggers, structlog, gunicorn's access and error
logs, Celery's task logger) writes into one buffer; then the buffer is searched for each secret.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import secrets
import time

import pytest
from django.test import Client
from gunicorn.config import Config

from hitl_gateway.gunicorn_logging import RedactingLogger
from hitl_gateway.logging import RedactingFilter, redact_text
from providers.zendesk.webhooks import signature_compute
from sessions_app.services.integrations import integration_botpress_configure, integration_create
from standins.botpress_caller import BotpressCaller
from tests.conftest import BOT_ID, BP_INTEGRATION_ID

BOT_USER = "user_01HITLBOTUSER000000000000000"
NAMES = {
    "actions": {"startHitl": "createTicket", "stopHitl": "closeTicket"},
    "events": {"hitlAssigned": "agentAssigned", "hitlStopped": "ticketClosed"},
    "channel": "supportTicket",
}


# --- the shared redaction function --------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Forbidden (CSRF cookie not set.): /hitl-api/42/Sx9_aZ-b0/nope", "Sx9_aZ-b0"),
        ("Internal Server Error: /hitl-api/42//Sx9_aZ-b0//ping", "Sx9_aZ-b0"),
        ("Not Found: /botpress/42/Sx9_aZ-b0/", "Sx9_aZ-b0"),
        ('"POST http://gw:8000/botpress/42/Sx9_aZ-b0?x=1 HTTP/1.1" 404', "Sx9_aZ-b0"),
        ("headers={'Authorization': 'Bearer hitl_AbCdEfGh12345678'}", "hitl_AbCdEfGh12345678"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("Authorization: Basic Z2F0ZXdheUBhY21lLnRlc3QvdG9rZW46eHl6", "Z2F0ZXdheUBhY21lLnRlc3Q"),
        ("the key hitl_AbCdEfGh12345678 was used", "hitl_AbCdEfGh12345678"),
        ("GET /x?api_token=zd-123456&page=2", "zd-123456"),
        ('{"botpress_token": "bp-9f8e7d6c"}', "bp-9f8e7d6c"),
        ("webhook_signing_secret=sg-0a1b2c3d other=1", "sg-0a1b2c3d"),
        ("X-Zendesk-Webhook-Signature: q1w2e3r4t5y6=", "q1w2e3r4t5y6"),
        ("password='hunter2hunter2'", "hunter2hunter2"),
    ],
)
def test_each_credential_shape_is_redacted(text, secret):
    redacted = redact_text(text)
    assert secret not in redacted and "[redacted]" in redacted
    assert redact_text(redacted) == redacted  # idempotent: a record passing two filters is unchanged


def test_a_value_seen_again_is_redacted_again_and_no_credential_is_remembered():
    from hitl_gateway import logging as redaction

    secret_line = "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"
    for _ in range(2):
        assert "eyJhbGciOiJIUzI1NiJ9" not in redact_text(secret_line)
        assert redact_text("delivery.attempt") == "delivery.attempt"
    assert "delivery.attempt" in redaction._CLEAN, "a clean value is scanned once"
    assert not any("eyJhbGciOiJIUzI1NiJ9" in kept for kept in redaction._CLEAN), "no credential is kept"


@pytest.mark.parametrize(
    "line",
    [
        "Not Found: /" + "a" * 12_000,  # an unauthenticated 404's path
        "x" * 6_000 + "-" + "y" * 6_000,
        "token" * 2_400,
        "a:" * 6_000,
    ],
)
def test_redaction_of_a_long_line_takes_linear_time(line):
    started = time.monotonic()
    redact_text(line)
    assert time.monotonic() - started < 1.0, "a caller-chosen line must not stall the worker that logs it"


def test_ordinary_lines_are_left_alone():
    for text in (
        "Not Found: /api/v1/integrations/42/actions/nope",
        "delivery.enqueue_failed delivery_id=7 error=OperationalError",
        "webhook.rejected integration_id=42 reason=signature mismatch",
    ):
        assert redact_text(text) == text


# --- capture every log line the process writes -----------------------------------------------------
def _configured_handlers() -> list[tuple[logging.Logger, logging.Handler]]:
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    return [
        (logger, handler)
        for logger in loggers
        for handler in logger.handlers
        # pytest's own capture, and handlers that write nowhere
        if not type(handler).__module__.startswith("_pytest") and not isinstance(handler, logging.NullHandler)
    ]


@pytest.fixture
def gunicorn_logger():
    config = Config()
    config.set("accesslog", "-")
    config.set("errorlog", "-")
    # A format that also prints request headers: they are redacted as well.
    config.set("access_log_format", '%(h)s "%(r)s" %(s)s "%({authorization}i)s" "%({x-zendesk-webhook-signature}i)s"')
    return RedactingLogger(config)


@pytest.fixture
def all_logs(gunicorn_logger):
    """Every configured handler, anywhere in the logging tree, writes here; root and Django at DEBUG."""
    buffer = io.StringIO()
    handlers = _configured_handlers()
    saved = []
    for _logger, handler in handlers:
        if isinstance(handler, logging.StreamHandler):
            saved.append((handler, handler.setStream(buffer), handler.level))
            handler.setLevel(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in ("", "django", "celery", "axes")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    buffer.handlers = handlers
    yield buffer
    for handler, stream, level in saved:
        handler.setStream(stream)
        handler.setLevel(level)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


# --- an integration with every kind of secret --------------------------------------------------------
@pytest.fixture
def world(db):
    integration, api_key = integration_create(
        name="Redaction Co",
        provider_base_url="http://127.0.0.1:9",
        provider_credentials={"email": "gw@acme.test", "api_token": "zdtok" + secrets.token_urlsafe(18)},
        botpress_api_url="http://127.0.0.1:9",
        botpress_token="bptok" + secrets.token_urlsafe(18),
        botpress_bot_id=BOT_ID,
        botpress_integration_id=BP_INTEGRATION_ID,
    )
    integration = integration_botpress_configure(integration=integration, names=NAMES)
    integration.webhook_signing_secret = "sign" + secrets.token_urlsafe(24)
    integration.webhook_signing_secret_previous = "prev" + secrets.token_urlsafe(24)
    integration.save()
    secret_values = {
        "URL secret": integration.botpress_url_secret,
        "API key": api_key,
        "API key body": api_key.removeprefix("hitl_"),
        "Botpress token": integration.botpress_token,
        "Zendesk token": integration.provider_credentials["api_token"],
        "signing secret": integration.webhook_signing_secret,
        "previous signing secret": integration.webhook_signing_secret_previous,
    }
    return integration, api_key, secret_values


class _DjangoHttp:
    """`requests.Session.post` over Django's test client, for BotpressCaller."""

    def __init__(self, client):
        self.client = client

    def post(self, url, data=None, headers=None, timeout=None):
        headers = dict(headers or {})
        content_type = headers.pop("content-type", "application/octet-stream")
        return self.client.generic("POST", url, data or b"", content_type=content_type, headers=headers)


def _leak_report(text: str, secret_values: dict[str, str]) -> list[str]:
    return [name for name, value in secret_values.items() if value and value in text]


def test_no_secret_reaches_any_log(world, all_logs, gunicorn_logger, monkeypatch, admin_user):
    integration, api_key, secret_values = world
    secret = integration.botpress_url_secret
    pk = integration.pk
    client = Client(raise_request_exception=False)
    strict = Client(enforce_csrf_checks=True, raise_request_exception=False)
    bearer = {"Authorization": f"Bearer {api_key}"}
    answers = []

    def post(path, body=b"{", client=client, **headers):
        answers.append(client.generic("POST", path, body, content_type="application/json", headers=headers))

    # REST, with the good key and a wrong one, bad bodies.
    for name in ("createUser", "startHitl", "stopHitl", "nope"):
        post(f"/api/v1/integrations/{pk}/actions/{name}", **bearer)
        post(f"/api/v1/integrations/{pk}/actions/{name}", b'{"x": 1}', **bearer)
        post(f"/api/v1/integrations/{pk}/actions/{name}", b"{}", Authorization=f"Bearer {api_key}x")
        post(f"/api/v1/integrations/{pk}x/actions/{name}", b"{}", **bearer)
    post(f"/api/v1/integrations/{pk}/channels/hitl/messages", b'{"type": "text"}', **bearer)
    answers.append(client.get(f"/api/v1/integrations/{pk}/botpress/url-secret", headers=bearer))
    # The hitl-api: every endpoint, bad bodies, wrong secret, wrong method, unknown subpaths.
    base = f"/hitl-api/{pk}/{secret}"
    for name in ("ping", "createRemoteUser", "createRemoteConversation", "botSendsMessage", "closeRemoteTicket"):
        post(f"{base}/{name}")
        post(f"{base}//{name}", b'{"type": "nope"}')
        post(f"/hitl-api/{pk}/{secret}x/{name}", b"{}")
        answers.append(client.get(f"{base}/{name}"))
    for rest in ("nope", "ping/extra", ""):
        post(f"{base}/{rest}", b"{}", client=strict)  # Botpress sends no CSRF cookie
        answers.append(client.get(f"{base}/{rest}"))
    # The wire protocol: good and wrong secret, missing headers, bad operations.
    for path in (f"/botpress/{pk}/{secret}/", f"/botpress/{pk}/{secret}x/", f"/botpress/{pk}/{secret}/sub/path"):
        caller = BotpressCaller(
            path,
            integration_alias="zendesk-hitl",
            bot_id=BOT_ID,
            bot_user_id=BOT_USER,
            integration_id=BP_INTEGRATION_ID,
        )
        caller.http = _DjangoHttp(strict)
        answers += [caller.ping(), caller.action("createTicket", {}), caller.send("ping", omit=("x-bot-id",))]
        answers.append(caller.send("nope"))
    # Help-desk webhooks: unsigned, wrongly signed, signed with garbage, signed by the old secret.
    timestamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for signing, body in (
        (None, b"{}"),
        ("wrong", b"{}"),
        (integration.webhook_signing_secret, b"not json"),
        (integration.webhook_signing_secret, b'{"event": "nope"}'),
        (integration.webhook_signing_secret_previous, b'{"ticket_id": "1"}'),
    ):
        headers = {}
        if signing:
            headers = {
                "X-Zendesk-Webhook-Signature": signature_compute(secret=signing, timestamp=timestamp, body=body),
                "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
            }
        post(f"/webhooks/zendesk/{pk}/", body, client=strict, **headers)
    # The admin: a failed log-in (a secret typed as the password), the integration's pages.
    strict.post("/admin/login/", {"username": "admin", "password": secret_values["Zendesk token"]})
    client.post("/admin/login/", {"username": "nobody", "password": api_key})
    client.force_login(admin_user)
    answers.append(client.get(f"/admin/sessions_app/integration/{pk}/change/"))
    answers.append(client.post(f"/admin/sessions_app/integration/{pk}/change/", {"name": ""}))
    answers.append(client.get("/admin/sessions_app/integration/999999/change/"))

    # Forced exceptions inside each kind of view, their messages holding credentials as an HTTP
    # client's error would.
    def crash(*args, **kwargs):
        raise RuntimeError(
            f"upstream refused POST http://h/hitl-api/{pk}/{secret}/ping "
            f"(Authorization: Bearer {api_key}) botpress_token={integration.botpress_token}"
        )

    from sessions_app import admin
    from sessions_app.api import actions, views, wire

    monkeypatch.setattr(actions, "create_user", crash)
    monkeypatch.setattr(views, "webhook_receive", crash)
    monkeypatch.setitem(wire.OPERATIONS, "ping", crash)
    monkeypatch.setattr(admin, "integration_connection_test_by_operator", crash)
    post(f"{base}/createRemoteUser", b'{"type": "createRemoteUser", "payload": {}}')
    post(f"/api/v1/integrations/{pk}/actions/createUser", b"{}", **bearer)
    post(f"/webhooks/zendesk/{pk}/", b"{}")
    caller = BotpressCaller(
        f"/botpress/{pk}/{secret}/",
        integration_alias="zendesk-hitl",
        bot_id=BOT_ID,
        bot_user_id=BOT_USER,
        integration_id=BP_INTEGRATION_ID,
    )
    caller.http = _DjangoHttp(client)
    answers.append(caller.ping())
    answers.append(client.post(f"/admin/sessions_app/integration/{pk}/test-connection/"))
    # gunicorn: an access-log line for a hitl-api call with an API key header, and an error line.
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": f"{base}/nope",
        "PATH_INFO": f"{base}/nope",
        "QUERY_STRING": f"api_token={secret_values['Zendesk token']}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }

    class Response:
        status, sent, headers = "404 Not Found", 2, []

    class Request:
        headers = [
            ("AUTHORIZATION", f"Bearer {api_key}"),
            ("X-ZENDESK-WEBHOOK-SIGNATURE", integration.webhook_signing_secret),
        ]

    gunicorn_logger.access(Response(), Request(), environ, datetime.timedelta(milliseconds=3))
    gunicorn_logger.error("Error handling request %s", f"{base}/nope")

    logs = all_logs.getvalue()
    statuses = {response.status_code for response in answers}
    assert {401, 404, 500}.issubset(statuses), statuses  # the bad input was indeed bad
    # Each source of log lines did write something, so the search below searched them.
    for expected in (
        "Internal Server Error",  # django.request, 500s
        "Not Found: ",  # django.request, 404s
        "Forbidden (CSRF",  # django.security.csrf: the admin log-in posted without a token
        "botpress_wire.crashed",  # structlog
        "AXES",  # django-axes
        '"POST /hitl-api/',  # gunicorn access
        "Error handling request",  # gunicorn error
        "RuntimeError",  # tracebacks
    ):
        assert expected in logs, f"{expected!r} was not logged:\n{logs}"
    assert f"/hitl-api/{pk}/[redacted]" in logs
    assert _leak_report(logs, secret_values) == [], logs
    # Every handler of the configuration carries the redaction filter.
    unfiltered = [
        f"{logger.name or 'root'}: {handler!r}"
        for logger, handler in all_logs.handlers
        if not any(isinstance(f, RedactingFilter) for f in handler.filters)
    ]
    assert unfiltered == []


def test_the_hitl_api_catch_all_needs_no_csrf_token(world, all_logs):
    integration, _key, _secrets = world
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"/hitl-api/{integration.pk}/{integration.botpress_url_secret}/nope", {})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert "CSRF" not in all_logs.getvalue()


def test_celery_s_own_handlers_redact(all_logs):
    from celery.signals import after_setup_task_logger

    logger = logging.getLogger("celery.task.redaction-test")
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    logger.propagate = False
    try:
        after_setup_task_logger.send(sender=None, logger=logger, loglevel=logging.INFO, logfile=None)
        logger.warning("calling %s", "/botpress/42/s3cr3t-value/ with Authorization: Bearer hitl_abcdefgh1234")
    finally:
        logger.handlers.clear()
    assert "s3cr3t-value" not in stream.getvalue() and "hitl_abcdefgh1234" not in stream.getvalue()
    assert "/botpress/42/[redacted]/" in stream.getvalue()


def test_structlog_fields_and_tracebacks_are_redacted(all_logs):
    import structlog

    log = structlog.get_logger("tests.redaction")
    try:
        raise ValueError("GET /hitl-api/42/tracebacksecret1/ping failed")
    except ValueError:
        log.exception("outbound.failed", url="/botpress/42/fieldsecret1/", headers={"Authorization": "Bearer x"})
    text = all_logs.getvalue()
    assert "outbound.failed" in text and "ValueError" in text
    assert "tracebacksecret1" not in text and "fieldsecret1" not in text
    assert json.dumps("Bearer x") not in text


def test_outbound_request_paths_are_not_logged_at_debug(all_logs, httpserver, monkeypatch):
    """The hitl-api webhook URL's path is the bot's webhook id, a secret: urllib3 logs paths at DEBUG."""
    from botpress.hitl_api import HitlApiWebhooks

    monkeypatch.setattr(logging.getLogger("werkzeug"), "disabled", True)  # the test server's own access log
    webhook_id = "wh" + secrets.token_urlsafe(18)
    httpserver.expect_request(f"/{webhook_id}/stop-hitl", method="POST").respond_with_data("")
    HitlApiWebhooks(webhook_url=httpserver.url_for(f"/{webhook_id}"), timeout=(2, 2)).stop_hitl(
        remote_conversation_id="conv_1"
    )
    assert len(httpserver.log) == 1
    assert webhook_id not in all_logs.getvalue(), all_logs.getvalue()


def test_structlog_drops_a_line_below_the_log_level_before_any_processor(monkeypatch):
    """At ``HITL_LOG_LEVEL=WARNING`` an info line costs nothing: it never reaches the redaction
    or the renderer, which the stdlib's own level check would only have skipped afterwards."""
    import structlog
    from django.conf import settings

    from hitl_gateway import logging as gateway_logging

    seen = []

    def spy(logger, name, event):
        seen.append((name, event["event"]))
        return event

    monkeypatch.setattr(gateway_logging, "redact_secrets", spy)
    try:
        gateway_logging.configure_structlog(json=True, level="warning")
        log = structlog.get_logger("test_level_filter")
        log.info("not.written", token="s3cret")
        log.warning("written")
        assert seen == [("warning", "written")]
        seen.clear()
        gateway_logging.configure_structlog(json=True, level="DEBUG")  # never below INFO, as before
        log = structlog.get_logger("test_level_filter_debug")
        log.debug("not.written")
        log.info("written")
        assert seen == [("info", "written")]
    finally:
        monkeypatch.undo()  # the real redaction back before the loggers are configured again
        gateway_logging.configure_structlog(json=settings.LOG_JSON, level=settings.LOG_LEVEL)
