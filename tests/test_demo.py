"""The local demo as a person runs it: `python -m demo`, then the chat, the agent desk and the admin in Chromium.

The demo runs as a real subprocess on free ports and its own state directory; it needs neither
PostgreSQL nor RabbitMQ (it uses the embedded default), only Debian's Chromium.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.browser import screenshot

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT, STOP_TIMEOUT, UI_TIMEOUT = 120, 30, 30
LABELS = {
    "chat": "End-user chat",
    "desk": "Agent desk",
    "admin": "Admin",
    "sessions": "HITL sessions in the admin",
    "schema": "API schema",
}


@dataclass
class RunningDemo:
    process: subprocess.Popen
    output_path: Path
    urls: dict[str, str]

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")


def _proc_stats() -> dict[int, tuple[str, int, int]]:
    """pid → (state, parent pid, process group) of every process, from /proc."""
    stats = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            state, ppid, pgrp = path.read_text().rsplit(")", 1)[1].split()[:3]
            stats[int(path.parent.name)] = (state, int(ppid), int(pgrp))
    return stats


def _descendants(pid: int) -> set[int]:
    stats, found, todo = _proc_stats(), set(), [pid]
    while todo:
        parent = todo.pop()
        for child, (_, ppid, _) in stats.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pids: set[int]) -> set[int]:
    """The pids still running (a zombie has exited: it only waits for its parent to read its status)."""
    stats = _proc_stats()
    return {pid for pid in pids if pid in stats and stats[pid][0] != "Z"}


def _stop(process: subprocess.Popen, children: set[int]) -> None:
    """SIGINT (Ctrl-C), then force; never leave a process behind, even after a failure."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in _running(children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`python -m demo` on free ports; stopped with SIGINT by the last test, or here if a test failed."""
    workdir = tmp_path_factory.mktemp("demo")
    output_path = workdir / "demo.out"
    command = [sys.executable, "-m", "demo", "--port", "0", "--botpress-port", "0", "--zendesk-port", "0"]
    with open(output_path, "wb") as output:
        process = subprocess.Popen(
            [*command, "--state-dir", str(workdir / "state")], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
        )
    running, children = RunningDemo(process, output_path, {}), set()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Press Ctrl-C" not in running.output():
            assert process.poll() is None and time.monotonic() < deadline, (
                f"the demo did not start:\n{running.output()}"
            )
            time.sleep(0.2)
        children = _descendants(process.pid)
        for key, label in LABELS.items():
            found = re.search(rf"^  {re.escape(label)}\b.*?(http://\S+)", running.output(), re.MULTILINE)
            assert found, f"no {label} URL in:\n{running.output()}"
            running.urls[key] = found.group(1)
        yield running
    finally:
        _stop(process, children | _descendants(process.pid))


@pytest.fixture(autouse=True)
def _demo_stopped_report(request):
    """A demo that stopped on its own fails every later step vaguely (a timeout, "connection refused"):
    print why it stopped (its output says which child exited) and the end of each child's log."""
    yield
    if "demo" not in request.fixturenames:
        return
    running = request.getfixturevalue("demo")
    if running.process.poll() is None:
        return  # (pytest shows this only for a failed test: after the Ctrl-C test it is not noise)
    print(f"the demo stopped on its own (status {running.process.returncode}):\n{running.output()[-4000:]}")
    for log in sorted(running.output_path.parent.glob("state/logs/*.log")):
        print(f"\n--- end of {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-60:]))


# --------------------------------------------------------------------- browser helpers
def _wait(driver, condition, message: str, timeout: float = UI_TIMEOUT):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(condition, message)


def _find(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _texts(driver, selector: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, selector)]


def _content(driver, selector: str) -> str:
    return _find(driver, selector).get_attribute("textContent").strip()


def _wait_text(driver, selector: str, text: str, timeout: float = UI_TIMEOUT) -> None:
    _wait(driver, lambda d: text in _find(d, selector).text, f"{text!r} never showed in {selector}", timeout)


def _wait_status(driver, status: str) -> None:
    """The ticket's status badge (upper-cased by CSS, hence its textContent)."""
    _wait(driver, lambda d: _content(d, "#ticket-status") == status, f"the ticket never got {status}")


def _say(driver, text: str) -> None:
    field = _find(driver, "#message-input")
    field.send_keys(text)
    _find(driver, "#send").click()
    _wait(driver, lambda d: not _find(d, "#message-input").get_attribute("value"), "the message was not sent")


def _full_page_screenshot(driver, name: str) -> None:
    """The admin's session page is long: grow the window to the whole page for the picture."""
    width = driver.get_window_size()["width"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(height + 140, 1000), 4000))
    screenshot(driver, name)


