"""The page django-axes answers with when an admin log-in is locked out (``AXES_LOCKOUT_CALLABLE``).

Axes' default is a bare line of text; operators get an admin page instead, saying why and for how
long (``AXES_COOLOFF_TIME``, counted from the last failed attempt), with the status Axes uses (429).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from sessions_app.selectors import duration_text


def _lock_text(value: timedelta) -> str:
    """``15 minutes``, ``1 hour``, ``1 h 30 min``: a lock's length as a setting would say it."""
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    if seconds % 60 == 0 and seconds < 3600:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return duration_text(value)


def lockout_response(request: HttpRequest, original_response=None, credentials: dict | None = None) -> HttpResponse:
    """Axes' lock-out answer as an admin page (Axes calls it with these three arguments)."""
    from axes.helpers import get_cool_off, get_failure_limit

    cool_off = get_cool_off(request)
    context = {
        **admin.site.each_context(request),
        "title": "Log-in locked",
        "failure_limit": get_failure_limit(request, credentials),
        "cool_off": _lock_text(cool_off) if cool_off else "",
    }
    response = TemplateResponse(
        request, "admin/sessions_app/lockout.html", context, status=settings.AXES_HTTP_RESPONSE_CODE
    )
    return response.render()
