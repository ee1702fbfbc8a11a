"""The access log never shows the URL secret of the native Botpress endpoints."""

import logging

from gunicorn.config import Config

from hitl_gateway.gunicorn_logging import RedactingLogger, redact_path


def test_paths_with_secrets_are_redacted():
    assert redact_path("/botpress/3f2a/s3cr3t/") == "/botpress/3f2a/[redacted]/"
    assert redact_path("POST /hitl-api/3f2a/s3cr3t/ping HTTP/1.1") == "POST /hitl-api/3f2a/[redacted]/ping HTTP/1.1"
    assert redact_path("/api/v1/integrations/3f2a/actions/startHitl") == "/api/v1/integrations/3f2a/actions/startHitl"


def test_the_access_log_line_is_redacted(caplog):
    config = Config()
    config.set("accesslog", "-")
    logger = RedactingLogger(config)
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/botpress/3f2a/s3cr3t/",
        "PATH_INFO": "/botpress/3f2a/s3cr3t/",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }

    class Response:
        status, sent, headers = "200 OK", 2, []

    class Request:
        headers = []

    logger.access_log.propagate = True
    with caplog.at_level(logging.INFO, logger="gunicorn.access"):
        import datetime

        logger.access(Response(), Request(), environ, datetime.timedelta(milliseconds=3))
    assert "s3cr3t" not in caplog.text and "[redacted]" in caplog.text
