from django.apps import AppConfig


class OutboundConfig(AppConfig):
    """``outbound`` as a Django app only for the table its pacing shares (``outbound.pacing``)."""

    name = "outbound"
    verbose_name = "Outbound calls"
    default_auto_field = "django.db.models.BigAutoField"
