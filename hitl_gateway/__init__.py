"""The HITL gateway project: settings, URLs, Celery app."""

from hitl_gateway.celery import app as celery_app

__all__ = ["celery_app"]
