"""A Celery worker keeps its PostgreSQL connection across tasks, and drops it after a failed one.

Celery's Django fixup closes every connection around each task (one new server process per
task); ``hitl_gateway.celery`` replaces that with Django's own request rules.
"""

from __future__ import annotations

import pytest
from celery.signals import task_postrun, task_prerun
from django.db import connection

from hitl_gateway import celery as gateway_celery


@pytest.fixture
def worker_signals():
    """The signal handlers a worker process has once ``worker_init`` ran; removed afterwards."""
    fixup = gateway_celery._django_worker_fixup()
    assert fixup is not None, "the Django fixup is installed on the app"
    fixup.install()  # what the worker's init does: connects close-around-every-task
    gateway_celery._keep_db_connections()
    yield
    for signal, handler in (
        (task_prerun, fixup.on_task_prerun),
        (task_postrun, fixup.on_task_postrun),
        (task_prerun, gateway_celery.db_connections_before_task),
        (task_postrun, gateway_celery.db_connections_after_task),
    ):
        signal.disconnect(handler)


def _run_task(state: str) -> None:
    from sessions_app.tasks import delivery_run as task

    task_prerun.send(sender=task, task_id="t1", task=task, args=(1,), kwargs={})
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    task_postrun.send(sender=task, task_id="t1", task=task, args=(1,), kwargs={}, retval=None, state=state)


def test_a_connection_outlives_successful_tasks(transactional_db, worker_signals):
    connection.ensure_connection()
    backend_pid = connection.connection.info.backend_pid
    for _ in range(3):
        _run_task("SUCCESS")
    assert connection.connection is not None, "the connection was closed after a task"
    assert connection.connection.info.backend_pid == backend_pid, "each task had a new connection"


def test_a_failed_task_closes_the_connection(transactional_db, worker_signals):
    connection.ensure_connection()
    _run_task("FAILURE")
    assert connection.connection is None
