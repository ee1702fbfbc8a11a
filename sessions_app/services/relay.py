"""The relay engine: run due work of many lanes at once, each lane strictly one item at a time.

Shared by the outbox (a lane = a session and a direction) and by inbound webhooks (a lane = a
ticket's queue). The engine knows nothing of either: a caller gives it ``claim`` (take up to n
items of lanes not already running), ``execute`` (run one item; runs on a pool thread) and
``settle`` (record a batch of outcomes). Claiming and settling happen on the calling thread, so
one statement claims a batch of lane heads and one transaction records a batch of outcomes.

Why threads: the cost of a relay is mostly waiting (the remote call, PostgreSQL round trips), so
one worker process runs ``HITL["RELAY_THREADS"]`` lanes at once. Each pool thread keeps its own
database connection and its own keep-alive HTTP sessions (``outbound.http`` pools per thread)
across tasks. Order holds because a lane's next item is claimable only once its previous one was
settled (committed); several processes or machines share the lanes through the claim's row locks
(``FOR UPDATE SKIP LOCKED``) and leases, never through anything held in memory here.

"Work is ready" travels as a Celery message per relay, coalesced by a doorbell row
(``RelayDoorbell``): a writer sends a message only when it turns the doorbell on; the relay turns
it off before it claims, so whatever committed before that is claimed by this run, and whatever
commits after it rings again. A lost message only delays work until the sweeper rings again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

import structlog
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from sessions_app.models import RelayDoorbell

log = structlog.get_logger(__name__)

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# After the first of several running items ends, wait this long for others before settling and
# claiming again: one claim and one settle then serve several items (seconds).
SETTLE_GATHER_SECONDS = 0.002

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def relay_width() -> int:
    """Lanes one process runs at once (``HITL["RELAY_THREADS"]``)."""
    return max(1, int(settings.HITL.get("RELAY_THREADS", 8)))


def _threads() -> ThreadPoolExecutor:
    """The process's pool, made on first use (after a prefork child was forked)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(relay_width(), thread_name_prefix="relay")
        return _pool


def relay_threads_stop() -> None:
    """Stop the process's pool, each thread closing its database connections first (tests,
    shutdown); a pool is made again on next use."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is None:
        return
    width = pool._max_workers
    barrier = threading.Barrier(width)

    def close() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=10)  # one job per thread: each closes its own connections
        connections.close_all()

    for _ in range(width):
        pool.submit(close)
    pool.shutdown(wait=True)


def _on_thread(execute: Callable[[Item], Outcome], item: Item) -> Outcome:
    """Run one item on a pool thread, then drop the thread's connection if it is spoiled or old.

    Django's ``close_old_connections`` would ping the server before every item (health checks);
    here a connection is kept until a database error touched it or ``CONN_MAX_AGE`` ran out.
    """
    try:
        return execute(item)
    finally:
        for conn in connections.all(initialized_only=True):
            if conn.connection is None or conn.in_atomic_block:
                continue
            if conn.errors_occurred or (conn.close_at is not None and time.monotonic() >= conn.close_at):
                conn.close()


def relay_run(
    *,
    claim: Callable[[int, set[Hashable]], list[Item]],
    lane_of: Callable[[Item], Hashable],
    execute: Callable[[Item], Outcome],
    settle: Callable[[list[tuple[Item, Outcome]]], None],
    max_seconds: float,
) -> tuple[int, bool]:
    """Claim, run and settle until nothing is claimable; return (items settled, stopped early).

    ``claim(n, running_lanes)`` returns at most n items of distinct lanes not in ``running_lanes``
    (what this process runs now). ``settle`` gets every finished item with its outcome, on this
    thread, before anything more is claimed, so a lane's next item is seen only after its
    previous one was recorded. After ``max_seconds`` no more is claimed and the running items
    are finished (the caller hands over the rest); an item that raised is the caller's bug and
    is re-raised after the others were settled.
    """
    width = relay_width()
    pool = _threads()
    running: dict[Future, Item] = {}
    deadline = time.monotonic() + max_seconds
    settled = 0
    first_error: BaseException | None = None
    try:
        while True:
            free = width - len(running)
            if free > 0 and time.monotonic() < deadline and first_error is None:
                lanes = {lane_of(item) for item in running.values()}
                for item in claim(free, lanes):
                    running[pool.submit(_on_thread, execute, item)] = item
            if not running:
                return settled, time.monotonic() >= deadline
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            if len(running) > len(done):
                done, _ = wait(running, timeout=SETTLE_GATHER_SECONDS)
            finished = []
            for future in done:
                item = running.pop(future)
                try:
                    finished.append((item, future.result()))
                except BaseException as exc:  # noqa: BLE001 - settled below, after the others
                    first_error = first_error or exc
            if finished:
                settle(finished)
                settled += len(finished)
    finally:
        if running:  # this thread is leaving (an error, a time limit): let the items end on their own
            for future in running:
                future.cancel()
        if first_error is not None:
            raise first_error


# --- Doorbells --------------------------------------------------------------------------------
def doorbell_ring(*, name: str) -> bool:
    """Turn the relay's doorbell on; True when this call did (the caller then sends the message).

    One statement; while the doorbell is already on it writes and locks nothing (the UPDATE's
    condition fails on the row as read), which is the common case under load.
    """
    now = timezone.now()
    if connection.vendor != "postgresql":  # the embedded SQLite default: two plain statements
        if RelayDoorbell.objects.filter(pk=name, rung=False).update(rung=True, rung_at=now):
            return True
        _, created = RelayDoorbell.objects.get_or_create(pk=name, defaults={"rung": True, "rung_at": now})
        return created
    table = connection.ops.quote_name(RelayDoorbell._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH rang AS (UPDATE {table} SET rung = true, rung_at = %s WHERE name = %s AND NOT rung RETURNING 1) "  # noqa: S608 - names from the model; values bound
            f"SELECT EXISTS (SELECT 1 FROM rang), EXISTS (SELECT 1 FROM {table} WHERE name = %s)",
            [now, name, name],
        )
        rang, exists = cursor.fetchone()
    if rang or exists:
        return bool(rang)
    _, created = RelayDoorbell.objects.get_or_create(pk=name, defaults={"rung": True, "rung_at": now})
    return created


def doorbell_answer(*, name: str) -> None:
    """Turn the doorbell off before claiming: a write that commits after this rings again."""
    RelayDoorbell.objects.filter(pk=name, rung=True).update(rung=False)


def doorbell_reset(*, name: str) -> None:
    """The message a ring promised was not sent (broker down): let the next writer send one."""
    try:
        RelayDoorbell.objects.filter(pk=name).update(rung=False)
    except Exception as exc:  # noqa: BLE001 - the sweeper rings regardless of the doorbell
        log.warning("relay.doorbell_reset_failed", name=name, error=type(exc).__name__)