# --------------------------------------------------------------------- tests
def test_whole_session_in_the_browser(demo, browser):
    """End user asks for a human; the agent assigns, replies and solves; the admin shows it all."""
    driver = browser
    driver.get(demo.urls["chat"])
    chat = driver.current_window_handle
    _wait_text(driver, "#timeline", "I am the demo bot")
    _say(driver, "Hello bot")
    _wait_text(driver, "#timeline", "You said “Hello bot”")
    _say(driver, "My order 42 never arrived")
    _wait_text(driver, "#timeline", "You said “My order 42 never arrived”")
    _find(driver, "#handoff").click()
    _wait_text(driver, "#status", "Waiting for an agent")
    _wait_text(driver, "#timeline", "Handed over to the help desk")
    _wait_text(driver, "#trace", "startHitl · 200")

    # The agent desk: the ticket, with the bot's transcript as its first comment.
    driver.switch_to.new_window("tab")
    desk = driver.current_window_handle
    driver.get(demo.urls["desk"])
    _wait_text(driver, "#tickets", "Chat with Ada Lovelace")
    _find(driver, "#tickets li:first-child a").click()
    _wait_text(driver, "#ticket-subject", "Chat with Ada Lovelace")
    transcript = _find(driver, "#comments li.transcript").text
    for said in ("Hello bot", "My order 42 never arrived", "Talk to a human", "handing you over"):
        assert said in transcript
    assert _find(driver, "#ticket-requester").text == "Ada Lovelace"
    _find(driver, "#assign").click()
    _wait_text(driver, "#ticket-assignee", "Grace Hopper")

    driver.switch_to.window(chat)
    _wait_text(driver, "#timeline", "Grace Hopper joined the conversation.")
    _wait_text(driver, "#status", "Chatting with Grace Hopper")
    _say(driver, "It is order 42, placed last week.")

    driver.switch_to.window(desk)
    _wait_text(driver, "#comments", "It is order 42, placed last week.")
    _find(driver, "#reply-body").send_keys("Hi Ada, I found your order: it ships today.")
    _find(driver, "#reply-send").click()
    _wait_text(driver, "#comments", "it ships today")

    driver.switch_to.window(chat)
    _wait_text(driver, "#timeline .entry.agent", "Hi Ada, I found your order: it ships today.")

    driver.switch_to.window(desk)
    _find(driver, "#solve").click()
    _wait_status(driver, "solved")
    _wait_text(driver, "#webhooks", "ticketSolved")
    assert {"ticketAssigned", "newMessage", "ticketSolved"} <= {
        line.split()[1] for line in _texts(driver, "#webhooks li")
    }
    assert all(line.startswith("200") for line in _texts(driver, "#webhooks li")), "every webhook was accepted"
    driver.execute_script("window.scrollTo(0, 0)")
    screenshot(driver, "demo-desk")

    driver.switch_to.window(chat)
    _wait_text(driver, "#timeline", "Grace Hopper ended the session.")
    _wait_text(driver, "#status", "Chatting with the demo bot")
    assert _texts(driver, "#timeline .entry.agent .bubble") == ["Hi Ada, I found your order: it ships today."]
    screenshot(driver, "demo-chat")

    # The admin: the session is stopped by the agent, with its message log.
    driver.switch_to.new_window("tab")
    driver.get(demo.urls["admin"])
    _find(driver, "#id_username").send_keys("admin")
    _find(driver, "#id_password").send_keys("admin-demo")
    _find(driver, "#login-form [type=submit]").click()
    _wait_text(driver, "#site-name", "HITL gateway")
    driver.get(demo.urls["sessions"])
    _find(driver, '#result_list a[href$="/change/"]').click()
    # textContent: the admin may show some of these in collapsed sections.
    _wait(driver, lambda d: _content(d, ".field-status .readonly") == "Stopped", "the session is not stopped")
    page = _content(driver, "#content")
    for shown in ("Agent (ticket solved)", "Grace Hopper", "It is order 42, placed last week.", "it ships today"):
        assert shown in page
    ticket_link = _find(driver, ".field-ticket_link a").get_attribute("href")
    assert ticket_link.startswith(demo.urls["desk"]), "the admin's ticket link opens the agent desk"
    _full_page_screenshot(driver, "demo-admin-session")

    # Ending a session from the chat calls stopHitl: the gateway closes the ticket.
    driver.switch_to.window(chat)
    _find(driver, "#handoff").click()
    _wait_text(driver, "#status", "Waiting for an agent")
    driver.switch_to.window(desk)
    _wait(driver, lambda d: len(_texts(d, "#tickets li")) == 2, "the second ticket never showed")
    _find(driver, "#tickets li:first-child a").click()
    _wait_status(driver, "new")
    driver.switch_to.window(chat)
    _find(driver, "#end-session").click()
    _wait_text(driver, "#timeline", "You ended the session.")
    _wait_text(driver, "#trace", "stopHitl · 200")
    driver.switch_to.window(desk)
    _wait_status(driver, "closed")


