"""The Celery app. Tasks only execute outbox rows; the database is the source of truth."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitl_gateway.settings")

app = Celery("hitl_gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
