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

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from sessions_app.models import RelayDoorbell

log = structlog.get_logger(__name__)


# While other work runs, a source that had nothing is asked again after this long (seconds).
IDLE_SOURCE_SECONDS = 0.05
# After the first of several running items ends, wait this long for others before settling and
# claiming again: one claim and one settle then serve several items (seconds).
SETTLE_GATHER_SECONDS = 0.002

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def relay_width() -> int:
    """Lanes one process runs at once (``HITL["RELAY_THREADS"]``)."""
    return max(1, int(settings.HITL.get("RELAY_THREADS", 4)))


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


def _on_thread(execute: Callable[[Any], Any], item: Any) -> Any:
    """Run one item on a pool thread, then drop the thread's connection if it is spoiled or old."""
    try:
        return execute(item)
    finally:
        _connections_tidy()


def _connections_tidy() -> None:
    """Close this thread's connections that a database error touched or ``CONN_MAX_AGE`` ended.

    For threads that outlive a request or a task (the relay's pool, ``ReadySignal``): Django's
    ``close_old_connections`` would ping the server before every use (health checks); here a
    connection is kept until it is spoiled or old, and the next use opens a new one.
    """
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        if conn.errors_occurred or (conn.close_at is not None and time.monotonic() >= conn.close_at):
            conn.close()


