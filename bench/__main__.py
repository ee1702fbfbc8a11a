"""Benchmarks of the hot paths, each beside a reference measured in the same run.

The machine may be shared and noisy: read every figure against its same-run reference.

1. References: a bare WSGI "hello" under gunicorn with the gateway's flags (the web tier's
   ceiling), the health check (through Django, with its checks) and an INSERT loop
   (single-row INSERT commits, 8 clients, pgbench-like) straight at PostgreSQL (the floor of
   any durable hand-off).
2. Webhook acknowledgement (verify + one insert) at 8 clients: rate and latency.
3. Relay throughput: agent replies (Zendesk stand-in -> webhook -> Botpress) and bot messages
   (Botpress API -> Zendesk comments), each offered as fast as 8 clients can, then both at
   once, counted from the first send to the last arrival at the receiving stand-in.
4. Relay delay (accepted -> arrived), p50/p99: each direction on its own at half its own rate
   (the issue's goal), then both at once, each at half the slower rate.
5. Scale-out: the relay throughput again with 1, 2 and 4 worker processes.
6. Flat cost: ``--seed-sessions`` open sessions and ``--seed-messages`` stored messages (with
   their deliveries and webhooks) added by bulk SQL, then the ack and relay figures again,
   as ratios to those measured before.
7. Outbound calls per relay, counted at the stand-ins (Botpress's own Zendesk integration makes
   six per agent reply), SQL statements per relay stage, and the plan of every statement,
   written to ``artifacts/perf/plans.txt``.

Run with ``make bench`` (PostgreSQL + RabbitMQ, separate web/worker processes, no faults;
``BENCH_ARGS="--rounds 20 --seed-messages 100000"`` for a shorter run). The last line is one
JSON object with every figure; ``goals`` checks them against issue 16's targets.
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
from psycopg import sql

from chaos.processes import Process
from chaos.stack import ZD_EMAIL, ZD_TOKEN, Database, Session, Stack, free_port, log
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

    errors: list[str] = []

    def client() -> None:
        http = requests.Session()
        mine = []
        while (n := next(counter)) < count:
            started = time.perf_counter()
            try:
                call(n, http)
            except requests.RequestException as exc:  # counted, not fatal: a shared machine hiccups
                errors.append(type(exc).__name__)
                continue
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - started
    return {"per_s": round(len(latencies) / elapsed, 1), "ms": percentiles(latencies), "errors": len(errors)}


def connect(database_url: str, attempts: int = 30) -> psycopg.Connection:
    """A connection, waiting out "too many clients" (other runs on a shared server)."""
    for attempt in range(attempts):
        try:
            return psycopg.connect(database_url, autocommit=True)
        except psycopg.OperationalError as exc:
            if "too many clients" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def insert_loop(database_url: str, seconds: float = 3.0, clients: int = CLIENTS) -> dict:
    """pgbench-like floor: single-row INSERT commits from ``clients`` connections."""
    with connect(database_url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_insert (id bigserial PRIMARY KEY, v int, at timestamptz)")
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        with connect(database_url) as conn:
            while time.monotonic() < stop:
                conn.execute("INSERT INTO bench_insert (v, at) VALUES (%s, now())", (index,))
                counts[index] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    with connect(database_url) as conn:
        conn.execute("DROP TABLE bench_insert")
    return {"per_s": round(sum(counts) / seconds, 1)}


def bench_hello(stack: Stack, count: int) -> dict:
    """The same gunicorn flags serving ``bench.hello``: the web tier's own ceiling."""
    port = free_port()
    hello = Process(
        "hello", stack.gateway.web_argv("bench.hello:app", port), stack.gateway.env, stack.gateway.log_dir / "hello.log"
    )
    hello.start()
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url, timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        body = b"x" * 600  # about a webhook's size
        groups = {"web": {hello.popen.pid}}
        before = cpu_seconds(groups)
        result = hammer(count, lambda n, http: http.post(url, data=body, timeout=10).raise_for_status())
        return result | {"cpu_ms_per_request": cpu_per_relay(before, cpu_seconds(groups), count)}
    finally:
        hello.stop()


