"""Kombu's filesystem broker with messages that appear whole: the embedded default's transport.

Why: Kombu's ``filesystem`` transport creates a message's file under its final name, then
writes into it; its reader lists the folder, moves the file away and reads it without a lock.
A reader that lists the folder in between reads an empty or partial message and raises
``JSONDecodeError`` from the worker's consumer, which Celery treats as unrecoverable: the worker
exits. The demo and ``make run`` (one worker polling every 0.1 s while web, beat and the worker
itself send) lost their worker that way now and then (``tests/test_filesystem_broker.py``
shows the window in Kombu's own transport; the symptom upstream: celery/kombu#1551).

Here a message is written under a name the reader never picks (a leading dot: Kombu matches
``<time>_<uuid>.<queue>.msg``), flushed, then renamed to its final name in the same folder:
``rename`` is atomic, so a reader sees no file or the whole file. Everything else is Kombu's.
Selected by ``CELERY_BROKER_TRANSPORT`` when ``CELERY_BROKER_URL`` is ``filesystem://``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` on ``queue``: written aside, then renamed into the queue's folder."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb", buffering=0) as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
