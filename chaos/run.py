"""The chaos run: many concurrent sessions, messages both ways, faults everywhere, crashes.

Everything is counted at the receiving stand-ins (the help desk's ticket messages, Botpress
messages), never
from the gateway's own records: a message is *lost* if it never arrives, *duplicated* if it
arrives twice, *out of order* if it arrives before one sent earlier in its session and direction.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from chaos.desks import DESKS
from chaos.stack import Database, Session, Stack, log

# Short timeouts, backoffs and lease, so a crash costs seconds, not minutes, in a run.
CHAOS_ENV = {
    "HITL_HTTP_CONNECT_TIMEOUT": "2",
    "HITL_HTTP_READ_TIMEOUT": "2",
    "HITL_DELIVERY_BACKOFF_BASE_SECONDS": "0.3",
    "HITL_DELIVERY_BACKOFF_MAX_SECONDS": "3",
    "HITL_DELIVERY_STALE_SECONDS": "3",
    "HITL_SWEEP_SECONDS": "1",
    "HITL_TASK_TIME_LIMIT": "15",
    "HITL_DELIVERY_LEASE_SECONDS": "20",
    # Doorbell desks: the sweep lists changed tickets every 15 s and re-reads at most 20 a run,
    # so a doorbell lost during the web restart costs seconds, not the desk's next retry.
    "HITL_DOORBELL_SWEEP_SECONDS": "15",
    "HITL_DOORBELL_GRACE_SECONDS": "5",
    "HITL_DOORBELL_REREAD_CAP": "20",
}
MARKER = re.compile(r"chaos s(\d+) ([au])(\d+)")
# Every MEDIA_EVERY-th round an agent reply carries an attachment too, counted as direction "m"
# from the Botpress file message it becomes (its title is the file name, its URL Botpress's).
MEDIA_EVERY = 3
MEDIA_MARKER = re.compile(r"chaos-s(\d+)-(m)(\d+)\.png")
MEDIA_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class ChaosRun:
    def __init__(self, options: argparse.Namespace, stack: Stack) -> None:
        self.o = options
        self.stack = stack
        self.botpress, self.desk, self.helpdesk = stack.botpress, stack.desk, stack.helpdesk
        self.sessions = [Session(index=i) for i in range(options.sessions)]

    def open_sessions(self) -> None:
        self.stack.open_sessions(self.sessions)
        log(f"{len(self.sessions)} sessions open, each with its ticket")

    # --- load and faults ------------------------------------------------------------------------
    def inject_faults(self) -> None:
        rate = self.o.fault_rate
        for server, prefix in ((self.helpdesk, self.desk.api_prefix), (self.botpress, r"^/v1/chat/")):
            server.add_fault(path=prefix, kind="status", status=503, probability=rate)
            server.add_fault(path=prefix, kind="rate_limit", retry_after=1, probability=rate / 2)
            server.add_fault(path=prefix, kind="timeout", delay=2.5, probability=rate / 5)
            server.add_fault(path=prefix, kind="drop_after", probability=rate / 5)
            server.add_fault(path=prefix, kind="slow", delay=0.3, probability=rate)
        log(f"faults on: 5xx {rate:.0%}, 429 {rate / 2:.0%}, timeouts {rate / 5:.0%}, lost answers {rate / 5:.0%}")

    def send_round(self, round_: int) -> None:
        def to_agent(session: Session) -> None:
            marker = f"chaos s{session.index} a{round_}"
            session.sent_at[marker] = time.time()
            response = self.stack.post(
                "channels/hitl/messages",
                {
                    "conversationId": session.conversation_id,
                    "messageId": f"chaos-{session.index}-{round_}",
                    "type": "text",
                    "payload": {"text": marker, "userId": session.user_id},
                },
            )
            if response.status_code != 202:
                raise RuntimeError(f"message refused: {response.status_code} {response.text}")

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(to_agent, self.sessions))
        for session in self.sessions:
            marker = f"chaos s{session.index} u{round_}"
            session.sent_at[marker] = time.time()
            attachments = []
            if round_ % MEDIA_EVERY == MEDIA_EVERY - 1:
                name = f"chaos-s{session.index}-m{round_}.png"
                attachments = [{"filename": name, "content_type": "image/png", "content": MEDIA_BYTES}]
            self.desk.agent_reply(session.ticket_id, session.agent_id, marker, attachments=attachments)

    def drive(self) -> int:
        rounds = max(1, math.ceil(self.o.messages / (2 * len(self.sessions))))  # at least --messages
        for round_ in range(rounds):
            if self.o.kill_worker and round_ == rounds // 3:
                log("SIGKILL worker 0 (whole process group, mid-run)")
                self.stack.gateway.kill_worker(0)
                time.sleep(2)
                self.stack.gateway.start_worker(0)
                log("worker 0 restarted")
            if self.o.restart_web and round_ == (2 * rounds) // 3:
                log("restarting the web process")
                self.stack.gateway.restart_web()
                log("web process back")
            self.send_round(round_)
        media_rounds = sum(1 for r in range(rounds) if r % MEDIA_EVERY == MEDIA_EVERY - 1)
        return (rounds * 2 + media_rounds) * len(self.sessions)

    # --- measurement ----------------------------------------------------------------------------
    def received(self) -> dict[tuple[int, str], list[int]]:
        """Markers as they arrived at the stand-ins, per (session, direction), in arrival order."""
        arrived: dict[tuple[int, str], list[int]] = {}
        # Bot-to-agent messages arrive as the ticket's messages, agent replies as Botpress messages
        # (the agents' own messages on the ticket are where those replies were sent from).
        received = [("a", text) for s in self.sessions for text in self.desk.ticket_texts(s.ticket_id)]
        received += [("u", m["payload"].get("text", "")) for m in self.botpress.messages()]
        for direction, text in received:
            match = MARKER.fullmatch(text.strip())
            if match and match[2] == direction:
                arrived.setdefault((int(match[1]), direction), []).append(int(match[3]))
        for message in self.botpress.messages():  # agent media: counted only once re-hosted in Botpress
            match = MEDIA_MARKER.fullmatch(message["payload"].get("title", ""))
            url = message["payload"].get("imageUrl", "")
            if match and message["type"] == "image" and url.startswith(self.botpress.base_url):
                arrived.setdefault((int(match[1]), "m"), []).append(int(match[3]))
        return arrived

    def wait_settled(self, expected: int) -> None:
        deadline, last, stable_since = time.monotonic() + self.o.timeout, -1, time.monotonic()
        while time.monotonic() < deadline:
            count = sum(len(set(v)) for v in self.received().values())
            if count != last:
                last, stable_since = count, time.monotonic()
                log(f"{count}/{expected} delivered")
            if count >= expected and time.monotonic() - stable_since > 3:
                return
            time.sleep(2)  # counting copies every comment; the stand-ins share this process
        log("timed out waiting for every message")

    def first_arrivals(self) -> dict[str, float]:
        arrivals: dict[str, float] = {}
        posted = self.desk.posted_texts()
        for entry in self.botpress.requests_log(method="POST"):
            text = (entry.get("json") or {}).get("payload", {}).get("text")
            if isinstance(text, str) and 200 <= (entry.get("status") or 0) < 300:
                posted.append((text, entry["timestamp"]))
        for text, timestamp in posted:
            if MARKER.fullmatch(text):
                arrivals[text] = min(arrivals.get(text, timestamp), timestamp)
        return arrivals

    def report(self, accepted: int) -> dict:
        arrived = self.received()
        distinct = sum(len(set(v)) for v in arrived.values())
        total = sum(len(v) for v in arrived.values())
        out_of_order = 0
        for sequence in arrived.values():
            seen: list[int] = []
            for n in sequence:
                if n not in seen:
                    seen.append(n)
            out_of_order += sum(1 for a, b in itertools.pairwise(seen) if b < a)
        sent_at = {marker: t for s in self.sessions for marker, t in s.sent_at.items()}
        arrivals = self.first_arrivals()
        delays = {m: (arrivals[m] - t) * 1000 for m, t in sent_at.items() if m in arrivals}
        # Per direction too: "a" bot messages to the desk, "u" agent replies to Botpress.
        by_direction: dict[str, list[float]] = {"to_agent": [], "to_user": []}
        for marker, delay in delays.items():
            by_direction["to_agent" if MARKER.fullmatch(marker)[2] == "a" else "to_user"].append(delay)
        return {
            "sessions": len(self.sessions),
            "accepted": accepted,
            "delivered": distinct,
            "lost": accepted - distinct,
            "duplicated": total - distinct,
            "out_of_order": out_of_order,
            "p50_delay_ms": _quantile(delays.values(), 50),
            "p99_delay_ms": _quantile(delays.values(), 99),
            "delay_ms_by_direction": {
                name: {"p50": _quantile(values, 50), "p99": _quantile(values, 99)}
                for name, values in by_direction.items()
            },
            "faults_injected": sum(
                1 for e in self.helpdesk.requests_log() + self.botpress.requests_log() if e.get("fault")
            ),
            "provider": self.desk.kind,
            "workers": self.o.workers,
            "worker_killed": self.o.kill_worker,
            "web_restarted": self.o.restart_web,
        }


def _quantile(values, q: int) -> float | None:
    """The q-th percentile (1-99) of ``values`` in ms, rounded; None when there are none."""
    values = sorted(values)
    if len(values) < 2:
        return round(values[0], 1) if values else None
    return round(statistics.quantiles(values, n=100)[q - 1], 1)


def diagnose(database_url: str) -> None:
    """Why a message did not arrive, from the gateway's own records (printed before the drop)."""
    queries = {
        "deliveries not delivered": "SELECT kind, status, attempts, maybe_delivered, last_status_code, "
        "left(last_error, 200) FROM sessions_app_delivery WHERE status NOT IN ('succeeded', 'skipped')",
        "webhooks not applied": "SELECT event_type, status, ticket_external_id, left(detail, 200) "
        "FROM sessions_app_webhookevent WHERE status NOT IN ('processed', 'ignored')",
    }
    with psycopg.connect(database_url) as conn:
        for title, sql in queries.items():
            rows = conn.execute(sql).fetchall()
            log(f"{title}: {len(rows)}")
            for row in rows[:20]:
                log(f"  {row}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=sorted(DESKS), default="zendesk", help="the help desk to run against")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--messages", type=int, default=5000, help="in both directions together")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (2 threads each)")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument(
        "--webhook-senders",
        type=int,
        default=8,
        help="webhooks the Zendesk stand-in delivers at once, each ticket's in order ("
        "Zendesk sends many concurrently: 1 makes the stand-in's own queue the bottleneck)",
    )
    parser.add_argument("--no-kill-worker", dest="kill_worker", action="store_false")
    parser.add_argument("--no-restart-web", dest="restart_web", action="store_false")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for every delivery")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument(
        "--broker-url", default=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs in the work dir")
    parser.add_argument(
        "--keep-database",
        action="store_true",
        help="keep the run's database (its name is printed) to query each webhook's and delivery's timing",
    )
    options = parser.parse_args(argv)
    # SIGTERM (a CI time-out, `timeout`) unwinds like Ctrl-C: processes stopped, database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not options.broker_url or options.broker_url.startswith("filesystem://"):
        parser.error("the chaos run needs a real broker (Redis or RabbitMQ)")
    work_dir = Path(tempfile.mkdtemp(prefix="hitl-chaos-"))
    started = time.monotonic()
    with Database(options.database_url, keep=options.keep_database) as database:
        stack = Stack(
            database_url=database.url,
            broker_url=options.broker_url,
            work_dir=work_dir,
            workers=options.workers,
            env=CHAOS_ENV,
            provider=options.provider,
            webhook_senders=options.webhook_senders,
        )
        run = ChaosRun(options, stack)
        try:
            stack.start()
            stack.desk.webhooks_outlast_restarts()
            run.open_sessions()
            run.inject_faults()
            accepted = run.drive()
            log(f"{accepted} messages accepted; waiting for delivery")
            run.wait_settled(accepted)
            result = run.report(accepted) | {"seconds": round(time.monotonic() - started, 1)}
            if result["lost"] or result["duplicated"] or result["out_of_order"]:
                try:
                    diagnose(database.url)
                except psycopg.Error as exc:  # the figures above still count: print them anyway
                    log(f"could not diagnose: {type(exc).__name__}: {exc}")
        finally:
            stack.stop()
    if options.keep_logs:
        log(f"logs kept in {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0 if result["lost"] == result["duplicated"] == result["out_of_order"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
