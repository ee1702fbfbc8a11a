"""A smoother first run: Botpress unreachable said in words, no Axes banner on manage.py,
the port checked before ``make run`` starts anything, and a quiet Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_taken_port_is_said_in_one_line_before_anything_starts(capsys):
    from hitl_gateway import launch

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert launch.port_in_use(port)
        assert launch.main(["--port", str(port), "--procfile", "/nonexistent/Procfile"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"Port {port} on 127.0.0.1 is already in use (another program, or a gateway already running): "
        f"stop it, or choose another port, e.g. make run PORT={port + 1}\n"
    )
    assert not launch.port_in_use(port)
    assert launch.main(["--check-port", str(port)]) == 0


def test_make_run_prints_next_steps_and_stops_quietly_on_ctrl_c(tmp_path):
    """The Procfile's web, worker and beat under the launcher, on the embedded default; then Ctrl-C."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env |= {"HITL_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "hitl_gateway.settings"}
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "hitl_gateway.launch", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "Next steps" not in log.read_text() and time.monotonic() < deadline:
            assert launcher.poll() is None, log.read_text()
            time.sleep(0.5)
        assert "createsuperuser" in log.read_text()
        assert (tmp_path / "prometheus").is_dir()
        launcher.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends it
        assert launcher.wait(timeout=60) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    text = log.read_text()
    for name in ("web.1", "worker.1", "beat.1"):
        assert f"{name} stopped (rc=0)" in text, text[-3000:]
    assert "ERROR" not in text and "killing" not in text and "SIGKILL" not in text, text[-3000:]
