"""Devices exactly as they send, through the real Mosquitto, the MQTT ingester, PostgreSQL and the local chain:
the tokens on chain are what docs/METER_DATA.md's rules say, each reading minted once.

Payload sources: GridTokenX's aggregator-bridge DLMS frame (tests/meters/fleet_payloads.py); Shelly Gen2 API
"Notifications" (NotifyStatus carries only changed attributes; EMData totals in Wh); Tasmota docs "Power
Monitoring" (tele/<topic>/SENSOR ENERGY.Total in kWh, Time in local time without offset); the IANA tz database
for Europe/Berlin's 2026-10-25 change (02:00-02:59 local happens twice).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from meters.models import MeterReading
from meters.services.holds import readings_approve
from minting.chain import kwh_to_base_units
from minting.services.automatic import readings_mint_due
from tests.factories import MeterFactory, api_key_for
from tests.minting.pipeline_harness import assert_minted_exactly_once, set_tokenization, use_chain
from tests.protocols.test_bridge import millis, sign, sim_pubkey
from tests.protocols.test_mqtt import drive

pytestmark = pytest.mark.django_db(transaction=True)
TOPICS = (("tasmota-export", "tele/pv/{serial}/SENSOR"), ("shelly-rpc", "{serial}/events/rpc"))


@pytest.fixture
def chain(settings, localnet, tmp_path):
    return use_chain(settings, localnet, tmp_path)


def minted(chain, meter) -> int:
    readings_mint_due()
    return chain.client().token_balance(meter.wallet_address)


def test_a_shelly_partial_update_then_a_full_one_mints_the_net_once(chain, ingester, peer):
    """Export 2.0 -> 2.1 kWh (partial: import left out, unchanged) -> 2.2 kWh with import 10 -> 12 kWh: the
    partial's interval mints 0.1 kWh, the full read's (net -1.9) nothing. Before: 0.2 kWh were minted."""
    meter = MeterFactory()
    run = ingester(topics=TOPICS)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    sender = peer()
    for minutes, emdata in ((0, {"total_act": 10000, "total_act_ret": 2000}), (15, {"total_act_ret": 2100}),
                            (30, {"total_act": 12000, "total_act_ret": 2200})):  # fmt: skip
        moment = (start + timedelta(minutes=minutes)).timestamp()
        notify = {"method": "NotifyStatus", "params": {"ts": moment, "emdata:0": {"id": 0, **emdata}}}
        sender.publish(f"{meter.serial}/events/rpc", json.dumps(notify))
    drive(run, lambda: run.counts["accepted"] >= 3)

    assert minted(chain, meter) == kwh_to_base_units(Decimal("0.1"))
    assert_minted_exactly_once(chain.client(), list(MeterReading.objects.filter(meter=meter, mintable_kwh__gt=0)))


def test_a_panel_plug_across_the_repeated_autumn_hour_mints_every_interval_once(chain, settings, ingester, peer):
    """Ten plug messages every 15 min from 01:45 local, through 02:00-02:45 twice, each 0.1 kWh more; one is
    redelivered. Every interval is minted once: 0.9 kWh. Before: the second pass was refused as conflicts."""
    set_tokenization(settings, reading_max_age_days=3650)
    meter = MeterFactory()
    run = ingester(topics=TOPICS, tasmota_timezone="Europe/Berlin")
    sender = peer()
    times = ["01:45", "02:00", "02:15", "02:30", "02:45", "02:00", "02:15", "02:30", "02:45", "03:00"]
    messages = [
        {"Time": f"2026-10-25T{t}:00", "ENERGY": {"TotalStartTime": "2026-01-01T00:00:00", "Total": 3 + n / 10,
                                                  "Today": n / 10, "Yesterday": 0, "Power": 400}}
        for n, t in enumerate(times)
    ]  # fmt: skip
    for message in [*messages, messages[4]]:
        sender.publish(f"tele/pv/{meter.serial}/SENSOR", json.dumps(message))
    drive(run, lambda: run.counts["accepted"] + run.counts["duplicate"] >= 11)

    stored = list(MeterReading.objects.filter(meter=meter).order_by("reading_timestamp"))
    assert len(stored) == 10
    first_pass = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    assert [r.reading_timestamp for r in stored] == [first_pass + timedelta(minutes=15 * (n - 1)) for n in range(10)]
    assert minted(chain, meter) == kwh_to_base_units(Decimal("0.9"))
    assert_minted_exactly_once(chain.client(), stored[1:])


def test_a_bridge_frame_with_an_unsigned_export_mints_nothing_until_an_operator_approves(chain, settings):
    """GridTokenX's DLMS frame (fleet_payloads.BRIDGE_DLMS_INGEST_JSON) without kwh, signed in the short form
    (v = the import), its export raised tenfold after signing. Before: 12.1 kWh minted on arrival."""
    meter = MeterFactory(serial="MTR-0042", public_key=sim_pubkey("MTR-0042"))
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    payload = {"1.1.1.8.0.255": 400.0, "1.1.2.8.0.255": 1250.0, "timestamp": moment.isoformat()}
    payload["signature"] = sign("MTR-0042", f"MTR-0042:0.4:{millis(moment)}")
    payload["1.1.2.8.0.255"] = 12500.0
    client = APIClient()
    response = client.post(
        "/v1/private-network/ingest",
        {"protocol": "dlms", "device_id": "MTR-0042", "payload": payload},
        format="json",
        HTTP_X_API_KEY=api_key_for(owner=meter.owner)[1],
    )
    assert response.status_code == 202

    assert minted(chain, meter) == 0
    reading = MeterReading.objects.get(meter=meter)
    assert reading.status == MeterReading.Status.HELD and reading.flags == ["unsigned_kwh"]
    readings_approve(reading_ids=[reading.id])
    assert minted(chain, meter) == kwh_to_base_units(Decimal("12.1"))
