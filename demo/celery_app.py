"""The gateway's own Celery app, polling the embedded filesystem broker every 0.1 s instead of every second.

Each hop of a relay (webhook → task → the next delivery) would otherwise wait up to a second for
the worker's next look at the broker folder; in a demo a person watches every one of them.
"""

from hitl_gateway.celery import app

app.conf.broker_transport_options = {**app.conf.broker_transport_options, "polling_interval": 0.1}

__all__ = ["app"]
