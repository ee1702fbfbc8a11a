"""``create_integration`` and ``install_webhooks`` fail cleanly (issue 9 item 7).

A help desk that refuses the credentials (the Zendesk stand-in's 401) or cannot be reached (a
closed local port): one line on stderr, no traceback, no secret, exit status 1, nothing saved.
A name in use is refused unless ``--update`` (same integration, same key) or ``--force``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from sessions_app.models import Integration
from sessions_app.services.integrations import integration_authenticate
from tests.conftest import BOT_ID, BP_INTEGRATION_ID, BP_TOKEN, ROOT, ZD_EMAIL, ZD_TOKEN

DEAD_URL = "http://127.0.0.1:9"


def _args(*, name: str = "Acme", zendesk_url: str, token: str = ZD_TOKEN, bot_id: str = BOT_ID) -> list[str]:
    return [
        *("--name", name, "--provider-url", zendesk_url, "--zendesk-email", ZD_EMAIL),
        *("--zendesk-api-token", token, "--botpress-url", DEAD_URL, "--botpress-token", BP_TOKEN),
        *("--bot-id", bot_id, "--integration-id", BP_INTEGRATION_ID),
    ]


def _manage(*args: str) -> subprocess.CompletedProcess:
    """``manage.py`` as an operator runs it, on the test database."""
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = os.environ | {"DATABASE_URL": url, "HITL_SYNC_RETRY_MAX_WAIT_SECONDS": "0", "HITL_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _one_clean_line(result: subprocess.CompletedProcess, *, expected: str, secrets: tuple[str, ...]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert expected in lines[0], lines[0]
    for secret in secrets:
        assert secret not in result.stderr
    return lines[0]


@pytest.mark.parametrize("failure", ["wrong credentials", "unreachable"])
def test_create_integration_with_a_failing_install_creates_nothing(transactional_db, zendesk, failure):
    if failure == "wrong credentials":
        args, expected = _args(zendesk_url=zendesk.base_url, token="zd_wrong_token"), "HTTP 401"
    else:
        args, expected = _args(zendesk_url=DEAD_URL), "could not reach"
    result = _manage("create_integration", *args, "--install-webhook")
    line = _one_clean_line(result, expected=expected, secrets=("zd_wrong_token", ZD_TOKEN, BP_TOKEN))
    assert "nothing was saved" in line
    assert not Integration.objects.exists()
    assert zendesk.webhooks() == [] and zendesk.triggers() == []


def test_a_name_in_use_is_refused_without_update_or_force(transactional_db, zendesk):
    first = _manage("create_integration", *_args(zendesk_url=zendesk.base_url), "--install-webhook")
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout)
    assert created["api_key"] and created["webhook_installed"] and created["created"]
    again = _manage("create_integration", *_args(zendesk_url=zendesk.base_url))
    line = _one_clean_line(again, expected="already exists", secrets=(ZD_TOKEN, BP_TOKEN, created["api_key"]))
    assert "--update" in line and "--force" in line
    assert Integration.objects.count() == 1


def test_update_keeps_the_integration_and_its_key(db):
    out = io.StringIO()
    call_command("create_integration", *_args(zendesk_url=DEAD_URL), stdout=out)
    created = json.loads(out.getvalue())
    out = io.StringIO()
    call_command("create_integration", *_args(zendesk_url=DEAD_URL, bot_id="bot_other"), "--update", stdout=out)
    updated = json.loads(out.getvalue())
    assert (updated["id"], updated["api_key"], updated["created"]) == (created["id"], None, False)
    integration = Integration.objects.get()
    assert integration.botpress_bot_id == "bot_other"
    assert integration_authenticate(integration_id=created["id"], api_key=created["api_key"]) == integration


def test_force_creates_another_and_update_then_refuses_to_guess(db):
    for flag in ((), ("--force",)):
        call_command("create_integration", *_args(zendesk_url=DEAD_URL), *flag, stdout=io.StringIO())
    assert Integration.objects.filter(name="Acme").count() == 2
    with pytest.raises(CommandError, match="Several integrations are named"):
        call_command("create_integration", *_args(zendesk_url=DEAD_URL), "--update", stdout=io.StringIO())


def test_a_failing_update_changes_nothing(db):
    call_command("create_integration", *_args(zendesk_url=DEAD_URL), stdout=io.StringIO())
    with pytest.raises(CommandError, match="could not install the help-desk webhook: could not reach"):
        call_command(
            "create_integration",
            *_args(zendesk_url=DEAD_URL, bot_id="bot_other"),
            "--update",
            "--install-webhook",
            stdout=io.StringIO(),
        )
    assert Integration.objects.get().botpress_bot_id == BOT_ID


def test_install_webhooks_fails_cleanly(transactional_db, zendesk):
    call_command(
        "create_integration", *_args(zendesk_url=zendesk.base_url, token="zd_wrong_token"), stdout=io.StringIO()
    )
    integration = Integration.objects.get()
    result = _manage("install_webhooks", str(integration.pk))
    _one_clean_line(result, expected="HTTP 401", secrets=("zd_wrong_token",))
    integration.refresh_from_db()
    assert integration.provider_installation == {} and integration.webhook_signing_secret == ""
    _one_clean_line(_manage("install_webhooks", "not-a-uuid"), expected="no integration not-a-uuid", secrets=())
