"""The Celery app. Tasks only execute outbox rows; the database is the source of truth."""

import os

from celery import Celery, bootsteps
from celery.signals import after_setup_logger, after_setup_task_logger

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
