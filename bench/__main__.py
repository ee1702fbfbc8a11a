"""Benchmarks of the hot paths, each beside a reference measured in the same run.

1. Webhook acknowledgement (verify + one insert + enqueue) against the health check (one
   SELECT 1 through the same web process): the floor for a request that touches the database.
2. Outbound calls per steady-state relay, counted at the stand-ins: an agent reply should cost
   one Botpress call (Botpress's own Zendesk integration makes six) and a bot message one
   Zendesk call.
3. Relay latency (accepted -> arrived at the receiving stand-in) in both directions.

Run with ``make bench`` (PostgreSQL + RabbitMQ, separate web/worker processes, no faults).
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import requests

from chaos.stack import ZD_EMAIL, ZD_TOKEN, Database, Session, Stack, log
from providers.zendesk.webhooks import signature_compute, trigger_body

# Botpress's Zendesk integration per agent comment (botpress-api.md C.1): list messages by tag
# (dedup), list users by tag, update user, get-or-create conversation, create message, plus
# the credentials state read; six runtime API calls.
BOTPRESS_ZENDESK_CALLS_PER_REPLY = 6


def percentiles(samples: list[float]) -> dict:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50": round(cuts[49], 2), "p99": round(cuts[98], 2), "mean": round(statistics.fmean(samples), 2)}


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def bench_ack(stack: Stack, secret: str, count: int) -> dict:
    """Signed webhooks straight at the ack path, and the health check as the same-run reference."""
    http = requests.Session()
    url = f"{stack.gateway.url}/webhooks/zendesk/{stack.integration_id}/"
    template = trigger_body("ticketAssigned").replace("{{ticket.id}}", "999999")
    acks, health = [], []
    for n in range(count):
        body = template.replace("{{ticket.assignee.id}}", str(n)).encode()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "Content-Type": "application/json",
            "X-Zendesk-Webhook-Invocation-Id": str(uuid.uuid4()),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
            "X-Zendesk-Webhook-Signature": signature_compute(secret=secret, timestamp=stamp, body=body),
        }
        acks.append(timed(lambda b=body, h=headers: http.post(url, data=b, headers=h, timeout=10).raise_for_status()))
        health.append(
            timed(
                lambda: http.get(
                    f"{stack.gateway.url}/health/", headers={"Accept": "application/json"}, timeout=10
                ).raise_for_status()
            )
        )
    ack, reference = percentiles(acks[10:]), percentiles(health[10:])  # the first requests warm up
    return {"ack_ms": ack, "health_ms": reference, "ack_over_health_p50": round(ack["p50"] / reference["p50"], 2)}


def bench_relays(stack: Stack, sessions: list[Session], rounds: int) -> dict:
    """Steady state: every agent already known. Count calls at the stand-ins and time arrivals."""
    # Warm-up round: the first reply creates each agent's Botpress user.
    for session in sessions:
        stack.zendesk.agent_reply(session.ticket_id, session.agent_id, f"warm-up {session.index}")
    stack.botpress.wait_for(lambda: len(stack.botpress.messages()) >= len(sessions), timeout=60)
    time.sleep(1)
    stack.botpress.clear_log()
    stack.zendesk.clear_log()
    sent: dict[str, float] = {}
    for round_ in range(rounds):
        for session in sessions:
            marker = f"bench s{session.index} u{round_}"
            sent[marker] = time.time()
            stack.zendesk.agent_reply(session.ticket_id, session.agent_id, marker)
            marker = f"bench s{session.index} a{round_}"
            sent[marker] = time.time()
            stack.post(
                "channels/hitl/messages",
                {
                    "conversationId": session.conversation_id,
                    "type": "text",
                    "payload": {"text": marker, "userId": session.user_id},
                },
            )
    expected = len(sessions) * rounds
    stack.botpress.wait_for(lambda: len(stack.botpress.messages()) >= len(sessions) + expected, timeout=120)
    stack.zendesk.wait_for(
        lambda: sum(len(stack.zendesk.comments(s.ticket_id)) for s in sessions) >= len(sessions) * (2 + 2 * rounds),
        timeout=120,
    )
    time.sleep(1)
    botpress_calls = [e for e in stack.botpress.requests_log()]
    zendesk_calls = [e for e in stack.zendesk.requests_log() if e["method"] != "GET"]
    arrivals: dict[str, float] = {}
    for entry in botpress_calls + zendesk_calls:
        body = entry.get("json") or {}
        text = body.get("payload", {}).get("text") or body.get("ticket", {}).get("comment", {}).get("body")
        if text in sent and 200 <= (entry.get("status") or 0) < 300:
            arrivals.setdefault(text, entry["timestamp"])
    to_user = [(arrivals[m] - t) * 1000 for m, t in sent.items() if " u" in m and m in arrivals]
    to_agent = [(arrivals[m] - t) * 1000 for m, t in sent.items() if " a" in m and m in arrivals]
    return {
        "botpress_calls_per_agent_reply": round(len(botpress_calls) / expected, 2),
        "botpress_zendesk_integration_calls_per_reply": BOTPRESS_ZENDESK_CALLS_PER_REPLY,
        "zendesk_calls_per_bot_message": round(len(zendesk_calls) / expected, 2),
        "to_user_delay_ms": percentiles(to_user),
        "to_agent_delay_ms": percentiles(to_agent),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--acks", type=int, default=500, help="signed webhooks sent at the ack path")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10, help="messages per session and direction")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument(
        "--broker-url", default=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    )
    options = parser.parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="hitl-bench-"))
    with Database(options.database_url) as database:
        stack = Stack(
            database_url=database.url,
            broker_url=options.broker_url,
            work_dir=work_dir,
            workers=2,
            env={"HITL_SWEEP_SECONDS": "5"},
        )
        try:
            stack.start()
            webhook_id = stack.zendesk.webhooks()[0]["id"]
            secret = requests.get(  # what Zendesk signs with, read as an admin would
                f"{stack.zendesk.base_url}/api/v2/webhooks/{webhook_id}/signing_secret",
                auth=(f"{ZD_EMAIL}/token", ZD_TOKEN),
                timeout=10,
            ).json()["signing_secret"]["secret"]
            log(f"ack path: {options.acks} signed webhooks, health check as reference")
            result = bench_ack(stack, secret, options.acks)
            log(f"ack p50 {result['ack_ms']['p50']} ms vs health p50 {result['health_ms']['p50']} ms")
            sessions = [Session(index=i) for i in range(options.sessions)]
            stack.open_sessions(sessions)
            log(f"relays: {options.sessions} sessions x {options.rounds} messages each way")
            result |= bench_relays(stack, sessions, options.rounds)
            log(
                f"Botpress calls per agent reply: {result['botpress_calls_per_agent_reply']} "
                f"(Botpress's Zendesk integration: {BOTPRESS_ZENDESK_CALLS_PER_REPLY}); "
                f"Zendesk calls per bot message: {result['zendesk_calls_per_bot_message']}"
            )
        finally:
            stack.stop()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
