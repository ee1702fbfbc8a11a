"""Shared server behaviour: fault injection, the request log, the control API and TCP details."""

import json
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from standins import BotpressStandin, Response, StandinServer, ZendeskStandin


class Items(StandinServer):
    """The smallest stand-in: POST /items stores a JSON body, so a test sees whether it was processed."""

    def __init__(self):
        super().__init__()
        self.items = []
        self.accepted = []  # server-side sockets, to inspect their options
        self.route("GET", "/items", lambda req: {"items": self.items})
        self.route("POST", "/items", self._add)

    def _add(self, req):
        self.items.append(req.json())
        return Response(201, {"count": len(self.items)})

    def reset_state(self):
        self.items.clear()

    def get_request(self):
        sock, address = super().get_request()
        self.accepted.append(sock)
        return sock, address


@pytest.fixture
def server():
    with Items() as items:
        yield items


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def post(server, session, body=None, **kwargs):
    return session.post(server.base_url + "/items", json=body or {"n": 1}, timeout=kwargs.pop("timeout", 5), **kwargs)


# ----------------------------------------------------------------------------- fault kinds


def test_status_fault_uses_each_service_error_format():
    with BotpressStandin() as bp, ZendeskStandin() as zd:
        bp.add_fault(path="^/v1/chat/users$", kind="status", status=503, times=1)
        zd.add_fault(path="^/api/v2/users/me", kind="status", status=500, times=1)
        answer = requests.get(bp.base_url + "/v1/chat/users", timeout=5)
        assert answer.status_code == 503
        body = answer.json()
        assert set(body) == {"id", "code", "type", "message"}
        assert (body["code"], body["type"]) == (503, "Internal") and re.match(r"^err_\d{14}x[0-9A-F]{8}$", body["id"])
        # The fault came first; the next request reaches the real handler (and fails auth).
        assert requests.get(bp.base_url + "/v1/chat/users", timeout=5).json()["type"] == "Unauthorized"
        answer = requests.get(zd.base_url + "/api/v2/users/me", timeout=5)
        assert answer.status_code == 500
        assert answer.json() == {"error": "InternalServerError", "description": "Injected fault"}


def test_rate_limit_fault_sends_retry_after_in_each_service_format():
    with BotpressStandin() as bp, ZendeskStandin() as zd:
        bp.add_fault(kind="rate_limit", retry_after=7)
        zd.add_fault(kind="rate_limit", retry_after=3)
        answer = requests.post(bp.base_url + "/v1/chat/messages", json={}, timeout=5)
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")
        assert answer.json()["type"] == "RateLimited" and answer.json()["code"] == 429
        answer = requests.get(zd.base_url + "/api/v2/tickets.json", timeout=5)
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "3")
        assert answer.headers["Content-Type"].startswith("text/plain")
        with pytest.raises(ValueError):
            answer.json()


def test_timeout_fault_closes_without_answer_and_without_processing(server, session):
    server.add_fault(method="POST", path="^/items$", kind="timeout", delay=0.2, times=1)
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        post(server, session)
    assert time.monotonic() - started >= 0.2
    assert server.items == []
    [entry] = server.requests_log()
    assert (entry["fault"], entry["status"]) == ("timeout", None)
    assert post(server, session).status_code == 201


def test_timeout_fault_outlasts_a_client_timeout(server, session):
    server.add_fault(kind="timeout", delay=2.0, times=1)
    with pytest.raises(requests.ReadTimeout):
        post(server, session, timeout=0.2)
    assert server.items == []


def test_slow_fault_answers_late_but_normally(server, session):
    server.add_fault(kind="slow", delay=0.2, times=1)
    started = time.monotonic()
    assert post(server, session).status_code == 201
    assert time.monotonic() - started >= 0.2
    assert server.items == [{"n": 1}]


def test_drop_after_fault_processes_then_hangs_up(server, session):
    server.add_fault(method="POST", kind="drop_after", times=1)
    with pytest.raises(requests.ConnectionError):
        post(server, session, {"n": "did it happen?"})
    assert server.items == [{"n": "did it happen?"}]  # it did
    [entry] = server.requests_log()
    assert (entry["fault"], entry["status"]) == ("drop_after", 201)
    assert post(server, session).json() == {"count": 2}


def test_times_counts_down_and_removes_the_rule(server, session):
    server.add_fault(kind="status", status=502, times=2)
    assert [post(server, session).status_code for _ in range(3)] == [502, 502, 201]
    assert server.faults() == []


def test_probability(server, session):
    server.add_fault(kind="status", status=500, probability=0.0)
    assert {post(server, session).status_code for _ in range(20)} == {201}
    server.clear_faults()
    server.add_fault(kind="status", status=500, probability=1.0)
    assert {post(server, session).status_code for _ in range(20)} == {500}
    server.clear_faults()
    server.add_fault(kind="status", status=500, probability=0.5)
    failures = sum(post(server, session).status_code == 500 for _ in range(200))
    assert 40 < failures < 160  # binomial(200, 0.5): outside this range has odds below 1e-17


