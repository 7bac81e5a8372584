"""Devices exactly as they send: message bytes through the format parsers (``meters.formats``) into the MQTT
ingester's service call (``readings_submit_batch`` as the protocol caller), on the real database.

Sources of the payloads, cited per test:
- Shelly Gen2 API, "Notifications" (shelly-api-docs.shelly.cloud/gen2/General/Notifications): ``NotifyStatus`` is
  ``{"src", "dst", "method": "NotifyStatus", "params": {"ts": <unix s, float>, "<component>": {<changed
  attributes>}}}`` and carries only the attributes that changed; receivers overlay it on the last status. EMData
  (.../ComponentsAndServices/EMData): ``total_act`` / ``total_act_ret`` in Wh.
"""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from solders.keypair import Keypair

from meters import formats, signatures
from meters.models import MeterReading
from meters.selectors import Caller
from meters.services.batch import readings_submit_batch
from tests.factories import MeterFactory
from tests.meters.conftest import exact_json

pytestmark = pytest.mark.django_db


@pytest.fixture
def start():
    """A whole quarter-hour two hours ago: every reading of a test is recent and in the past."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now.replace(minute=now.minute - now.minute % 15) - timedelta(hours=2)


def ingest(fmt: str, serial: str, *payloads: dict, tz: str = "UTC") -> list[dict]:
    """Each payload as the ingester handles it: parsed by its format, then one batch call."""
    received = timezone.now()
    bodies = [
        formats.reading_body(fmt, exact_json(payload).encode(), serial=serial, received_at=received, timezone=tz)
        for payload in payloads
    ]
    return readings_submit_batch(caller=Caller.protocol(), readings=bodies, now=timezone.now())["results"]


def notify(moment: datetime, **emdata) -> dict:
    return {
        "src": "shellypro3em-a0dd6c9ef474",
        "dst": "shellypro3em-a0dd6c9ef474/events",
        "method": "NotifyStatus",
        "params": {"ts": moment.timestamp(), "emdata:0": {"id": 0, **emdata}},
    }


def readings(meter) -> list[MeterReading]:
    return list(MeterReading.objects.filter(meter=meter).order_by("reading_timestamp"))


# --- Shelly NotifyStatus: partial updates overlay the last known state ---------------------------------------


def test_a_shelly_partial_update_overlays_the_last_known_import_and_the_next_full_read_derives_from_it(start):
    """Before: the partial was stored without import, the full read derived its import from it as 0, and its
    0.1 kWh of export was minted although 2.0 kWh had been imported (net -1.9)."""
    meter = MeterFactory()
    ingest("shelly-rpc", meter.serial, notify(start, total_act=10000.0, total_act_ret=2000.0))
    ingest("shelly-rpc", meter.serial, notify(start + timedelta(minutes=15), total_act_ret=2100.0))
    ingest("shelly-rpc", meter.serial, notify(start + timedelta(minutes=30), total_act=12000.0, total_act_ret=2200.0))

    _, partial, full = readings(meter)
    assert partial.import_register_kwh == Decimal(10) and partial.export_register_kwh == Decimal("2.1")
    assert partial.flags == ["registers_overlaid"] and partial.mintable_kwh == Decimal("0.1")
    assert full.consumed_kwh == Decimal(2) and full.generated_kwh == Decimal("0.1")
    assert full.kwh_amount == Decimal("-1.9") and full.mintable_kwh == 0
    assert full.status == MeterReading.Status.RECORDED


def test_a_redelivered_partial_update_is_a_duplicate_not_a_conflict(start):
    meter = MeterFactory()
    ingest("shelly-rpc", meter.serial, notify(start, total_act=10000.0, total_act_ret=2000.0))
    partial = notify(start + timedelta(minutes=15), total_act_ret=2100.0)

    first = ingest("shelly-rpc", meter.serial, partial)
    again = ingest("shelly-rpc", meter.serial, partial)

    assert first[0]["status"] == "accepted" and again[0] == {"index": 0, "status": "duplicate", "id": first[0]["id"]}
    assert len(readings(meter)) == 2


def test_a_register_that_appears_for_the_first_time_starts_a_baseline_instead_of_minting_blind(start):
    """A meter first heard through a partial (export only): the first read with both registers cannot know the
    import since, so it mints nothing rather than its export delta."""
    meter = MeterFactory()
    ingest("shelly-rpc", meter.serial, notify(start, total_act_ret=2000.0))
    ingest("shelly-rpc", meter.serial, notify(start + timedelta(minutes=15), total_act=10000.0, total_act_ret=2500.0))

    _, second = readings(meter)
    assert second.flags == ["register_baseline"] and second.mintable_kwh == 0 and second.kwh_amount == 0


def test_a_notification_carrying_only_power_is_ignored():
    """Shelly Gen2 NotifyStatus of an EM component's instantaneous values: no energy totals, no reading."""
    payload = notify(datetime.now(UTC))
    payload["params"]["em:0"] = payload["params"].pop("emdata:0") | {"a_act_power": 412.3}

    with pytest.raises(formats.Ignored):
        formats.reading_body(
            "shelly-rpc", json.dumps(payload).encode(), serial="S", received_at=timezone.now(), timezone="UTC"
        )


