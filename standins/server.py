"""Shared HTTP machinery of the stand-ins: routing, request log, fault injection and control API.

Each stand-in is a real HTTP/1.1 server on loopback so that the gateway reaches it exactly as it
reaches production: through a base URL, with keep-alive connections, timeouts and resets.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import itertools
import json
import random
import re
import secrets
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

CONTROL_PREFIX = "/__standin__/"
FAULT_KINDS = ("status", "rate_limit", "timeout", "slow", "drop_after")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """A 26-character ULID (48-bit millisecond time + 80 random bits), the id style of both services."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(secrets.token_bytes(10), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def iso_time(at: float | None = None, milliseconds: bool = True) -> str:
    """UTC time (now by default) as ISO 8601 with a `Z` suffix; Botpress shows milliseconds, Zendesk not."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.isoformat(timespec="milliseconds" if milliseconds else "seconds").replace("+00:00", "Z")


class _Text(HTMLParser):
    def __init__(self, block_end: str) -> None:
        super().__init__(convert_charrefs=True)
        self.block_end = block_end
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "div", "li"):
            self.parts.append(self.block_end)


def html_text(markup: str, *, block_end: str = "\n") -> str:
    """A desk's plain text of its HTML body: ``<br>`` a line break, the end of a paragraph, block
    or list item ``block_end`` (Zendesk's ``plain_body`` puts a blank line there, Freshdesk's
    ``body_text`` one line break); at most one blank line in a row, trimmed."""
    parser = _Text(block_end)
    parser.feed(markup)
    parser.close()
    return re.sub(r"\n{3,}", "\n\n", "".join(parser.parts)).strip()


def control_body(req: Request) -> dict[str, Any]:
    """A control call's JSON object (empty without a body); ``ValueError`` for anything else."""
    body = req.json() if req.body else {}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def status_phrase(status: int) -> str:
    """The reason phrase of an HTTP status ("Service Unavailable"), also for non-standard codes."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class HttpError(Exception):
    """An error answer; each stand-in renders it in its service's own error format."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        type: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message or type or str(status))
        self.status = status
        self.message = message
        self.type = type
        self.details = details
        self.headers = headers or {}