def bench_health(stack: Stack, count: int) -> dict:
    url = f"{stack.gateway.url}/health/"
    return hammer(
        count, lambda n, http: http.get(url, headers={"Accept": "application/json"}, timeout=10).raise_for_status()
    )


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    """A Zendesk webhook's headers for ``body``: a fresh invocation id, signed now."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "content-type": "application/json",
        "x-zendesk-webhook-invocation-id": str(uuid.uuid4()),
        "x-zendesk-webhook-signature-timestamp": stamp,
        "x-zendesk-webhook-signature": signature_compute(secret=secret, timestamp=stamp, body=body),
    }


def bench_ack(stack: Stack, secret: str, count: int) -> dict:
    """Signed webhooks straight at the ack path from 8 clients (each a new assignee: no dedup)."""
    url = f"{stack.gateway.url}/webhooks/zendesk/{stack.integration_id}/"
    # As Zendesk renders it for an assignment: no comment, so no attachments.
    template = re.sub(r"\[\{% for .*?\{% endfor %\}\]", "[]", trigger_body("ticketAssigned"))
    template = template.replace("{{ticket.id}}", "999999")
    offset = [10_000_000]

    def send(n: int, http: requests.Session) -> None:
        body = template.replace("{{ticket.assignee.id}}", str(offset[0] + n)).encode()
        http.post(url, data=body, headers=signed_headers(secret, body), timeout=10).raise_for_status()

    hammer(min(100, count), send)  # warm-up
    offset[0] += count
    before = cpu_seconds(gateway_groups(stack))
    result = hammer(count, send)
    # The workers apply the acknowledged webhooks meanwhile: their share is not the ack's.
    return result | {"cpu_ms_per_request": cpu_per_relay(before, cpu_seconds(gateway_groups(stack)), count)}


def wait_idle(database_url: str, timeout: float = 300.0) -> float:
    """Wait until no webhook awaits applying and no delivery is pending; return the seconds waited."""
    started = time.monotonic()
    with connect(database_url) as conn:
        while time.monotonic() - started < timeout:
            busy = conn.execute(
                "SELECT (SELECT count(*) FROM sessions_app_webhookevent WHERE status = 'accepted')"
                " + (SELECT count(*) FROM sessions_app_delivery WHERE status = 'pending')"
            ).fetchone()[0]
            if not busy:
                break
            time.sleep(0.2)
    return round(time.monotonic() - started, 1)


def _wait_arrivals(stack: Stack, markers: set[str], timeout: float) -> dict[str, float]:
    """When each marker first arrived at its stand-in (2xx answers only: a Botpress message's
    text, a Zendesk comment's body), once all have or ``timeout`` seconds passed. Each look
    reads only the log entries that are new since the last one."""
    deadline = time.monotonic() + timeout
    arrivals: dict[str, float] = {}
    positions = {stack.botpress: 0, stack.zendesk: 0}  # the entries before are answered and read
    while True:
        for server, position in positions.items():
            entries = server.requests_log(start=position)
            answered = next((n for n, entry in enumerate(entries) if entry["status"] is None), len(entries))
            positions[server] = position + answered  # an unanswered entry is read again next time
            for entry in entries:
                body = entry.get("json") or {}
                if not isinstance(body, dict):
                    continue
                payload, ticket = body.get("payload") or {}, body.get("ticket") or {}
                text = payload.get("text") or (ticket.get("comment") or {}).get("body")
                if text in markers and 200 <= (entry.get("status") or 0) < 300:
                    arrivals.setdefault(text, entry["timestamp"])
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
            # Botpress names every message it hands an integration; the gateway dedups by it.
            "messageId": "msg_" + marker.replace(" ", "_"),
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


TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> list[tuple[int, str, int, float, float]]:
    """Every process as ``(pid, comm, pgrp, own CPU s, reaped children's CPU s)`` from /proc."""
    rows = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:  # it ended meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state) of proc(5)
        own = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        reaped = (int(fields[13]) + int(fields[14])) / TICKS  # cutime + cstime
        rows.append((int(entry), comm, int(fields[2]), own, reaped))
    return rows


def gateway_groups(stack: Stack) -> dict[str, set[int]]:
    """The gateway's process groups by part: web (gunicorn) and workers (with beat)."""
    gateway = stack.gateway
    return {"web": {gateway.web.popen.pid}, "workers": {p.popen.pid for p in [*gateway.worker_procs, gateway.beat]}}


def cpu_seconds(groups: dict[str, set[int]]) -> dict[str, float]:
    """CPU seconds used so far, by part of the run: this process (the driver and the stand-ins,
    all in one interpreter), each named set of process groups, and PostgreSQL (every server
    process: the machine's other databases count too, so read it on a quiet machine). A
    process group's children that ended count through their parent."""
    own = os.times()
    totals = {"driver_and_standins": own.user + own.system, **dict.fromkeys(groups, 0.0), "postgres": 0.0}
    for pid, comm, pgrp, mine, reaped in _proc_stats():
        if pid == os.getpid():
            continue
        if comm.startswith("postgres"):
            totals["postgres"] += mine + reaped
        for name, pgrps in groups.items():
            if pgrp in pgrps:
                totals[name] += mine + reaped
    return totals


def cpu_per_relay(before: dict[str, float], after: dict[str, float], relays: int) -> dict:
    """CPU milliseconds per relay (or request) by part, their total, and the rate the machine's
    cores could carry at that cost (``ceiling_per_s``: cores / total CPU per relay), the bound
    any engine on this machine with these stand-ins meets."""
    per = {name: round(1000 * (after[name] - before[name]) / max(relays, 1), 2) for name in after}
    per["total"] = round(sum(per.values()), 2)
    per["ceiling_per_s"] = round((os.cpu_count() or 1) * 1000 / max(per["total"], 1e-3), 1)
    return per


def cpu_times() -> tuple[float, float]:
    """(busy, all) jiffies of every core since boot, from /proc/stat's ``cpu`` line."""
    with open("/proc/stat") as file:
        values = [float(v) for v in file.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values) - idle, sum(values)


def machine_busy(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of the machine's cores that was busy between two ``cpu_times`` (1.0: saturated),
    whoever used them (the gateway, PostgreSQL, the broker, the bench, other tenants)."""
    return round((after[0] - before[0]) / max(after[1] - before[1], 1e-9), 3)


def relay_throughput(stack: Stack, sessions: list[Session], rounds: int, ways: str, tag: str = "tp") -> dict:
    """Offer ``rounds`` messages per session in each direction of ``ways`` ("u" to the end
    user, "a" to the agent, "ua" both at once) from 8 clients, as fast as they go."""
    stack.botpress.clear_log()
    stack.zendesk.clear_log()
    cpu_before, machine_before = cpu_seconds(gateway_groups(stack)), cpu_times()
    sent, started = offer(stack, sessions, tag=f"{tag}-{ways}", rounds=rounds, directions=tuple(ways), rate=None)
    arrivals = _wait_arrivals(stack, set(sent), timeout=300)
    cpu_after = cpu_seconds(gateway_groups(stack))  # includes up to 0.5 s of polling after the last arrival
    busy = machine_busy(machine_before, cpu_times())
    last = max(arrivals.values(), default=started)
    calls = {
        "u": len(stack.botpress.requests_log()),
        "a": len(stack.zendesk.requests_log(method="POST") + stack.zendesk.requests_log(method="PUT")),
    }
    result = {
        "relayed": len(arrivals),
        "offered": len(sent),
        "per_s": round(len(arrivals) / max(last - started, 1e-3), 1),
        "delay_ms": percentiles([(arrivals[m] - t) * 1000 for m, t in sent.items() if m in arrivals]),
        "cpu_ms_per_relay": cpu_per_relay(cpu_before, cpu_after, len(arrivals)),
        "machine_busy": busy,
    }
    if len(ways) == 1:
        result["calls_per_relay"] = round(calls[ways] / max(len(arrivals), 1), 2)
    else:
        for way in ways:
            mine = [m for m in arrivals if f" {way}" in m]
            result[f"{way}_per_s"] = round(len(mine) / max(last - started, 1e-3), 1)
    return result


def relay_delay(stack: Stack, sessions: list[Session], rounds: int, rates: dict[str, float], tag: str) -> dict:
    """The delay of each direction in ``rates`` ("u", "a"), offered at once, each at its rate
    (messages/s; equal rates when both)."""
    ways = tuple(rates)
    cpu_before = cpu_seconds(gateway_groups(stack))
    sent, _ = offer(stack, sessions, tag=tag, rounds=rounds, directions=ways, rate=sum(rates.values()))
    arrivals = _wait_arrivals(stack, set(sent), timeout=300)
    # At a rate the relay keeps up with, its work comes in gaps: what that costs, tasks included.
    result: dict = {"cpu_ms_per_relay": cpu_per_relay(cpu_before, cpu_seconds(gateway_groups(stack)), len(arrivals))}
    for way, name in (("u", "to_user"), ("a", "to_agent")):
        if way not in ways:
            continue
        mine = {m: t for m, t in sent.items() if f" {way}" in m}
        delays = [(arrivals[m] - t) * 1000 for m, t in mine.items() if m in arrivals]
        result[name] = {
            "offered_per_s": round(rates[way], 1),
            "relayed": len(delays),
            "offered": len(mine),
            "delay_ms": percentiles(delays),
        }
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

    def ack(comment_id: str) -> None:
        body = json.dumps(
            {
                "type": "newMessage",
                "ticketId": str(session.ticket_id),
                "externalId": session.conversation_id,
                "status": "open",
                "commentId": comment_id,
                "comment": "<p>cost</p>",
                "attachments": [],
                "agent": agent,
                "currentUser": agent,
            }
        ).encode()
        webhooks.webhook_receive(
            integration_id=stack.integration_id,
            provider="zendesk",
            headers=signed_headers(secret, body),
            body=body,
            remote_addr=None,
        )

    capture("agent_reply_ack", lambda: ack("777000001"))
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
    # A ticket's queue under load: its webhooks are applied in batches (``webhooks.APPLY_BATCH``).
    batch = webhooks.APPLY_BATCH
    for n in range(batch):
        ack(str(777000100 + n))
    head = WebhookEvent.objects.filter(status=WebhookStatus.ACCEPTED).order_by("id").first()
    capture(f"agent_reply_apply_{batch}_queued", lambda: webhooks.webhook_queue_drain(webhook_event_id=head.pk))
    pending = Delivery.objects.filter(status=DeliveryStatus.PENDING).order_by("id").first()
    if pending:
        outbox.lane_drain(delivery_id=pending.pk)
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
    counts = {stage: len(statements) for stage, statements in stages.items()}
    counts[f"agent_reply_apply_per_webhook_of_{batch}_queued"] = round(
        counts[f"agent_reply_apply_{batch}_queued"] / batch, 2
    )
    return {"statements": counts, "plans": str(PLANS_PATH)}


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [row[0] for row in rows]


def _clone(conn: psycopg.Connection, table: str, *, template: str, source: str, overrides: dict[str, str]) -> int:
    """INSERT one row per row of ``source``, each a copy of the ``template`` row (alias ``t``)
    with ``overrides`` (column -> SQL expression); ``id`` comes from its identity."""
    columns = [c for c in _columns(conn, table) if c != "id" or "id" in overrides]
    values = [sql.SQL(overrides[c]) if c in overrides else sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns]
    statement = sql.SQL("INSERT INTO {table} ({columns}) SELECT {values} FROM ({template}) t, {source}").format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(values),
        template=sql.SQL(template),
        source=sql.SQL(source),
    )
    return conn.execute(statement).rowcount


def seed(database_url: str, *, sessions: int, messages: int) -> dict:
    """Add ``sessions`` open sessions (user, ticket) and ``messages`` stored messages spread over
    them, each message with its succeeded delivery and every other one with its processed
    webhook: copies of rows this run made, by ``INSERT ... SELECT ... generate_series``."""
    started = time.monotonic()
    per = max(1, messages // max(sessions, 1))
    seeded = "SELECT id AS sid FROM sessions_app_hitlsession WHERE botpress_conversation_id LIKE 'seed-c-%'"
    with connect(database_url) as conn:
        conn.execute("SET synchronous_commit = off")
        _clone(
            conn,
            "sessions_app_enduser",
            template="SELECT * FROM sessions_app_enduser ORDER BY id LIMIT 1",
            source=f"generate_series(1, {int(sessions)}) g",
            overrides={"botpress_user_id": "'seed-u-' || g", "email": "'seed' || g || '@bench.test'"},
        )
        _clone(
            conn,
            "sessions_app_hitlsession",
            template="SELECT * FROM sessions_app_hitlsession WHERE status <> 'stopped' ORDER BY created_at LIMIT 1",
            source="(SELECT id AS eu, botpress_user_id AS bu FROM sessions_app_enduser "
            "WHERE botpress_user_id LIKE 'seed-u-%') u",
            overrides={
                "id": "gen_random_uuid()",
                "botpress_conversation_id": "'seed-c-' || u.bu",
                "end_user_id": "u.eu",
            },
        )
        _clone(
            conn,
            "sessions_app_ticket",
            template="SELECT * FROM sessions_app_ticket ORDER BY id LIMIT 1",
            source=f"({seeded}) s",
            overrides={"session_id": "s.sid", "external_id": "'seed-t-' || s.sid"},
        )
        _clone(
            conn,
            "sessions_app_message",
            template="SELECT * FROM sessions_app_message WHERE direction = 'to_user' ORDER BY id LIMIT 1",
            source=f"({seeded}) s, generate_series(1, {per}) g",
            overrides={
                "session_id": "s.sid",
                "direction": "CASE WHEN g % 2 = 0 THEN 'to_user' ELSE 'to_agent' END",
                "botpress_message_id": "''",
                "external_message_id": "''",
                "created_at": "now() - interval '1 day' + g * interval '1 second'",
            },
        )
        seeded_messages = "SELECT m.id AS mid, m.session_id AS sid, m.direction AS dir FROM sessions_app_message m " + (
            "JOIN sessions_app_hitlsession h ON h.id = m.session_id WHERE h.botpress_conversation_id LIKE 'seed-c-%'"
        )
        _clone(
            conn,
            "sessions_app_delivery",
            template="SELECT * FROM sessions_app_delivery WHERE status = 'succeeded' AND message_id IS NOT NULL"
            " ORDER BY id LIMIT 1",
            source=f"({seeded_messages}) m",
            overrides={
                "message_id": "m.mid",
                "session_id": "m.sid",
                "direction": "m.dir",
                "lane": "m.dir || ':' || m.sid",
                "idempotency_key": "gen_random_uuid()",
            },
        )
        _clone(
            conn,
            "sessions_app_webhookevent",
            template="SELECT * FROM sessions_app_webhookevent WHERE status = 'processed' ORDER BY id LIMIT 1",
            source=f"({seeded_messages}) m",
            overrides={
                "dedup_key": "'seed-' || m.mid",
                "replay_key": "NULL",
                "session_id": "m.sid",
                "ticket_external_id": "'seed-t-' || m.sid",
            },
        )
        conn.execute("ANALYZE")
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM sessions_app_hitlsession WHERE status NOT IN ('stopped')),"
            " (SELECT count(*) FROM sessions_app_message), (SELECT count(*) FROM sessions_app_delivery),"
            " (SELECT count(*) FROM sessions_app_webhookevent)"
        ).fetchone()
    return {
        "open_sessions": counts[0],
        "messages": counts[1],
        "deliveries": counts[2],
        "webhooks": counts[3],
        "seed_s": round(time.monotonic() - started, 1),
    }


def goals(result: dict) -> dict:
    """Issue 16's targets, each true or false in this run (meaningful on a quiet machine)."""
    half = result.get("half_rate", {})
    flat = result.get("flat_cost", {}).get("ratios", {})
    checks = {
        "ack_per_s>=700": result["ack"]["per_s"] >= 700,
        "ack_p99_ms<=20": (result["ack"]["ms"]["p99"] or 1e9) <= 20,
        "to_user_per_s>=400": result["to_user"]["per_s"] >= 400,
        "to_agent_per_s>=400": result["to_agent"]["per_s"] >= 400,
        "half_rate_to_user_p99_ms<=250": (half.get("to_user", {}).get("delay_ms", {}).get("p99") or 1e9) <= 250,
        "half_rate_to_agent_p99_ms<=250": (half.get("to_agent", {}).get("delay_ms", {}).get("p99") or 1e9) <= 250,
    }
    if flat:
        checks["flat_cost_within_10%"] = all(ratio >= 0.9 for ratio in flat.values())
    if scale := result.get("scale_out"):
        rates = [scale[k]["per_s"] for k in sorted(scale, key=int)]
        checks["scale_out_rises"] = all(b >= a * 0.95 for a, b in itertools.pairwise(rates))
        # The goal's proviso ("until the machine saturates"): where it fell, were the cores
        # already busy (≥ 90 %) with fewer processes?
        busy = [scale[k].get("machine_busy", 0.0) for k in sorted(scale, key=int)]
        checks["scale_out_rises_until_saturated"] = all(
            b >= a * 0.95 or busy_a >= 0.9 for (a, b), busy_a in zip(itertools.pairwise(rates), busy, strict=False)
        )
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--acks", type=int, default=2000, help="signed webhooks sent at the ack path")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=100, help="messages per session and direction")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes for the main figures")
    parser.add_argument("--scale", default="1,2,4", help="worker process counts of the scale-out runs ('' skips)")
    parser.add_argument("--scale-rounds", type=int, default=25, help="rounds per scale-out run (both ways at once)")
    parser.add_argument("--seed-sessions", type=int, default=10_000, help="open sessions added for the flat-cost run")
    parser.add_argument("--seed-messages", type=int, default=1_000_000, help="stored messages added (0 skips)")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument(
        "--broker-url", default=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    )
    options = parser.parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="hitl-bench-"))
    began = time.monotonic()
    result: dict = {"machine": {"cpus": os.cpu_count(), "load_1m_at_start": round(os.getloadavg()[0], 1)}}
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
            log("references: INSERT loop, hello and health, 8 clients")
            result["ref_insert"] = insert_loop(database.url)
            result["ref_hello"] = bench_hello(stack, options.acks)
            result["ref_health"] = bench_health(stack, options.acks)
            log(f"INSERT loop {result['ref_insert']}, hello {result['ref_hello']}, health {result['ref_health']}")
            log(f"ack path: {options.acks} signed webhooks, 8 clients")
            result["ack"] = bench_ack(stack, secret, options.acks)
            result["ack_over_hello_rate"] = round(result["ack"]["per_s"] / result["ref_hello"]["per_s"], 2)
            result["ack_over_health_rate"] = round(result["ack"]["per_s"] / result["ref_health"]["per_s"], 2)
            log(f"ack {result['ack']} vs hello {result['ref_hello']}")
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
            log(f"relay throughput: {total} agent replies, {total} bot messages, then {2 * total} both ways")
            result["to_user"] = relay_throughput(stack, sessions, options.rounds, "u")
            log(f"to user {result['to_user']}")
            result["to_agent"] = relay_throughput(stack, sessions, options.rounds, "a")
            log(f"to agent {result['to_agent']}")
            result["both_ways"] = relay_throughput(stack, sessions, options.rounds, "ua")
            log(f"both ways {result['both_ways']}")
            result["both_ways_over_separate"] = round(
                result["both_ways"]["per_s"] / (2 / (1 / result["to_user"]["per_s"] + 1 / result["to_agent"]["per_s"])),
                2,
            )
            # The half rate: each direction on its own at half its own rate; then both
            # at once, each at half the slower one (together about the both-ways capacity).
            half_rounds = max(2, options.rounds // 2)
            result["half_rate"] = {}
            for way, name in (("u", "to_user"), ("a", "to_agent")):
                alone = relay_delay(stack, sessions, half_rounds, {way: result[name]["per_s"] / 2}, tag=f"half-{way}")
                result["half_rate"][name] = alone[name] | {"cpu_ms_per_relay": alone["cpu_ms_per_relay"]}
            log(f"half rate, each way alone {result['half_rate']}")
            slower = min(result["to_user"]["per_s"], result["to_agent"]["per_s"]) / 2
            result["half_rate_both_ways"] = relay_delay(
                stack, sessions, half_rounds, {"u": slower, "a": slower}, tag="half-ua"
            )
            log(f"half rate, both ways at once {result['half_rate_both_ways']}")
            result["to_user_over_hello_rate"] = round(result["to_user"]["per_s"] / result["ref_hello"]["per_s"], 3)
            result["to_agent_over_hello_rate"] = round(result["to_agent"]["per_s"] / result["ref_hello"]["per_s"], 3)
            scale_counts = [int(n) for n in options.scale.split(",") if n.strip()]
            if scale_counts:
                result["scale_out"] = {}
                for count in scale_counts:
                    stack.gateway.workers_scale(count)
                    wait_workers(stack, count)
                    figure = relay_throughput(stack, sessions, options.scale_rounds, "ua", tag=f"scale{count}")
                    result["scale_out"][str(count)] = {
                        key: figure[key] for key in ("per_s", "relayed", "machine_busy")
                    } | {"cpu_ms_per_relay": figure["cpu_ms_per_relay"]["total"]}
                    log(f"scale-out {count} worker processes: {figure}")
                stack.gateway.workers_scale(options.workers)
                wait_workers(stack, options.workers)
            if options.seed_messages:
                log(f"flat cost: seeding {options.seed_sessions} sessions and {options.seed_messages} messages")
                flat: dict = {
                    "seeded": seed(database.url, sessions=options.seed_sessions, messages=options.seed_messages)
                }
                log(f"seeded {flat['seeded']}")
                flat["ack"] = bench_ack(stack, secret, options.acks)
                wait_idle(database.url)
                flat["to_user"] = relay_throughput(stack, sessions, options.rounds, "u", tag="flat")
                flat["to_agent"] = relay_throughput(stack, sessions, options.rounds, "a", tag="flat")
                flat["ratios"] = {
                    name: round(flat[name]["per_s"] / result[name]["per_s"], 2)
                    for name in ("ack", "to_user", "to_agent")
                }
                flat["ratios"]["ack_p99"] = round(result["ack"]["ms"]["p99"] / max(flat["ack"]["ms"]["p99"], 1e-3), 2)
                result["flat_cost"] = flat
                log(f"flat cost {flat}")
            result["botpress_zendesk_integration_calls_per_reply"] = BOTPRESS_ZENDESK_CALLS_PER_REPLY
            result["relay_cost"] = relay_cost(stack, sessions[0], secret)
            log(f"SQL statements per relay stage {result['relay_cost']['statements']}; plans: {PLANS_PATH}")
        finally:
            stack.stop()
    result["goals"] = goals(result)
    result["machine"]["load_1m_at_end"] = round(os.getloadavg()[0], 1)
    result["elapsed_s"] = round(time.monotonic() - began, 1)
    print(json.dumps(result), flush=True)
    return 0


def wait_workers(stack: Stack, count: int, timeout: float = 120.0) -> None:
    """Wait until ``count`` workers answer a ping on the run's broker."""
    from celery import Celery  # a bare client: the project's app would load Django settings here

    with Celery(broker=stack.gateway.env["CELERY_BROKER_URL"]) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = client.control.ping(timeout=1.0) or []
            mine = [r for r in replies if any(name.startswith("chaos") and f"-{os.getpid()}@" in name for name in r)]
            if len(mine) >= count:
                return
    log(f"only some of {count} workers answered within {timeout:.0f} s; measuring anyway")


if __name__ == "__main__":
    sys.exit(main())
