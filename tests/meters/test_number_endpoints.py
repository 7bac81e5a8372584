"""Every endpoint's numeric inputs, driven with extreme values through the DRF test client against the real
database: the answer is a stored reading (or another 2xx) or a 4xx in the one error shape, never a 500."""

import itertools
from datetime import timedelta
from decimal import Decimal
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token

from certificates.models import ProductionDevice
from meters.models import Meter, MeterReading
from tests.factories import UserFactory, api_key_for
from tests.meters.conftest import exact_json
from tests.meters.extreme import SPECIAL_TEXT, number_text, values
from tests.meters.test_errors_and_fuzz import assert_error_shape

pytestmark = pytest.mark.django_db
EXAMPLES = settings(
    max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
STEPS = itertools.count()


def moment(recent) -> str:
    """A fresh timestamp per example (16 minutes apart, past the duplicate window), within the accepted age."""
    return (recent - timedelta(minutes=16 * next(STEPS) % (60 * 24 * 6))).isoformat()


# (path, credential, body with "{}" where the value goes, readings it stores on success)
READING_DOORS = {
    "submit-kwh": ("/api/meters/submit-reading", {"kwh_amount": "{}", "reading_timestamp": "@"}),
    "submit-telemetry": ("/api/meters/submit-reading", {"kwh_amount": 1, "reading_timestamp": "@", "voltage": "{}",
                         "latitude": "{}", "zone_id": "{}", "interval_seconds": "{}", "energy_consumed": "{}"}),
    "submit-registers": ("/api/meters/submit-reading", {"reading_timestamp": "@", "registers": {"1.8.0": "{}"}}),
    "v1-kwh": ("/api/v1/meters/{serial}/readings", {"kwh": "{}", "timestamp": "@"}),
    "v1-sunspec": ("/api/v1/meters/{serial}/readings", {"WH": "{}", "WH_SF": "{}", "timestamp": "@"}),
    "batch": ("/api/v1/meters/batch/readings", {"readings": [{"meter_serial": "{serial}", "kwh": "{}",
              "timestamp": "@", "power": "{}"}]}),
    "bridge": ("/v1/private-network/ingest", {"protocol": "dlms", "device_id": "{serial}", "payload": {
               "timestamp": "@", "1.1.1.8.0.255": "{}", "1.1.2.8.0.255": 2500, "1.1.32.7.0.255": "{}"}}),
    "bridge-energies": ("/v1/private-network/ingest", {"protocol": "simulator", "device_id": "{serial}", "payload": {
                        "timestamp": "@", "energy_generated": "{}", "energy_consumed": 0.5}}),
    "bridge-batch": ("/v1/private-network/ingest/batch", {"protocol": "dlms", "readings": [{"device_id": "{serial}",
                     "timestamp": "@", "kwh": "{}", "1.1.16.7.0.255": "{}"}]}),
}  # fmt: skip


def filled(shape, value, *, serial: str, when: str):
    if shape == "{}":
        return value
    if shape == "@":
        return when
    if isinstance(shape, str):
        return shape.format(serial=serial)
    if isinstance(shape, dict):
        return {key: filled(item, value, serial=serial, when=when) for key, item in shape.items()}
    if isinstance(shape, list):
        return [filled(item, value, serial=serial, when=when) for item in shape]
    return shape


@pytest.mark.parametrize("door", READING_DOORS)
@EXAMPLES
@given(value=values)
def test_every_reading_door_stores_or_refuses_any_number(post, meter, recent, door, value):
    path, shape = READING_DOORS[door]
    key = api_key_for(owner=meter.owner)[1]
    before = MeterReading.objects.count()
    body = filled(shape, value, serial=meter.serial, when=moment(recent))

    response = post(path.format(serial=meter.serial), exact_json(body), key=key)

    assert response.status_code < 500, response.content[:500]
    stored = MeterReading.objects.count() - before
    if response.status_code >= 400:
        assert_error_shape(response, response.status_code)
        assert stored == 0
    elif door.startswith(("batch", "bridge-batch")):
        results = response.json()["results"] if door == "batch" else response.json()
        assert stored == sum(result["status"] == "accepted" for result in results)
    else:
        assert stored == (0 if response.json().get("duplicate") else 1)


@pytest.fixture
def user_client(client, meter):
    token = Token.objects.create(user=meter.owner)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token.key}"
    return client


@pytest.mark.parametrize("field", ["capacity_kw", "latitude", "longitude"])
@EXAMPLES
@given(value=values)
def test_certificate_device_numbers_are_read_or_refused(user_client, meter, field, value):
    body = {"meter_id": str(meter.id), "name": "Roof", "technology": "solar_pv", "commissioning_date": "2024-05-01",
            "grid_zone": "DE", "country": "DE", "issuer": "Registry", field: value}  # fmt: skip

    ProductionDevice.objects.filter(meter=meter).delete()

    response = user_client.generic("POST", "/api/certificates/devices", exact_json(body), "application/json")

    assert response.status_code in (201, 400), response.content[:500]
    device = ProductionDevice.objects.filter(meter=meter).first()
    if response.status_code == 400:
        assert_error_shape(response, 400)
        assert device is None
    elif field != "capacity_kw":  # the rated capacity is stored on the meter
        assert getattr(device, field) == Decimal(str(value)) and abs(getattr(device, field)) <= 180


@EXAMPLES
@given(value=values)
def test_meter_registration_numbers_are_read_or_refused(user_client, value):
    serial = f"NUM-{next(STEPS)}"
    body = {"serial": serial, "meter_type": "smart_meter", "zone_id": value}

    response = user_client.generic("POST", "/api/meters", exact_json(body), "application/json")

    assert response.status_code in (201, 400), response.content[:500]
    assert Meter.objects.filter(serial=serial).exists() == (response.status_code == 201)
    if response.status_code == 400:
        assert_error_shape(response, 400)


@pytest.fixture
def operator_client(client):
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {Token.objects.create(user=UserFactory(is_staff=True)).key}"
    return client


@EXAMPLES
@given(
    quantity=values,
    limit=number_text | st.sampled_from(SPECIAL_TEXT) | st.text(max_size=30),
)
def test_operator_and_holder_numbers_are_read_or_refused(operator_client, quantity, limit):
    client = operator_client
    bundle = "00000000-0000-0000-0000-000000000001"

    transfer = client.generic(
        "POST", f"/api/certificates/bundles/{bundle}/transfer", exact_json({"recipient": "x", "quantity_wh": quantity}),
        "application/json",
    )  # fmt: skip
    listing = client.get(f"/api/admin/meters/unminted?limit={quote(limit)}")
    held = client.get(f"/api/admin/certificates/held?limit={quote(limit)}&offset={quote(limit)}")

    assert transfer.status_code in (400, 404), transfer.content[:500]
    assert_error_shape(transfer, transfer.status_code)
    # The unminted readings are a JSON list, the held certificate intervals an object.
    for response, shape in ((listing, list), (held, dict)):
        assert response.status_code in (200, 400), response.content[:500]
        if response.status_code == 400:
            assert_error_shape(response, 400)
        else:
            assert isinstance(response.json(), shape)