@dataclass
class Request:
    """One parsed HTTP request as the route handlers see it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    data: Any = None  # parsed JSON body, None when empty or not JSON
    json_error: bool = False
    params: dict[str, str] = field(default_factory=dict)  # named groups of the route's regex
    auth: Any = None  # whatever the stand-in's authenticate() returned

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        if self.json_error:
            raise HttpError(400, "The request body is not valid JSON")
        return self.data


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable value, str, bytes or None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Request], Any]


@dataclass
class Route:
    method: str
    regex: re.Pattern[str]
    handler: Handler
    public: bool = False  # served without authentication


@dataclass
class Fault:
    """One fault-injection rule; `times` counts down, `probability` is drawn on every match."""

    id: int
    kind: str
    method: str | None
    path: str | None
    times: int | None
    probability: float | None
    status: int
    retry_after: int
    delay: float

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or re.search(self.path, path) is not None
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server: StandinServer

    def handle_any(self) -> None:
        self.server.serve_request(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the request log is the record."""


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class StandinServer(ThreadingHTTPServer):
    """Base of every stand-in: a threaded HTTP/1.1 server on 127.0.0.1 with test controls.

    Subclasses register routes with `route()`, may override `authenticate()`, `error_response()`,
    `rate_limit_response()`, `reset_state()` and `snapshot()`, and add endpoints under
    `/__standin__/` with `control_route()`. Route handlers run under `self.lock`, so state changes
    are serialised and the JSON answer is encoded before another request can modify the state.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.lock = threading.RLock()
        self._log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._faults: list[Fault] = []
        self._fault_ids = itertools.count(1)
        self._fault_lock = threading.Lock()
        self._random = random.Random()
        self._routes: list[Route] = []
        self._control_routes: list[Route] = []
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _RequestHandler)
        self.control_route("POST", "reset", lambda req: self.reset() or {})
        self.control_route("GET", "faults", lambda req: {"faults": self.faults()})
        self.control_route("POST", "faults", self._control_add_fault)
        self.control_route("DELETE", "faults", lambda req: self.clear_faults() or {})
        self.control_route("GET", "log", self._control_log)
        self.control_route("GET", "state", lambda req: self.snapshot())

    # ----------------------------------------------------------------- lifecycle
    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup of the host name, which can stall."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up before its answer was written (a worker killed mid-call, a
        timeout, a lost answer) is normal here: no traceback. Anything else is printed."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Disable Nagle on every accepted socket: small keep-alive answers must not wait 40 ms."""
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    @property
    def base_url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"

    def start(self) -> StandinServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever,
                kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop to notice
                name=f"{type(self).__name__}-{self.server_port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections so clients notice at once."""
        self._stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ----------------------------------------------------------------- routing
    def route(self, method: str, pattern: str, handler: Handler, *, public: bool = False) -> None:
        """Serve `method` on paths that fully match the regex `pattern` (named groups → req.params)."""
        self._routes.append(Route(method.upper(), re.compile(pattern), handler, public))

    def control_route(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve a test-control endpoint under /__standin__/: no auth, no faults, not logged."""
        self._control_routes.append(Route(method.upper(), re.compile(CONTROL_PREFIX + pattern), handler))

    def authenticate(self, req: Request) -> Any:
        """Check credentials of a non-public route; raise HttpError or return the caller's identity."""
        return None

    def error_response(self, err: HttpError) -> Response:
        """Render an error in the service's format (the base format is used by the control API)."""
        body = {"error": err.type or status_phrase(err.status), "message": err.message}
        return Response(err.status, body, dict(err.headers))

    def rate_limit_response(self, retry_after: int) -> Response:
        err = HttpError(429, "Too many requests", headers={"Retry-After": str(retry_after)})
        return self.error_response(err)

    def serve_request(self, handler: BaseHTTPRequestHandler) -> None:
        req = self._parse(handler)
        if req.path.startswith(CONTROL_PREFIX):
            self._send(handler, self._dispatch(req, control=True))
            return
        fault = self._take_fault(req.method, req.path)
        entry = self._record(req, fault)
        kind = fault.kind if fault else None
        if kind in ("timeout", "slow"):
            self._stopping.wait(fault.delay)
        if kind == "timeout":
            handler.close_connection = True  # the client gets a closed socket and no answer
            return
        if kind == "status":
            resp = self.error_response(HttpError(fault.status, "Injected fault"))
        elif kind == "rate_limit":
            resp = self.rate_limit_response(fault.retry_after)
        else:
            resp = self._dispatch(req)
        with self._log_lock:
            entry["status"] = resp.status
        if kind == "drop_after":
            handler.close_connection = True  # processed, but the answer is never sent
            return
        self._send(handler, resp)

    def _parse(self, handler: BaseHTTPRequestHandler) -> Request:
        url = urlsplit(handler.path)
        body = _read_body(handler)
        req = Request(
            method=handler.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=body,
        )
        if body:
            try:
                req.data = json.loads(body)
            except ValueError:
                req.json_error = True
        return req

    def _dispatch(self, req: Request, control: bool = False) -> Response:
        render = (lambda err: StandinServer.error_response(self, err)) if control else self.error_response
        try:
            route = self._match(req, self._control_routes if control else self._routes)
            with self.lock:
                if not (control or route.public):
                    req.auth = self.authenticate(req)
                result = route.handler(req)
                resp = result if isinstance(result, Response) else Response(200, result)
                resp.body = resp.encoded()  # encode now: the state may change once the lock is released
                return resp
        except HttpError as err:
            return render(err)
        except Exception as err:
            if control and isinstance(err, (KeyError, ValueError, TypeError)):
                # A control call named an unknown object (KeyError) or passed a bad argument.
                return render(HttpError(404 if isinstance(err, KeyError) else 400, str(err)))
            traceback.print_exc()
            return render(HttpError(500, "Internal stand-in error"))

    @staticmethod
    def _match(req: Request, routes: list[Route]) -> Route:
        path_matched = False
        for route in routes:
            match = route.regex.fullmatch(req.path)
            if match:
                path_matched = True
                if route.method == req.method:
                    req.params = match.groupdict()
                    return route
        if path_matched:
            raise HttpError(405, f"Method {req.method} is not allowed on {req.path}")
        raise HttpError(404, f"No such endpoint: {req.method} {req.path}")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, resp: Response) -> None:
        body = resp.encoded()
        handler.send_response(resp.status)
        if body:
            handler.send_header("Content-Type", resp.content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in resp.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    # ----------------------------------------------------------------- request log
    def _record(self, req: Request, fault: Fault | None) -> dict[str, Any]:
        entry = {
            "method": req.method,
            "path": req.path,
            "query": {k: v[0] if len(v) == 1 else v for k, v in req.query.items()},
            "headers": dict(req.headers),
            "body": req.body,
            "json": req.data,
            "status": None,
            "fault": fault.kind if fault else None,
            "timestamp": time.time(),
        }
        with self._log_lock:
            self._log.append(entry)
        return entry

    def requests_log(
        self, method: str | None = None, path_regex: str | None = None, *, start: int = 0
    ) -> list[dict[str, Any]]:
        """Copies of the logged API requests (oldest first) from position ``start`` on,
        optionally filtered.

        ``start`` is for a poller, which reads only what is new since its last look (a copy of
        the whole log each time cost the bench's driver more the longer a phase grew). An entry
        is logged when its request arrives and gets its ``status`` when the answer is sent: a
        poller moves its position only past entries that have one.
        """
        with self._log_lock:
            entries = [
                e
                for e in self._log[start:]
                if (method is None or e["method"] == method.upper())
                and (path_regex is None or re.search(path_regex, e["path"]))
            ]
            return copy.deepcopy(entries)

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    def _control_log(self, req: Request) -> dict[str, Any]:
        entries = self.requests_log(req.arg("method"), req.arg("path_regex"))
        for entry in entries:
            entry["body"] = entry["body"].decode("utf-8", "replace")
        return {"requests": entries}

    # ----------------------------------------------------------------- faults
    def add_fault(
        self,
        method: str | None = None,
        path: str | None = None,
        kind: str = "status",
        times: int | None = None,
        probability: float | None = None,
        status: int = 500,
        retry_after: int = 2,
        delay: float = 1.0,
    ) -> int:
        """Inject a fault on matching API requests; returns the rule id.

        Without `times` or `probability` the rule applies to every matching request until cleared.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if probability is not None and not 0 <= probability <= 1:
            raise ValueError("probability must be between 0 and 1")
        if path is not None:
            re.compile(path)
        with self._fault_lock:
            fault = Fault(
                id=next(self._fault_ids),
                kind=kind,
                method=method.upper() if method else None,
                path=path,
                times=times,
                probability=probability,
                status=int(status),
                retry_after=int(retry_after),
                delay=float(delay),
            )
            self._faults.append(fault)
            return fault.id

    def faults(self) -> list[dict[str, Any]]:
        with self._fault_lock:
            return [f.as_dict() for f in self._faults]

    def clear_faults(self) -> None:
        with self._fault_lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._fault_lock:
            for fault in self._faults:
                if not fault.matches(method, path):
                    continue
                if fault.probability is not None and self._random.random() >= fault.probability:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _control_add_fault(self, req: Request) -> Response:
        rule = req.json()
        if not isinstance(rule, dict):
            raise HttpError(400, "The fault rule must be a JSON object")
        fault_id = self.add_fault(**rule)
        return Response(201, {"fault": next(f for f in self.faults() if f["id"] == fault_id)})

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget all state, logged requests and faults (configuration such as credentials stays)."""
        with self.lock:
            self.reset_state()
        self.clear_log()
        self.clear_faults()

    def reset_state(self) -> None:
        """Clear the stand-in's data; overridden by each stand-in."""

    def snapshot(self) -> dict[str, Any]:
        """The stand-in's data as JSON, for GET /__standin__/state."""
        return {}

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
        """Poll `predicate` until it returns something truthy and return that; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                name = getattr(predicate, "__name__", repr(predicate))
                raise AssertionError(f"condition {name} still false after {timeout:.2f}s (last value: {value!r})")
            time.sleep(interval)


# ----------------------------------------------------------------- outgoing webhooks
@dataclass(frozen=True)
class WebhookCall:
    """One attempt of an outgoing webhook, as a desk's ``prepare`` builds it (re-signed per attempt)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    timeout: float | None = None  # seconds before the attempt counts as failed (default: the sender's)


