"""GridTokenX's aggregator-bridge envelope over REST: the fleet's own payloads, byte for byte, stored as readings.

The fixtures (tests/meters/fleet_payloads.py) are dated 2026-01-20, and readings older than 7 days are refused, so
the posted ones get a recent timestamp and are signed again with the simulator fleet's own key (seed =
sha256("gridtokenx-sim:{id}"), which gives exactly the SIM_PUBKEY_HEX keys). The published signatures are checked
once, as published, over the messages ``protocols.bridge`` rebuilds.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from meters.models import MeterReading
from meters.parsers import loads_exact
from protocols import bridge
from tests.factories import MeterFactory, UserFactory, api_key_for
from tests.meters import conftest as meters_conftest
from tests.meters import fleet_payloads as fleet

# The meters suite's fixtures: the API client, the cache reset and POST with on-commit callbacks run.
api, fresh_caches, post = meters_conftest.api, meters_conftest.fresh_caches, meters_conftest.post
INGEST = "/v1/private-network/ingest"
BATCH = "/v1/private-network/ingest/batch"
FIXTURE_TIMESTAMP = "2026-01-20T10:07:30+00:00"
SIGNATURES = {
    "MTR-0042": json.loads(fleet.BRIDGE_DLMS_INGEST_JSON)["payload"]["signature"],
    "MTR-0043": fleet._BATCH_ITEM_2["signature"],
}


def sim_key(device_id: str) -> Keypair:
    return Keypair.from_seed(hashlib.sha256(f"gridtokenx-sim:{device_id}".encode()).digest())


def sim_pubkey(device_id: str) -> str:
    return str(Pubkey.from_bytes(bytes.fromhex(fleet.SIM_PUBKEY_HEX[device_id])))


@pytest.fixture
def moment():
    """A recent whole-second reading time (the simulator sends whole-second UTC timestamps)."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def millis(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


def resigned(text: str, moment: datetime, signatures: dict[str, str]) -> str:
    """A fixture's JSON text at ``moment`` with its published signatures replaced."""
    text = text.replace(FIXTURE_TIMESTAMP, moment.isoformat())
    for published, fresh in signatures.items():
        text = text.replace(published, fresh)
    return text


def sign(device_id: str, message: str) -> str:
    return str(sim_key(device_id).sign_message(message.encode()))


@pytest.fixture
def owner(db):
    return UserFactory()


@pytest.fixture
def sim_meters(owner):
    return {
        serial: MeterFactory(serial=serial, owner=owner, public_key=sim_pubkey(serial))
        for serial in fleet.SIM_PUBKEY_HEX
    }


@pytest.fixture
def fleet_key(owner):
    return api_key_for(owner=owner)[1]


def dlms_ingest(moment: datetime, signature: str) -> bytes:
    return fleet.wire_bytes(resigned(fleet.BRIDGE_DLMS_INGEST_JSON, moment, {SIGNATURES["MTR-0042"]: signature}))


def stored_telemetry(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT telemetry->>%s FROM meters_meterreading", [name])
        return cursor.fetchone()[0]


# --- The published fixtures --------------------------------------------------------------------------------------


def test_the_sim_fleet_keys_are_the_published_ones():
    for device_id, hex_key in fleet.SIM_PUBKEY_HEX.items():
        assert bytes(sim_key(device_id).pubkey()).hex() == hex_key


def test_the_published_signatures_verify_over_the_rebuilt_messages():
    payload = loads_exact(fleet.wire_bytes(fleet.BRIDGE_DLMS_INGEST_JSON))["payload"]
    messages = [form.message for form in bridge.signed_messages(payload, device_id="MTR-0042")]
    key = Pubkey.from_bytes(bytes.fromhex(fleet.SIM_PUBKEY_HEX["MTR-0042"]))

    assert messages[:2] == [fleet.SIGNED_CANONICAL.encode(), fleet.SIGNED_CANONICAL_SECONDS.encode()]
    assert Signature.from_string(payload["signature"]).verify(key, messages[0])
    assert Signature.from_string(fleet.SIGNATURE_SECONDS_FORM).verify(key, messages[1])
    second = loads_exact(fleet.wire_bytes(fleet.BRIDGE_DLMS_BATCH_JSON))["readings"][1]
    translated = bridge.reading_from_item(second)
    assert translated.signed_messages[0].message == b"MTR-0043:-0.35:1768903650000"
    key = Pubkey.from_bytes(bytes.fromhex(fleet.SIM_PUBKEY_HEX["MTR-0043"]))
    assert Signature.from_string(second["signature"]).verify(key, translated.signed_messages[0].message)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.0", "1"),
        ("0.85", "0.85"),
        ("-0.35", "-0.35"),
        ("0.1", "0.1"),
        ("100", "100"),
        ("1e21", "1000000000000000000000"),
        ("1.5e-7", "0.00000015"),
        ("0.30000000000000004", "0.30000000000000004"),
        ("123456789012345678", "123456789012345680"),
        ("-0.0", "-0"),
    ],
)
def test_the_signed_value_is_written_as_rust_writes_an_f64(text, expected):
    assert bridge.rust_f64_to_string(loads_exact(text)) == expected


