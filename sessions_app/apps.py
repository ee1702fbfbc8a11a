import contextlib

from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "HITL sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from sessions_app.api import schema  # noqa: F401 - registers the OpenAPI auth extensions

        _lifecycle_metrics_register()


def _lifecycle_metrics_register() -> None:
    """Expose the sessions ended by lifecycle policies on ``/metrics`` (once per process)."""
    from prometheus_client import REGISTRY

    from sessions_app.services.lifecycle import PolicyEndsCollector

    with contextlib.suppress(ValueError):  # already registered: ``ready`` ran again
        REGISTRY.register(PolicyEndsCollector())
