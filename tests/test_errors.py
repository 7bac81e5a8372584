import json
import logging

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf

from gridtoken.exceptions import Conflict, RateLimited, exception_handler
from gridtoken.logging import JsonFormatter
from gridtoken.middleware import RequestIdLogFilter


def handle(exc):
    response = exception_handler(exc, {})
    return response.status_code, response.data, response


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (Http404(), 404, "not_found"),
        (PermissionDenied(), 403, "forbidden"),
        (drf.ParseError("JSON parse error - Expecting value"), 400, "malformed_json"),
        (drf.UnsupportedMediaType("text/plain"), 415, "unsupported_media_type"),
        (drf.NotAuthenticated(), 401, "not_authenticated"),
        (drf.AuthenticationFailed("bad key"), 401, "invalid_credentials"),
        (drf.MethodNotAllowed("PUT"), 405, "method_not_allowed"),
        (
            Conflict("duplicate_reading_conflict", "another reading within the window"),
            409,
            "duplicate_reading_conflict",
        ),
    ],
)
def test_every_error_has_the_one_body_shape(exc, status, code):
    got_status, body, _ = handle(exc)
    assert got_status == status
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == code and body["error"]["message"]


def test_unauthenticated_errors_carry_www_authenticate():
    _, _, response = handle(drf.NotAuthenticated())
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_rate_limited_sets_retry_after():
    _, body, response = handle(RateLimited("slow down", retry_after=7))
    assert response["Retry-After"] == "7" and body["error"]["details"] == {"retry_after": 7}


def test_drf_throttle_sets_retry_after():
    _, body, response = handle(drf.Throttled(wait=2.2))
    assert response["Retry-After"] == "3" and body["error"]["code"] == "rate_limited"


def test_serializer_errors_name_the_first_field_path():
    exc = drf.ValidationError({"readings": [{}, {"kwh": ["A valid number is required."]}]})
    status, body, _ = handle(exc)
    assert status == 400
    assert body["error"] == {
        "code": "validation_error",
        "message": "A valid number is required.",
        "field": "readings[1].kwh",
        "details": {"errors": exc.detail},
    }


def test_non_field_errors_have_no_field():
    _, body, _ = handle(drf.ValidationError({"non_field_errors": ["bad pair"]}))
    assert "field" not in body["error"] and body["error"]["message"] == "bad pair"


def test_an_unexpected_exception_is_left_to_django():
    assert exception_handler(ZeroDivisionError(), {}) is None


def test_unknown_paths_get_a_json_404_with_a_request_id(client):
    response = client.get("/api/no-such-thing", HTTP_X_REQUEST_ID="abc-123")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not found."}, "request_id": "abc-123"}
    assert response["X-Request-ID"] == "abc-123"


def test_an_unsafe_request_id_is_replaced(client):
    response = client.get("/api/no-such-thing", HTTP_X_REQUEST_ID="x" * 200)
    assert response["X-Request-ID"] != "x" * 200 and len(response["X-Request-ID"]) == 32


def test_log_lines_are_json_with_extra_fields():
    record = logging.makeLogRecord({"msg": "minted %s", "args": (3,), "levelname": "INFO", "name": "audit"})
    record.batch_id = "b1"
    RequestIdLogFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "minted 3" and line["batch_id"] == "b1" and line["ts"].endswith("Z")


def test_uvicorn_handshake_lines_are_json_and_never_carry_the_token():
    handler = logging.getLogger("uvicorn").handlers[0]
    record = logging.getLogger("uvicorn.error").makeRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:50000", "/ws?token=0123456789abcdef&x=1"), None,
    )  # fmt: skip
    line = json.loads(handler.format(record))
    assert line["message"] == '127.0.0.1:50000 - "WebSocket /ws?token=[redacted]&x=1" [accepted]'
    assert not logging.getLogger("uvicorn.error").handlers  # it reaches the JSON handler through "uvicorn"
