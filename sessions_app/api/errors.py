"""One error body for every 4xx: ``{"error", "message", "fields": {"dotted.path": [...]}}``."""

from __future__ import annotations

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from sessions_app.services.errors import ServiceError


def flatten_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as ``{"messageHistory[2].payload.text": ["..."]}``."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            for path, messages in flatten_errors(value, name).items():
                flat.setdefault(path, []).extend(messages)
        return flat
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix or "body": [str(item) for item in detail]}
        flat = {}
        for index, item in enumerate(detail):
            for path, messages in flatten_errors(item, f"{prefix}[{index}]").items():
                flat.setdefault(path, []).extend(messages)
        return flat
    return {prefix or "body": [str(detail)]}


def error_response(code: str, message: str, status_code: int, fields: dict | None = None) -> Response:
    body = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    return Response(body, status=status_code)


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        fields = {exc.field: [exc.message]} if exc.field else None
        return error_response(exc.code, exc.message, exc.status, fields)
    if isinstance(exc, exceptions.ValidationError):
        return error_response(
            "invalid_request", "Invalid input.", status.HTTP_400_BAD_REQUEST, flatten_errors(exc.detail)
        )
    if isinstance(exc, exceptions.ParseError):
        return error_response("invalid_request", "The body is not valid JSON.", 400, {"body": [str(exc.detail)]})
    if isinstance(exc, exceptions.AuthenticationFailed | exceptions.NotAuthenticated):
        return error_response("unauthorized", "Invalid credentials.", status.HTTP_401_UNAUTHORIZED)
    response = drf_exception_handler(exc, context)
    if response is not None:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        response.data = {"error": getattr(exc, "default_code", "error"), "message": str(detail)}
    return response
