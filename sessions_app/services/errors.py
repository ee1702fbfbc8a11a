"""Errors services raise; transports translate them (the REST API into 4xx bodies naming the field)."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    pass


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class UpstreamUnavailable(ServiceError):
    """Botpress did not answer a call we needed to answer ours; the caller may retry."""

    status = 502
    code = "upstream_unavailable"
