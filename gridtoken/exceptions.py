"""The one error family and the one DRF exception handler.

Every error body has the shape ``{"error": {"code", "message", "field"?, "details"?}, "request_id"}``.
"""

from __future__ import annotations

import logging
import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework import serializers
from rest_framework.response import Response

from gridtoken.middleware import current_request_id

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """An expected failure with a stable ``code``; ``status`` is its HTTP status when it reaches a client."""

    status = 400

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: dict | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.details = code, message, field, details
        if status is not None:
            self.status = status

    def as_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return body


class ValidationFailed(ApplicationError):
    status = 400


class NotAuthenticated(ApplicationError):
    status = 401


class Forbidden(ApplicationError):
    status = 403


class NotFound(ApplicationError):
    status = 404


class Conflict(ApplicationError):
    status = 409


class RateLimited(ApplicationError):
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__("rate_limited", message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class DatabaseUnavailable(ApplicationError):
    """PostgreSQL could not be reached, or the connection broke mid-request: the client should retry (a
    reading that was stored before the break answers the retry as a duplicate, with its id)."""

    status = 503
    retry_after = 5

    def __init__(self) -> None:
        super().__init__(
            "database_unavailable",
            "The database is unavailable; retry shortly (a reading stored before the failure answers the retry "
            "with its id).",
        )


class ErrorDetailSerializer(serializers.Serializer):
    """``ApplicationError.as_dict()``; for the OpenAPI schema only (bodies are built by ``error_body``)."""

    code = serializers.CharField(help_text="Stable, machine-readable: validation_error, rate_limited, ...")
    message = serializers.CharField(help_text="For people; may change")
    field = serializers.CharField(required=False, help_text="The request field at fault, e.g. readings[3].kwh")
    details = serializers.DictField(required=False, help_text="Code-specific, e.g. {retry_after} or {errors}")


class ErrorBodySerializer(serializers.Serializer):
    """Every error response's body (the OpenAPI component ``ErrorBody``)."""

    error = ErrorDetailSerializer()
    request_id = serializers.CharField(allow_null=True, help_text="As in the X-Request-ID response header")


def error_body(error: dict) -> dict:
    return {"error": error, "request_id": current_request_id()}


def _first_error(detail, path: str = "") -> tuple[str | None, str]:
    """(field path, message) of the first error in a DRF ValidationError detail tree."""
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        if key != "non_field_errors":
            path = f"{path}.{key}" if path else str(key)
        return _first_error(value, path)
    if isinstance(detail, list) and detail:
        index, item = next((i, item) for i, item in enumerate(detail) if item)
        return _first_error(item, f"{path}[{index}]" if isinstance(item, (dict, list)) else path)
    return (path or None), str(detail)


def _validation_error(exc: drf.ValidationError) -> ApplicationError:
    field, message = _first_error(exc.detail)
    return ValidationFailed(
        "validation_error",
        message,
        field=field,
        details={"errors": exc.detail} if isinstance(exc.detail, dict) else None,
    )


_DRF_CODES = {
    drf.ParseError: ("malformed_json", "The request body is not valid JSON."),
    drf.UnsupportedMediaType: ("unsupported_media_type", "Send the body as application/json."),
    drf.NotAuthenticated: ("not_authenticated", "Authentication credentials were not provided."),
    drf.AuthenticationFailed: ("invalid_credentials", "The credentials are invalid."),
    drf.PermissionDenied: ("forbidden", "You do not have permission to perform this action."),
    drf.NotFound: ("not_found", "Not found."),
    drf.MethodNotAllowed: ("method_not_allowed", "Method not allowed."),
    drf.NotAcceptable: ("not_acceptable", "Cannot satisfy the request's Accept header."),
    drf.Throttled: ("rate_limited", "Too many requests."),
}


def _translate(exc: Exception) -> ApplicationError | None:
    if isinstance(exc, ApplicationError):
        return exc
    if isinstance(exc, Http404):
        return NotFound("not_found", "Not found.")
    if isinstance(exc, DjangoPermissionDenied):
        return Forbidden("forbidden", "You do not have permission to perform this action.")
    if isinstance(exc, drf.ValidationError):
        return _validation_error(exc)
    if isinstance(exc, OperationalError | InterfaceError):
        # An outage, not a bug (both are what Django raises when a connection cannot be opened or is lost);
        # logged with the traceback, since no 500 will be.
        logger.warning("database unavailable: %s", exc, exc_info=exc)
        return DatabaseUnavailable()
    for exc_type, (code, default_message) in _DRF_CODES.items():
        if isinstance(exc, exc_type):
            message = str(exc.detail) if getattr(exc, "detail", None) else default_message
            if exc_type is drf.ParseError:
                message = default_message
            return ApplicationError(code, message, status=exc.status_code)
    return None


def exception_handler(exc: Exception, context: dict) -> Response | None:
    error = _translate(exc)
    if error is None:
        return None  # a real bug: let Django log it and answer 500
    response = Response(error_body(error.as_dict()), status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    if isinstance(error, RateLimited | DatabaseUnavailable):
        response["Retry-After"] = str(error.retry_after)
    elif isinstance(exc, drf.Throttled) and exc.wait:
        response["Retry-After"] = str(math.ceil(exc.wait))
    return response


def json_error_view(status: int, code: str, message: str):
    def view(request, exception=None):
        return JsonResponse(error_body({"code": code, "message": message}), status=status)

    return view


handler400 = json_error_view(400, "bad_request", "Bad request.")
handler403 = json_error_view(403, "forbidden", "Forbidden.")
handler404 = json_error_view(404, "not_found", "Not found.")
handler500 = json_error_view(500, "server_error", "Internal server error.")
