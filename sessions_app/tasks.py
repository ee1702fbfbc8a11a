"""Celery tasks: thin shells that call a service. Relay tasks carry no row: they are "work is
ready" signals, and the relay claims whatever is due (``services.relay``)."""

from celery import shared_task
from django.conf import settings


@shared_task
def relay(queue: str = "") -> int:
    from sessions_app.services.relays import relay_queue_serve

    return relay_queue_serve(queue=queue)


@shared_task
def delivery_run(delivery_id: int) -> int:
    """One lane, from the row's head (messages sent before the relay existed, operators' tools)."""
    from sessions_app.services.outbox import lane_drain

    return lane_drain(delivery_id=delivery_id)


@shared_task
def webhook_process(webhook_event_id: int) -> int:
    """One ticket's queue, from this webhook's head (messages sent before the relay existed)."""
    from sessions_app.services.webhooks import webhook_queue_drain

    return webhook_queue_drain(webhook_event_id=webhook_event_id)


@shared_task
def outbox_sweep() -> dict:
    from sessions_app.services.heartbeats import SWEEPER, heartbeat_record
    from sessions_app.services.lifecycle import session_timeouts_sweep
    from sessions_app.services.outbox import outbox_sweep as sweep_deliveries
    from sessions_app.services.webhooks import webhook_events_sweep

    heartbeat_record(name=SWEEPER)  # /health/: beat scheduled this and a worker ran it
    stale = settings.HITL["DELIVERY_STALE_SECONDS"]
    return {
        "deliveries": sweep_deliveries(),
        "webhooks": webhook_events_sweep(older_than_seconds=stale),
        # Lifecycle timers are due-time columns: the same beat period ends what is due.
        "timeouts": session_timeouts_sweep(),
        # Tickets whose doorbell webhook may have been lost are read again (each desk at most
        # once per HITL_DOORBELL_SWEEP_SECONDS, whatever this period), in a task of its own: it
        # calls the desks, and a slow desk must not hold up or time out this sweep.
        "rereads": _doorbells_sweep_send(),
    }


def _doorbells_sweep_send() -> bool:
    try:
        doorbells_sweep.delay()
    except Exception:  # noqa: BLE001 - the next beat period sends it again
        return False
    return True


@shared_task
def doorbells_sweep() -> int:
    from sessions_app.services.webhooks import webhook_doorbells_sweep

    return webhook_doorbells_sweep()
