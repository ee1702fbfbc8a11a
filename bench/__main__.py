"""Benchmarks of the hot paths, each beside a reference measured in the same run.

The machine may be shared and noisy: read every figure against its same-run reference.

1. References: the health check (one SELECT 1 through the same web process) at 8 clients, and
   an INSERT loop (single-row INSERT commits, 8 clients, pgbench-like) straight at PostgreSQL.
2. Webhook acknowledgement (verify + one insert + hand-off) at 8 clients: rate and latency.
3. Relay throughput both ways: agent replies (Zendesk stand-in -> webhook -> Botpress) and bot
   messages (Botpress API -> Zendesk comments), each offered as fast as 8 clients can, counted
   from the first send to the last arrival at the receiving stand-in.
4. Relay delay (accepted -> arrived) at half those rates, both directions at once: p50/p99.
5. Outbound calls per relay, counted at the stand-ins (Botpress's own Zendesk integration makes
   six per agent reply).
6. The query plans of the relay engine's queries, written to ``artifacts/perf/plans.txt``.

Run with ``make bench`` (PostgreSQL + RabbitMQ, separate web/worker processes, no faults).
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import requests

from chaos.stack import ZD_EMAIL, ZD_TOKEN, Database, Session, Stack, log
from providers.zendesk.webhooks import signature_compute, trigger_body

# Botpress's Zendesk integration per agent comment (botpress-api.md C.1): list messages by tag
# (dedup), list users by tag, update user, get-or-create conversation, create message, plus
# the credentials state read; six runtime API calls.
BOTPRESS_ZENDESK_CALLS_PER_REPLY = 6
CLIENTS = 8
ROOT = Path(__file__).resolve().parent.parent
PLANS_PATH = ROOT / "artifacts" / "perf" / "plans.txt"


def percentiles(samples: list[float]) -> dict:
    if len(samples) < 2:
        return {"p50": None, "p99": None, "mean": None, "n": len(samples)}
    cuts = statistics.quantiles(samples, n=100)
    return {
        "p50": round(cuts[49], 2),
        "p99": round(cuts[98], 2),
        "mean": round(statistics.fmean(samples), 2),
        "n": len(samples),
    }


def hammer(count: int, call: Callable[[int, requests.Session], None], clients: int = CLIENTS) -> dict:
    """Run ``call(n, http)`` for n in range(count) from ``clients`` threads; rate and latency."""
    counter, latencies, lock = itertools.count(), [], threading.Lock()

    def client() -> None:
        http = requests.Session()
        mine = []
        while (n := next(counter)) < count:
            started = time.perf_counter()
            call(n, http)
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - started
    return {"per_s": round(count / elapsed, 1), "ms": percentiles(latencies)}


def insert_loop(database_url: str, seconds: float = 3.0, clients: int = CLIENTS) -> dict:
    """pgbench-like floor: single-row INSERT commits from ``clients`` connections."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_insert (id bigserial PRIMARY KEY, v int, at timestamptz)")
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while time.monotonic() < stop:
                conn.execute("INSERT INTO bench_insert (v, at) VALUES (%s, now())", (index,))
                counts[index] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE bench_insert")
    return {"per_s": round(sum(counts) / seconds, 1)}


def bench_health(stack: Stack, count: int) -> dict:
    url = f"{stack.gateway.url}/health/"
    return hammer(
        count, lambda n, http: http.get(url, headers={"Accept": "application/json"}, timeout=10).raise_for_status()
    )


def bench_ack(stack: Stack, secret: str, count: int) -> dict:
    """Signed webhooks straight at the ack path from 8 clients (each a new assignee: no dedup)."""
    url = f"{stack.gateway.url}/webhooks/zendesk/{stack.integration_id}/"
    # As Zendesk renders it for an assignment: no comment, so no attachments.
    template = re.sub(r"\[\{% for .*?\{% endfor %\}\]", "[]", trigger_body("ticketAssigned"))
    template = template.replace("{{ticket.id}}", "999999")
    offset = [10_000_000]

    def send(n: int, http: requests.Session) -> None:
        body = template.replace("{{ticket.assignee.id}}", str(offset[0] + n)).encode()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "Content-Type": "application/json",
            "X-Zendesk-Webhook-Invocation-Id": str(uuid.uuid4()),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
            "X-Zendesk-Webhook-Signature": signature_compute(secret=secret, timestamp=stamp, body=body),
        }
        http.post(url, data=body, headers=headers, timeout=10).raise_for_status()

    hammer(min(100, count), send)  # warm-up
    offset[0] += count
    return hammer(count, send)


