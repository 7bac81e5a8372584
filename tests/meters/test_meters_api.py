"""Registering and listing meters: by owners (POST/GET /api/meters) and by aggregators (simulator register)."""

import pytest

from meters.models import ApiKey, Meter, MeterReading
from meters.services.api_keys import hash_key
from tests.factories import MeterFactory, UserFactory, api_key_for, new_wallet
from tests.meters.conftest import rfc3339

REGISTER = "/api/v1/simulator/meters/register"
pytestmark = pytest.mark.django_db


def test_an_owner_registers_a_meter_and_gets_its_device_key_once(post, user_token, meter, recent):
    owner = meter.owner
    response = post("/api/meters", {"serial": "SOLAR-0001", "meter_type": "solar", "zone_id": 4}, token=user_token)

    assert response.status_code == 201
    body = response.json()
    created = Meter.objects.get(serial="SOLAR-0001")
    assert body["meter"]["id"] == str(created.id) and body["meter"]["status"] == "active"
    assert body["meter"]["wallet_address"] == owner.wallet_address == created.wallet_address
    assert body["meter"]["created_at"].endswith("Z") and body["meter"]["zone_id"] == 4
    key = ApiKey.objects.get(meter=created)
    assert key.scope == "device" and key.key_hash == hash_key(body["api_key"])
    submitted = post(
        "/api/meters/submit-reading", {"kwh_amount": "1", "reading_timestamp": rfc3339(recent)}, key=body["api_key"]
    )
    assert submitted.status_code == 201 and MeterReading.objects.get().meter == created


def test_a_meter_can_credit_another_wallet_and_carry_a_public_key(post, user_token):
    wallet, public_key = new_wallet(), new_wallet()

    response = post(
        "/api/meters", {"serial": "M-2", "wallet_address": wallet, "public_key": public_key}, token=user_token
    )

    meter = Meter.objects.get(serial="M-2")
    assert response.status_code == 201 and (meter.wallet_address, meter.public_key) == (wallet, public_key)


def test_a_taken_serial_is_409(post, user_token):
    MeterFactory(serial="TAKEN")

    response = post("/api/meters", {"serial": "TAKEN"}, token=user_token)

    assert response.status_code == 409 and response.json()["error"]["code"] == "meter_already_registered"
    assert Meter.objects.filter(serial="TAKEN").count() == 1


def test_a_user_without_a_wallet_must_send_one(post, api):
    user = UserFactory(wallet_address=None)
    api.force_authenticate(user)

    response = api.post("/api/meters", {"serial": "NO-WALLET"}, format="json")

    assert response.status_code == 400 and response.json()["error"]["code"] == "wallet_address_required"
    assert not Meter.objects.exists()


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ({"serial": "has space"}, "validation_error", "serial"),
        ({"serial": "a/b"}, "validation_error", "serial"),
        ({"serial": "x" * 65}, "validation_error", "serial"),
        ({}, "validation_error", "serial"),
        ({"serial": "OK-1", "wallet_address": "nope"}, "invalid_wallet_address", "wallet_address"),
        ({"serial": "OK-1", "wallet_address": 12}, "invalid_wallet_address", "wallet_address"),
        ({"serial": "OK-1", "public_key": "0OIl"}, "invalid_public_key", "public_key"),
        ({"serial": "OK-1", "zone_id": 2**40}, "validation_error", "zone_id"),
    ],
)
def test_invalid_meter_registrations_are_400(post, user_token, data, code, field):
    response = post("/api/meters", data, token=user_token)

    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["field"]) == (code, field)
    assert not Meter.objects.exclude(serial__startswith="MTR-").exists()


def test_an_api_key_cannot_register_meters_this_way(post, fleet_key):
    response = post("/api/meters", {"serial": "VIA-KEY"}, key=fleet_key)

    assert response.status_code == 403 and not Meter.objects.filter(serial="VIA-KEY").exists()


def test_the_meter_list_shows_only_the_callers_meters(api, user_token, meter):
    MeterFactory(owner=meter.owner, serial="ZZ-2")
    MeterFactory(serial="FOREIGN")

    body = api.get("/api/meters", HTTP_AUTHORIZATION=f"Bearer {user_token}").json()

    assert [m["serial"] for m in body["data"]] == [meter.serial, "ZZ-2"]
    assert body["pagination"]["total_items"] == 2


