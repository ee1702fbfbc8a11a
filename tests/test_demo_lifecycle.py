"""The demo with a short assignment timeout: `python -m demo --assignment-timeout 2`.

Time is moved forward in the demo's own database (the deadline set in the past), not slept: the
demo's beat sweep then ends the session as it would two minutes later.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from tests.test_demo import ROOT, START_TIMEOUT, _descendants, _stop

pytestmark = pytest.mark.e2e


def _query(database, sql: str, *args):
    with sqlite3.connect(database, timeout=10) as connection:
        return connection.execute(sql, args).fetchall()


def test_demo_shows_an_assignment_timeout(tmp_path):
    command = [sys.executable, "-m", "demo", "--port", "0", "--botpress-port", "0", "--zendesk-port", "0"]
    state, output_path = tmp_path / "state", tmp_path / "demo.out"
    with open(output_path, "wb") as output:
        process = subprocess.Popen(
            [*command, "--state-dir", str(state), "--assignment-timeout", "2"],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Press Ctrl-C" not in (text := output_path.read_text(errors="replace")):
            assert process.poll() is None and time.monotonic() < deadline, f"the demo did not start:\n{text}"
            time.sleep(0.2)
        children = _descendants(process.pid)
        assert "Assignment timeout: 2 min." in text
        api = re.search(r"Gateway API of the demo bot\s+(http://\S+)", text).group(1)
        key = re.search(r"its API key\s+(\S+)", text).group(1)
        headers = {"Authorization": f"Bearer {key}"}
        assert requests.get(f"{api}lifecycle", headers=headers, timeout=10).json()["assignmentTimeoutMinutes"] == 2

        user = requests.post(f"{api}actions/createUser", json={"name": "Ada"}, headers=headers, timeout=10).json()
        started = requests.post(
            f"{api}actions/startHitl",
            json={"userId": user["userId"], "title": "Help", "messageHistory": []},
            headers=headers,
            timeout=10,
        ).json()
        database = state / "gateway.sqlite3"
        conversation = started["conversationId"]
        due = _query(
            database,
            "SELECT assignment_due_at FROM sessions_app_hitlsession WHERE botpress_conversation_id = ?",
            conversation,
        )
        assert due[0][0], "the assignment timer was not armed"
        # Two minutes later, as far as the gateway can tell.
        _query(
            database,
            "UPDATE sessions_app_hitlsession SET assignment_due_at = '2000-01-01 00:00:00' "
            "WHERE botpress_conversation_id = ?",
            conversation,
        )
        deadline = time.monotonic() + 60
        while True:
            row = _query(
                database,
                "SELECT status, stopped_by, stop_reason FROM sessions_app_hitlsession "
                "WHERE botpress_conversation_id = ?",
                conversation,
            )[0]
            done = _query(
                database,
                "SELECT kind FROM sessions_app_delivery "
                "WHERE status = 'succeeded' AND kind IN ('ticket_close', 'event_to_user')",
            )
            if row == ("stopped", "policy", "assignment_timeout") and len(done) == 2:
                break
            assert process.poll() is None and time.monotonic() < deadline, (row, done, output_path.read_text())
            time.sleep(0.3)
    finally:
        _stop(process, children | _descendants(process.pid))