def wait_idle(database_url: str, timeout: float = 300.0) -> float:
    """Wait until no webhook awaits applying and no delivery is pending; return the seconds waited."""
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() - started < timeout:
            busy = conn.execute(
                "SELECT (SELECT count(*) FROM sessions_app_webhookevent WHERE status = 'accepted')"
                " + (SELECT count(*) FROM sessions_app_delivery WHERE status = 'pending')"
            ).fetchone()[0]
            if not busy:
                break
            time.sleep(0.2)
    return round(time.monotonic() - started, 1)


def _arrivals(stack: Stack, markers: set[str]) -> dict[str, float]:
    """When each marker first arrived at its stand-in (2xx answers only)."""
    arrivals: dict[str, float] = {}
    for entry in (
        stack.botpress.requests_log()
        + stack.zendesk.requests_log(method="POST")
        + stack.zendesk.requests_log(method="PUT")
    ):
        body = entry.get("json") or {}
        if not isinstance(body, dict):
            continue
        text = (body.get("payload") or {}).get("text") or ((body.get("ticket") or {}).get("comment") or {}).get("body")
        if text in markers and 200 <= (entry.get("status") or 0) < 300:
            arrivals.setdefault(text, entry["timestamp"])
    return arrivals


def _wait_arrivals(stack: Stack, markers: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        arrivals = _arrivals(stack, markers)
        if len(arrivals) >= len(markers) or time.monotonic() > deadline:
            return arrivals
        time.sleep(0.5)


def _to_user(stack: Stack, session: Session, marker: str) -> None:
    stack.zendesk.agent_reply(session.ticket_id, session.agent_id, marker)


def _to_agent(stack: Stack, session: Session, marker: str) -> None:
    response = stack.post(
        "channels/hitl/messages",
        {
            "conversationId": session.conversation_id,
            "type": "text",
            "payload": {"text": marker, "userId": session.user_id},
        },
    )
    response.raise_for_status()


def offer(
    stack: Stack, sessions: list[Session], *, tag: str, rounds: int, directions: tuple[str, ...], rate: float | None
) -> tuple[dict[str, float], float]:
    """Send ``rounds`` messages per session and direction from 8 clients, paced to ``rate``
    messages/s in all when given. A session's messages go out from one client, in order."""
    sent: dict[str, float] = {}
    started = time.time()
    interval = 1 / rate if rate else 0.0
    jobs = [(round_, session, way) for round_ in range(rounds) for session in sessions for way in directions]
    lanes = [jobs[i::CLIENTS] for i in range(CLIENTS)]  # sessions % 8: one client per session

    def client(mine: list) -> None:
        for index, (round_, session, way) in enumerate(mine):
            if interval:  # paced: this client's share of the offered rate
                wait = started + index * interval * CLIENTS - time.time()
                if wait > 0:
                    time.sleep(wait)
            marker = f"{tag} s{session.index} {way}{round_}"
            sent[marker] = time.time()
            (_to_user if way == "u" else _to_agent)(stack, session, marker)

    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(client, mine) for mine in lanes]:
            future.result()
    return sent, started


def relay_throughput(stack: Stack, sessions: list[Session], rounds: int, way: str) -> dict:
    stack.botpress.clear_log()
    stack.zendesk.clear_log()
    sent, started = offer(stack, sessions, tag=f"tp-{way}", rounds=rounds, directions=(way,), rate=None)
    arrivals = _wait_arrivals(stack, set(sent), timeout=300)
    last = max(arrivals.values(), default=started)
    calls = (
        len(stack.botpress.requests_log())
        if way == "u"
        else len(stack.zendesk.requests_log(method="POST") + stack.zendesk.requests_log(method="PUT"))
    )
    return {
        "relayed": len(arrivals),
        "offered": len(sent),
        "per_s": round(len(arrivals) / max(last - started, 1e-3), 1),
        "calls_per_relay": round(calls / max(len(arrivals), 1), 2),
        "delay_ms": percentiles([(arrivals[m] - t) * 1000 for m, t in sent.items() if m in arrivals]),
    }