@dataclass(frozen=True)
class WebhookAnswer:
    """What one attempt got: the status and headers, or ``error`` when no answer came
    (``timed_out``: none came within the call's timeout)."""

    status: int | None
    headers: dict[str, str]
    error: str | None
    timed_out: bool = False


@dataclass
class _Queued:
    payload: Any
    key: Any  # calls with the same key (a ticket) go out one at a time, in order
    generation: int


WEBHOOK_FAULT_KINDS = ("duplicate", "delay", "drop")


class WebhookSender:
    """A stand-in's outgoing webhooks: queued, sent by ``senders`` threads, retried, disturbed.

    What differs between desks is given as callbacks (each called without the stand-in's lock):

    - ``prepare(payload, attempt) -> WebhookCall | None``: the request of this attempt (headers
      signed now, placeholders rendered); ``None`` gives up (the webhook was deleted);
    - ``record(payload, attempt, call, answer)``: keep the attempt for the tests (called under
      the stand-in's lock, only if no ``reset`` happened since the call was queued);
    - ``retry_wait(payload, attempt, answer) -> float | None``: seconds before the next attempt
      (the desk's retry schedule), ``None`` to stop (success, or given up);
    - ``redeliver(payload, attempt, call, answer) -> WebhookCall | None`` (optional): how a
      "duplicate" fault repeats a call, for a desk whose second copy is a retry of an answered
      attempt (Slack's, when it thought the answer late): asked after each attempt until it
      gives a call, which is sent once and recorded as attempt ``attempt + 1``. Without it, a
      duplicated call is delivered again from its first attempt.

    Calls sharing a ``key`` are delivered one at a time, in the order they were queued, whatever
    the number of senders. ``add_fault("duplicate")`` delivers the next call twice (each with its
    retries), ``add_fault("delay", delay=s)`` holds it back ``s`` seconds, ``add_fault("drop")``
    never sends it (lost for good: the desk gave up, or it never left). ``reset()`` forgets
    the queue and the faults; a call being delivered stops at its next attempt.
    """

    def __init__(
        self,
        server: StandinServer,
        *,
        prepare: Callable[[Any, int], WebhookCall | None],
        record: Callable[[Any, int, WebhookCall, WebhookAnswer], None],
        retry_wait: Callable[[Any, int, WebhookAnswer], float | None],
        redeliver: Callable[[Any, int, WebhookCall, WebhookAnswer], WebhookCall | None] | None = None,
        senders: int = 1,
        timeout: float = 10.0,
        name: str = "webhooks",
    ) -> None:
        self.server = server
        self.prepare, self.record, self.retry_wait, self.redeliver = prepare, record, retry_wait, redeliver
        self.timeout = timeout
        self._queue: collections.deque[_Queued] = collections.deque()
        self._cond = threading.Condition()
        self._delivering: set[Any] = set()  # keys whose call is being delivered
        self._faults: list[dict[str, Any]] = []
        self.generation = 0
        self._threads = [
            threading.Thread(target=self._send_forever, name=f"{name}-{n}", daemon=True) for n in range(max(1, senders))
        ]
        for thread in self._threads:
            thread.start()

    def enqueue(self, payload: Any, *, key: Any = None) -> None:
        with self._cond:
            self._queue.append(_Queued(payload, key, self.generation))
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self.generation += 1
            self._queue.clear()
            self._faults.clear()
            self._cond.notify_all()

    def stop(self) -> None:
        """Wake the senders after the server's ``_stopping`` is set, and wait for them."""
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def current(self, generation: int) -> bool:
        return generation == self.generation

    def add_fault(self, kind: str, times: int = 1, delay: float = 0.0) -> None:
        if kind not in WEBHOOK_FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(WEBHOOK_FAULT_KINDS)}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._cond:
            self._faults.append({"kind": kind, "times": times, "delay": float(delay)})

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every queued call was delivered (or given up); fail after ``timeout``."""
        with self._cond:
            idle = self._cond.wait_for(lambda: not self._queue and not self._delivering, timeout)
        if not idle:
            raise AssertionError(f"webhook deliveries still pending after {timeout:.2f}s")

    def _next(self) -> _Queued | None:
        """The oldest call whose key no other sender is delivering (caller holds the lock)."""
        for queued in self._queue:
            if queued.key not in self._delivering:
                return queued
        return None

    def _send_forever(self) -> None:
        session = requests.Session()  # keep-alive to the receiver across calls
        stopping = self.server._stopping
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._next() or stopping.is_set())
                if stopping.is_set():
                    return
                queued = self._next()
                self._queue.remove(queued)
                self._delivering.add(queued.key)
            try:
                faults = self._take_faults()
                if "delay" in faults and stopping.wait(faults["delay"]):
                    return
                echo = "duplicate" in faults and self.redeliver is not None
                copies = 0 if "drop" in faults else 2 if "duplicate" in faults and not echo else 1
                for _ in range(copies):
                    self._send_with_retries(session, queued, echo=echo)
            finally:
                with self._cond:
                    self._delivering.discard(queued.key)
                    self._cond.notify_all()

    def _take_faults(self) -> dict[str, float]:
        """The fault kinds that apply to the next call (kind → delay)."""
        taken: dict[str, float] = {}
        with self._cond:
            for fault in list(self._faults):
                if fault["kind"] not in taken:
                    taken[fault["kind"]] = fault["delay"]
                    fault["times"] -= 1
                    if fault["times"] == 0:
                        self._faults.remove(fault)
        return taken

    def _send_with_retries(self, session: requests.Session, queued: _Queued, *, echo: bool) -> None:
        """One call's attempts; ``echo``: a "duplicate" fault for ``redeliver`` to repeat."""
        for attempt in itertools.count(1):
            if not self.current(queued.generation):
                return
            call = self.prepare(queued.payload, attempt)
            if call is None:
                return
            answer = self._attempt(session, queued, attempt, call)
            if answer is None:
                return
            again = self.redeliver(queued.payload, attempt, call, answer) if echo and self.redeliver else None
            if again is not None:
                echo = False
                if self._attempt(session, queued, attempt + 1, again) is None:
                    return
            wait = self.retry_wait(queued.payload, attempt, answer)
            if wait is None or self.server._stopping.wait(wait):
                return

    def _attempt(
        self, session: requests.Session, queued: _Queued, attempt: int, call: WebhookCall
    ) -> WebhookAnswer | None:
        """Send ``call`` and record it; ``None`` when a ``reset`` came meanwhile (nothing recorded)."""
        try:
            resp = session.request(
                call.method,
                call.url,
                data=call.body or None,
                headers=call.headers,
                timeout=call.timeout or self.timeout,
            )
            answer = WebhookAnswer(resp.status_code, dict(resp.headers), None)
        except requests.RequestException as exc:
            answer = WebhookAnswer(None, {}, f"{type(exc).__name__}: {exc}", isinstance(exc, requests.Timeout))
        with self.server.lock:
            if not self.current(queued.generation):
                return None
            self.record(queued.payload, attempt, call, answer)
        return answer


