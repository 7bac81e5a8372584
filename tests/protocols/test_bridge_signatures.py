"""What a bridge signature covers, and what happens to a reading whose minted amount it does not.

The payloads are GridTokenX's DLMS frame as its aggregator bridge takes it (tests/meters/fleet_payloads.py,
BRIDGE_DLMS_INGEST_JSON: OBIS 1.1.1.8.0.255 / 1.1.2.8.0.255 interval Wh), signed with the simulator fleet's key
over the bridge's forms: ``{device_id}:{v}:{timestamp_ms}`` (``v`` the first number among kwh, energy_consumed,
energy_generated, import Wh/1000, export Wh/1000), its seconds variant, and the payload's sorted JSON.
"""

import dataclasses
import json
from datetime import timedelta
from decimal import Decimal

import pytest

from meters.models import MeterReading
from meters.parsers import loads_exact
from meters.signatures import EVERYTHING, EXPORT, IMPORT, NET, TIMESTAMP
from protocols import bridge
from tests.meters import conftest as meters_conftest
from tests.meters import fleet_payloads as fleet
from tests.protocols import test_bridge
from tests.protocols.test_bridge import millis, sign

api, fresh_caches, post = meters_conftest.api, meters_conftest.fresh_caches, meters_conftest.post
# The bridge suite's fixtures: the simulator fleet's keyed meters, their owner's fleet key, a recent moment.
fleet_key, moment, owner, sim_meters = (
    test_bridge.fleet_key,
    test_bridge.moment,
    test_bridge.owner,
    test_bridge.sim_meters,
)
INGEST = "/v1/private-network/ingest"


def obis_only(moment) -> dict:
    """The published frame without ``kwh`` and the plain energies: the net is derived from the OBIS directions,
    and the short form's ``v`` is the import (400.0 Wh -> "0.4")."""
    payload = json.loads(fleet.BRIDGE_DLMS_INGEST_JSON)["payload"]
    for name in ("kwh", "energy_generated", "energy_consumed", "signature", "1.1.1.8.1.255", "1.1.2.8.1.255"):
        del payload[name]
    payload["timestamp"] = moment.isoformat()
    return payload


def envelope(payload: dict) -> str:
    return json.dumps({"protocol": "dlms", "device_id": "MTR-0042", "payload": payload})


def short_signed(payload: dict, moment) -> dict:
    return payload | {"signature": sign("MTR-0042", f"MTR-0042:0.4:{millis(moment)}")}


def json_signed(payload: dict) -> dict:
    return payload | {"signature": sign("MTR-0042", bridge.serde_json(loads_exact(json.dumps(payload))))}


def test_each_form_states_what_it_covers(moment):
    payload = loads_exact(
        json.dumps(obis_only(moment) | {"timestamp": (moment + timedelta(milliseconds=5)).isoformat()})
    )

    ms_form, seconds_form, json_form = bridge.signed_messages(payload, device_id="MTR-0042")

    assert ms_form.covers == {TIMESTAMP, IMPORT}  # v is the import; the derived net is not covered
    assert seconds_form.covers == {IMPORT}  # 5 ms past the second: another timestamp verifies as well
    assert json_form.covers == EVERYTHING
    with_kwh = bridge.signed_messages(payload | {"kwh": Decimal("0.85")}, device_id="MTR-0042")
    assert with_kwh[0].covers == {TIMESTAMP, NET}
    plain = bridge.signed_messages({"timestamp": payload["timestamp"], "energy_generated": 1}, device_id="D")
    assert plain[0].covers == {TIMESTAMP, EXPORT}


def test_an_export_raised_tenfold_after_signing_the_short_form_is_held_not_minted(post, sim_meters, fleet_key, moment):
    """The finding of issue 23: before, this answered 202 and minted the tampered net (12.5 - 0.4 kWh)."""
    payload = short_signed(obis_only(moment), moment)
    payload["1.1.2.8.0.255"] = 12500.0

    response = post(INGEST, envelope(payload), key=fleet_key)

    assert response.status_code == 202
    reading = MeterReading.objects.get()
    assert reading.status == MeterReading.Status.HELD and reading.flags == ["unsigned_kwh"]
    assert reading.mintable_kwh == Decimal("12.1")  # what an operator's approval would mint


