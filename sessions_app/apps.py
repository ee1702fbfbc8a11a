from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "HITL sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from sessions_app.api import schema  # noqa: F401 - registers the OpenAPI auth extensions