class ReadySignal:
    """Call ``send`` after a ``ring()``, at most once per ``interval()`` seconds per process.

    ``ring()`` only sets a flag; a daemon thread of this process (started on first use, again
    after a fork) clears it, then calls ``send``, then sleeps ``interval`` seconds. A ring
    after the clear leads to another send, so every ring is followed by a send that started
    after it: rung after a commit, the send (a doorbell's ring) sees the committed rows. At
    hundreds of rings a second a process then sends at most 1/interval times, and no caller
    waits for the database or the broker. ``interval`` 0 sends at once, in the caller's thread.

    The thread keeps a database connection across sends and drops it when a send spoiled it
    (the server restarted, say), so the next send opens a new one rather than failing on it
    forever; should the thread end anyway, the next ring starts another. At the interpreter's
    exit (a management command) and at a Celery pool process's shutdown (``ready_signals_flush``)
    a send under way is waited for and a ring still pending is sent; a process killed outright
    leaves it to the sweeper.
    """

    _all: ClassVar[weakref.WeakSet[ReadySignal]] = weakref.WeakSet()

    def __init__(self, send: Callable[[], None], interval: Callable[[], float]) -> None:
        self._send, self._interval = send, interval
        self._reset()
        os.register_at_fork(after_in_child=self._reset)
        ReadySignal._all.add(self)

    def _reset(self) -> None:
        self._wanted, self._lock, self._thread_pid = threading.Event(), threading.Lock(), None
        self._sending = threading.Lock()  # held from a clear to the end of its send

    def ring(self) -> None:
        if self._interval() <= 0:
            self._send()
            return
        self._wanted.set()
        if self._thread_pid != os.getpid():
            with self._lock:
                if self._thread_pid != os.getpid():
                    self._thread_pid = os.getpid()  # before the start: a thread that ends at once resets it
                    threading.Thread(target=self._run, name="ready-signal", daemon=True).start()

    def _run(self) -> None:
        try:
            while True:
                self._wanted.wait()
                with self._sending:
                    self._wanted.clear()
                    self._send_once()
                time.sleep(self._interval())
        finally:
            with self._lock:
                self._thread_pid = None  # the next ring starts another thread

    def _send_once(self) -> None:
        try:
            self._send()
        except Exception:  # the sweeper finds what a lost signal left
            with contextlib.suppress(Exception):
                log.exception("relay.ready_signal_failed")
        finally:
            with contextlib.suppress(Exception):
                _connections_tidy()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait for a send under way, then send a ring still pending (a process about to end)."""
        if not self._sending.acquire(timeout=timeout):
            return
        try:
            if self._wanted.is_set():
                self._wanted.clear()
                self._send_once()
        finally:
            self._sending.release()


def ready_signals_flush() -> None:
    """Flush every ``ReadySignal`` of this process: at the interpreter's exit, and where an end
    skips ``atexit`` (a Celery pool process leaves through ``os._exit``)."""
    for signal in list(ReadySignal._all):
        signal.flush()


atexit.register(ready_signals_flush)


@dataclass(frozen=True)
class Source:
    """One kind of work the relay runs (the outbox of a queue, inbound webhooks).

    ``claim(n, running_lanes)`` returns at most n items of distinct lanes not in ``running_lanes``
    (what this process runs of this source now); ``execute(item)`` runs one on a pool thread;
    ``settle(finished)`` records ``[(item, outcome)]`` on the relay's thread. ``feeds``: the
    names of sources whose work this one's items may commit (an applied webhook writes outbox
    rows), asked again right after a settle in which an item had a true outcome, rather than
    after their rest (``IDLE_SOURCE_SECONDS``).
    """

    name: str
    claim: Callable[[int, set[Hashable]], list]
    lane_of: Callable[[Any], Hashable]
    execute: Callable[[Any], Any]
    settle: Callable[[list[tuple[Any, Any]]], None]
    feeds: tuple[str, ...] = ()


def relay_run(*, sources: list[Source], max_seconds: float) -> tuple[int, bool]:
    """Claim, run and settle until no source has anything claimable; return (items settled,
    stopped early).

    Every finished item is settled on this thread before anything more is claimed, so a lane's
    next item is seen only after its previous one was recorded. While items run, a source is
    asked again after one of its items settled or an item of a source it is fed by did something
    (``Source.feeds``), or every ``IDLE_SOURCE_SECONDS`` once it had less than was asked (a claim
    statement saved per settle of the other sources). After
    ``max_seconds`` no more is claimed, the running items are finished and "stopped early" is
    True (the caller hands the rest to a fresh run). An item that raised is the caller's bug:
    re-raised after the others were settled.
    """
    width = relay_width()
    pool = _threads()
    running: dict[Future, tuple[Source, Any]] = {}
    idle_until = dict.fromkeys((source.name for source in sources), 0.0)
    deadline = time.monotonic() + max_seconds
    settled = 0
    first_error: BaseException | None = None
    try:
        while True:
            now = time.monotonic()
            claiming = now < deadline and first_error is None
            for source in sources if claiming else ():
                free = width - len(running)
                if free <= 0:
                    break
                if running and idle_until[source.name] > now:
                    continue
                lanes = {source.lane_of(item) for src, item in running.values() if src is source}
                items = source.claim(free, lanes)
                # Fewer than asked: nothing more is due now. Asked again when one of its items
                # settles (that lane's next one may be due) or after a rest.
                idle_until[source.name] = 0.0 if len(items) == free else now + IDLE_SOURCE_SECONDS
                for item in items:
                    running[pool.submit(_on_thread, source.execute, item)] = (source, item)
            if not running:
                return settled, time.monotonic() >= deadline
            done, _ = wait(running, timeout=IDLE_SOURCE_SECONDS, return_when=FIRST_COMPLETED)
            if done and len(running) > len(done):
                done, _ = wait(running, timeout=SETTLE_GATHER_SECONDS)
            finished: dict[str, list] = {}
            for future in done:
                source, item = running.pop(future)
                try:
                    finished.setdefault(source.name, []).append((item, future.result()))
                except BaseException as exc:  # noqa: BLE001 - settled below, after the others
                    first_error = first_error or exc
            for source in sources:
                if source.name in finished:
                    source.settle(finished[source.name])
                    settled += len(finished[source.name])
                    idle_until[source.name] = 0.0
                    if any(outcome for _, outcome in finished[source.name]):
                        idle_until.update((name, 0.0) for name in source.feeds if name in idle_until)
    finally:
        if running:  # this thread is leaving (an error, a time limit): let the items end on their own
            for future in running:
                future.cancel()
        if first_error is not None:
            raise first_error


def relay_serve(*, name: str, sources: list[Source], max_seconds: float, send: Callable[[], bool]) -> int:
    """One relay task: answer the doorbell ``name``, run the sources, hand over if time ran out.

    The hand-over rings the doorbell like any writer: if it was rung meanwhile, a message is on
    its way already and none is added. ``send()`` sends a relay message; False if it failed.
    """
    doorbell_answer(name=name)
    settled, stopped_early = relay_run(sources=sources, max_seconds=max_seconds)
    if stopped_early:
        relay_wake(name=name, send=send)
    return settled


def relay_doorbell(queue: str) -> str:
    """The doorbell of the relay that consumes the Celery queue ``queue`` ('' = the default)."""
    return f"relay:{queue}"


def relay_send(*, queue: str, countdown: float | None = None) -> bool:
    """Send one relay task to ``queue`` ('' = the default); False when the broker refused it."""
    from sessions_app.tasks import relay

    try:
        relay.apply_async((queue,), countdown=countdown, queue=queue or None)
    except Exception as exc:  # noqa: BLE001 - whatever waits is found again by the sweeper
        log.warning("relay.send_failed", queue=queue, error=type(exc).__name__)
        return False
    return True


def relay_wake(*, name: str, send: Callable[[], bool]) -> None:
    """Ring the doorbell ``name`` and send the message if this call rang it (``send`` failing
    resets it). A database failure is logged: the sweeper wakes the relay anyway."""
    try:
        rang = doorbell_ring(name=name)
    except Exception as exc:  # noqa: BLE001 - the sweeper rings regardless of the doorbell
        log.warning("relay.ring_failed", name=name, error=type(exc).__name__)
        return
    if rang and not send():
        doorbell_reset(name=name)


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