def test_a_device_key_lists_only_its_meter(api, meter, device_key):
    MeterFactory(owner=meter.owner)

    body = api.get("/api/meters", HTTP_X_API_KEY=device_key).json()

    assert [m["id"] for m in body["data"]] == [str(meter.id)]


def test_other_methods_on_the_meters_path_are_405(api, user_token):
    response = api.delete("/api/meters", HTTP_AUTHORIZATION=f"Bearer {user_token}")

    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert set(response["Allow"].split(", ")) >= {"GET", "POST"}


def test_head_and_options_on_the_meters_path_are_answered(api, user_token):
    assert api.head("/api/meters", HTTP_AUTHORIZATION=f"Bearer {user_token}").status_code == 200
    assert api.options("/api/meters", HTTP_AUTHORIZATION=f"Bearer {user_token}").status_code == 200


def test_a_fleet_key_registers_a_meter_under_its_owner(post, meter, fleet_key):
    wallet = new_wallet()
    data = {"meter_id": "SIM-001", "wallet_address": wallet, "meter_type": "solar", "location": "Bangkok", "zone_id": 2}

    response = post(REGISTER, data, key=fleet_key)

    assert response.status_code == 201
    created = Meter.objects.get(serial="SIM-001")
    assert response.json() == {
        "success": True,
        "message": "Meter SIM-001 registered.",
        "meter_id": "SIM-001",
        "id": str(created.id),
    }
    assert (created.owner, created.wallet_address, created.location, created.zone_id) == (
        meter.owner,
        wallet,
        "Bangkok",
        2,
    )


def test_registering_again_returns_the_meter_and_updates_its_wallet(post, meter, fleet_key):
    post(REGISTER, {"meter_id": "SIM-002", "wallet_address": new_wallet()}, key=fleet_key)
    wallet = new_wallet()

    response = post(REGISTER, {"meter_id": "SIM-002", "wallet_address": wallet}, key=fleet_key)

    assert response.status_code == 200 and response.json()["success"] is True
    assert Meter.objects.filter(serial="SIM-002").get().wallet_address == wallet


def test_registering_another_accounts_serial_is_409(post, fleet_key):
    foreign = MeterFactory(serial="SIM-THEIRS")

    response = post(REGISTER, {"meter_id": "SIM-THEIRS", "wallet_address": new_wallet()}, key=fleet_key)

    assert response.status_code == 409
    foreign.refresh_from_db()
    assert foreign.wallet_address == foreign.owner.wallet_address


@pytest.mark.parametrize("credential", ["device", "user"])
def test_only_fleet_keys_may_use_the_simulator_register(post, meter, device_key, user_token, credential):
    auth = {"key": device_key} if credential == "device" else {"token": user_token}

    response = post(REGISTER, {"meter_id": "SIM-003", "wallet_address": new_wallet()}, **auth)

    assert response.status_code == 403 and not Meter.objects.filter(serial="SIM-003").exists()


def test_the_simulator_register_needs_a_wallet(post, fleet_key):
    response = post(REGISTER, {"meter_id": "SIM-004"}, key=fleet_key)

    assert response.status_code == 400 and response.json()["error"]["field"] == "wallet_address"


def test_a_fleet_key_submits_for_meters_it_registered(post, fleet_key, recent):
    post(REGISTER, {"meter_id": "SIM-005", "wallet_address": new_wallet()}, key=fleet_key)

    response = post("/api/v1/meters/SIM-005/readings", {"kwh": 1, "timestamp": rfc3339(recent)}, key=fleet_key)

    assert response.status_code == 201 and MeterReading.objects.get().meter.serial == "SIM-005"


def test_a_fleet_key_of_another_owner_cannot_take_over_a_meter(post, meter):
    _, key = api_key_for(owner=UserFactory())

    response = post(REGISTER, {"meter_id": meter.serial, "wallet_address": new_wallet()}, key=key)

    assert response.status_code == 409
    meter.refresh_from_db()
    assert meter.wallet_address == meter.owner.wallet_address
