"""The demo with Jira Service Management (``python -m demo --provider jsm``), driven through the
same endpoints the chat and the agent view use: a handoff, assignment, messages both ways, and
"Resolve this issue" ending the session."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import requests

from tests.test_demo import ROOT, START_TIMEOUT, _descendants, _poll, _stop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def jsm_demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo-jsm")
    output_path = workdir / "demo.out"
    command = [sys.executable, "-m", "demo", "--provider", "jsm", "--port", "0", "--botpress-port", "0"]
    command += ["--desk-port", "0", "--state-dir", str(workdir / "state")]
    with open(output_path, "wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Press Ctrl-C" not in (text := output_path.read_text(errors="replace")):
            assert process.poll() is None and time.monotonic() < deadline, f"the demo did not start:\n{text}"
            time.sleep(0.2)
        children = _descendants(process.pid)
        urls = {
            key: re.search(rf"^  {label}\b.*?(http://\S+)", text, re.MULTILINE).group(1)
            for key, label in (("chat", "End-user chat"), ("desk", "Agent desk"))
        }
        yield urls
    finally:
        _stop(process, children | _descendants(process.pid))


def test_a_whole_session_through_the_jsm_agent_view(jsm_demo):
    assert jsm_demo["desk"].endswith("/jira/")
    bp, desk_url = jsm_demo["chat"].removesuffix("/chat/"), jsm_demo["desk"].removesuffix("/jira/")
    assert "Jira Service Management" in requests.get(jsm_demo["desk"], timeout=10).text
    chat = requests.post(f"{bp}/__demo__/chats", json={"name": "Ada Lovelace", "email": "ada@example.com"}, timeout=10)
    chat_url = f"{bp}/__demo__/chats/{chat.json()['id']}"
    requests.post(f"{chat_url}/handoff", json={}, timeout=30).raise_for_status()

    def desk():
        return requests.get(f"{desk_url}/__demo__/desk", timeout=10).json()

    view = _poll(desk, lambda d: d["tickets"])
    ticket, agent_id = view["tickets"][0], view["agents"][0]["id"]
    assert ticket["requester"] == "Ada Lovelace" and ticket["subject"].startswith("HELP-")
    actions = f"{desk_url}/__standin__/tickets/{ticket['id']}"
    requests.post(f"{actions}/assign", json={"agent_id": agent_id}, timeout=10).raise_for_status()
    _poll(lambda: requests.get(chat_url, timeout=10).json(), lambda chat_view: chat_view["mode"] == "agent")

    requests.post(f"{chat_url}/messages", json={"text": "Thank you!"}, timeout=10)
    _poll(desk, lambda d: any(c["body"] == "Ada Lovelace (customer): Thank you!" for c in d["tickets"][0]["comments"]))
    requests.post(f"{actions}/reply", json={"agent_id": agent_id, "body": "You are welcome"}, timeout=10)
    _poll(
        lambda: requests.get(chat_url, timeout=10).json(),
        lambda chat_view: any(e["kind"] == "agent" for e in chat_view["entries"]),
    )
    requests.post(f"{actions}/resolve", json={"agent_id": agent_id}, timeout=10).raise_for_status()
    _poll(lambda: requests.get(chat_url, timeout=10).json(), lambda chat_view: chat_view["mode"] == "bot")
    done = desk()["tickets"][0]
    assert done["status"] == "resolved" and all(w["status"] == 200 for w in done["webhooks"])
    # The agent URL the gateway stores opens the request in the agent view.
    browse = requests.get(f"{desk_url}/browse/HELP-1", timeout=10, allow_redirects=False)
    assert browse.status_code == 302 and browse.headers["Location"] == f"/jira/tickets/{ticket['id']}"
