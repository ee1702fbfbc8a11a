"""What a worker's relay runs for one Celery queue: the composition of the engine's sources.

The default queue's relay runs the default outbox lanes and inbound webhooks side by side, so
one "work is ready" message wakes whichever a worker process has free, and neither kind waits
behind a relay busy with the other; another queue's relay (media) runs that queue's lanes.
"""

from __future__ import annotations

from dataclasses import replace

from sessions_app.services.outbox import outbox_source
from sessions_app.services.relay import relay_doorbell, relay_send, relay_serve
from sessions_app.services.webhooks import webhook_source

# A relay task claims for this long, then hands over (seconds): long enough to amortise its
# start, short enough that queued relay messages of other queues and processes get their turn.
RELAY_MAX_SECONDS = 5.0


def relay_queue_serve(*, queue: str = "") -> int:
    """Run the relay of ``queue`` until nothing is due (or its time is up); return items settled."""
    outbox = outbox_source(queue=queue)
    # An applied agent reply is an outbox row of this queue: its delivery is claimed as soon as
    # the apply is settled, not after the outbox's rest (a third of the reply's delay at half rate).
    sources = [outbox] + ([replace(webhook_source(), feeds=(outbox.name,))] if queue == "" else [])
    return relay_serve(
        name=relay_doorbell(queue),
        sources=sources,
        max_seconds=RELAY_MAX_SECONDS,
        send=lambda: relay_send(queue=queue),
    )
