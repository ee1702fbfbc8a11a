"""A smoother first run: Botpress unreachable said in words, no Axes banner on manage.py,
the port checked before ``make run`` starts anything, and a quiet Ctrl-C."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from rest_framework.test import APIClient

from tests.conftest import ROOT, integration_for


@pytest.mark.django_db
def test_create_user_with_botpress_unreachable_says_so_in_words(settings):
    settings.HITL = {**settings.HITL, "SYNC_RETRY_MAX_WAIT_SECONDS": 0}
    integration, api_key = integration_for(botpress_url="http://127.0.0.1:9", zendesk_url="http://127.0.0.1:9")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    response = api.post(f"/api/v1/integrations/{integration.pk}/actions/createUser", {"name": "Ada"}, format="json")
    assert response.status_code >= 500
    assert "could not reach Botpress at http://127.0.0.1:9: connection refused" in response.content.decode()
    assert "Botpress answered" not in response.content.decode()


def test_the_reason_is_found_under_the_wrappers():
    from outbound.http import RetryableError, _unreachable_reason, make_session, request

    with pytest.raises(RetryableError) as refused:
        request(make_session(), "GET", "http://user:pw@127.0.0.1:9/v1/x?token=t", timeout=(2, 2), describe_error=None)
    assert str(refused.value) == "could not reach http://127.0.0.1:9: connection refused"
    assert _unreachable_reason(socket.gaierror(-2, "Name or service not known")) == "host name not found"


def test_manage_py_prints_no_axes_banner(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"HITL_VAR_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "AXES" not in result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
