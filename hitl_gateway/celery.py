"""The Celery app. Tasks only execute outbox rows; the database is the source of truth."""

import os

from celery import Celery
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