def test_without_kwh_the_signed_value_is_the_interval_import_in_kwh_as_f64_arithmetic_prints_it():
    payload = {"1.1.1.8.0.255": loads_exact("300.0"), "timestamp": FIXTURE_TIMESTAMP}

    assert bridge.signed_value(payload) == "0.3"  # 300.0 / 1000.0 in f64, not the Decimal 0.3000
    assert bridge.signed_value({"1.1.2.8.0.255": 1}) == "0.001"


def test_the_json_form_is_serde_jsons_sorted_compact_text_without_the_signature():
    payload = loads_exact(b'{"b": 1250.0, "a": "x\\u00e9\\n", "signature": "s", "c": [1e-7, 1e16, 2, true, null]}')

    assert bridge.signed_messages(payload | {"timestamp": FIXTURE_TIMESTAMP, "kwh": 1}, device_id="D")[2].message == (
        '{"a":"xé\\n","b":1250.0,"c":[1e-7,1e16,2,true,null],"kwh":1,"timestamp":"2026-01-20T10:07:30+00:00"}'.encode()
    )


def test_obis_energies_are_interval_wh_and_tariffs_stand_in_for_a_missing_total():
    payload = loads_exact('{"1.1.1.8.1.255": 300.5, "1.1.1.8.2.255": 100, "1.1.2.8.0.255": 1250.0}')

    body = bridge.reading_from_payload(payload, device_id="M").body

    assert body["energy_consumed"] == Decimal("0.4005") and body["energy_generated"] == Decimal("1.25")
    assert body["kwh"] == Decimal("0.8495") and "registers" not in body


def test_plain_energies_are_used_when_the_obis_keys_are_absent():
    body = bridge.reading_from_payload(loads_exact('{"energy_generated": 0.1, "energy_consumed": 0.45}'), device_id="M")

    assert body.body["kwh"] == Decimal("-0.35")
    assert body.body["energy_generated"] == Decimal("0.1") and body.body["energy_consumed"] == Decimal("0.45")


# --- Single envelopes --------------------------------------------------------------------------------------------


def test_a_dlms_frame_posted_byte_for_byte_is_stored_field_for_field(post, sim_meters, fleet_key, moment):
    signature = sign("MTR-0042", f"MTR-0042:0.85:{millis(moment)}")

    response = post(INGEST, dlms_ingest(moment, signature), key=fleet_key)

    assert response.status_code == 202, response.json()
    reading = MeterReading.objects.get()
    assert response.json() == {
        "status": "accepted",
        "reading_id": str(reading.id),
        "device_type": "smart_meter",
        "stream": bridge.STREAM,
        "duplicate": False,
    }
    assert reading.meter == sim_meters["MTR-0042"] and reading.reading_timestamp == moment
    assert reading.kwh_amount == Decimal("0.85") and reading.mintable_kwh == Decimal("0.85")
    assert (reading.generated_kwh, reading.consumed_kwh) == (Decimal("1.25"), Decimal("0.4"))
    assert reading.source == "interval" and reading.import_register_kwh is None and reading.export_register_kwh is None
    assert reading.meter_signature == signature and reading.status == "pending"
    expected = {"voltage": "231.42", "current": "7.215", "frequency": "50.012", "power_factor": "0.9712"}
    for name, value in (expected | {"power": "-3.4", "zone_id": "2"}).items():
        assert stored_telemetry(name) == value, name


def test_the_legacy_seconds_form_of_the_signature_is_accepted(post, sim_meters, fleet_key, moment):
    signature = sign("MTR-0042", f"MTR-0042:0.85:{millis(moment) // 1000}")

    response = post(INGEST, dlms_ingest(moment, signature), key=fleet_key)

    assert response.status_code == 202, response.json()
    assert MeterReading.objects.get().meter_signature == signature