# --- Tasmota energy plugs: ENERGY.Total -------------------------------------------------------------------------
# Tasmota docs, "Power Monitoring" and "MQTT" (tasmota.github.io/docs): tele/<topic>/SENSOR of an energy plug is
# {"Time": local time, "ENERGY": {"TotalStartTime", "Total" (kWh since TotalStartTime), "Yesterday", "Today",
# "Period" (Wh), "Power" (W), "ApparentPower", "ReactivePower", "Factor", "Voltage", "Current"}}.


def plug(moment: datetime, total, *, started: str = "2025-11-02T09:21:04", today=0.42, tz: str = "UTC") -> dict:
    local = moment.astimezone(ZoneInfo(tz)).replace(tzinfo=None).isoformat()
    return {
        "Time": local,
        "ENERGY": {
            "TotalStartTime": started,
            "Total": total,
            "Yesterday": 1.253,
            "Today": today,
            "Period": 0,
            "Power": 28,
            "ApparentPower": 40,
            "ReactivePower": 29,
            "Factor": 0.69,
            "Voltage": 229,
            "Current": 0.176,
        },
    }


def test_a_plugs_total_is_its_import_register_and_a_load_mints_nothing(start):
    """Before: the plug's SENSOR carried no SML registers and was ignored (nothing stored)."""
    meter = MeterFactory()

    results = ingest("tasmota", meter.serial, plug(start, 3.185), plug(start + timedelta(minutes=15), 3.26, today=0.5))

    assert [r["status"] for r in results] == ["accepted", "accepted"]
    _, second = readings(meter)
    assert second.import_register_kwh == Decimal("3.26") and second.export_register_kwh is None
    assert second.consumed_kwh == Decimal("0.075") and second.kwh_amount == Decimal("-0.075")
    assert second.mintable_kwh == 0


def test_on_the_export_layout_a_plugs_total_is_production_and_mints(start):
    meter = MeterFactory()

    ingest("tasmota-export", meter.serial, plug(start, 3.185), plug(start + timedelta(minutes=15), 3.26))

    _, second = readings(meter)
    assert second.export_register_kwh == Decimal("3.26") and second.mintable_kwh == Decimal("0.075")
    assert second.status == MeterReading.Status.PENDING


