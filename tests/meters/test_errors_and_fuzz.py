"""Every failure answers in the one error shape, and nothing a client sends yields a 500."""

import json
import random
import re
from decimal import Decimal

import pytest

from meters.apis.meters import SERIAL_PATTERN
from meters.models import Meter, MeterReading
from meters.parsers import MAX_BODY_BYTES
from tests.meters.conftest import exact_json, rfc3339

SUBMIT = "/api/meters/submit-reading"
WRITE_PATHS = [
    SUBMIT,
    "/api/v1/meters/{serial}/readings",
    "/api/v1/meters/batch/readings",
    "/api/v1/public/meters/batch/readings",
    "/api/meters",
    "/api/v1/simulator/meters/register",
    "/api/auth/token",
]
pytestmark = pytest.mark.django_db


def assert_error_shape(response, status, code=None):
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "request_id"} and body["request_id"] == response["X-Request-ID"]
    assert {"code", "message"} <= set(body["error"]) <= {"code", "message", "field", "details"}
    if code is not None:
        assert body["error"]["code"] == code


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"kwh_amount": }',
        b"\xff\xfe{}",
        b'{"kwh_amount": NaN}',
        b'{"kwh_amount": Infinity}',
        b'{"kwh_amount": 1' + b"0" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b"'single quotes'",
    ],
)
def test_malformed_json_is_400_malformed_json(post, device_key, raw):
    response = post(SUBMIT, None, raw=raw, key=device_key)

    assert_error_shape(response, 400, "malformed_json")
    assert not MeterReading.objects.exists()


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_other_content_types_are_415(post, device_key, content_type):
    response = post(SUBMIT, None, raw="kwh_amount=1", key=device_key, content_type=content_type)

    assert_error_shape(response, 415, "unsupported_media_type")


def test_a_body_without_a_content_type_is_415(api, device_key):
    response = api.generic("POST", SUBMIT, b'{"kwh_amount": 1}', content_type="", HTTP_X_API_KEY=device_key)

    assert_error_shape(response, 415, "unsupported_media_type")


def test_an_unknown_charset_is_read_as_utf8(post, device_key):
    response = post(SUBMIT, {"kwh_amount": 1}, key=device_key, content_type="application/json; charset=klingon")

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"] == "reading_timestamp"


def test_a_latin1_body_is_decoded_by_its_charset(post, meter, device_key, recent):
    raw = json.dumps({"kwh_amount": "1", "reading_timestamp": rfc3339(recent), "meter_signature": "é"}).encode()
    response = post(SUBMIT, None, raw=raw, key=device_key, content_type="application/json; charset=latin-1")

    assert response.status_code == 201


def test_a_body_past_the_size_limit_is_413(post, device_key):
    raw = b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}'

    response = post(SUBMIT, None, raw=raw, key=device_key)

    assert_error_shape(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "path",
    ["/api/nothing-here", "/api/meters/", "/api/meters/submit-reading/", "/api/v1/meters/X/readings/", "/api/"],
)
def test_unknown_api_paths_are_a_json_404_without_redirect(post, device_key, path):
    response = post(path, {}, key=device_key)

    assert_error_shape(response, 404, "not_found")


@pytest.mark.parametrize("path", [SUBMIT, "/api/v1/meters/batch/readings", "/api/v1/meters/M/readings"])
def test_reading_endpoints_answer_get_with_405(api, device_key, path):
    response = api.get(path, HTTP_X_API_KEY=device_key)

    assert_error_shape(response, 405, "method_not_allowed")


def test_reads_answer_post_with_405(post, device_key):
    assert_error_shape(post("/api/meters/stats", {}, key=device_key), 405, "method_not_allowed")
    assert_error_shape(post("/api/meters/my-readings", {}, key=device_key), 405, "method_not_allowed")


@pytest.mark.parametrize("body", [[], "string", 5, None, True, [{"kwh_amount": 1}]])
def test_non_object_bodies_are_validation_errors(post, device_key, body):
    response = post(SUBMIT, json.dumps(body), key=device_key)

    assert_error_shape(response, 400, "validation_error")


def _junk(rng: random.Random, depth: int = 0):
    choices = [
        None,
        True,
        False,
        0,
        -1,
        2**63,
        10**40,
        Decimal("1e-400"),
        Decimal("1e400"),
        Decimal("-0.0"),
        Decimal("3.14159265358979323846"),
        "",
        " ",
        "\u0000",
        "1.5",
        "-1",
        "NaN",
        "💡" * 3,
        "x" * 300,
        "2024-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "0000-01-01T00:00:00Z",
        "gtk_" + "a" * 43,
        "1" * 44,
        "00000000-0000-0000-0000-000000000000",
    ]
    if depth < 3:
        choices += [[_junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]]
        choices += [{rng.choice(FIELDS): _junk(rng, depth + 1) for _ in range(rng.randint(0, 3))}]
    return rng.choice(choices)


FIELDS = [
    "kwh_amount",
    "kwh",
    "reading_timestamp",
    "timestamp",
    "meter_serial",
    "meter_id",
    "meter_signature",
    "wallet_address",
    "voltage",
    "zone_id",
    "rec_eligible",
    "weather_condition",
    "readings",
    "serial",
    "public_key",
    "meter_type",
    "location",
    "username",
    "password",
    "page",
]


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_fuzzed_bodies_never_cause_a_server_error(post, meter, fleet_key, user_token, recent, path):
    rng = random.Random(f"fuzz:{path}")
    path = path.format(serial=meter.serial)
    for _ in range(40):
        if rng.random() < 0.2:
            body = _junk(rng)
        else:
            body = {name: _junk(rng) for name in rng.sample(FIELDS, rng.randint(1, 8))}
            if rng.random() < 0.3:
                body["readings"] = [_junk(rng) for _ in range(rng.randint(0, 5))]
        auth = {"token": user_token} if path == "/api/meters" else {"key": fleet_key}
        response = post(path, exact_json(body), **auth)

        assert response.status_code < 500, (body, response.content)
        if response.status_code >= 400:
            assert_error_shape(response, response.status_code)
    assert all(re.match(SERIAL_PATTERN, serial) for serial in Meter.objects.values_list("serial", flat=True))


@pytest.mark.parametrize("method", ["get", "post", "put"])
def test_unknown_api_paths_are_json_even_in_debug_mode(client, settings, method):
    settings.DEBUG = True

    response = getattr(client, method)("/api/no/such/path", content_type="application/json")

    assert_error_shape(response, 404, "not_found")