def test_a_device_key_of_the_meter_may_post_its_frames(post, sim_meters, moment):
    key = api_key_for(meter=sim_meters["MTR-0042"])[1]

    response = post(INGEST, dlms_ingest(moment, sign("MTR-0042", f"MTR-0042:0.85:{millis(moment)}")), key=key)

    assert response.status_code == 202
    assert MeterReading.objects.get().meter == sim_meters["MTR-0042"]


def test_a_signature_over_another_timestamp_is_refused_and_nothing_is_stored(post, sim_meters, fleet_key, moment):
    response = post(INGEST, dlms_ingest(moment, SIGNATURES["MTR-0042"]), key=fleet_key)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"
    assert response.json()["error"]["field"] == "payload.signature"
    assert not MeterReading.objects.exists()


def test_a_keyed_meters_unsigned_frame_is_refused_and_nothing_is_stored(post, sim_meters, fleet_key, moment):
    envelope = json.loads(dlms_ingest(moment, "x"))
    del envelope["payload"]["signature"]

    response = post(INGEST, json.dumps(envelope), key=fleet_key)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "signature_required"
    assert not MeterReading.objects.exists()


def test_a_signature_by_another_key_is_refused(post, sim_meters, fleet_key, moment):
    signature = sign("MTR-0043", f"MTR-0042:0.85:{millis(moment)}")

    response = post(INGEST, dlms_ingest(moment, signature), key=fleet_key)

    assert response.status_code == 403
    assert not MeterReading.objects.exists()


def test_a_replay_is_accepted_again_with_the_stored_readings_id(post, sim_meters, fleet_key, moment):
    body = dlms_ingest(moment, sign("MTR-0042", f"MTR-0042:0.85:{millis(moment)}"))

    first = post(INGEST, body, key=fleet_key)
    again = post(INGEST, body, key=fleet_key)

    assert first.status_code == again.status_code == 202
    assert again.json()["reading_id"] == first.json()["reading_id"]
    assert again.json()["duplicate"] is True
    assert MeterReading.objects.count() == 1


def test_another_value_at_a_stored_timestamp_is_a_conflict(post, sim_meters, fleet_key, moment):
    post(INGEST, dlms_ingest(moment, sign("MTR-0042", f"MTR-0042:0.85:{millis(moment)}")), key=fleet_key)
    changed = json.loads(dlms_ingest(moment, sign("MTR-0042", f"MTR-0042:0.9:{millis(moment)}")))
    changed["payload"]["kwh"] = 0.9

    response = post(INGEST, json.dumps(changed), key=fleet_key)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_reading_conflict"
    assert MeterReading.objects.get().kwh_amount == Decimal("0.85")


