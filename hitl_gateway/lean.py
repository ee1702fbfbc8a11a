"""A lean request path for the help-desk webhooks: only the middleware they need.

A help desk's webhook is a machine POSTing signed bytes: it carries no cookie, no login and no
CSRF token, renders no page and is authenticated by its signature (``services.webhooks``). The
sessions, CSRF, authentication, messages, clickjacking, CSP, django-axes and per-view Prometheus
middleware only cost it time: about a third of the acknowledgement's CPU on this machine
(``make bench``, issue 16). ``LeanPathMiddleware`` comes first in ``MIDDLEWARE`` and sends the
views named in ``LEAN_VIEWS`` through a short chain of their own instead:

- ``RequestBodyLimitMiddleware``: the 413 over ``HITL["MAX_REQUEST_BODY_BYTES"]`` before any read;
- ``SecurityMiddleware``: the https redirect and security headers of a production deployment.

Every other path takes the whole stack unchanged. Exceptions in the lean chain become Django's
usual 500 answer (the handler wraps this middleware like any other).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, resolve

from hitl_gateway.limits import RequestBodyLimitMiddleware

# URL names of the views that take the lean path.
LEAN_VIEWS = frozenset({"helpdesk-webhook"})
LEAN_PREFIXES = ("/webhooks/",)


class LeanPathMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.lean = RequestBodyLimitMiddleware(SecurityMiddleware(self._view))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(LEAN_PREFIXES):
            return self.get_response(request)
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        if match.url_name not in LEAN_VIEWS:
            return self.get_response(request)
        request.resolver_match = match
        return self.lean(request)

    @staticmethod
    def _view(request: HttpRequest) -> HttpResponse:
        match = request.resolver_match
        return match.func(request, *match.args, **match.kwargs)
