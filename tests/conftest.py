"""Shared fixtures: the stand-ins, a real Celery worker process, and a wired-up integration."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

pytest_plugins = ["tests.browser"]


def _flush_retrying_deadlocks() -> None:
    """Retry pytest-django's per-test flush when PostgreSQL picks it as a deadlock victim.

    The session-scoped worker (beat sweeper, relay threads, heartbeats) keeps writing between
    tests; ``TRUNCATE`` takes every table's lock in turn, so it can deadlock with a worker
    transaction that holds one table and waits for another. PostgreSQL aborts one of the two
    (``deadlock detected``, or ``lock_timeout``); the flush is idempotent, so trying again is safe.
    """
    from django.core.management.base import CommandError
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown(self) -> None:
        for attempt in range(8):
            try:
                return original(self)
            except CommandError:
                if attempt == 7:
                    raise
                time.sleep(0.2 * (attempt + 1))

    TransactionTestCase._fixture_teardown = teardown


_flush_retrying_deadlocks()

ROOT = Path(__file__).resolve().parent.parent
BOT_ID, BP_TOKEN, BP_INTEGRATION_ID = "bot_01HITLGATEWAYTESTBOT000001", "bp_test_token", "intg_01HITLTESTINTEGRATION01"
ZD_EMAIL, ZD_TOKEN = "gateway@acme.test", "zd_test_api_token"


@pytest.fixture(autouse=True)
def _pacing_connections_closed():
    """Reservations made inside a test's transaction go through a connection of their own
    (``outbound.pacing``): closed after each test, as the test database is dropped at the end."""
    yield
    from outbound.pacing import pace_connections_close

    pace_connections_close()


@pytest.fixture(scope="session")
def botpress_standin():
    from standins.botpress import BotpressStandin

    server = BotpressStandin().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def zendesk_standin():
    from standins.zendesk import ZendeskStandin

    server = ZendeskStandin(email=ZD_EMAIL, api_token=ZD_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def botpress(botpress_standin):
    from sessions_app.api.definition import DECLARED_TAGS
    from standins.hitl_api_bot import TAG as HITL_API_TAG

    botpress_standin.reset()
    # The bot's tags as declared: the gateway's definition, plus the hitl-api stand-in's own tag
    # (in the hitl-api tests the same stand-in bot also hosts that integration).
    declared = {kind: [*tags, HITL_API_TAG] for kind, tags in DECLARED_TAGS.items()}
    botpress_standin.add_bot(bot_id=BOT_ID, token=BP_TOKEN, integration_id=BP_INTEGRATION_ID, declared_tags=declared)
    return botpress_standin


@pytest.fixture
def zendesk(zendesk_standin):
    zendesk_standin.reset()
    return zendesk_standin


def _worker_env(database_name: str, queue: str, *, media_allow: str = "") -> dict:
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{database_name}",
        CELERY_TASK_DEFAULT_QUEUE=queue,
        # The worker decrypts what the tests' process encrypted.
        HITL_ENCRYPTION_KEYS=",".join(settings.HITL_ENCRYPTION_KEYS),
        HITL_MEDIA_QUEUE=f"{queue}.media",
        # Only the test media hosts (by port), never loopback at large: the guard stays on.
        HITL_MEDIA_ALLOW_PRIVATE_ADDRESSES=media_allow,
        # The hitl-api bot stand-in listens on loopback, on a port picked per test.
        HITL_ALLOW_INSECURE_BOTPRESS_URLS="127.0.0.1",
        HITL_DELIVERY_BACKOFF_BASE_SECONDS="0.2",
        HITL_DELIVERY_BACKOFF_MAX_SECONDS="2",
        HITL_DELIVERY_STALE_SECONDS="3",
        HITL_SWEEP_SECONDS="1",
        # Doorbell desks: tickets whose doorbell was lost are re-read within seconds.
        HITL_DOORBELL_SWEEP_SECONDS="2",
        HITL_DOORBELL_GRACE_SECONDS="2",
        HITL_HTTP_READ_TIMEOUT="3",
        HITL_LOG_LEVEL="WARNING",
    )
    return env


def media_allow_list(*ports: int) -> str:
    """The allow-list entries for media hosts on these loopback ports (``localhost`` may be either)."""
    return ",".join(f"127.0.0.1:{port},[::1]:{port}" for port in ports)


@dataclass
class Worker:
    queue: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_worker(*, queues: list[str], name: str, env: dict, workdir: Path, beat: bool, concurrency: int) -> Worker:
    """A real ``celery worker`` process consuming ``queues``; returns once it is ready."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "hitl_gateway",
                "worker",
                *(["-B", "-s", str(workdir / f"{name}-beat-schedule")] if beat else []),
                "-Q",
                ",".join(queues),
                f"--concurrency={concurrency}",
                "--loglevel=WARNING",
                "--without-gossip",
                "-n",
                f"{name}@%h",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(queue=queues[0], process=process, log_path=log_path)
    # "ready" is logged at INFO only: ask the worker itself (remote control ping) instead.
    from hitl_gateway.celery import app

    nodename = f"{name}@{socket.gethostname()}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"worker exited:\n{worker.log()}"
        if "ready" in worker.log() or app.control.ping(destination=[nodename], timeout=0.5):
            break
    return worker


