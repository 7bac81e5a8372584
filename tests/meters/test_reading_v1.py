"""POST /api/v1/meters/{serial}/readings: the gateway's v1 body, telemetry, and its answer's field names."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from meters.models import MeterReading
from tests.meters.conftest import rfc3339

pytestmark = pytest.mark.django_db


def url(meter):
    return f"/api/v1/meters/{meter.serial}/readings"


def test_a_v1_reading_is_stored_with_its_telemetry(post, meter, device_key, recent):
    telemetry = {
        "energy_generated": Decimal("3.125"),
        "energy_consumed": 1,
        "surplus_energy": Decimal("2.125"),
        "deficit_energy": 0,
        "power": Decimal("4.5"),
        "voltage": Decimal("230.1"),
        "current": Decimal("19.6"),
        "power_factor": Decimal("0.98"),
        "frequency": Decimal("50.01"),
        "temperature": Decimal("31.5"),
        "thd_voltage": Decimal("1.2"),
        "thd_current": Decimal("3.4"),
        "latitude": Decimal("13.7563"),
        "longitude": Decimal("100.5018"),
        "zone_id": 3,
        "battery_level": 87,
        "weather_condition": "sunny",
        "rec_eligible": True,
        "carbon_offset": Decimal("1.46"),
        "max_sell_price": Decimal("4.2"),
        "max_buy_price": Decimal("3.9"),
    }
    response = post(url(meter), {"kwh": Decimal("2.125"), "timestamp": rfc3339(recent), **telemetry}, key=device_key)

    assert response.status_code == 201, response.json()
    reading = MeterReading.objects.get()
    assert reading.kwh_amount == Decimal("2.125") and reading.reading_timestamp == recent
    assert reading.telemetry["voltage"] == pytest.approx(230.1)
    assert reading.telemetry["weather_condition"] == "sunny" and reading.telemetry["rec_eligible"] is True
    assert set(reading.telemetry) == set(telemetry)


def test_telemetry_numbers_are_stored_exactly_in_jsonb(post, meter, device_key, recent):
    energy = Decimal("0.100000000000000000000001")
    post(url(meter), {"kwh": 1, "timestamp": rfc3339(recent), "energy_generated": energy}, key=device_key)

    with connection.cursor() as cursor:
        cursor.execute("SELECT telemetry->>'energy_generated' FROM meters_meterreading")
        assert cursor.fetchone()[0] == "0.100000000000000000000001"


def test_unknown_fields_are_ignored(post, meter, device_key, recent):
    data = {"kwh": "1", "timestamp": rfc3339(recent), "firmware": "2.1", "nested": {"a": [1, 2]}, "voltage": 230}

    response = post(url(meter), data, key=device_key)

    assert response.status_code == 201
    assert MeterReading.objects.get().telemetry == {"voltage": 230}


def test_the_answer_carries_the_gateway_field_names(post, meter, device_key, recent):
    response = post(url(meter), {"kwh": "1.25", "timestamp": rfc3339(recent)}, key=device_key)

    body = response.json()
    reading = MeterReading.objects.get()
    assert body["id"] == str(reading.id) and body["serial_number"] == meter.serial
    assert body["kwh"] == "1.250000000" and body["kwh_amount"] == "1.250000000"
    assert body["timestamp"] == body["reading_timestamp"] and body["timestamp"].endswith("Z")
    assert body["minted"] is False and body["tx_signature"] is None
    assert body["message"] == "Reading recorded." and body["duplicate"] is False


def test_without_a_timestamp_the_reading_is_stamped_now(post, meter, device_key):
    before = timezone.now()

    response = post(url(meter), {"kwh": 2}, key=device_key)

    assert response.status_code == 201
    stamped = MeterReading.objects.get().reading_timestamp
    assert before <= stamped <= timezone.now()


def test_the_kwh_amount_and_reading_timestamp_spellings_are_accepted(post, meter, device_key, recent):
    response = post(url(meter), {"kwh_amount": "1", "reading_timestamp": rfc3339(recent)}, key=device_key)

    assert response.status_code == 201 and MeterReading.objects.get().reading_timestamp == recent


def test_a_v1_replay_is_a_duplicate(post, meter, device_key, recent):
    post(url(meter), {"kwh": "1", "timestamp": rfc3339(recent)}, key=device_key)

    again = post(url(meter), {"kwh": 1, "timestamp": rfc3339(recent)}, key=device_key)

    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["message"].startswith("Duplicate") and MeterReading.objects.count() == 1


def test_the_serial_in_the_path_wins_over_the_body(post, meter, fleet_key, recent):
    data = {"kwh": "1", "timestamp": rfc3339(recent), "meter_serial": "SOMETHING-ELSE"}

    response = post(url(meter), data, key=fleet_key)

    assert response.status_code == 201 and MeterReading.objects.get().meter == meter


def test_an_unknown_serial_in_the_path_is_404(post, fleet_key, recent):
    response = post("/api/v1/meters/NOPE-1/readings", {"kwh": 1}, key=fleet_key)

    assert response.status_code == 404 and response.json()["error"]["code"] == "meter_not_found"


def test_a_serial_path_with_a_nul_byte_is_a_validation_error(post, fleet_key):
    response = post("/api/v1/meters/A%00B/readings", {"kwh": 1}, key=fleet_key)

    assert response.status_code == 400 and response.json()["error"]["field"] == "serial"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("voltage", "high"),
        ("voltage", True),
        ("voltage", {"v": 1}),
        ("voltage", "1e20"),
        ("zone_id", 1.5),
        ("zone_id", 2**40),
        ("zone_id", "3"),
        ("rec_eligible", "yes"),
        ("weather_condition", 7),
        ("weather_condition", "w" * 65),
    ],
)
def test_telemetry_of_the_wrong_type_is_a_validation_error(post, meter, device_key, recent, field, value):
    response = post(url(meter), {"kwh": 1, "timestamp": rfc3339(recent), field: value}, key=device_key)

    assert response.status_code == 400 and response.json()["error"]["field"] == field
    assert not MeterReading.objects.exists()


def test_huge_telemetry_numbers_are_rejected(post, meter, device_key, recent):
    raw = f'{{"kwh": 1, "timestamp": "{rfc3339(recent)}", "power": 1e400}}'

    response = post(url(meter), raw, key=device_key)

    assert response.status_code == 400 and response.json()["error"]["field"] == "power"


def test_a_v1_reading_far_in_the_past_is_too_old(post, meter, device_key):
    old = timezone.now() - timedelta(days=30)

    response = post(url(meter), {"kwh": 1, "timestamp": rfc3339(old)}, key=device_key)

    assert response.json()["error"]["code"] == "timestamp_too_old" and response.json()["error"]["field"] == "timestamp"