def test_a_later_total_start_time_marks_a_reset_and_nothing_is_minted_across_it(start):
    """``EnergyTotal 0`` restarts Total and TotalStartTime: a Total that grew past the old one is no delta."""
    meter = MeterFactory()
    restarted = (start + timedelta(minutes=5)).replace(tzinfo=None).isoformat()

    ingest(
        "tasmota-export",
        meter.serial,
        plug(start, 3.185),
        plug(start + timedelta(minutes=15), 3.5, started=restarted),
        plug(start + timedelta(minutes=30), 3.6, started=restarted),
    )

    _, reset, after = readings(meter)
    assert reset.flags == ["register_reset", "register_baseline"] and reset.mintable_kwh == 0
    assert after.mintable_kwh == Decimal("0.1")


def test_a_multi_channel_plugs_totals_are_summed():
    payload = plug(datetime.now(UTC), [1.5, 0.25])

    body = formats.reading_body(
        "tasmota", json.dumps(payload).encode(), serial="P", received_at=timezone.now(), timezone="UTC"
    )

    assert body["registers"] == {"1.8.0": Decimal("1.75")} and body["time_zone"] == "UTC"


# --- Local time across Europe/Berlin's DST changes --------------------------------------------------------------
# 2026-10-25 03:00 CEST -> 02:00 CET repeats 02:00-02:59; 2026-03-29 02:00 CET -> 03:00 CEST skips 02:00-02:59
# (IANA tz database, Europe/Berlin). Tasmota's Time carries no offset (Tasmota docs, "Timezone" / SetOption52).

BERLIN = "Europe/Berlin"
AUTUMN_FIRST_PASS = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # 02:00 CEST
SPRING_GAP = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:00 CET became 03:00 CEST


@pytest.fixture
def old_readings_allowed(ingest_settings):
    ingest_settings(reading_max_age_days=3650)


def sml(local: str, total_in: str, total_out: str) -> dict:
    """Tasmota SML reader (Smart-Meter-Interface docs): tele/<topic>/SENSOR with Total_in / Total_out in kWh."""
    return {"Time": local, "SML": {"Total_in": Decimal(total_in), "Total_out": Decimal(total_out)}}


def test_the_repeated_autumn_hour_is_stored_once_per_instant_in_arrival_order(old_readings_allowed):
    """Before: the second pass was read as the first (fold 0) and refused as duplicate_reading_conflict."""
    meter = MeterFactory()
    locals_ = ["01:45", "02:00", "02:15", "02:30", "02:45", "02:00", "02:15", "02:30", "02:45", "03:00"]
    messages = [sml(f"2026-10-25T{t}:00", str(100 + n), str(50 + 2 * n)) for n, t in enumerate(locals_)]

    results = [ingest("tasmota", meter.serial, message, tz=BERLIN)[0] for message in messages]
    redelivered = ingest("tasmota", meter.serial, messages[3], tz=BERLIN)[0]

    assert [r["status"] for r in results] == ["accepted"] * 10
    assert redelivered["status"] == "duplicate" and redelivered["id"] == results[3]["id"]
    stored = readings(meter)
    expected = [AUTUMN_FIRST_PASS + timedelta(minutes=15 * (n - 1)) for n in range(10)]
    assert [r.reading_timestamp for r in stored] == expected
    assert all(r.kwh_amount == 1 and r.status == MeterReading.Status.PENDING for r in stored[1:])


def test_a_late_first_pass_register_read_is_placed_by_its_values(old_readings_allowed):
    meter = MeterFactory()
    for local, total in (("02:00", "100"), ("02:30", "102"), ("02:00", "104"), ("02:30", "106")):
        ingest("tasmota", meter.serial, sml(f"2026-10-25T{local}:00", total, "0"), tz=BERLIN)

    ingest("tasmota", meter.serial, sml("2026-10-25T02:15:00", "101", "0"), tz=BERLIN)  # first pass, late

    late = MeterReading.objects.get(meter=meter, import_register_kwh=101)
    assert late.reading_timestamp == AUTUMN_FIRST_PASS + timedelta(minutes=15)
    assert late.flags == [] and late.consumed_kwh == 1


