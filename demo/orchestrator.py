"""Start the gateway, both stand-ins and a demo integration wired to them; stop it all on Ctrl-C.

What runs:
- in this process: the Botpress stand-in with the end-user chat page and the help desk's stand-in
  (Zendesk, or Freshdesk with `--provider freshdesk`) with the agent desk page (threads,
  `standins.demo_pages`);
- as child processes, each in its own process group: the gateway's web server (gunicorn), a Celery
  worker and Celery beat, on the embedded default (SQLite and the filesystem broker) in a state
  directory that is wiped at every start.

The integration is made with the documented `create_integration --install-webhook` command, so the
desk's stand-in holds the gateway's real webhook and triggers (Freshdesk: automation rules).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from cryptography.fernet import Fernet

from hitl_gateway.launch import metrics_dir_prepare
from standins.demo_pages import ChatBotpress, DeskFreshdesk, DeskJsm, DeskSlack, DeskZendesk

ROOT = Path(__file__).resolve().parent.parent
MARKER = ".hitl-demo-state"  # only a directory holding it is ever wiped
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-demo"
BOT_ID, BOTPRESS_INTEGRATION_ID = "bot_demo", "intg_demo"
ZENDESK_EMAIL = "gateway@demo.test"
# Each desk: its demo page class, the desk page's path and label, and the credentials made per run
# (``create_integration`` keyword arguments, which the stand-in accepts under the same names).
DESKS = {
    "zendesk": (
        DeskZendesk,
        "/agent/",
        "Zendesk",
        lambda: {"email": ZENDESK_EMAIL, "api_token": secrets.token_urlsafe(24)},
    ),
    "freshdesk": (DeskFreshdesk, "/a/", "Freshdesk", lambda: {"api_key": secrets.token_urlsafe(24)}),
    "jsm": (
        DeskJsm,
        "/jira/",
        "Jira Service Management",
        lambda: {
            "email": ZENDESK_EMAIL,
            "api_token": secrets.token_urlsafe(24),
            "service_desk_id": "1",
            "request_type_id": "10",
        },
    ),
    "slack": (
        DeskSlack,
        "/app/",
        "Slack",
        lambda: {
            "bot_token": "xoxb-" + secrets.token_urlsafe(24),
            "signing_secret": secrets.token_urlsafe(24),
            "channel_id": "C0DEMOAGENTS",
        },
    ),
}
AGENT_NAME, AGENT_EMAIL = "Grace Hopper", "grace@demo.test"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


class StartupError(Exception):
    """The demo cannot start; the message says why and what to do."""


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived while starting."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="gateway port (0 picks a free one)")
    parser.add_argument("--botpress-port", type=int, default=8001, help="Botpress stand-in and chat page port")
    parser.add_argument("--provider", choices=sorted(DESKS), default="zendesk", help="the help desk to run")
    parser.add_argument(
        "--desk-port", "--zendesk-port", type=int, default=8002, help="help-desk stand-in and agent desk port"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=ROOT / "var" / "demo",
        help="database, broker folders and logs; wiped at every start (default: var/demo)",
    )
    parser.add_argument(
        "--assignment-timeout",
        type=int,
        default=None,
        metavar="MINUTES",
        help="end a session no agent took within this many minutes (a lifecycle policy; default: off)",
    )
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_port(port: int, flag: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StartupError(f"port {port} is not free ({exc.strerror}); choose another one with {flag}") from None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.state = args.state_dir.resolve()
        self.logs = self.state / "logs"
        self.stop = threading.Event()
        self.signals = 0
        self.children: dict[str, subprocess.Popen] = {}
        self.botpress: ChatBotpress | None = None
        self.desk: DeskZendesk | DeskFreshdesk | DeskJsm | DeskSlack | None = None

    # ----------------------------------------------------------------- lifecycle
    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        status = 0
        try:
            urls = self._start()
            self._print_banner(urls)
            status = self._watch()
        except Interrupted:
            pass
        except StartupError as exc:
            print(f"\nThe demo could not start: {exc}", file=sys.stderr, flush=True)
            status = 1
        finally:
            self._shutdown()
        return status

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals += 1
        self.stop.set()

    def _start(self) -> dict[str, str]:
        args = self.args
        port = args.port or _free_port()
        _check_port(port, "--port")
        gateway = f"http://127.0.0.1:{port}"
        desk_class, desk_path, _, make_credentials = DESKS[args.provider]
        credentials, bp_token = make_credentials(), "bp_demo_" + secrets.token_urlsafe(24)
        try:
            self.botpress = ChatBotpress(port=args.botpress_port)
            self.desk = desk_class(port=args.desk_port, **credentials)
        except OSError as exc:
            which = "--botpress-port" if self.botpress is None else "--desk-port"
            raise StartupError(f"a stand-in cannot listen ({exc.strerror}); choose another port with {which}") from None
        self._prepare_state()
        child_log_level = os.environ.get("HITL_LOG_LEVEL", "INFO")
        os.environ.update(
            DJANGO_SETTINGS_MODULE="hitl_gateway.settings",
            HITL_VAR_DIR=str(self.state),
            # /metrics sums every process's figures (hitl_gateway.metrics); emptied at start.
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir_prepare(self.state)),
            DATABASE_URL=f"sqlite:///{self.state / 'gateway.sqlite3'}",
            CELERY_BROKER_URL="filesystem://",
            # The secrets of this run's fresh state are encrypted with a key of this run.
            HITL_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
            HITL_PUBLIC_BASE_URL=gateway,
            # The stand-ins, and so the media they serve, live on loopback: allow just their ports.
            HITL_MEDIA_ALLOW_PRIVATE_ADDRESSES=",".join(
                f"127.0.0.1:{server.server_address[1]}" for server in (self.botpress, self.desk)
            ),
            # A failed call is retried within seconds, not minutes: nobody waits long in a demo.
            HITL_DELIVERY_BACKOFF_BASE_SECONDS="0.5",
            HITL_DELIVERY_BACKOFF_MAX_SECONDS="5",
            HITL_DELIVERY_STALE_SECONDS="5",
            HITL_SWEEP_SECONDS="2",
            HITL_HTTP_READ_TIMEOUT="10",
            HITL_LOG_LEVEL="WARNING",  # this process's own log: the banner stays readable
            PYTHONUNBUFFERED="1",
        )
        child_env = dict(os.environ, HITL_LOG_LEVEL=child_log_level)

        self.botpress.add_bot(bot_id=BOT_ID, token=bp_token, integration_id=BOTPRESS_INTEGRATION_ID)
        self.desk.add_agent(AGENT_NAME, AGENT_EMAIL)
        self.botpress.start()
        self.desk.start()
        print(f"Preparing a fresh demo state in {self.state} …", flush=True)
        integration = self._set_up_gateway(bp_token, credentials)
        self.botpress.connect_gateway(gateway, integration["id"], integration["api_key"])
        self._interruptible()

        self._spawn(
            child_env,
            "web",
            "gunicorn",
            "hitl_gateway.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--graceful-timeout",
            "5",
            "--access-logfile",
            "-",
            "--logger-class",
            "hitl_gateway.gunicorn_logging.RedactingLogger",  # the Botpress URL secrets stay out
            "--no-control-socket",  # its default path is shared by every gunicorn of the user
        )
        celery = ("celery", "-A", "demo.celery_app")
        self._spawn(
            child_env,
            "worker",
            *celery,
            "worker",
            # One demo worker serves both queues (production runs a media worker of its own).
            "-Q",
            "hitl_gateway,hitl_gateway.media",
            "--loglevel=INFO",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )
        self._spawn(child_env, "beat", *celery, "beat", "--loglevel=INFO")
        print("Starting the gateway: web, worker and beat …", flush=True)
        self._wait_until(lambda: self._healthy(gateway), "the gateway's web server to answer /health/")
        self._wait_until(lambda: " ready." in _tail(self.logs / "worker.log", 200), "the Celery worker")
        return {
            "chat": f"{self.botpress.base_url}/chat/",
            "desk": f"{self.desk.base_url}{desk_path}",
            "admin": f"{gateway}/admin/",
            "sessions": f"{gateway}/admin/sessions_app/hitlsession/",
            "schema": f"{gateway}/api/schema/",
            "api": integration["api_base_url"] + "/",
            "api_key": integration["api_key"],
        }

    def _prepare_state(self) -> None:
        """Start from nothing: wipe the previous run's state, but never a directory that is not ours."""
        if self.state.exists():
            if any(self.state.iterdir()) and not (self.state / MARKER).exists():
                raise StartupError(f"{self.state} is not empty and was not made by the demo; choose --state-dir")
            shutil.rmtree(self.state)
        for folder in (self.logs, self.state / "static"):
            folder.mkdir(parents=True)
        (self.state / MARKER).touch()

    def _set_up_gateway(self, bp_token: str, credentials: dict[str, str]) -> dict:
        """Migrate, create the integration (installing the desk's webhook) and the admin login."""
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", interactive=False, verbosity=0)
        out = io.StringIO()
        call_command(
            "create_integration",
            name=f"Demo bot + {DESKS[self.args.provider][2]} stand-in",
            provider=self.args.provider,
            provider_url=self.desk.base_url,
            **{f"{self.args.provider}_{name}": value for name, value in credentials.items()},
            botpress_url=self.botpress.base_url,
            botpress_token=bp_token,
            bot_id=BOT_ID,
            integration_id=BOTPRESS_INTEGRATION_ID,
            install_webhook=True,
            stdout=out,
        )
        get_user_model().objects.create_superuser(ADMIN_USER, "admin@demo.test", ADMIN_PASSWORD)
        created = json.loads(out.getvalue())
        installed = getattr(self.desk, "installed", None)  # a step done by hand in the desk (Slack's manifest)
        if installed is not None:
            installed(created["webhook_urls"][0])
        if self.args.assignment_timeout:
            from sessions_app.models import Integration
            from sessions_app.services.lifecycle import integration_policy_update

            integration_policy_update(
                integration=Integration.objects.get(pk=created["id"]),
                changes={"assignment_timeout_minutes": self.args.assignment_timeout},
            )
        connections.close_all()  # the gateway's own processes use the database from now on
        return created

    def _spawn(self, env: dict[str, str], name: str, *module_and_args: str) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            # Its own session: Ctrl-C reaches only this process, which then stops each child in order.
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", *module_and_args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            return requests.get(f"{url}/health/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _interruptible(self) -> None:
        if self.stop.is_set():
            raise Interrupted

    def _wait_until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready():
            self._interruptible()
            self._check_children()
            if time.monotonic() > deadline:
                raise StartupError(f"timed out waiting for {what}; see the logs in {self.logs}")
            time.sleep(0.2)

    def _check_children(self) -> None:
        for name, process in self.children.items():
            if process.poll() is not None:
                log = self.logs / f"{name}.log"
                raise StartupError(f"{name} exited with status {process.returncode}; end of {log}:\n{_tail(log)}")

    def _watch(self) -> int:
        """Serve until a signal; a child that dies on its own ends the demo (non-zero status)."""
        while not self.stop.wait(0.5):
            try:
                self._check_children()
            except StartupError as exc:
                print(f"\nThe demo stopped: {exc}", file=sys.stderr, flush=True)
                return 1
        return 0

    def _shutdown(self) -> None:
        """SIGTERM each child (a graceful stop), wait, then SIGKILL whatever is left in its process group."""
        if self.children:
            print("\nStopping the gateway (web, worker, beat) …", flush=True)
        for process in self.children.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, process in self.children.items():
            while process.poll() is None and time.monotonic() < deadline and self.signals < 2:
                time.sleep(0.1)  # a second Ctrl-C skips the wait
            if process.poll() is None:
                print(f"{name} did not stop in time: killing it", file=sys.stderr, flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # also any orphaned grandchild
            process.wait()
        # The stand-ins go last: a task finishing during the stop still reaches them.
        for server in (self.desk, self.botpress):
            if server is not None:
                server.stop()
        if self.children:
            print("Demo stopped.", flush=True)

    # ----------------------------------------------------------------- output
    def _timeout_hint(self) -> str:
        minutes = self.args.assignment_timeout
        if not minutes:
            return ""
        return (
            f"Assignment timeout: {minutes} min. Press “Talk to a human” and leave the ticket unassigned: after\n"
            f"{minutes} min the chat gets the bot's message, the ticket a note and is closed, and the session shows\n"
            "“Lifecycle policy (timeout, business hours): assignment_timeout”.\n\n"
        )

    def _print_banner(self, urls: dict[str, str]) -> None:
        rows = [
            ("End-user chat (Botpress side)", urls["chat"]),
            (f"Agent desk ({DESKS[self.args.provider][2]} side)", urls["desk"]),
            ("Admin", f"{urls['admin']}   login: {ADMIN_USER} / {ADMIN_PASSWORD}"),
            ("HITL sessions in the admin", urls["sessions"]),
            ("API schema (OpenAPI)", urls["schema"]),
            ("Gateway API of the demo bot", urls["api"]),
            ("  its API key", urls["api_key"]),
        ]
        width = max(len(label) for label, _ in rows)
        lines = [f"  {label.ljust(width)}  {value}" for label, value in rows]
        print(
            "\nThe HITL gateway demo is running: the gateway (web, worker, beat) on SQLite and a filesystem\n"
            f"broker, the Botpress and {DESKS[self.args.provider][2]} stand-ins, and a demo integration wired to\n"
            "them.\n\n" + "\n".join(lines) + f"\n\nLogs: {self.logs}/{{web,worker,beat}}.log\n\n"
            "Try it: in the chat, talk to the bot, then press “Talk to a human”. In the agent desk, open the\n"
            "ticket (the transcript comes first), “Assign to me”, reply, and watch the chat; then “Solve”.\n"
            "The admin shows the session's status and message log as you go.\n\n"
            + self._timeout_hint()
            + "Press Ctrl-C to stop everything.",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    return Demo(parse_args(argv)).run()
