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

import pytest
from django.utils import timezone

from meters import formats
from meters.models import MeterReading
from meters.selectors import Caller
from meters.services.batch import readings_submit_batch
from tests.factories import MeterFactory

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
        formats.reading_body(fmt, json.dumps(payload).encode(), serial=serial, received_at=received, timezone=tz)
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
