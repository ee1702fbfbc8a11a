"""The bench's arrival count (``bench._wait_arrivals``): it reads each stand-in's request log
from where it left off, and an entry logged before its answer was sent is read again."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from bench.__main__ import _wait_arrivals


class _Log:
    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.reads: list[int] = []

    def requests_log(self, *, start: int = 0) -> list[dict]:
        self.reads.append(start)
        return [dict(entry) for entry in self.entries[start:]]


def test_an_entry_answered_after_a_look_is_counted_and_answered_ones_are_not_read_again():
    botpress, zendesk = _Log(), _Log()
    botpress.entries.append({"json": {"payload": {"text": "u1"}}, "status": 200, "timestamp": 1.0})
    in_flight = {"json": {"payload": {"text": "u2"}}, "status": None, "timestamp": 2.0}
    botpress.entries.append(in_flight)
    zendesk.entries.append({"json": {"ticket": {"comment": {"body": "a1"}}}, "status": 201, "timestamp": 3.0})
    zendesk.entries.append({"json": {"ticket": {"comment": {"body": "a2"}}}, "status": 429, "timestamp": 4.0})
    threading.Timer(0.7, lambda: in_flight.update(status=200)).start()  # answered after the first look
    threading.Timer(
        0.7,
        lambda: zendesk.entries.append(
            {"json": {"ticket": {"comment": {"body": "a2"}}}, "status": 201, "timestamp": 5.0}
        ),
    ).start()
    stack = SimpleNamespace(botpress=botpress, zendesk=zendesk)
    arrivals = _wait_arrivals(stack, {"u1", "u2", "a1", "a2"}, timeout=10)
    assert arrivals == {"u1": 1.0, "u2": 2.0, "a1": 3.0, "a2": 5.0}
    assert botpress.reads[:2] == [0, 1], "the answered entry is not read again, the one in flight is"
    assert zendesk.reads[1] == 2
