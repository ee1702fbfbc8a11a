"""Real local HTTP servers that play media hosts in the tests: well-behaved, redirecting, dripping.

Each counts the requests it received, so a test can prove that a forbidden one saw none.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56


class MediaHost(ThreadingHTTPServer):
    """``/ok/<name>``: a small PNG. ``/redirect/<status>?to=<url>``: a redirect.

    ``/drip/<name>?bytes=N&every=S&size=B``: B-byte pieces every S seconds, N bytes in all
    (a slow media server). ``/drip-headers/<name>``: headers, one line every 0.2 s.
    Any other POST: 200 ``{}``. Anything else: 404.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self._lock = threading.Lock()
        super().__init__((host, port), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> MediaHost:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def record(self, method: str, path: str, headers: dict) -> None:
        with self._lock:
            self.requests.append((method, path, headers))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MediaHost

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _query(self) -> dict[str, str]:
        _, _, query = self.path.partition("?")
        return dict(part.split("=", 1) for part in query.split("&") if "=" in part)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._serve()

    def _serve(self) -> None:
        self.server.record(self.command, self.path, dict(self.headers))
        path = self.path.split("?")[0]
        if path.startswith("/ok/"):
            self._send(200, PNG, "image/png")
        elif path.startswith("/redirect/"):
            status = int(path.split("/")[2])
            self.send_response(status)
            self.send_header("Location", self._query()["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.startswith("/drip/"):
            query = self._query()
            total, every, size = (
                int(query.get("bytes", 4000)),
                float(query.get("every", 0.5)),
                int(query.get("size", 100)),
            )
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            sent = 0
            try:
                while sent < total:
                    piece = min(size, total - sent)
                    self.wfile.write(b"x" * piece)
                    self.wfile.flush()
                    sent += piece
                    time.sleep(every)
            except OSError:
                return  # the client gave up: that is the point
        elif path.startswith("/drip-headers/"):  # status line, then one header line every 0.2 s
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            try:
                for n in range(1000):
                    self.wfile.write(b"X-Slow-%d: 1\r\n" % n)
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                return
        elif self.command == "POST":  # a webhook receiver (the hitl-api bot's endpoints)
            self._send(200, b"{}", "application/json")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
