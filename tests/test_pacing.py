"""One pace per key for every thread, process and machine (``outbound.pacing``), on PostgreSQL.

What a per-process pacer could not do: two worker processes (each with relay threads) reserving
on one key never get slots closer than the interval; a 429's deferral made by one process holds
the others; a refused reservation takes nothing; keys do not hold each other up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from django.db import connection, connections

from outbound.models import Pace
from outbound.pacing import PaceRefused, Slot, pace_clear, pace_defer, pace_reserve

ROOT = Path(__file__).resolve().parent.parent
TINY = timedelta(microseconds=1)  # timestamps are whole microseconds; the interval is rounded to one


def _key() -> str:
    return f"test:{uuid.uuid4().hex}"


def _spaced(slots: list[datetime], interval: float) -> bool:
    ordered = sorted(slots)
    return all(later - earlier >= timedelta(seconds=interval) - TINY for earlier, later in pairwise(ordered))


def _interleaved(a: list[datetime], b: list[datetime]) -> bool:
    """Both reserved while the other did: neither one's slots all come before the other's."""
    return min(a) < max(b) and min(b) < max(a)


class Peers:
    """Processes of ``tests.pacing_peer`` on the test database, all started by one ``go``."""

    def __init__(self, *commands: list[str], env: dict | None = None) -> None:
        env = env or _test_database_env()
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.pacing_peer", *command],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for command in commands
        ]
        for process in self.processes:
            assert process.stdout.readline().strip() == "ready"

    def go(self) -> None:
        for process in self.processes:
            process.stdin.write("go\n")
            process.stdin.flush()

    def results(self) -> list[str]:
        outputs = [process.communicate(timeout=60)[0] for process in self.processes]
        assert all(process.returncode == 0 for process in self.processes), outputs
        return outputs


def _test_database_env() -> dict:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return dict(os.environ, DATABASE_URL=url)


def _slots(output: str) -> list[datetime]:
    return [datetime.fromisoformat(at) for at, _ in json.loads(output)]


@pytest.mark.django_db(transaction=True)
def test_two_threads_on_one_key_never_get_slots_closer_than_the_interval():
    key, interval, count = _key(), 0.01, 150
    start = threading.Barrier(2)
    slots: dict[int, list[Slot]] = {}

    def reserve(n: int) -> None:
        try:
            start.wait(timeout=10)
            slots[n] = [pace_reserve(key=key, interval=interval, max_wait=3600.0) for _ in range(count)]
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reserve, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    a, b = ([slot.at for slot in slots[n]] for n in (0, 1))
    assert len(set(a + b)) == 2 * count and _spaced(a + b, interval)
    assert _interleaved(a, b), "the two threads reserved at the same time"


@pytest.mark.django_db(transaction=True)
def test_two_processes_and_this_one_on_one_key_never_get_slots_closer_than_the_interval():
    key, interval, count = _key(), 0.01, 200
    peers = Peers(["reserve", key, str(count), str(interval)], ["reserve", key, str(count), str(interval)])
    peers.go()
    here = [pace_reserve(key=key, interval=interval, max_wait=3600.0).at for _ in range(count)]
    a, b = (_slots(output) for output in peers.results())
    assert len(set(a + b + here)) == 3 * count and _spaced(a + b + here, interval)
    assert _interleaved(a, b), "the two processes reserved at the same time"


@pytest.mark.django_db(transaction=True)
def test_a_slot_further_than_the_caller_waits_is_refused_without_being_taken():
    key = _key()
    first = pace_reserve(key=key, interval=10.0, max_wait=1.5)
    assert first.wait == 0.0
    next_at = Pace.objects.get(key=key).next_at
    assert next_at == first.at + timedelta(seconds=10)
    with pytest.raises(PaceRefused) as refused:
        pace_reserve(key=key, interval=10.0, max_wait=1.5)
    assert 9.0 < refused.value.wait <= 10.0
    assert Pace.objects.get(key=key).next_at == next_at, "nothing reserved"
    # Whoever asks next, willing to wait that long, gets that very slot.
    second = pace_reserve(key=key, interval=10.0, max_wait=60.0)
    assert second.at == next_at and 9.0 < second.wait <= 10.0


@pytest.mark.django_db(transaction=True)
def test_a_deferral_by_another_process_holds_this_one():
    key = _key()
    pace_reserve(key=key, interval=1.0, max_wait=1.5)
    peers = Peers(["defer", key, "30"])
    peers.go()
    assert peers.results() == ["deferred\n"]
    with pytest.raises(PaceRefused) as refused:
        pace_reserve(key=key, interval=1.0, max_wait=1.5)
    assert 25.0 < refused.value.wait <= 30.0
    pace_defer(key=key, seconds=5.0)  # a shorter Retry-After does not shorten the hold
    with pytest.raises(PaceRefused) as again:
        pace_reserve(key=key, interval=1.0, max_wait=1.5)
    assert again.value.wait > 25.0


@pytest.mark.django_db(transaction=True)
def test_keys_do_not_hold_each_other_up():
    busy, idle = _key(), _key()
    pace_reserve(key=busy, interval=10.0, max_wait=1.5)
    pace_defer(key=busy, seconds=60.0)
    assert pace_reserve(key=idle, interval=10.0, max_wait=1.5).wait == 0.0
    pace_clear(prefix=busy)
    assert pace_reserve(key=busy, interval=10.0, max_wait=1.5).wait == 0.0, "cleared: free again"
    assert Pace.objects.filter(key=idle).exists()


@pytest.mark.django_db
def test_inside_a_transaction_a_reservation_commits_at_once_and_holds_no_lock():
    """The test runs in a transaction (as a caller may): the reservation goes through a
    connection of its own, so another thread sees it at once and is not blocked by its row."""
    key, interval = _key(), 5.0
    assert connection.in_atomic_block
    mine = pace_reserve(key=key, interval=interval, max_wait=1.5)
    theirs: list[Slot | Exception] = []

    def reserve() -> None:
        try:
            theirs.append(pace_reserve(key=key, interval=interval, max_wait=60.0))
        except Exception as exc:
            theirs.append(exc)
        finally:
            connections.close_all()

    started = time.monotonic()
    thread = threading.Thread(target=reserve)
    thread.start()
    thread.join(timeout=10)
    assert time.monotonic() - started < 5, "not blocked by this transaction"
    [slot] = theirs
    assert isinstance(slot, Slot) and slot.at == mine.at + timedelta(seconds=interval)
    pace_clear(prefix=key)


def test_the_embedded_sqlite_default_paces_its_processes_alike(tmp_path):
    """Without PostgreSQL (``make run``, the demo: SQLite, one machine), the worker processes
    share the pace through the SQLite file the same way."""
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'gateway.sqlite3'}", HITL_VAR_DIR=str(tmp_path))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr
    # Each waits for its slot before the next, as a posting worker does: both keep reserving
    # for seconds, so a loaded machine starting one process late still has them at it at once.
    key, interval, count = "test:sqlite", 0.05, 40
    command = ["reserve", key, str(count), str(interval), "sleep"]
    peers = Peers(command, command, env=env)
    peers.go()
    a, b = (_slots(output) for output in peers.results())
    assert len(set(a + b)) == 2 * count and _spaced(a + b, interval)
    assert _interleaved(a, b), "the two processes reserved at the same time"