def test_solving_after_an_end_user_message_does_not_echo_it(demo):
    bp, zd = demo.urls["chat"].removesuffix("/chat/"), demo.urls["desk"].removesuffix("/agent/")
    chat = requests.post(f"{bp}/__demo__/chats", json={"name": "Alan Turing", "email": "alan@example.com"}, timeout=10)
    chat_url = f"{bp}/__demo__/chats/{chat.json()['id']}"
    conversation_id = requests.post(f"{chat_url}/handoff", json={}, timeout=30).json()["conversationId"]
    desk = _poll(lambda: requests.get(f"{zd}/__demo__/desk", timeout=10).json(), lambda d: _ticket(d, conversation_id))
    ticket, agent_id = _ticket(desk, conversation_id), desk["agents"][0]["id"]
    requests.post(f"{zd}/__standin__/tickets/{ticket['id']}/assign", json={"agent_id": agent_id}, timeout=10)
    _poll(lambda: requests.get(chat_url, timeout=10).json(), lambda view: view["mode"] == "agent")
    requests.post(f"{chat_url}/messages", json={"text": "Thank you!"}, timeout=10)
    _poll(
        lambda: requests.get(f"{zd}/__demo__/desk", timeout=10).json(),
        lambda d: any(c["body"] == "Thank you!" for c in _ticket(d, conversation_id)["comments"]),
    )
    requests.post(f"{zd}/__standin__/tickets/{ticket['id']}/solve", json={"agent_id": agent_id}, timeout=10)
    view = _poll(lambda: requests.get(chat_url, timeout=10).json(), lambda view: view["mode"] == "bot")
    assert [e["payload"] for e in view["entries"] if e["kind"] == "agent"] == []