def test_interval_readings_with_a_local_time_follow_the_same_rule(post, fleet_key, meter, old_readings_allowed):
    """GridTokenX simulator-style interval readings (kwh) sent with a local time and its zone."""
    items = [
        {"meter_serial": meter.serial, "kwh": kwh, "timestamp": f"2026-10-25T{t}:00", "time_zone": BERLIN}
        for t, kwh in (("02:30", "0.5"), ("02:45", "0.6"), ("02:30", "0.7"), ("02:45", "0.8"))
    ]

    results = [post("/api/v1/meters/batch/readings", {"readings": [item]}, key=fleet_key).json() for item in items]
    again = post("/api/v1/meters/batch/readings", {"readings": [items[0]]}, key=fleet_key).json()

    assert [r["results"][0]["status"] for r in results] == ["accepted"] * 4
    assert again["results"][0]["status"] == "duplicate"
    stored = readings(meter)
    assert [(r.reading_timestamp - AUTUMN_FIRST_PASS, r.kwh_amount) for r in stored] == [
        (timedelta(minutes=30), Decimal("0.5")),
        (timedelta(minutes=45), Decimal("0.6")),
        (timedelta(minutes=90), Decimal("0.7")),
        (timedelta(minutes=105), Decimal("0.8")),
    ]


def test_a_skipped_spring_time_is_placed_by_its_register_values_or_held(old_readings_allowed):
    meter, lonely = MeterFactory(), MeterFactory()
    ingest("tasmota", meter.serial, sml("2026-03-29T01:45:00", "10.0", "0"), tz=BERLIN)
    ingest("tasmota", meter.serial, sml("2026-03-29T03:00:00", "10.3", "0"), tz=BERLIN)

    ingest("tasmota", meter.serial, sml("2026-03-29T02:30:00", "10.4", "0"), tz=BERLIN)  # clock not yet moved
    ingest("tasmota", lonely.serial, sml("2026-03-29T02:30:00", "10.4", "0"), tz=BERLIN)

    placed = MeterReading.objects.get(meter=meter, import_register_kwh=Decimal("10.4"))
    assert placed.reading_timestamp == SPRING_GAP + timedelta(minutes=30)  # 02:30 CET, before the change
    assert placed.flags == [] and placed.consumed_kwh == Decimal("0.1")
    held = MeterReading.objects.get(meter=lonely)
    assert held.status == MeterReading.Status.HELD and held.flags == ["local_time_nonexistent", "register_baseline"]


def test_a_signed_local_time_moved_to_its_second_pass_is_held_unsigned_timestamp(
    post, fleet_key, meter, old_readings_allowed
):
    """GridToken's v2 message names the instant in UTC; a device that signs its first pass cannot have meant the
    second, so a reading placed there is held rather than minted under a signature over another instant."""
    keypair = Keypair()
    type(meter).objects.filter(pk=meter.pk).update(public_key=str(keypair.pubkey()))
    items = []
    first_pass = AUTUMN_FIRST_PASS + timedelta(minutes=30)
    for kwh in ("0.5", "0.6"):
        message = signatures.full_message(
            serial=meter.serial, reading_timestamp=first_pass, kwh=Decimal(kwh), import_kwh=None, export_kwh=None
        )
        items.append(
            {"meter_serial": meter.serial, "kwh": kwh, "timestamp": "2026-10-25T02:30:00", "time_zone": BERLIN,
             "meter_signature": str(keypair.sign_message(message))}
        )  # fmt: skip

    for item in items:
        post("/api/v1/meters/batch/readings", {"readings": [item]}, key=fleet_key)

    first, second = readings(meter)
    assert first.status == MeterReading.Status.PENDING and first.flags == []
    assert second.reading_timestamp == AUTUMN_FIRST_PASS + timedelta(minutes=90)
    assert second.status == MeterReading.Status.HELD and second.flags == ["unsigned_timestamp"]