def test_the_bridges_placeholder_key_is_refused_as_bad_credentials(post, sim_meters, moment):
    response = post(INGEST, dlms_ingest(moment, "x"), **{"HTTP_X_API_KEY": "test-api-key"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert not MeterReading.objects.exists()


def test_an_unknown_protocol_is_refused(post, sim_meters, fleet_key, moment):
    envelope = json.loads(dlms_ingest(moment, "x")) | {"protocol": "modbus"}

    response = post(INGEST, json.dumps(envelope), key=fleet_key)

    assert response.status_code == 400
    assert response.json()["error"] == {**response.json()["error"], "code": "unsupported_protocol", "field": "protocol"}


def test_an_encrypted_frame_is_refused_with_a_stable_code(post, sim_meters, fleet_key):
    response = post(INGEST, fleet.wire_bytes(fleet.BRIDGE_DLMS_ENC_SHAPE_JSON), key=fleet_key)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "encrypted_frame_unsupported" and error["details"] == {"counter": 1768903650000000}
    assert not MeterReading.objects.exists()


def test_an_unsigned_simulator_payload_of_a_meter_without_key_is_stored(post, owner, fleet_key, moment):
    MeterFactory(serial="MTR-0042", owner=owner)
    payload = json.loads(fleet.SIMULATOR_READING_JSON) | {"timestamp": moment.isoformat()}
    envelope = {"protocol": "simulator", "device_id": "MTR-0042", "payload": payload}

    response = post(INGEST, fleet.wire_bytes(json.dumps(envelope)), key=fleet_key)

    assert response.status_code == 202, response.json()
    reading = MeterReading.objects.get()
    assert (reading.kwh_amount, reading.generated_kwh, reading.consumed_kwh) == (
        Decimal("0.85"),
        Decimal("1.25"),
        Decimal("0.4"),
    )
    assert reading.telemetry["reading_id"] == "MTR-0042-17" and stored_telemetry("voltage") == "231.42"


# --- Batches -----------------------------------------------------------------------------------------------------


def test_a_batch_stores_its_good_items_and_rejects_the_bad_one_with_its_reason(post, sim_meters, fleet_key, moment):
    signatures = {
        SIGNATURES["MTR-0042"]: sign("MTR-0042", f"MTR-0042:0.85:{millis(moment)}"),
        SIGNATURES["MTR-0043"]: sign("MTR-0043", f"MTR-0043:-0.35:{millis(moment)}"),
    }
    batch = json.loads(resigned(fleet.BRIDGE_DLMS_BATCH_JSON, moment, signatures))
    later = moment + timedelta(minutes=15)
    forged = batch["readings"][1] | {"timestamp": later.isoformat()}  # signature still over the earlier time
    batch["readings"] += [forged, "not an object"]

    response = post(BATCH, fleet.wire_bytes(json.dumps(batch)), key=fleet_key)

    assert response.status_code == 200
    results = response.json()
    assert [(r["index"], r["status"]) for r in results] == [
        (0, "accepted"),
        (1, "accepted"),
        (2, "rejected"),
        (3, "rejected"),
    ]
    assert results[2]["device_id"] == "MTR-0043" and results[2]["error"]["code"] == "invalid_signature"
    assert results[2]["error"]["field"] == "signature"
    assert results[3]["error"]["code"] == "validation_error"
    first, second = (MeterReading.objects.get(id=r["reading_id"]) for r in results[:2])
    assert results[0] == {
        "index": 0,
        "device_id": "MTR-0042",
        "status": "accepted",
        "reading_id": str(first.id),
        "device_type": "smart_meter",
        "stream": bridge.STREAM,
        "duplicate": False,
    }
    assert (first.meter, first.kwh_amount, first.generated_kwh, first.consumed_kwh) == (
        sim_meters["MTR-0042"],
        Decimal("0.85"),
        Decimal("1.25"),
        Decimal("0.4"),
    )
    assert (second.meter, second.kwh_amount, second.generated_kwh, second.consumed_kwh, second.status) == (
        sim_meters["MTR-0043"],
        Decimal("-0.35"),
        Decimal("0.1"),
        Decimal("0.45"),
        "recorded",
    )
    assert MeterReading.objects.count() == 2


def test_a_replayed_batch_answers_the_stored_ids(post, sim_meters, fleet_key, moment):
    signatures = {
        SIGNATURES["MTR-0042"]: sign("MTR-0042", f"MTR-0042:0.85:{millis(moment)}"),
        SIGNATURES["MTR-0043"]: sign("MTR-0043", f"MTR-0043:-0.35:{millis(moment)}"),
    }
    body = fleet.wire_bytes(resigned(fleet.BRIDGE_DLMS_BATCH_JSON, moment, signatures), compact=True)

    first = post(BATCH, body, key=fleet_key).json()
    again = post(BATCH, body, key=fleet_key).json()

    assert [r["reading_id"] for r in again] == [r["reading_id"] for r in first]
    assert [r["duplicate"] for r in again] == [True, True]
    assert MeterReading.objects.count() == 2


def test_an_encrypted_batch_is_refused_with_a_stable_code(post, sim_meters, fleet_key):
    frame = json.loads(fleet.BRIDGE_DLMS_ENC_SHAPE_JSON)["payload"] | {"device_id": "MTR-0042"}
    body = json.dumps({"protocol": "dlms-enc", "readings": [frame]})

    response = post(BATCH, body, key=fleet_key)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "encrypted_frame_unsupported"
    assert not MeterReading.objects.exists()


def test_a_user_token_cannot_post_to_the_bridge(api, sim_meters, moment):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=sim_meters["MTR-0042"].owner)

    response = api.generic(
        "POST", BATCH, b'{"protocol": "dlms", "readings": []}', content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token.key}",
    )  # fmt: skip

    assert response.status_code == 403


def test_the_schema_documents_both_bridge_endpoints(client):
    schema = client.get("/api/schema/?format=json").json()

    assert "post" in schema["paths"][INGEST] and "post" in schema["paths"][BATCH]
    ingest = schema["paths"][INGEST]["post"]
    assert set(ingest["responses"]) >= {"202", "401", "403", "422"}
    assert schema["components"]["schemas"]["BridgeIngest"]["required"] == ["device_id", "payload", "protocol"]
