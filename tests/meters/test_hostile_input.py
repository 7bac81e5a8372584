"""Hand-built hostile payloads that once gave a 500 (or worse, lost a batch): each is a 4xx with a stable code,
and in a batch only the item that carries it is refused."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from meters.models import MeterReading
from meters.parsers import MAX_BODY_BYTES
from minting.models import MintingControl
from tests.factories import MeterFactory, UserFactory, api_key_for
from tests.meters.test_errors_and_fuzz import assert_error_shape

pytestmark = pytest.mark.django_db

SUBMIT = "/api/meters/submit-reading"
BATCH = "/api/v1/meters/batch/readings"
TOGGLE = "/api/admin/tokenization/toggle-auto-mint"
LONE_SURROGATE = '"\\ud800"'  # JSON text: Python reads it as a str PostgreSQL's json parser refuses
TINY = ("1e-16384", "0." + "0" * 20_000 + "1")  # below numeric's range, and past its 16,383 decimal digits


def body(recent, **fields) -> str:
    """A reading's JSON text; ``fields`` are spliced in as raw JSON text."""
    parts = ['"kwh_amount": "1.5"', f'"reading_timestamp": "{recent.isoformat()}"']
    parts += [f'"{name}": {text}' for name, text in fields.items()]
    return "{" + ", ".join(parts) + "}"


def batch_item(meter, moment: str, **fields) -> str:
    parts = [f'"meter_serial": "{meter.serial}"', '"kwh": "1.5"', f'"timestamp": "{moment}"']
    parts += [f'"{name}": {text}' for name, text in fields.items()]
    return "{" + ", ".join(parts) + "}"


def six_moments(recent) -> list[str]:
    return [(recent - timedelta(hours=hours)).isoformat() for hours in range(6)]


@pytest.fixture
def operator() -> Client:
    token = Token.objects.create(user=UserFactory(is_staff=True))
    return Client(HTTP_AUTHORIZATION=f"Bearer {token.key}")


@pytest.mark.parametrize("text", [LONE_SURROGATE, '"a\\u0000b"'], ids=["surrogate", "nul"])
def test_text_postgresql_cannot_store_is_a_400_on_the_single_and_v1_posts(post, meter, device_key, recent, text):
    response = post(SUBMIT, None, raw=body(recent, meter_signature=text), key=device_key)
    assert_error_shape(response, 400, "unstorable_text")
    assert response.json()["error"]["field"] == "meter_signature"

    v1 = f'{{"kwh": "1.5", "timestamp": "{recent.isoformat()}", "meter_signature": {text}}}'
    response = post(f"/api/v1/meters/{meter.serial}/readings", None, raw=v1, key=device_key)
    assert_error_shape(response, 400, "unstorable_text")
    assert not MeterReading.objects.exists()


@pytest.mark.parametrize("tiny", TINY, ids=["exponent", "digits"])
def test_a_telemetry_number_numeric_cannot_hold_is_a_400(post, device_key, recent, tiny):
    response = post(SUBMIT, None, raw=body(recent, voltage=tiny), key=device_key)

    assert_error_shape(response, 400, "validation_error")
    assert response.json()["error"]["field"] == "voltage"
    assert not MeterReading.objects.exists()


@pytest.mark.parametrize(
    "bad", [{"meter_signature": LONE_SURROGATE}, {"voltage": TINY[0]}, {"current": TINY[1]}], ids=str
)
def test_one_unstorable_item_of_a_batch_is_refused_alone(post, recent, bad):
    meter = MeterFactory()
    key = api_key_for(owner=meter.owner)[1]
    items = [batch_item(meter, moment, **(bad if i == 3 else {})) for i, moment in enumerate(six_moments(recent))]

    response = post(BATCH, None, raw='{"readings": [' + ",".join(items) + "]}", key=key)

    assert response.status_code in (200, 207), response.content
    results = response.json()["results"]
    assert [result["status"] for result in results] == ["accepted"] * 3 + ["rejected"] + ["accepted"] * 2
    assert results[3]["error"]["field"] == next(iter(bad))
    assert MeterReading.objects.count() == 5


@pytest.mark.parametrize("path", [SUBMIT, BATCH, TOGGLE, "/api/admin/meters/mint-batch"])
def test_deep_nesting_is_400_malformed_json_on_every_endpoint(post, operator, device_key, path):
    raw = "[" * 1_000 + "]" * 1_000
    if path.startswith("/api/admin/"):
        response = operator.generic("POST", path, raw, content_type="application/json")
    else:
        response = post(path, None, raw=raw, key=device_key)

    assert_error_shape(response, 400, "malformed_json")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_an_empty_form_body_does_not_switch_automatic_minting_off(operator, content_type):
    assert operator.post(TOGGLE, {"enabled": True}, "application/json").status_code == 200

    # (Django's test client drops the Content-Type of an empty body unless it is given as a header.)
    response = operator.generic("POST", TOGGLE, b"", CONTENT_TYPE=content_type)

    assert_error_shape(response, 415, "unsupported_media_type")
    assert operator.get("/api/admin/tokenization/status").json()["auto_mint_enabled"] is True
    assert not MintingControl.objects.filter(auto_mint_enabled=False).exists()


def test_an_oversized_operator_body_is_413(operator):
    raw = '{"enabled": true, "pad": "' + "x" * MAX_BODY_BYTES + '"}'

    response = operator.generic("POST", TOGGLE, raw, content_type="application/json")

    assert_error_shape(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "raw",
    [
        '{"kwh_amount": "1.5", "kwh_amount": "999", "reading_timestamp": "%s"}',
        '{"kwh_amount": "1.5", "reading_timestamp": "%s", "telemetry": 1, "voltage": 230, "voltage": 1}',
    ],
)
def test_a_duplicated_key_is_400_malformed_json(post, device_key, recent, raw):
    response = post(SUBMIT, None, raw=raw % recent.isoformat(), key=device_key)

    assert_error_shape(response, 400, "malformed_json")
    assert "kwh_amount" in response.json()["error"]["message"] or "voltage" in response.json()["error"]["message"]
    assert not MeterReading.objects.exists()


def test_a_duplicated_key_of_one_batch_item_refuses_the_body(post, recent):
    """The body is one JSON document: which value an item meant is unknowable, so none of it is taken."""
    meter = MeterFactory()
    key = api_key_for(owner=meter.owner)[1]
    item = batch_item(meter, recent.isoformat(), kwh='"2.5"')

    response = post(BATCH, None, raw='{"readings": [' + item + "]}", key=key)

    assert_error_shape(response, 400, "malformed_json")
    assert json.loads(item)  # Python's own reader silently takes the last value
    assert not MeterReading.objects.exists()