def delete_queues(*queues: str) -> None:
    """Leave no test queue behind on the broker."""
    from hitl_gateway.celery import app

    with app.connection_for_write() as conn:
        for queue in queues:
            with contextlib.suppress(Exception):
                conn.default_channel.queue_delete(queue)


@pytest.fixture(scope="session")
def media_host():
    """A real media host on loopback, allow-listed for the worker (``tests.media_hosts``)."""
    from tests.media_hosts import MediaHost

    server = MediaHost().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory, make_httpserver, media_host):
    """A real worker process (with its embedded beat, which runs the outbox sweeper).

    It consumes a queue of its own, and the matching media queue, on the real broker and uses
    the test database. Media may be fetched from the test media hosts only.
    """
    from django.conf import settings
    from django.db import connection

    from hitl_gateway.celery import app

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("end-to-end tests need a real broker: set CELERY_BROKER_URL (make test does)")
    queue = f"hitl-test-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    settings.HITL["MEDIA_QUEUE"] = f"{queue}.media"
    with django_db_blocker.unblock():
        database_name = connection.settings_dict["NAME"]
    env = _worker_env(database_name, queue, media_allow=media_allow_list(make_httpserver.port, media_host.port))
    workdir = tmp_path_factory.mktemp("worker")
    worker = start_worker(
        queues=[queue, f"{queue}.media"], name=queue, env=env, workdir=workdir, beat=True, concurrency=2
    )
    yield worker
    worker.stop()
    delete_queues(queue, f"{queue}.media")


@dataclass
class Gateway:
    """The gateway as Botpress sees it: its base URL and an integration's credential."""

    url: str
    integration: object
    api_key: str
    botpress: object
    zendesk: object
    worker: Worker

    def action(self, name: str, body: dict, *, api_key: str | None = None) -> requests.Response:
        return requests.post(
            f"{self.url}/api/v1/integrations/{self.integration.pk}/actions/{name}",
            json=body,
            headers={"Authorization": f"Bearer {api_key or self.api_key}"},
            timeout=10,
        )

    def message(self, body: dict) -> requests.Response:
        return requests.post(
            f"{self.url}/api/v1/integrations/{self.integration.pk}/channels/hitl/messages",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )


def integration_for(*, botpress_url: str, zendesk_url: str, name: str = "Acme support"):
    from sessions_app.services.integrations import integration_create

    return integration_create(
        name=name,
        provider_base_url=zendesk_url,
        provider_credentials={"email": ZD_EMAIL, "api_token": ZD_TOKEN},
        botpress_api_url=botpress_url,
        botpress_token=BP_TOKEN,
        botpress_bot_id=BOT_ID,
        botpress_integration_id=BP_INTEGRATION_ID,
    )


@pytest.fixture
def gateway(transactional_db, live_server, celery_worker, botpress, zendesk, settings):
    """A live gateway wired to both stand-ins, with the Zendesk webhook and triggers installed."""
    from sessions_app.services.integrations import integration_webhook_install

    settings.PUBLIC_BASE_URL = live_server.url
    integration, api_key = integration_for(botpress_url=botpress.base_url, zendesk_url=zendesk.base_url)
    integration = integration_webhook_install(integration=integration)
    yield Gateway(
        url=live_server.url,
        integration=integration,
        api_key=api_key,
        botpress=botpress,
        zendesk=zendesk,
        worker=celery_worker,
    )
    _quiesce(zendesk)


def _quiesce(zendesk, timeout: float = 15.0) -> None:
    """Let the worker finish what is in flight, then park the rest, before the tables are flushed.

    The flush after each test truncates every table; a worker transaction still running then
    would deadlock with it.
    """
    from django.utils import timezone

    from sessions_app.models import Delivery, DeliveryStatus, WebhookEvent, WebhookStatus

    zendesk.wait_webhooks_idle(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = (
            WebhookEvent.objects.filter(status=WebhookStatus.ACCEPTED).exists()
            or Delivery.objects.filter(status=DeliveryStatus.PENDING, lease_until__gt=timezone.now()).exists()
        )
        if not busy:
            break
        time.sleep(0.05)
    Delivery.objects.filter(status=DeliveryStatus.PENDING).update(status=DeliveryStatus.SKIPPED)
    time.sleep(0.2)  # a task that read the rows just before the update finishes its step
