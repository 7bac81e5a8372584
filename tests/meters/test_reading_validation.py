"""Each validation rule of a reading, with its stable code, and that nothing is stored when it fails."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from meters.models import MeterReading
from tests.meters.conftest import rfc3339

SUBMIT = "/api/meters/submit-reading"
pytestmark = pytest.mark.django_db


def submit(post, key, meter, **fields):
    data = {"meter_serial": meter.serial, "kwh_amount": "1", "reading_timestamp": rfc3339(fields.pop("at"))}
    data.update(fields)
    return post(SUBMIT, data, key=key)


@pytest.mark.parametrize(
    ("kwh", "code"),
    [
        ("100.000000001", "kwh_out_of_range"),
        ("-100.000000001", "kwh_out_of_range"),
        ("1e3", "kwh_out_of_range"),
        ("NaN", "kwh_out_of_range"),
        ("-Infinity", "kwh_out_of_range"),
        ("inf", "kwh_out_of_range"),
        ("1.0000000001", "kwh_too_precise"),
        ("0.0000000001", "kwh_too_precise"),
        ("1E-10", "kwh_too_precise"),
        ("abc", "validation_error"),
        ("1_000", "validation_error"),
        ("", "validation_error"),
        (True, "validation_error"),
        ([1], "validation_error"),
        ({"v": 1}, "validation_error"),
        ("9" * 200, "validation_error"),
    ],
)
def test_an_invalid_kwh_is_rejected_with_its_code(post, meter, device_key, recent, kwh, code):
    response = submit(post, device_key, meter, at=recent, kwh_amount=kwh)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == "kwh_amount"
    assert not MeterReading.objects.exists()


@pytest.mark.parametrize(
    ("kwh", "stored"),
    [
        ("100", Decimal("100")),
        ("0.000000001", Decimal("0.000000001")),
        ("1.500000000000", Decimal("1.5")),
        (" 7.25 ", Decimal("7.25")),
        ("2.5e1", Decimal("25")),
        (42, Decimal("42")),
    ],
)
def test_edge_kwh_values_are_accepted_exactly(post, meter, device_key, recent, kwh, stored):
    response = submit(post, device_key, meter, at=recent, kwh_amount=kwh)

    assert response.status_code == 201
    assert MeterReading.objects.get().kwh_amount == stored


def test_the_maximum_follows_the_configuration(post, meter, device_key, recent, ingest_settings):
    ingest_settings(max_reading_kwh=Decimal("5"))

    assert submit(post, device_key, meter, at=recent, kwh_amount="5.000000001").status_code == 400
    assert submit(post, device_key, meter, at=recent, kwh_amount="5").status_code == 201


def test_a_maximum_beyond_the_column_is_capped_by_the_column(post, meter, device_key, recent, ingest_settings):
    ingest_settings(max_reading_kwh=Decimal("10000000000"))

    response = submit(post, device_key, meter, at=recent, kwh_amount="1000000000")

    assert response.json()["error"]["code"] == "kwh_out_of_range"


def test_a_missing_kwh_is_a_validation_error(post, meter, device_key, recent):
    response = post(SUBMIT, {"reading_timestamp": rfc3339(recent)}, key=device_key)

    assert response.json()["error"] == {
        "code": "validation_error",
        "message": "This field (or register totals) is required.",
        "field": "kwh_amount",
    }


def test_a_missing_timestamp_is_a_validation_error_on_submit_reading(post, meter, device_key):
    response = post(SUBMIT, {"kwh_amount": 1}, key=device_key)

    assert response.status_code == 400 and response.json()["error"]["field"] == "reading_timestamp"


def test_a_reading_older_than_the_maximum_age_is_rejected(post, meter, device_key):
    old = datetime.now(UTC) - timedelta(days=7, minutes=1)

    response = submit(post, device_key, meter, at=old)

    assert response.json()["error"]["code"] == "timestamp_too_old"
    assert not MeterReading.objects.exists()


def test_a_reading_just_inside_the_maximum_age_is_accepted(post, meter, device_key):
    assert submit(post, device_key, meter, at=datetime.now(UTC) - timedelta(days=6, hours=23)).status_code == 201


def test_a_reading_beyond_the_future_tolerance_is_rejected(post, meter, device_key):
    ahead = datetime.now(UTC) + timedelta(seconds=400)

    response = submit(post, device_key, meter, at=ahead)

    assert response.json()["error"]["code"] == "timestamp_in_future"


def test_a_little_clock_skew_is_tolerated(post, meter, device_key):
    assert submit(post, device_key, meter, at=datetime.now(UTC) + timedelta(seconds=60)).status_code == 201


@pytest.mark.parametrize(
    "timestamp",
    [
        "yesterday",
        "2024-01-01",
        "2024-01-01T10:00:00",  # no offset
        "2024-13-01T10:00:00Z",
        "2024-02-30T10:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "1714560000",
        1714560000,
        None,
        "2024-01-01T10:00:00Z" + " " * 50,
    ],
)
def test_timestamps_that_are_not_rfc3339_are_rejected(post, meter, device_key, timestamp):
    data = {"meter_serial": meter.serial, "kwh_amount": "1", "reading_timestamp": timestamp}

    response = post(SUBMIT, data, key=device_key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == "reading_timestamp"


def test_offsets_and_nanoseconds_are_normalised_to_utc_microseconds(post, meter, device_key, recent):
    local = (recent + timedelta(microseconds=123456)).astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert local.endswith("+05:30")
    text = local[:26] + "789" + local[26:]  # nine fraction digits

    response = submit(post, device_key, meter, at=recent, reading_timestamp=text)

    assert response.status_code == 201
    assert MeterReading.objects.get().reading_timestamp == recent + timedelta(microseconds=123456)


def test_a_lowercase_z_and_t_are_accepted(post, meter, device_key, recent):
    text = rfc3339(recent).replace("T", "t").replace("Z", "z")

    response = submit(post, device_key, meter, at=recent, reading_timestamp=text)

    assert response.status_code == 201 and MeterReading.objects.get().reading_timestamp == recent


def test_the_body_error_of_an_unknown_meter_is_the_unknown_meter(post, fleet_key, recent):
    data = {"meter_serial": "GHOST", "kwh_amount": "-5", "reading_timestamp": rfc3339(recent)}

    assert post(SUBMIT, data, key=fleet_key).json()["error"]["code"] == "meter_not_found"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("meter_serial", 12),
        ("meter_serial", "x" * 65),
        ("meter_serial", "bad\x00serial"),
        ("meter_signature", {"sig": 1}),
        ("meter_signature", "s" * 5000),
    ],
)
def test_malformed_identifiers_and_signatures_are_validation_errors(post, meter, fleet_key, recent, field, value):
    data = {"meter_serial": meter.serial, "kwh_amount": "1", "reading_timestamp": rfc3339(recent), field: value}

    response = post(SUBMIT, data, key=fleet_key)

    assert response.status_code == 400
    assert response.json()["error"] == {**response.json()["error"], "code": "validation_error", "field": field}
    assert not MeterReading.objects.exists()
