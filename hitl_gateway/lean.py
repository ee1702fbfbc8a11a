"""A lean request path for the help-desk webhooks: only the middleware they need.

A help desk's webhook is a machine POSTing signed bytes: it carries no cookie, no login and no
CSRF token, renders no page and is authenticated by its signature (``services.webhooks``). The
static files, sessions, common (slash redirects), CSRF, authentication, messages, clickjacking,
CSP, django-axes and per-view Prometheus middleware only cost it time: about a third of the
acknowledgement's CPU on this machine (``make bench``, issue 16). ``LeanPathMiddleware`` comes
first in ``MIDDLEWARE`` and sends the views named in ``LEAN_VIEWS`` through a short chain of
their own instead:

- ``RequestBodyLimitMiddleware``: the 413 over ``HITL["MAX_REQUEST_BODY_BYTES"]`` before any read;
- ``SecurityMiddleware``: the https redirect and security headers of a production deployment.

Botpress's calls to the REST transport (the actions and the ``hitl`` channel, authenticated by
the integration's bearer key in the view, never by a cookie) take the same short chain inside
django-prometheus's two middlewares, so their per-view request metrics stay.

Every other path takes the whole stack unchanged. Exceptions in the lean chain become Django's
usual 500 answer (the handler wraps this middleware like any other).
"""

from __future__ import annotations

from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, resolve
from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware

from hitl_gateway.limits import RequestBodyLimitMiddleware

# URL names (with their namespace) of the views that take the lean path: True keeps the
# per-view request metrics.
LEAN_VIEWS = {
    "helpdesk-webhook": False,
    **dict.fromkeys(
        (
            "api:createUser",
            "api:startHitl",
            "api:stopHitl",
            "api:hitlMessage",
            "api:renamedAction",
            "api:renamedChannelMessage",
        ),
        True,
    ),
}
LEAN_PREFIXES = ("/webhooks/", "/api/v1/integrations/")


class LeanPathMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        # As Django's handler does for each middleware: a view's exception becomes its answer
        # (a 500, a 404...) at once, so the security headers and the metrics still see it.
        self.lean = RequestBodyLimitMiddleware(SecurityMiddleware(convert_exception_to_response(self._view)))
        self.metrics_after = PrometheusAfterMiddleware(
            RequestBodyLimitMiddleware(SecurityMiddleware(convert_exception_to_response(self._measured)))
        )
        self.measured = PrometheusBeforeMiddleware(self.metrics_after)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(LEAN_PREFIXES):
            return self.get_response(request)
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        measured = LEAN_VIEWS.get(match.view_name)
        if measured is None:
            return self.get_response(request)
        request.resolver_match = match
        return (self.measured if measured else self.lean)(request)

    @staticmethod
    def _view(request: HttpRequest) -> HttpResponse:
        match = request.resolver_match
        response = match.func(request, *match.args, **match.kwargs)
        if callable(getattr(response, "render", None)):  # DRF's answers render late, as in the handler
            response = response.render()
        return response

    def _measured(self, request: HttpRequest) -> HttpResponse:
        match = request.resolver_match  # counted by view, as the handler would before the view
        self.metrics_after.process_view(request, match.func, *match.args, **match.kwargs)
        try:
            return self._view(request)
        except Exception as exc:
            self.metrics_after.process_exception(request, exc)  # exceptions by view and type
            raise