def test_the_short_form_still_refuses_a_changed_import_or_timestamp(post, sim_meters, fleet_key, moment):
    signed = short_signed(obis_only(moment), moment)

    import_changed = post(INGEST, envelope(signed | {"1.1.1.8.0.255": 40.0}), key=fleet_key)
    later = signed | {"timestamp": (moment + timedelta(seconds=1)).isoformat()}
    timestamp_changed = post(INGEST, envelope(later), key=fleet_key)

    assert import_changed.status_code == timestamp_changed.status_code == 403
    assert import_changed.json()["error"]["code"] == timestamp_changed.json()["error"]["code"] == "invalid_signature"
    assert not MeterReading.objects.exists()


def test_the_json_form_covers_every_quantity_and_mints(post, sim_meters, fleet_key, moment):
    payload = json_signed(obis_only(moment))

    response = post(INGEST, envelope(payload), key=fleet_key)

    assert response.status_code == 202
    reading = MeterReading.objects.get()
    assert reading.status == MeterReading.Status.PENDING and reading.flags == []
    assert reading.mintable_kwh == Decimal("0.85")


@pytest.mark.parametrize(
    ("field", "value"),
    [("1.1.1.8.0.255", 40.0), ("1.1.2.8.0.255", 12500.0), ("kwh", 9.9), ("energy_generated", 9.9)],
)
def test_any_field_tampered_after_signing_the_json_form_fails(post, sim_meters, fleet_key, moment, field, value):
    payload = json_signed(obis_only(moment)) | {field: value}

    response = post(INGEST, envelope(payload), key=fleet_key)

    assert response.status_code == 403 and response.json()["error"]["code"] == "invalid_signature"
    assert not MeterReading.objects.exists()


def test_refusing_uncovered_readings_answers_the_bridges_403(post, sim_meters, fleet_key, moment, settings):
    settings.INGEST = dataclasses.replace(settings.INGEST, signature_uncovered="reject")
    payload = short_signed(obis_only(moment), moment)

    response = post(INGEST, envelope(payload), key=fleet_key)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "signature_incomplete"
    assert response.json()["error"]["details"] == {"unsigned": ["kwh"]}
    assert not MeterReading.objects.exists()


# --- The bridge's leniency: protocol, numeric strings -------------------------------------------------------------
# handlers.rs resolve_protocol: lowercased; "auto" or "" resolve to "dlms". canonical_sign_value parses a field
# that is a string with str::parse::<f64> as well as a JSON number.


@pytest.mark.parametrize("protocol", ["", "auto", "AUTO", "DLMS", "Dlms"])
def test_the_protocol_is_read_as_the_bridge_reads_it(post, sim_meters, fleet_key, moment, protocol):
    """Before: 400 unsupported_protocol, so a client that never set the protocol lost every reading."""
    payload = json_signed(obis_only(moment))

    response = post(
        INGEST, json.dumps({"protocol": protocol, "device_id": "MTR-0042", "payload": payload}), key=fleet_key
    )

    assert response.status_code == 202, response.json()
    assert MeterReading.objects.get().mintable_kwh == Decimal("0.85")


@pytest.mark.parametrize("protocol", [None, 1, "modbus", " dlms"])
def test_other_protocols_are_still_refused(post, sim_meters, fleet_key, moment, protocol):
    body = {"protocol": protocol, "device_id": "MTR-0042", "payload": json_signed(obis_only(moment))}

    response = post(INGEST, json.dumps(body), key=fleet_key)

    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_protocol"
    assert not MeterReading.objects.exists()


def test_a_kwh_sent_as_text_is_signed_as_the_bridge_parses_it(post, sim_meters, fleet_key, moment):
    payload = obis_only(moment) | {"kwh": "0.85"}
    payload["signature"] = sign("MTR-0042", f"MTR-0042:0.85:{millis(moment)}")

    response = post(INGEST, envelope(payload), key=fleet_key)

    assert response.status_code == 202, response.json()
    reading = MeterReading.objects.get()
    assert reading.kwh_amount == Decimal("0.85") and reading.status == MeterReading.Status.PENDING