# A one-pixel PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_the_chat_sends_an_image_and_shows_the_agents(demo, browser, tmp_path):
    """The attach button: the end user's image reaches the ticket; the agent's comes back; both show."""
    bp, zd = demo.urls["chat"].removesuffix("/chat/"), demo.urls["desk"].removesuffix("/agent/")
    chat = requests.post(f"{bp}/__demo__/chats", json={"name": "Ada Byron", "email": "ada@x.test"}, timeout=10)
    chat_url = f"{bp}/__demo__/chats/{chat.json()['id']}"
    conversation_id = requests.post(f"{chat_url}/handoff", json={}, timeout=30).json()["conversationId"]
    desk = _poll(lambda: requests.get(f"{zd}/__demo__/desk", timeout=10).json(), lambda d: _ticket(d, conversation_id))
    ticket, agent_id = _ticket(desk, conversation_id), desk["agents"][0]["id"]
    requests.post(f"{zd}/__standin__/tickets/{ticket['id']}/assign", json={"agent_id": agent_id}, timeout=10)
    _poll(lambda: requests.get(chat_url, timeout=10).json(), lambda view: view["mode"] == "agent")

    browser.get(demo.urls["chat"])
    # The page opens its own chat first; once it has, show this one instead.
    _wait(browser, lambda d: _find(d, "#status").text != "Connecting…", "the chat page never loaded")
    browser.execute_script("sessionStorage.setItem('hitl-demo-chat', arguments[0])", chat.json()["id"])
    browser.get(demo.urls["chat"])
    agent = f"Chatting with {desk['agents'][0]['name']}"
    _wait(browser, lambda d: _find(d, "#status").text == agent, "the chat never showed the agent")
    assert _find(browser, "#attach").is_displayed()
    picture = tmp_path / "pixel.png"
    picture.write_bytes(PNG)
    _find(browser, "#attachment").send_keys(str(picture))  # what choosing a file after "Attach…" does
    _wait(
        browser,
        lambda d: d.find_elements("css selector", ".entry.user img.attachment-image"),
        f"the image was not sent: {_find(browser, '#error').text!r}",
    )
    desk = _poll(
        lambda: requests.get(f"{zd}/__demo__/desk", timeout=10).json(),
        lambda d: any(c["attachments"] for c in _ticket(d, conversation_id)["comments"]),
    )
    attachment = next(a for c in _ticket(desk, conversation_id)["comments"] for a in c["attachments"])
    assert requests.get(attachment["url"], timeout=10).content == PNG

    image = {"filename": "back.png", "content_type": "image/png", "content": base64.b64encode(PNG).decode()}
    reply = {"agent_id": agent_id, "body": "", "attachments": [image]}
    requests.post(f"{zd}/__standin__/tickets/{ticket['id']}/reply", json=reply, timeout=10).raise_for_status()
    shown = "return [...document.querySelectorAll('.entry img.attachment-image')].filter(i => i.naturalWidth).length"
    _wait(browser, lambda d: d.execute_script(shown) == 2, "the two images (sent, received) never showed in the chat")
    screenshot(browser, "demo-chat-images")

    attach = {"name": "pixel.png", "contentType": "image/png", "data": base64.b64encode(PNG).decode()}
    too_big = {**attach, "data": base64.b64encode(b"x" * (5 * 2**20 + 1)).decode()}
    assert requests.post(f"{chat_url}/attachments", json=too_big, timeout=30).status_code == 413
    assert requests.post(f"{chat_url}/attachments", json={**attach, "data": "%%%"}, timeout=10).status_code == 400


def test_ctrl_c_stops_every_process(demo):
    """SIGINT, as Ctrl-C sends it: the demo stops web, worker and beat and leaves no process behind."""
    children = _descendants(demo.process.pid)
    stats = _proc_stats()
    groups = {stats[pid][2] for pid in children if pid in stats} - {os.getpgrp()}
    commands = " ".join(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in children)
    for expected in ("gunicorn", "worker", "beat"):
        assert expected in commands
    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(STOP_TIMEOUT) == 0, demo.output()
    assert "Demo stopped." in demo.output()
    assert not _running(children), f"still running: {_running(children)}"
    leftover = {pid for pid, (state, _, pgrp) in _proc_stats().items() if pgrp in groups and state != "Z"}
    assert not leftover, f"processes left in the demo's process groups: {leftover}"


def _ticket(desk: dict, conversation_id: str) -> dict | None:
    return next((t for t in desk["tickets"] if t["externalId"] == conversation_id), None)


def _poll(read, done, timeout: float = UI_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not done(value := read()):
        assert time.monotonic() < deadline, f"still not done after {timeout}s: {value}"
        time.sleep(0.2)
    return value
