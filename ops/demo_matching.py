"""The demo's hourly matching (docs/MATCHING.md, "Walkthrough"): a solar farm with a PPA, a consumer with two
meters, and a day of their readings sent through the demo's own REST door, so that the beat mints, issues and
matches them as it would any other.

The day is the 24 hours that ended two hours ago (settled by the time the beat's first ticks run: the hour's end
plus ``MATCHING_SETTLE_SECS``, one hour). Any 24 hours hold one whole 06:00-18:00 UTC day, so the farm produces in
about half of them: in those the consumer is matched, in the others its demand stays unmatched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx

from certificates.services.devices import device_register, device_set_status
from gridtoken.events import rfc3339
from matching.models import Consumer
from matching.services.consumers import allocation_create, consumer_register
from meters.models import ApiKey, User
from meters.services.api_keys import api_key_create
from meters.services.meters import meter_create

GRID_ZONE = "10YDE-VE-------2"
CONSUMER_NAME = "Demo Bakery GmbH"
HOURS = 24
QUARTERS = 4


@dataclass(frozen=True)
class Seeded:
    consumer: Consumer
    readings: int


def farm_kwh(moment: datetime) -> Decimal:
    """A 15-minute export of a 12 kW farm under a clear sky, 06:00 to 18:00 UTC, to the Wh."""
    middle = Decimal(moment.hour * 60 + moment.minute) + Decimal("7.5")  # the quarter's middle, in minutes
    sun = max(Decimal(0), 1 - abs(middle - 720) / 360)  # a triangle peaking at noon
    return (Decimal("2.5") * sun).quantize(Decimal("0.001"))


def bakery_kwh(moment: datetime, meter: int) -> Decimal:
    """A 15-minute import: ovens from 03:00 to 09:00 UTC on the first meter, the shop's base load on both."""
    ovens = Decimal("0.45") if meter == 0 and 3 <= moment.hour < 9 else Decimal(0)
    return Decimal("0.08") + Decimal("0.03") * meter + ovens


def _post(web_url: str, key: str, readings: list[dict]) -> int:
    response = httpx.post(
        f"{web_url}/api/v1/meters/batch/readings", json={"readings": readings},
        headers={"Authorization": f"Bearer {key}"}, timeout=60,
    )  # fmt: skip
    response.raise_for_status()
    refused = [r for r in response.json()["results"] if r["status"] == "rejected"]
    if refused:
        raise RuntimeError(f"the demo's matching readings were refused: {refused[0]}")
    return len(readings)


def matching_seed(*, web_url: str, farm: User, consumer: User, run: str, now: datetime) -> Seeded:
    """1. The farm's meter and its approved production device; the consumer's two meters.
    2. A day of their readings, through the REST batch door (each owner's fleet key).
    3. The consumer (matched from the day's first hour), half of the farm's hours to it as a PPA, the rest to
       the zone's pool."""
    start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS + 2)
    farm_meter, _ = meter_create(owner=farm, serial=f"FARM{run}-1")
    shop = [meter_create(owner=consumer, serial=f"BAKERY{run}-{i + 1}")[0] for i in range(2)]
    moments = [start + timedelta(minutes=15 * q) for q in range(HOURS * QUARTERS)]
    produced = [{"meter_serial": farm_meter.serial, "kwh": format(farm_kwh(m), "f"), "timestamp": rfc3339(m)}
                for m in moments]  # fmt: skip
    # A zero after the day: the farm's last hour is complete (certificates wait for a later reading or the grace).
    produced.append({"meter_serial": farm_meter.serial, "kwh": "0", "timestamp": rfc3339(moments[-1] + timedelta(
        minutes=30))})  # fmt: skip
    consumed = [{"meter_serial": meter.serial, "kwh": format(-bakery_kwh(m, i), "f"), "timestamp": rfc3339(m)}
                for i, meter in enumerate(shop) for m in moments]  # fmt: skip
    sent = 0
    for owner, readings in ((farm, produced), (consumer, consumed)):
        _, key = api_key_create(owner=owner, scope=ApiKey.Scope.FLEET, name="demo matching")
        sent += _post(web_url, key, readings)
    device = device_register(
        meter=farm_meter, name="Demo solar farm", technology="solar_pv", commissioning_date=date(2024, 5, 1),
        grid_zone=GRID_ZONE, country="DE", issuer="GridToken demo registry", capacity_kw=Decimal(12),
    )  # fmt: skip
    device = device_set_status(device_id=device.id, status="approved", actor="demo")
    record = consumer_register(user=consumer, name=CONSUMER_NAME, grid_zone=GRID_ZONE, meters=shop,
                               match_from=start, actor="demo")  # fmt: skip
    allocation_create(device=device, holder=farm, kind="bilateral", consumer=record, share=Decimal("0.5"),
                      valid_from=start, actor="demo")  # fmt: skip
    allocation_create(device=device, holder=farm, kind="pool", share=Decimal(1), valid_from=start, actor="demo")
    return Seeded(record, sent)
