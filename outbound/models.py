"""The one table ``outbound`` keeps: the pace of each key that a remote side rate-limits."""

from django.db import models


class Pace(models.Model):
    """When the next call of ``key`` may go out (``outbound.pacing``); one row per key.

    A key names what a remote side counts its limit by, prefixed by who paces it (Slack:
    ``slack:<base url>|<channel id>``). Rows are few (one per channel, desk account...) and
    never grow otherwise: a reservation moves ``next_at``, it adds nothing.
    """

    key = models.CharField(max_length=512, primary_key=True)  # Slack: a 200-character URL and a channel id
    next_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.key} (next at {self.next_at:%H:%M:%S.%f})"
