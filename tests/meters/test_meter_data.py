"""Meter data as real fleets send it: GridTokenX payloads, signed and zero intervals, register reads, VEE."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from meters.models import MeterReading
from tests.factories import MeterFactory, ReadingFactory
from tests.meters import fleet_payloads
from tests.meters.conftest import rfc3339

SUBMIT = "/api/meters/submit-reading"
BATCH = "/api/v1/meters/batch/readings"
Status = MeterReading.Status


def v1(serial: str) -> str:
    return f"/api/v1/meters/{serial}/readings"


def at(text: str, moment, serial: str) -> bytes:
    """A fleet payload's exact bytes with its example timestamp and meter moved to this test's."""
    for example in ("2026-01-20T10:07:30+00:00", "2025-12-01T03:15:00Z"):
        text = text.replace(example, moment.isoformat())
    return fleet_payloads.wire_bytes(text.replace("MTR-0042", serial).replace("MTR-0044", serial + "-B"))


@pytest.fixture
def gridtokenx_meter(db):
    return MeterFactory(serial="MTR-0042")


@pytest.fixture
def gridtokenx_key(gridtokenx_meter):
    from tests.factories import api_key_for

    return api_key_for(owner=gridtokenx_meter.owner)[1]


def register(meter, moment, **registers):
    return {"meter_serial": meter.serial, "timestamp": rfc3339(moment), "registers": registers}


# --- GridTokenX payloads, field for field -----------------------------------------------------------------------


def test_the_simulators_single_reading_is_stored_field_for_field(post, gridtokenx_meter, gridtokenx_key, recent):
    raw = at(fleet_payloads.SIMULATOR_READING_JSON, recent, gridtokenx_meter.serial)

    response = post(v1(gridtokenx_meter.serial), None, raw=raw, HTTP_AUTHORIZATION=f"Bearer {gridtokenx_key}")

    assert response.status_code == 201, response.json()
    stored = MeterReading.objects.get()
    sent = json.loads(raw)
    assert stored.kwh_amount == Decimal("0.85") and stored.mintable_kwh == Decimal("0.85")
    assert (stored.generated_kwh, stored.consumed_kwh, stored.interval_secs) == (Decimal("1.25"), Decimal("0.4"), 900)
    assert stored.reading_timestamp == recent and stored.status == Status.PENDING
    # The body's wallet_address is the meter id, not an address: flagged, and the meter's own wallet is paid.
    assert stored.wallet_address == gridtokenx_meter.wallet_address and stored.flags == ["wallet_invalid"]
    kept = {k: v for k, v in sent.items() if k not in ("kwh", "timestamp", "meter_signature", "meter_serial")}
    assert stored.telemetry == {k: v for k, v in kept.items() if k not in ("energy_generated", "energy_consumed")} | {
        "energy_generated": 1.25,
        "energy_consumed": 0.4,
    }


def test_the_simulators_batch_stores_every_item_zero_and_negative_intervals_included(post, gridtokenx_key, recent):
    items = [
        json.loads(fleet_payloads.SIMULATOR_READING_JSON)
        | {"timestamp": rfc3339(recent + timedelta(minutes=15 * n)), "meter_serial": "MTR-0042"}
        for n in range(3)
    ]
    items[1] |= {"kwh": 0.0, "surplus_energy": 0.0, "energy_generated": 0.0}  # a night interval
    items[2] |= {"kwh": -0.35, "deficit_energy": 0.35, "surplus_energy": 0.0}  # the signed full mode

    body = post(BATCH, {"readings": items}, HTTP_AUTHORIZATION=f"Bearer {gridtokenx_key}").json()

    assert (body["success_count"], body["failed_count"]) == (3, 0), body
    stored = list(MeterReading.objects.order_by("reading_timestamp"))
    assert [(r.kwh_amount, r.mintable_kwh, r.status) for r in stored] == [
        (Decimal("0.85"), Decimal("0.85"), Status.PENDING),
        (Decimal("0"), Decimal("0"), Status.RECORDED),
        (Decimal("-0.35"), Decimal("0"), Status.RECORDED),
    ]
    assert all(r.flags == ["wallet_invalid"] and r.telemetry["reading_id"] == "MTR-0042-17" for r in stored)


def test_the_simulators_monitoring_payload_is_stored(post, gridtokenx_meter, gridtokenx_key, recent):
    raw = at(fleet_payloads.SIMULATOR_MONITORING_JSON, recent, gridtokenx_meter.serial)

    response = post(v1(gridtokenx_meter.serial), None, raw=raw, HTTP_AUTHORIZATION=f"Bearer {gridtokenx_key}")

    assert response.status_code == 201, response.json()
    stored = MeterReading.objects.get()
    assert (stored.kwh_amount, stored.generated_kwh, stored.consumed_kwh) == (
        Decimal("1.25"),
        Decimal("1.25"),
        Decimal("0.4"),
    )
    assert stored.telemetry["thd_current"] == 4.8 and stored.telemetry["zone_id"] == 2


def test_a_negative_reading_is_announced_and_never_minted(post, meter, device_key, recent, listen):
    listener = listen(meter.owner)

    response = post(SUBMIT, {"kwh_amount": "-2.5", "reading_timestamp": rfc3339(recent)}, key=device_key)

    assert response.status_code == 201
    assert (response.json()["status"], response.json()["mintable_kwh"]) == ("recorded", "0.000000000")
    assert listener.receive(expected=1)[0]["status"] == "recorded"


def test_a_meter_id_that_is_not_a_uuid_is_still_an_error_when_it_alone_names_the_meter(post, fleet_key, recent):
    body = post(BATCH, {"readings": [{"meter_id": "MTR-1", "kwh": 1, "timestamp": rfc3339(recent)}]}, key=fleet_key)

    assert body.json()["results"][0]["error"]["code"] == "validation_error"


# --- register reads ---------------------------------------------------------------------------------------------


def test_register_reads_derive_exact_deltas_in_timestamp_order_whatever_the_arrival_order(
    post, meter, fleet_key, recent
):
    t = [recent + timedelta(minutes=15 * n) for n in range(4)]
    reads = [
        register(meter, t[0], **{"1.8.0": "100.000", "2.8.0": "50.000"}),
        register(meter, t[3], **{"1.8.0": "100.900", "2.8.0": "53.500"}),
        register(meter, t[1], **{"1.8.0": "100.200", "2.8.0": "51.250"}),
    ]
    body = post(BATCH, {"readings": reads}, key=fleet_key).json()
    assert body["failed_count"] == 0, body
    # A read arriving later still falls into the gap between t1 and t3 and splits it.
    late = post(BATCH, {"readings": [register(meter, t[2], **{"1.8.0": "100.500", "2.8.0": "52.000"})]}, key=fleet_key)
    assert late.json()["failed_count"] == 0

    rows = list(MeterReading.objects.order_by("reading_timestamp"))
    assert [(r.generated_kwh, r.consumed_kwh, r.kwh_amount, r.mintable_kwh) for r in rows] == [
        (Decimal(0), Decimal(0), Decimal(0), Decimal(0)),
        (Decimal("1.25"), Decimal("0.2"), Decimal("1.05"), Decimal("1.05")),
        (Decimal("0.75"), Decimal("0.3"), Decimal("0.45"), Decimal("0.45")),
        (Decimal("1.5"), Decimal("0.4"), Decimal("1.1"), Decimal("1.1")),
    ]
    assert rows[0].flags == ["register_baseline"] and rows[0].status == Status.RECORDED
    assert [r.interval_secs for r in rows] == [None, 900, 900, 900]  # t3's interval was split by the late read
    assert sum(r.mintable_kwh for r in rows) == Decimal("3.5") - Decimal("0.9")  # export minus import, once


def test_a_replayed_register_read_is_a_duplicate_and_another_value_a_conflict(post, meter, fleet_key, recent):
    read = register(meter, recent, **{"2.8.0": "10.5"})
    first = post(BATCH, {"readings": [read]}, key=fleet_key).json()["results"][0]

    again = post(BATCH, {"readings": [read]}, key=fleet_key).json()["results"][0]
    other = post(BATCH, {"readings": [register(meter, recent, **{"2.8.0": "10.6"})]}, key=fleet_key).json()

    assert (again["status"], again["id"]) == ("duplicate", first["id"])
    assert other["results"][0]["error"]["code"] == "duplicate_reading_conflict"
    assert MeterReading.objects.count() == 1


def test_a_register_decrease_is_a_reset_never_a_negative_or_a_jump(post, meter, fleet_key, recent):
    reads = [
        register(meter, recent + timedelta(minutes=15 * n), **{"2.8.0": v}) for n, v in enumerate(("500", "2", "3"))
    ]

    post(BATCH, {"readings": reads}, key=fleet_key)

    rows = list(MeterReading.objects.order_by("reading_timestamp"))
    assert [r.mintable_kwh for r in rows] == [Decimal(0), Decimal(0), Decimal(1)]
    assert "register_reset" in rows[1].flags


def test_a_register_rolls_over_at_the_meters_declared_size(post, fleet_key, recent):
    meter = MeterFactory(register_max_kwh=Decimal("100000"))
    from tests.factories import api_key_for

    key = api_key_for(owner=meter.owner)[1]
    reads = [
        register(meter, recent + timedelta(minutes=15 * n), **{"2.8.0": v}) for n, v in enumerate(("99999.5", "1.25"))
    ]

    post(BATCH, {"readings": reads}, key=key)

    latest = MeterReading.objects.order_by("reading_timestamp").last()
    assert (latest.mintable_kwh, latest.flags) == (Decimal("1.75"), ["register_rollover"])


def test_a_replaced_meter_starts_a_new_register_baseline(post, meter, fleet_key, recent):
    post(BATCH, {"readings": [register(meter, recent, **{"2.8.0": "800"})]}, key=fleet_key)
    meter.register_baseline_at = recent + timedelta(minutes=1)
    meter.save()
    from meters.selectors import meter_cache_clear

    meter_cache_clear()
    reads = [register(meter, recent + timedelta(minutes=15 * n), **{"2.8.0": v}) for n, v in ((1, "900"), (2, "901"))]

    post(BATCH, {"readings": reads}, key=fleet_key)

    rows = list(MeterReading.objects.order_by("reading_timestamp"))
    assert [r.mintable_kwh for r in rows] == [Decimal(0), Decimal(0), Decimal(1)]
    assert rows[1].flags == ["register_baseline"]


def test_a_late_read_whose_successor_is_already_priced_adds_nothing(post, meter, fleet_key, recent):
    post(BATCH, {"readings": [register(meter, recent, **{"2.8.0": "10"})]}, key=fleet_key)
    post(BATCH, {"readings": [register(meter, recent + timedelta(minutes=30), **{"2.8.0": "12"})]}, key=fleet_key)
    MeterReading.objects.filter(mintable_kwh=2).update(
        status=Status.MINTED, minted=True, mint_tx_signature="s", token_amount=1
    )

    post(BATCH, {"readings": [register(meter, recent + timedelta(minutes=15), **{"2.8.0": "11"})]}, key=fleet_key)

    late = MeterReading.objects.get(reading_timestamp=recent + timedelta(minutes=15))
    assert (late.mintable_kwh, late.status, late.flags) == (Decimal(0), Status.RECORDED, ["late_register_read"])
    assert MeterReading.objects.get(token_amount=1).mintable_kwh == 2


@pytest.mark.parametrize(
    ("body", "imported", "exported"),
    [
        ({"SML": {"Total_in": 12345.6789, "Total_out": 2345.0123, "Power_curr": -812}}, "12345.6789", "2345.0123"),
        ({"total_act": 12419.46, "total_act_ret": 2698.2}, "12.41946", "2.6982"),
        ({"emdata:0": {"total_act": 1000, "total_act_ret": 2500}}, "1", "2.5"),
        ({"WH": 1234567, "WH_SF": 1}, None, "12345.67"),
        ({"registers": {"1-0:1.8.1": "1.5", "1-0:1.8.2": "2.5", "1-0:2.8.0*255": "4"}}, "4", "4"),
        ({"registers": {"1.1.1.8.0.255": 400, "1.1.2.8.0.255": 1250}, "register_unit": "Wh"}, "0.4", "1.25"),
        ({"sampledValue": [{"value": "1234", "measurand": "Energy.Active.Import.Register"}]}, "1.234", None),
        (
            {
                "sampledValue": [
                    {"value": 7, "measurand": "Energy.Active.Export.Register", "unitOfMeasure": {"unit": "kWh"}}
                ]
            },
            None,
            "7",
        ),
    ],
)
def test_register_shapes_of_real_meters_are_read_with_their_units(
    post, meter, fleet_key, recent, body, imported, exported
):
    response = post(
        BATCH, {"readings": [{"meter_serial": meter.serial, "timestamp": rfc3339(recent), **body}]}, key=fleet_key
    )

    assert response.json()["failed_count"] == 0, response.json()
    stored = MeterReading.objects.get()
    assert stored.source == "register"
    assert stored.import_register_kwh == (None if imported is None else Decimal(imported))
    assert stored.export_register_kwh == (None if exported is None else Decimal(exported))


@pytest.mark.parametrize(
    "registers", [{"2.8.0": -1}, {"2.8.0": "1e30"}, {"2.8.0": "0.0000000001"}, {"9.9.9": 1}, {"2.8.0": True}]
)
def test_an_unusable_register_value_is_a_clear_400(post, meter, device_key, recent, registers):
    response = post(v1(meter.serial), {"timestamp": rfc3339(recent), "registers": registers}, key=device_key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_register"


def test_a_single_post_register_read_takes_the_same_path(post, meter, device_key, recent):
    first = post(v1(meter.serial), {"timestamp": rfc3339(recent), "registers": {"2.8.0": 5}}, key=device_key)
    later = {"timestamp": rfc3339(recent + timedelta(minutes=15)), "registers": {"2.8.0": "7.5"}}

    second = post(v1(meter.serial), later, key=device_key)
    replay = post(v1(meter.serial), later, key=device_key)

    assert (first.status_code, second.status_code, replay.status_code) == (201, 201, 200)
    assert (second.json()["mintable_kwh"], replay.json()["duplicate"]) == ("2.500000000", True)


# --- VEE ---------------------------------------------------------------------------------------------------------


def test_energy_above_the_meters_capacity_is_held(post, fleet_key, recent, listen):
    meter = MeterFactory(capacity_kw=Decimal("4"))
    from tests.factories import api_key_for

    key = api_key_for(owner=meter.owner)[1]
    items = [
        {"meter_serial": meter.serial, "kwh": "1.2", "interval_seconds": 900, "timestamp": rfc3339(recent)},
        {
            "meter_serial": meter.serial,
            "kwh": "0.9",
            "interval_seconds": 900,
            "timestamp": rfc3339(recent + timedelta(minutes=15)),
        },
    ]

    post(BATCH, {"readings": items}, key=key)

    rows = list(MeterReading.objects.order_by("reading_timestamp"))
    assert [(r.status, r.flags) for r in rows] == [(Status.HELD, ["capacity"]), (Status.PENDING, [])]


def test_a_rule_set_to_reject_answers_its_stable_code(post, ingest_settings, settings, meter, device_key, recent):
    import dataclasses

    settings.VEE = dataclasses.replace(settings.VEE, actions={**settings.VEE.actions, "meter_quality": "reject"})

    response = post(
        SUBMIT, {"kwh_amount": "1", "reading_timestamp": rfc3339(recent), "quality": "estimated"}, key=device_key
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, "vee_meter_quality")
    assert not MeterReading.objects.exists()


def test_a_meters_own_override_wins_over_the_configured_action(db, post, recent):
    meter = MeterFactory(vee_rules={"meter_quality": "flag"})
    from tests.factories import api_key_for

    key = api_key_for(meter=meter)[1]

    response = post(SUBMIT, {"kwh_amount": "1", "reading_timestamp": rfc3339(recent), "quality": ["invalid"]}, key=key)

    assert (response.json()["status"], response.json()["flags"]) == ("pending", ["meter_quality"])


def test_gaps_and_clock_drift_are_flagged_not_estimated(post, meter, fleet_key, recent):
    ReadingFactory(meter=meter, reading_timestamp=recent - timedelta(hours=1))
    items = [
        {"meter_serial": meter.serial, "kwh": "1", "interval_seconds": 900, "timestamp": rfc3339(recent)},
        {
            "meter_serial": meter.serial,
            "kwh": "1",
            "interval_seconds": 900,
            "timestamp": rfc3339(recent + timedelta(minutes=15)),
        },
    ]
    post(BATCH, {"readings": items}, key=fleet_key)
    from django.utils import timezone

    ahead = timezone.now().replace(microsecond=0) + timedelta(seconds=200)
    post(SUBMIT, {"meter_serial": meter.serial, "kwh_amount": "1", "reading_timestamp": rfc3339(ahead)}, key=fleet_key)

    flags = {r.reading_timestamp: r.flags for r in MeterReading.objects.all()}
    assert flags[recent] == ["gap"] and flags[recent + timedelta(minutes=15)] == []
    assert flags[ahead] == ["clock_drift"]
    assert MeterReading.objects.filter(status=Status.PENDING).count() == 4  # flagged, still minted


def test_a_frozen_register_is_flagged(post, meter, fleet_key, recent, settings):
    import dataclasses

    settings.VEE = dataclasses.replace(settings.VEE, frozen_secs=3600)
    reads = [register(meter, recent + timedelta(minutes=30 * n), **{"1.8.0": "5", "2.8.0": "9"}) for n in range(4)]

    post(BATCH, {"readings": reads}, key=fleet_key)

    flags = [r.flags for r in MeterReading.objects.order_by("reading_timestamp")]
    assert flags == [["register_baseline"], [], ["frozen"], ["frozen"]]


def test_a_spike_against_the_meters_own_history_is_held(post, meter, fleet_key, recent, settings):
    import dataclasses

    settings.VEE = dataclasses.replace(settings.VEE, actions={**settings.VEE.actions, "spike": "hold"}, spike_history=3)
    items = [
        {"meter_serial": meter.serial, "kwh": kwh, "timestamp": rfc3339(recent + timedelta(minutes=15 * n))}
        for n, kwh in enumerate(("1", "1.2", "0.8", "1", "15"))
    ]

    post(BATCH, {"readings": items}, key=fleet_key)

    assert [r.status for r in MeterReading.objects.order_by("reading_timestamp")] == [
        Status.PENDING, Status.PENDING, Status.PENDING, Status.PENDING, Status.HELD,
    ]  # fmt: skip


def test_a_register_jump_beyond_the_largest_reading_is_held(post, meter, fleet_key, recent):
    reads = [register(meter, recent + timedelta(hours=n), **{"2.8.0": v}) for n, v in enumerate(("10", "20193"))]

    post(BATCH, {"readings": reads}, key=fleet_key)

    jump = MeterReading.objects.order_by("reading_timestamp").last()
    assert (jump.status, jump.mintable_kwh, jump.flags) == (Status.HELD, Decimal("20183"), ["above_maximum"])


def test_every_vee_rule_is_a_known_flag():
    from config.objects import VEE_RULES
    from meters.models import READING_FLAGS

    assert set(VEE_RULES) <= set(READING_FLAGS)


def test_a_repeat_of_an_item_a_vee_rule_refused_is_refused_too(post, meter, fleet_key, recent, settings):
    import dataclasses

    settings.VEE = dataclasses.replace(settings.VEE, actions={**settings.VEE.actions, "meter_quality": "reject"})
    item = {"meter_serial": meter.serial, "kwh": "1", "timestamp": rfc3339(recent), "quality": "estimated"}

    body = post(BATCH, {"readings": [item, item]}, key=fleet_key).json()

    assert [r["error"]["code"] for r in body["results"]] == ["vee_meter_quality"] * 2
    assert not MeterReading.objects.exists()
