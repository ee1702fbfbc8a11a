"""Botpress-facing credentials: a bearer key valid for exactly one integration."""

from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from sessions_app.services.integrations import integration_authenticate


class IntegrationKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <key>`` checked against the integration named in the URL.

    Unknown integration, malformed key and wrong key all give the same 401.
    """

    def authenticate(self, request):
        scheme, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        integration_id = request.parser_context["kwargs"].get("integration_id", "")
        if scheme.lower() != "bearer" or not key.strip():
            raise exceptions.NotAuthenticated()
        integration = integration_authenticate(integration_id=integration_id, api_key=key.strip())
        if integration is None:
            raise exceptions.AuthenticationFailed()
        return (None, integration)

    def authenticate_header(self, request):
        return 'Bearer realm="hitl-gateway"'


class HasIntegration(permissions.BasePermission):
    def has_permission(self, request, view):
        return request.auth is not None
