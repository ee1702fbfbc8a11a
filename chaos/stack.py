"""A whole deployment on loopback: both stand-ins, the gateway's processes, one integration.

Shared by the chaos run and the benchmarks, so both measure the gateway exactly as deployed:
separate web, worker and beat processes, PostgreSQL and a real broker.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
from cryptography.fernet import Fernet

from chaos.desks import DESKS, ZD_EMAIL, ZD_TOKEN  # noqa: F401 - the benchmarks import them from here
from chaos.processes import Gateway
from hitl_gateway.launch import metrics_dir_prepare
from standins.botpress import BotpressStandin

BOT_ID, BP_TOKEN, BP_INTEGRATION = "bot_01CHAOSRUNBOT000000000001", "bp_chaos_token", "intg_01CHAOSRUNINTEGRATION01"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Session:
    index: int
    user_id: str = ""
    conversation_id: str = ""
    ticket_id: int = 0
    agent_id: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)  # marker -> time of the first send


class Database:
    """A throw-away PostgreSQL database for one run, dropped at the end unless ``keep``."""

    def __init__(self, server_url: str, *, keep: bool = False) -> None:
        self.keep = keep
        parts = urlsplit(server_url)
        self.name = f"hitl_run_{uuid.uuid4().hex[:8]}"
        self.admin_url = urlunsplit(parts._replace(path="/postgres"))
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def __enter__(self) -> Database:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc) -> None:
        if self.keep:
            log(f"database kept: {self.name} (drop it with DROP DATABASE when done)")
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Stack:
    def __init__(
        self,
        *,
        database_url: str,
        broker_url: str,
        work_dir: Path,
        workers: int,
        env: dict,
        provider: str = "zendesk",
        webhook_senders: int = 1,
    ) -> None:
        self.botpress = BotpressStandin().start()
        self.desk = DESKS[provider](webhook_senders=webhook_senders)
        self.helpdesk = self.desk.standin
        self.zendesk = self.helpdesk  # the benchmarks' name (they drive Zendesk)
        self.botpress.add_bot(bot_id=BOT_ID, token=BP_TOKEN, integration_id=BP_INTEGRATION)
        port = free_port()
        gateway_env = (
            dict(os.environ)
            | {
                "DATABASE_URL": database_url,
                "CELERY_BROKER_URL": broker_url,
                "CELERY_TASK_DEFAULT_QUEUE": f"hitl-run-{uuid.uuid4().hex[:8]}",
                "HITL_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "HITL_VAR_DIR": str(work_dir),
                # /metrics sums every process's figures (hitl_gateway.metrics); emptied at start.
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir_prepare(work_dir)),
                "HITL_LOG_LEVEL": "WARNING",
                # A production-like stack needs its encryption key: one per run, like its database.
                "HITL_ENCRYPTION_KEYS": os.environ.get("HITL_ENCRYPTION_KEYS") or Fernet.generate_key().decode(),
                # PostgreSQL with DEBUG off is a production deployment to the settings: give it a
                # key, and serve it over the plain http this stack speaks on loopback.
                "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50),
                "DJANGO_SECURE_SSL_REDIRECT": "false",
                "DJANGO_SECURE_HSTS_SECONDS": "0",
                "DJANGO_SESSION_COOKIE_SECURE": "false",
                "DJANGO_CSRF_COOKIE_SECURE": "false",
            }
            | env
        )
        self.gateway = Gateway(env=gateway_env, port=port, workers=workers, log_dir=work_dir)
        self.http = requests.Session()
        self.api_key = self.base = self.integration_id = ""

    def start(self) -> None:
        self.gateway.manage("migrate", "--noinput")
        created = json.loads(
            self.gateway.manage(
                "create_integration",
                "--name",
                "run",
                "--provider-url",
                self.helpdesk.base_url,
                *self.desk.integration_flags(),
                "--botpress-url",
                self.botpress.base_url,
                "--botpress-token",
                BP_TOKEN,
                "--bot-id",
                BOT_ID,
                "--integration-id",
                BP_INTEGRATION,
                "--install-webhook",
            )
        )
        self.api_key, self.integration_id = created["api_key"], created["id"]
        self.desk.installed(f"{self.gateway.url}/webhooks/{self.desk.kind}/{self.integration_id}/")
        self.gateway.start()
        self.base = f"{self.gateway.url}/api/v1/integrations/{self.integration_id}"
        log(f"gateway up at {self.gateway.url} with {self.gateway.workers} workers")

    def post(self, path: str, body: dict, *, deadline: float = 120.0) -> requests.Response:
        """POST as Botpress would: retry connection errors and 5xx (the web process may be restarting)."""
        give_up = time.monotonic() + deadline
        while True:
            try:
                response = self.http.post(
                    f"{self.base}/{path}", json=body, timeout=10, headers={"Authorization": f"Bearer {self.api_key}"}
                )
                if response.status_code < 500:
                    return response
            except requests.RequestException:
                pass
            if time.monotonic() > give_up:
                raise RuntimeError(f"the gateway never accepted {path}")
            time.sleep(0.2)

    def open_session(self, session: Session) -> None:
        i = session.index
        user = self.post("actions/createUser", {"name": f"User {i}", "email": f"user{i}@run.test"})
        session.user_id = user.json()["userId"]
        history = [
            {
                "source": {"type": "user", "userId": session.user_id},
                "type": "text",
                "payload": {"text": f"hello from {i}"},
            }
        ]
        started = self.post(
            "actions/startHitl", {"userId": session.user_id, "title": f"Session {i}", "messageHistory": history}
        )
        session.conversation_id = started.json()["conversationId"]

    def open_sessions(self, sessions: list[Session]) -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(self.open_session, sessions))
        # A desk that takes its tickets at a limited rate (Slack: about one message a second in
        # the agents' channel) needs longer than the default for all of them.
        rate = self.desk.tickets_per_second
        self.wait_tickets(sessions, timeout=max(120.0, 60.0 + 1.5 * len(sessions) / rate) if rate else 120.0)

    def wait_tickets(self, sessions: list[Session], timeout: float = 120.0) -> None:
        """Wait for every session's ticket, and give each session an agent (ten agents in all)."""
        by_reference: dict[str, int] = {}
        wanted = {session.conversation_id for session in sessions}
        deadline = time.monotonic() + timeout
        while len(by_reference) < len(sessions) and time.monotonic() < deadline:
            by_reference = self.desk.ticket_ids(wanted)
            time.sleep(0.2)
        agents = [self.helpdesk.add_agent(f"Agent {n}", f"agent{n}@acme.test") for n in range(10)]
        for session in sessions:
            session.ticket_id = by_reference[session.conversation_id]
            session.agent_id = agents[session.index % len(agents)]

    def stop(self) -> None:
        self.gateway.stop()
        self.helpdesk.stop()
        self.botpress.stop()
