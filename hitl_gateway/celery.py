"""The Celery app. Tasks only execute outbox rows; the database is the source of truth."""

import os

from celery import Celery, bootsteps
from celery.fixups.django import DjangoFixup
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
)

from hitl_gateway.logging import redaction_install

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitl_gateway.settings")

app = Celery("hitl_gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_celery_logs(logger, **_kwargs):
    """Handlers Celery adds itself (the task logger's, the worker's log file) redact like ours."""
    redaction_install(logger)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Every worker records a heartbeat on a timer of its main process, read by /health/.

    Runs whatever the pool and the queue: a worker busy with long tasks still reports.
    """

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        from django.conf import settings

        self._beat(worker.hostname)
        interval = settings.HITL_HEALTH["WORKER_HEARTBEAT_SECONDS"]
        self.tref = worker.timer.call_repeatedly(interval, self._beat, (worker.hostname,), priority=10)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    @staticmethod
    def _beat(hostname: str) -> None:
        from django.db import DatabaseError, close_old_connections

        from sessions_app.services.heartbeats import worker_heartbeat_record

        try:
            worker_heartbeat_record(hostname=hostname)
        except DatabaseError:
            # The database is down (/health/ says so): the worker goes on, with a new connection next time.
            close_old_connections()


app.steps["worker"].add(WorkerHeartbeat)


# --- Database connections across tasks ------------------------------------------------------
# Celery's Django fixup closes every connection before and after each task, so ``CONN_MAX_AGE``
# never applies in a worker: one new PostgreSQL connection (a server process) per task. We keep
# a connection across tasks as Django keeps it across requests (``close_old_connections``: closed
# once older than CONN_MAX_AGE, or when unusable; CONN_HEALTH_CHECKS pings a reused one before
# its first query), and close it outright after any task that raised: an exception (a time
# limit's among them) may have left it mid-protocol, a state Django cannot always detect
# (celery/celery#9824, Django ticket #30646).


def _django_worker_fixup():
    for fixup in getattr(app, "_fixups", None) or ():
        if isinstance(fixup, DjangoFixup):
            return fixup.worker_fixup
    return None


@worker_process_shutdown.connect
def _ready_signals_flush(**_kwargs) -> None:
    """A pool process ends through ``os._exit``, which skips ``atexit``: send its pending rings
    now (``ReadySignal``), or the rows they announce would wait for the sweeper."""
    from sessions_app.services.relay import ready_signals_flush

    ready_signals_flush()


@worker_init.connect
def _keep_db_connections(**_kwargs) -> None:
    """Replace the fixup's close-around-every-task with Django's request-style rules (above)."""
    fixup = _django_worker_fixup()
    if fixup is None:
        return
    task_prerun.disconnect(fixup.on_task_prerun)
    task_postrun.disconnect(fixup.on_task_postrun)
    task_prerun.connect(db_connections_before_task, weak=False)
    task_postrun.connect(db_connections_after_task, weak=False)


def db_connections_before_task(sender=None, **_kwargs) -> None:
    from django.db import close_old_connections

    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


def db_connections_after_task(sender=None, state=None, **_kwargs) -> None:
    from django.db import close_old_connections, connections

    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    if state == "SUCCESS":
        close_old_connections()
    else:  # raised, retried or rejected: never reuse a connection it may have left broken
        connections.close_all()
