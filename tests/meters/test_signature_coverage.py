"""A verified signature vouches only for what its form covers; a reading whose minted quantities it does not cover
is held (or refused), never minted silently. docs/METER_DATA.md "Signatures".

The register payloads are OBIS 1.8.0 / 2.8.0 totals in kWh (IEC 62056-61 register codes, as docs/METER_DATA.md
lists them); the interval payloads are GridTokenX's simulator reading (tests/meters/fleet_payloads.py): ``kwh``
with ``energy_generated`` / ``energy_consumed``. Each test signs the payload with a fresh Ed25519 key, then
tampers with one field.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from solders.keypair import Keypair

from meters import signatures
from meters.models import MeterReading
from meters.simulator import Reading, make_meter
from tests.factories import MeterFactory, api_key_for
from tests.meters.conftest import rfc3339

BATCH = "/api/v1/meters/batch/readings"


@pytest.fixture
def keyed(db):
    keypair = Keypair()
    meter = MeterFactory(public_key=str(keypair.pubkey()))
    return meter, keypair, api_key_for(owner=meter.owner)[1]


def v2(keypair, meter, moment, *, kwh=None, imported=None, exported=None) -> str:
    message = signatures.full_message(
        serial=meter.serial, reading_timestamp=moment, kwh=kwh, import_kwh=imported, export_kwh=exported
    )
    return str(keypair.sign_message(message))


def v1(keypair, meter, moment, kwh) -> str:
    return str(
        keypair.sign_message(signatures.canonical_message(serial=meter.serial, reading_timestamp=moment, kwh=kwh))
    )


def register_body(meter, moment, imported: str, exported: str, signature: str) -> dict:
    return {
        "meter_serial": meter.serial,
        "timestamp": rfc3339(moment),
        "registers": {"1.8.0": Decimal(imported), "2.8.0": Decimal(exported)},
        "meter_signature": signature,
    }


def submit(post, key, *bodies) -> list[dict]:
    return post(BATCH, {"readings": list(bodies)}, key=key).json()["results"]


def test_the_v2_message_names_the_timestamp_net_and_both_directions():
    moment = MeterReading._meta.get_field("reading_timestamp").to_python("2026-03-01T12:00:05Z")

    assert (
        signatures.full_message(
            serial="M-1", reading_timestamp=moment, kwh=None, import_kwh=Decimal("100.5"), export_kwh=Decimal("2")
        )
        == b"gridtoken:v2:M-1:2026-03-01T12:00:05Z:-:100.500000000:2.000000000"
    )


def test_register_reads_signed_in_the_v2_form_derive_and_mint_as_usual(post, keyed, recent):
    meter, keypair, key = keyed
    first, second = recent - timedelta(minutes=30), recent
    bodies = [
        register_body(
            meter, first, "100", "50", v2(keypair, meter, first, imported=Decimal(100), exported=Decimal(50))
        ),
        register_body(
            meter,
            second,
            "100.25",
            "51.5",
            v2(keypair, meter, second, imported=Decimal("100.25"), exported=Decimal("51.5")),
        ),
    ]

    results = submit(post, key, *bodies)

    assert [r["status"] for r in results] == ["accepted", "accepted"]
    later = MeterReading.objects.get(reading_timestamp=second)
    assert later.status == MeterReading.Status.PENDING and later.mintable_kwh == Decimal("1.25")
    assert later.flags == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("timestamp", 1), ("1.8.0", Decimal("99.9")), ("2.8.0", Decimal("51.6"))],
)
def test_any_field_tampered_after_v2_signing_fails_the_signature(post, keyed, recent, field, value):
    meter, keypair, key = keyed
    body = register_body(
        meter,
        recent,
        "100.25",
        "51.5",
        v2(keypair, meter, recent, imported=Decimal("100.25"), exported=Decimal("51.5")),
    )
    if field == "timestamp":
        body["timestamp"] = rfc3339(recent + timedelta(seconds=value))
    else:
        body["registers"][field] = value

    (result,) = submit(post, key, body)

    assert result["status"] == "rejected" and result["error"]["code"] == "invalid_signature"
    assert not MeterReading.objects.exists()


def test_a_v1_signed_register_read_leaves_its_import_unsigned_and_is_held(post, keyed, recent):
    """v1 signs the export total only; under the reading basis the net depends on the import too, so a lowered
    import would mint more. Before coverage was checked, the second read was minted (pending, 1.25 kWh)."""
    meter, keypair, key = keyed
    first, second = recent - timedelta(minutes=30), recent
    bodies = [
        register_body(meter, first, "100", "50", v1(keypair, meter, first, Decimal(50))),
        register_body(meter, second, "100.25", "51.5", v1(keypair, meter, second, Decimal("51.5"))),
    ]

    results = submit(post, key, *bodies)

    assert [r["status"] for r in results] == ["accepted", "accepted"]
    for reading in MeterReading.objects.all():
        assert reading.status == MeterReading.Status.HELD
        assert reading.flags[-1] == "unsigned_import"


def test_an_interval_readings_v1_signature_covers_the_net_it_mints(post, keyed, recent):
    meter, keypair, key = keyed
    body = {
        "meter_serial": meter.serial,
        "kwh": "0.85",
        "energy_generated": 9.9,  # tampered: the reading basis mints kwh, which the signature covers
        "energy_consumed": 0.4,
        "timestamp": rfc3339(recent),
        "meter_signature": v1(keypair, meter, recent, Decimal("0.85")),
    }

    (result,) = submit(post, key, body)

    reading = MeterReading.objects.get()
    assert result["status"] == "accepted" and reading.status == MeterReading.Status.PENDING
    assert reading.mintable_kwh == Decimal("0.85") and reading.flags == []


def test_under_the_export_basis_an_unsigned_export_is_held_never_minted(post, keyed, recent, ingest_settings):
    """Before: the tampered energy_generated (9.9, signed 1.25) was minted as the export."""
    ingest_settings(mint_basis="export")
    meter, keypair, key = keyed
    body = {
        "meter_serial": meter.serial,
        "kwh": "0.85",
        "energy_generated": 9.9,
        "energy_consumed": 0.4,
        "timestamp": rfc3339(recent),
        "meter_signature": v1(keypair, meter, recent, Decimal("0.85")),
    }

    (result,) = submit(post, key, body)

    reading = MeterReading.objects.get()
    assert result["status"] == "accepted"
    assert reading.status == MeterReading.Status.HELD and reading.flags == ["unsigned_export"]
    assert reading.mintable_kwh == Decimal("9.9")  # what an operator's approval would mint


def test_under_the_export_basis_the_v2_form_covers_the_export(post, keyed, recent, ingest_settings):
    ingest_settings(mint_basis="export")
    meter, keypair, key = keyed
    signature = v2(keypair, meter, recent, kwh=Decimal("0.85"), imported=Decimal("0.4"), exported=Decimal("1.25"))
    body = {
        "meter_serial": meter.serial,
        "kwh": "0.85",
        "energy_generated": 1.25,
        "energy_consumed": 0.4,
        "timestamp": rfc3339(recent),
        "meter_signature": signature,
    }

    (result,) = submit(post, key, body)
    tampered = submit(post, key, body | {"energy_generated": 12.5, "timestamp": rfc3339(recent + timedelta(hours=1))})

    reading = MeterReading.objects.get()
    assert result["status"] == "accepted" and reading.status == MeterReading.Status.PENDING
    assert reading.mintable_kwh == Decimal("1.25")
    assert tampered[0]["error"]["code"] == "invalid_signature"


def test_refusing_uncovered_readings_is_a_setting(post, keyed, recent, ingest_settings):
    ingest_settings(signature_uncovered="reject")
    meter, keypair, key = keyed

    (result,) = submit(post, key, register_body(meter, recent, "100", "50", v1(keypair, meter, recent, Decimal(50))))

    assert result["status"] == "rejected"
    assert result["error"]["code"] == "signature_incomplete"
    assert result["error"]["details"] == {"unsigned": ["import"]}
    assert not MeterReading.objects.exists()


def test_an_unkeyed_meters_readings_are_not_checked_for_coverage(post, meter, fleet_key, recent):
    body = {"meter_serial": meter.serial, "registers": {"1.8.0": 1, "2.8.0": 2}, "timestamp": rfc3339(recent)}

    (result,) = submit(post, fleet_key, body)

    assert result["status"] == "accepted" and MeterReading.objects.get().flags == ["register_baseline"]


def test_the_meter_simulators_signed_readings_are_fully_covered_under_the_export_basis(db, post, ingest_settings):
    """The simulator (GridTokenX's reading shape, energy_generated/energy_consumed as floats) signs v2: under the
    export basis its readings mint, never held. Signed v1, as before, they would be held unsigned_export."""
    ingest_settings(mint_basis="export", reading_max_age_days=3650)
    sim = make_meter("SIM-COVERED-1", sign=True)
    meter = MeterFactory(serial=sim.serial, public_key=str(sim.keypair.pubkey()))
    key = api_key_for(meter=meter)[1]
    moment = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    body = Reading(meter=sim, timestamp=moment, kwh=Decimal("1.234")).v1_body()

    response = post(f"/api/v1/meters/{meter.serial}/readings", body, key=key)

    assert response.status_code == 201, response.json()
    reading = MeterReading.objects.get()
    assert reading.status == MeterReading.Status.PENDING and reading.flags == []
    assert reading.mintable_kwh == Decimal("1.234")