def test_rules_match_method_and_path(server, session):
    server.add_fault(method="POST", path="^/items$", kind="status", status=500)
    server.add_fault(path="^/other", kind="status", status=418)
    assert session.get(server.base_url + "/items", timeout=5).status_code == 200
    assert post(server, session).status_code == 500
    assert session.get(server.base_url + "/other", timeout=5).status_code == 418


def test_invalid_rules_are_refused(server):
    with pytest.raises(ValueError):
        server.add_fault(kind="explode")
    with pytest.raises(ValueError):
        server.add_fault(kind="status", probability=2)
    with pytest.raises(ValueError):
        server.add_fault(kind="status", times=0)


# ----------------------------------------------------------------------------- control API and log


def test_control_api_manages_faults_and_log(server, session):
    control = server.base_url + "/__standin__"
    created = session.post(control + "/faults", json={"kind": "status", "status": 502, "times": 1}, timeout=5)
    assert created.status_code == 201 and created.json()["fault"]["status"] == 502
    assert session.get(control + "/faults", timeout=5).json()["faults"][0]["kind"] == "status"
    assert post(server, session).status_code == 502
    session.post(control + "/faults", json={"kind": "status", "status": 500}, timeout=5)
    assert session.delete(control + "/faults", timeout=5).status_code == 200
    assert post(server, session).status_code == 201
    assert session.post(control + "/faults", json={"kind": "bogus"}, timeout=5).status_code == 400
    assert session.post(control + "/faults", json={"unknown": 1}, timeout=5).status_code == 400
    log = session.get(control + "/log", params={"method": "POST", "path_regex": "^/items"}, timeout=5).json()
    assert [(e["status"], e["body"]) for e in log["requests"]] == [(502, '{"n": 1}'), (201, '{"n": 1}')]
    assert all(not e["path"].startswith("/__standin__") for e in server.requests_log())


def test_control_endpoints_are_never_faulted(server, session):
    server.add_fault(kind="status", status=500)
    assert session.get(server.base_url + "/__standin__/log", timeout=5).status_code == 200
    assert session.post(server.base_url + "/__standin__/reset", timeout=5).status_code == 200
    assert server.faults() == []


def test_request_log_records_everything(server, session):
    post(server, session, {"a": "b"}, params={"x": "1", "y": ["2", "3"]}, headers={"X-Trace": "t1"})
    session.get(server.base_url + "/items", timeout=5)
    [entry] = server.requests_log(method="post", path_regex="items")
    assert (entry["method"], entry["path"], entry["query"]) == ("POST", "/items", {"x": "1", "y": ["2", "3"]})
    assert entry["headers"]["x-trace"] == "t1"
    assert (entry["body"], entry["json"], entry["status"]) == (b'{"a": "b"}', {"a": "b"}, 201)
    assert abs(entry["timestamp"] - time.time()) < 5
    assert len(server.requests_log()) == 2
    server.clear_log()
    assert server.requests_log() == []


def test_reset_clears_state_log_and_faults(server, session):
    post(server, session)
    server.add_fault(kind="status", path="^/nowhere")
    server.reset()
    assert (server.items, server.requests_log(), server.faults()) == ([], [], [])


def test_unknown_routes_and_bad_json(server, session):
    assert session.get(server.base_url + "/missing", timeout=5).status_code == 404
    assert session.delete(server.base_url + "/items", timeout=5).status_code == 405
    assert session.post(server.base_url + "/items", data="{", timeout=5).status_code == 400


# ----------------------------------------------------------------------------- TCP and lifecycle


def test_accepted_sockets_have_tcp_nodelay(server, session):
    post(server, session)
    [sock] = server.accepted
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_keep_alive_requests_are_fast(server, session):
    post(server, session)  # open the connection
    count = 50
    started = time.monotonic()
    for _ in range(count):
        assert post(server, session).status_code == 201
    per_request = (time.monotonic() - started) / count
    assert per_request < 0.02, f"{per_request * 1000:.1f} ms per request: Nagle/delayed-ACK stalls?"
    assert len(server.accepted) == 1  # one keep-alive connection carried them all


def test_stop_cuts_keep_alive_connections(session):
    items = Items().start()
    assert items.base_url == f"http://127.0.0.1:{items.server_address[1]}"
    assert post(items, session).status_code == 201
    items.stop()
    with pytest.raises(requests.ConnectionError):
        post(items, session)


def test_main_serves_both_until_sigterm():
    command = [sys.executable, "-m", "standins", "--bot-id", "bot_m", "--bp-token", "tok-m"]
    command += ["--integration-id", "intg_m", "--zendesk-email", "m@example.com", "--zendesk-api-token", "zd-m"]
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            selector = selectors.DefaultSelector()
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=20), "no JSON line on stdout"
            urls = json.loads(proc.stdout.readline())
            bp_headers = {"Authorization": "Bearer tok-m", "x-bot-id": "bot_m", "x-integration-id": "intg_m"}
            assert requests.get(urls["botpress_url"] + "/v1/chat/users", headers=bp_headers, timeout=5).ok
            me = requests.get(urls["zendesk_url"] + "/api/v2/users/me", auth=("m@example.com/token", "zd-m"), timeout=5)
            assert me.json()["user"]["email"] == "m@example.com"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