class WebhookStandin(StandinServer):
    """A stand-in whose webhooks go out through one ``WebhookSender`` (``self._sender``): the
    knobs tests and the chaos driver use, the same on every desk.

    The desk defines the sender's callbacks as ``_webhook_call`` (``prepare``),
    ``_webhook_record`` (``record``, appending to ``_deliveries``) and ``_webhook_retry_wait``
    (``retry_wait``), and ``_webhook_redeliver`` where its duplicate is a retry. Its queued
    calls go through ``self._sender.enqueue``. ``webhook_fault_delay``: seconds a "delay"
    fault holds a call back when none is given.
    """

    _deliveries: list[dict[str, Any]]  # every attempt, as the desk's ``_webhook_record`` keeps it
    webhook_fault_delay = 0.0
    #: ``WebhookSender``'s ``redeliver``, for a desk whose duplicate is a retry (Slack's).
    _webhook_redeliver: Callable[[Any, int, WebhookCall, WebhookAnswer], WebhookCall | None] | None = None

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *, webhook_senders: int = 1):
        """``webhook_senders``: how many calls are delivered at once (calls sharing a key, such
        as a ticket's, still go out one after another, in order)."""
        super().__init__(port, host)
        self._sender = WebhookSender(
            self,
            prepare=self._webhook_call,
            record=self._webhook_record,
            retry_wait=self._webhook_retry_wait,
            redeliver=self._webhook_redeliver,
            senders=webhook_senders,
            name=f"{type(self).__name__}-webhooks",
        )
        self.control_route("POST", "webhook_faults", self._control_add_webhook_fault)

    def stop(self) -> None:
        super().stop()
        self._sender.stop()

    def add_webhook_fault(self, kind: str, times: int = 1, delay: float | None = None) -> None:
        """Disturb the next ``times`` deliveries: "duplicate" delivers each twice (as the desk's
        sender repeats a call), "delay" holds it back ``delay`` seconds, "drop" never sends it."""
        self._sender.add_fault(kind, times, self.webhook_fault_delay if delay is None else delay)

    def wait_webhooks_idle(self, timeout: float = 10.0) -> None:
        """Block until every queued delivery is done (or given up); fail after ``timeout``."""
        self._sender.wait_idle(timeout)

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first, with its headers, body and outcome."""
        with self.lock:
            return copy.deepcopy(self._deliveries)

    def _deliveries_json(self) -> list[dict[str, Any]]:
        """The attempts for a JSON snapshot, bodies as text (the caller holds the lock)."""
        return [
            {**d, "headers": dict(d["headers"]), "body": d["body"].decode("utf-8", "replace")} for d in self._deliveries
        ]

    def _control_add_webhook_fault(self, req: Request) -> Response:
        body = control_body(req)
        delay = body.get("delay")
        self.add_webhook_fault(
            str(body.get("kind")), int(body.get("times", 1)), None if delay is None else float(delay)
        )
        return Response(201, {})
