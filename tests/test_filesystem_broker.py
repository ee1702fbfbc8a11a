"""The embedded broker's transport (``hitl_gateway.filesystem_broker``): a reader never sees a
message half-written, which killed the demo's worker (``JSONDecodeError`` in its consumer)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport import filesystem

from hitl_gateway import filesystem_broker

OURS = "hitl_gateway.filesystem_broker:Transport"


# Kombu keeps the exchanges it declared in memory, per process (its transports' shared state):
# one control folder for the whole module, as a process has one (not the working directory's).
CONTROL = tempfile.mkdtemp(prefix="hitl-test-kombu-control-")


def _connection(folder: Path, transport: str | None = None) -> Connection:
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "store_processed": False,
        "control_folder": CONTROL,
    }
    return Connection("filesystem://", transport_options=options, transport=transport)


def _readable_while_writing(folder: Path, module, transport: str | None, monkeypatch) -> list[str]:
    """Put one message and list, at the moment its bytes are being written, the files a reader
    would pick for its queue."""
    seen: list[str] = []
    encode = module.str_to_bytes

    def watching(text):
        seen.append("(writing)")
        seen.extend(path.name for path in folder.iterdir() if path.name.endswith(".jobs.msg"))
        return encode(text)

    monkeypatch.setattr(module, "str_to_bytes", watching)
    with _connection(folder, transport) as connection:
        connection.SimpleQueue("jobs").put({"n": 1})
    assert seen[:1] == ["(writing)"], "the message was written"
    return seen[1:]


def test_kombus_own_transport_shows_the_file_before_its_content(tmp_path, monkeypatch):
    """The fault: the message's file is listed under its final name while still empty."""
    assert _readable_while_writing(tmp_path, filesystem, None, monkeypatch), "the fault is fixed upstream"


def test_ours_shows_a_message_only_once_it_is_whole(tmp_path, monkeypatch):
    assert _readable_while_writing(tmp_path, filesystem_broker, OURS, monkeypatch) == []
    with _connection(tmp_path, OURS) as connection:
        message = connection.SimpleQueue("jobs").get(timeout=1)
        assert message.payload == {"n": 1}
        message.ack()
    assert [path.name for path in tmp_path.iterdir()] == [], "nothing left behind"


def test_a_busy_reader_gets_every_message_whole(tmp_path):
    """One writer and one reader polling as fast as they can, large messages: none is lost,
    none is read broken (Kombu's own transport fails this within a second or two)."""
    sent, stop, failures = [], threading.Event(), []

    def write() -> None:
        with _connection(tmp_path, OURS) as connection:
            queue = connection.SimpleQueue("jobs")
            while not stop.is_set():
                queue.put({"n": len(sent), "pad": "x" * 100_000})
                sent.append(len(sent))

    writer = threading.Thread(target=write)
    writer.start()
    received = []
    deadline = time.monotonic() + 3
    with _connection(tmp_path, OURS) as connection:
        queue = connection.SimpleQueue("jobs")
        while time.monotonic() < deadline or len(received) < len(sent):
            if time.monotonic() >= deadline:
                stop.set()
            try:
                message = queue.get(timeout=0.01)
            except queue.Empty:
                if stop.is_set() and not writer.is_alive() and len(received) >= len(sent):
                    break
                continue
            except Exception as exc:  # a broken message: what killed the worker
                failures.append(exc)
                break
            received.append(message.payload["n"])
            message.ack()
            if time.monotonic() > deadline + 30:
                break
    stop.set()
    writer.join()
    assert not failures
    assert len(sent) > 50
    assert sorted(received) == sent


def test_a_failed_write_leaves_no_partial_file_and_says_so(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(filesystem_broker.os, "replace", full)
    with _connection(tmp_path, OURS) as connection, pytest.raises(filesystem.ChannelError):
        connection.SimpleQueue("jobs").put({"n": 1})
    assert list(tmp_path.iterdir()) == []