def relay_delay(stack: Stack, sessions: list[Session], rounds: int, rates: dict[str, float]) -> dict:
    """Both directions at once, each offered at half its measured throughput."""
    rate = min(rates.values()) / 2
    sent, _ = offer(stack, sessions, tag="half", rounds=rounds, directions=("u", "a"), rate=rate * 2)
    arrivals = _wait_arrivals(stack, set(sent), timeout=300)
    result = {"offered_per_s_each_way": round(rate, 1)}
    for way, name in (("u", "to_user"), ("a", "to_agent")):
        mine = {m: t for m, t in sent.items() if f" {way}" in m}
        delays = [(arrivals[m] - t) * 1000 for m, t in mine.items() if m in arrivals]
        result[name] = {"relayed": len(delays), "offered": len(mine), "delay_ms": percentiles(delays)}
    return result


def relay_cost(stack: Stack, session: Session, secret: str) -> dict:
    """SQL statements per relay, stage by stage, and the plan of each, from real engine calls.

    The workers are stopped first; this process then plays the worker (and, for the ack, the web
    process) on the run's data, with the broker hand-off disabled. Every statement is EXPLAINed
    into ``PLANS_PATH``.
    """
    wait_idle(stack.gateway.env["DATABASE_URL"])
    for worker in stack.gateway.worker_procs:
        worker.stop()
    os.environ.update(stack.gateway.env)  # this process becomes one more gateway process
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitl_gateway.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from sessions_app.models import Delivery, DeliveryStatus, WebhookEvent, WebhookStatus
    from sessions_app.services import outbox, webhooks

    outbox.delivery_schedule = lambda **kwargs: None
    webhooks.webhook_schedule = lambda **kwargs: None
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    stages: dict[str, list[str]] = {}

    def capture(stage: str, call: Callable[[], object]) -> None:
        with CaptureQueriesContext(connection) as captured:
            call()
        stages[stage] = [query["sql"] for query in captured.captured_queries]

    # Agent reply: the ack (in-process), then the worker's two stages. The agent as the stand-in
    # names them (``Stack.wait_tickets``), so no profile change costs extra statements.
    n = session.index % 10
    agent = {
        "id": str(session.agent_id),
        "name": f"Agent {n}",
        "email": f"agent{n}@acme.test",
        "role": "agent",
        "remote_photo_url": "",
    }
    body = json.dumps(
        {
            "type": "newMessage",
            "ticketId": str(session.ticket_id),
            "externalId": session.conversation_id,
            "status": "open",
            "commentId": "777000001",
            "comment": "<p>cost</p>",
            "attachments": [],
            "agent": agent,
            "currentUser": agent,
        }
    ).encode()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {
        "content-type": "application/json",
        "x-zendesk-webhook-invocation-id": str(uuid.uuid4()),
        "x-zendesk-webhook-signature-timestamp": stamp,
        "x-zendesk-webhook-signature": signature_compute(secret=secret, timestamp=stamp, body=body),
    }
    capture(
        "agent_reply_ack",
        lambda: webhooks.webhook_receive(
            integration_id=stack.integration_id, provider="zendesk", headers=headers, body=body, remote_addr=None
        ),
    )
    event = WebhookEvent.objects.filter(status=WebhookStatus.ACCEPTED).order_by("-id").first()
    if event is None:
        raise RuntimeError(f"the cost probe's webhook was not accepted: {WebhookEvent.objects.first()}")
    capture("agent_reply_apply", lambda: webhooks.webhook_queue_drain(webhook_event_id=event.pk))
    pending = Delivery.objects.filter(status=DeliveryStatus.PENDING).order_by("id").first()
    capture("agent_reply_deliver", lambda: outbox.lane_drain(delivery_id=pending.pk))
    # Bot message: the web process wrote the row (its ack is the API call); the worker delivers it.
    _to_agent(stack, session, "cost bot message")
    pending = Delivery.objects.filter(status=DeliveryStatus.PENDING).order_by("id").first()
    capture("bot_message_deliver", lambda: outbox.lane_drain(delivery_id=pending.pk) if pending else None)
    capture(
        "sweep",
        lambda: (
            outbox.outbox_sweep(schedule=lambda **kwargs: None),
            webhooks.webhook_events_sweep(older_than_seconds=0),
        ),
    )
    lines = []
    with connection.cursor() as cursor:
        for stage, statements in stages.items():
            lines.append(f"===== {stage}: {len(statements)} statements")
            for sql in statements:
                if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH")):
                    cursor.execute(f"EXPLAIN {sql}")
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                else:
                    plan = "(not a plannable statement)"
                lines.append(f"-- {sql}\n{plan}\n")
    PLANS_PATH.parent.mkdir(parents=True, exist_ok=True)
    PLANS_PATH.write_text("\n".join(lines))
    return {"statements": {stage: len(statements) for stage, statements in stages.items()}, "plans": str(PLANS_PATH)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--acks", type=int, default=2000, help="signed webhooks sent at the ack path")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=100, help="messages per session and direction")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (concurrency 2 each)")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument(
        "--broker-url", default=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    )
    options = parser.parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="hitl-bench-"))
    result: dict = {}
    with Database(options.database_url) as database:
        stack = Stack(
            database_url=database.url,
            broker_url=options.broker_url,
            work_dir=work_dir,
            workers=options.workers,
            env={"HITL_SWEEP_SECONDS": "5"},
            webhook_senders=CLIENTS,
        )
        try:
            stack.start()
            webhook_id = stack.zendesk.webhooks()[0]["id"]
            secret = requests.get(  # what Zendesk signs with, read as an admin would
                f"{stack.zendesk.base_url}/api/v2/webhooks/{webhook_id}/signing_secret",
                auth=(f"{ZD_EMAIL}/token", ZD_TOKEN),
                timeout=10,
            ).json()["signing_secret"]["secret"]
            log("references: INSERT loop and health check, 8 clients")
            result["ref_insert"] = insert_loop(database.url)
            result["ref_health"] = bench_health(stack, options.acks)
            log(f"INSERT loop {result['ref_insert']}, health {result['ref_health']}")
            log(f"ack path: {options.acks} signed webhooks, 8 clients")
            result["ack"] = bench_ack(stack, secret, options.acks)
            result["ack_over_health_rate"] = round(result["ack"]["per_s"] / result["ref_health"]["per_s"], 2)
            log(f"ack {result['ack']} vs health {result['ref_health']}")
            result["ack_backlog_applied_s"] = wait_idle(database.url)  # the worker's share of the acks
            log(f"acknowledged webhooks applied {result['ack_backlog_applied_s']} s after the last ack")
            sessions = [Session(index=i) for i in range(options.sessions)]
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(stack.open_session, sessions))
            stack.wait_tickets(sessions, timeout=600)
            for session in sessions:  # warm-up: each agent's first reply creates their Botpress user
                stack.zendesk.agent_reply(session.ticket_id, session.agent_id, f"warm-up {session.index}")
            stack.botpress.wait_for(lambda: len(stack.botpress.messages()) >= len(sessions), timeout=120)
            total = options.sessions * options.rounds
            log(f"relay throughput: {total} agent replies, then {total} bot messages, 8 clients")
            result["to_user"] = relay_throughput(stack, sessions, options.rounds, "u")
            log(f"to user {result['to_user']}")
            result["to_agent"] = relay_throughput(stack, sessions, options.rounds, "a")
            log(f"to agent {result['to_agent']}")
            half_rounds = max(2, options.rounds // 2)
            result["half_rate_both_ways"] = relay_delay(
                stack,
                sessions,
                half_rounds,
                {"u": result["to_user"]["per_s"], "a": result["to_agent"]["per_s"]},
            )
            log(f"half rate {result['half_rate_both_ways']}")
            result["botpress_zendesk_integration_calls_per_reply"] = BOTPRESS_ZENDESK_CALLS_PER_REPLY
            result["relay_cost"] = relay_cost(stack, sessions[0], secret)
            log(f"SQL statements per relay stage {result['relay_cost']['statements']}; plans: {PLANS_PATH}")
        finally:
            stack.stop()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
