"""Simulated solar meters: a plausible production curve and the request bodies real devices send.

Production per 15-minute interval follows the sun at the meter's longitude: zero at night, a bell between
06:00 and 18:00 local solar time peaking at noon, scaled by the panel's capacity, a cloudiness drawn per
meter and day, and a little noise per interval. Values are rounded to watt-hours (what meters report) and
returned as ``Decimal``; the request carries them as strings, never as floats.

Every random draw is seeded by (seed, serial, interval), so running the simulator again over the same
intervals produces the same readings, which the API answers as idempotent replays instead of conflicts.

Live readings (``live_readings``) are stamped with the real time but take their energy from a compressed sun
clock that moves one interval per report and skips nights, so a demo keeps producing at any hour.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from solders.keypair import Keypair

from meters.signatures import KWH_QUANTUM, full_message

INTERVAL = timedelta(minutes=15)
WATT_HOUR = Decimal("0.001")
DEFAULT_LONGITUDE = 100.5  # Bangkok: GridTokenX's home grid
WEATHER = ((0.85, "sunny"), (0.65, "partly_cloudy"), (0.0, "cloudy"))


@dataclass
class SimMeter:
    serial: str
    capacity_kw: float
    longitude: float
    latitude: float
    zone_id: int
    keypair: Keypair | None = None
    api_key: str | None = None

    @property
    def public_key(self) -> str:
        return str(self.keypair.pubkey()) if self.keypair else ""


def make_meter(serial: str, *, seed: int = 0, longitude: float = DEFAULT_LONGITUDE, sign: bool = False) -> SimMeter:
    rng = random.Random(f"{seed}:{serial}:meter")
    return SimMeter(
        serial=serial,
        capacity_kw=round(rng.uniform(3.0, 10.0), 1),
        longitude=longitude + rng.uniform(-1.5, 1.5),
        latitude=round(13.75 + rng.uniform(-2.0, 2.0), 4),
        zone_id=rng.randint(1, 5),
        keypair=Keypair() if sign else None,
    )


def floor_interval(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return moment - timedelta(minutes=moment.minute % 15)


def solar_hour(moment: datetime, longitude: float) -> float:
    """Local mean solar time in hours: UTC shifted 4 minutes per degree of longitude."""
    utc = moment.astimezone(UTC)
    return (utc.hour + utc.minute / 60 + utc.second / 3600 + longitude / 15) % 24


def sun_fraction(moment: datetime, longitude: float) -> float:
    """0 at night, rising to 1 at solar noon (a sin^2 bell between 06:00 and 18:00)."""
    hour = solar_hour(moment, longitude)
    if not 6.0 < hour < 18.0:
        return 0.0
    return math.sin(math.pi * (hour - 6.0) / 12.0) ** 2


def cloudiness(meter: SimMeter, day, seed: int) -> float:
    """Share of clear-sky output that day (0.3 .. 1.0), drawn once per meter and day."""
    return random.Random(f"{seed}:{meter.serial}:{day.isoformat()}").uniform(0.3, 1.0)


def weather(clear_share: float) -> str:
    return next(name for floor, name in WEATHER if clear_share >= floor)


def interval_kwh(meter: SimMeter, interval_end: datetime, *, seed: int = 0) -> Decimal:
    """Energy produced in the 15 minutes ending at ``interval_end``, in kWh to the watt-hour."""
    midpoint = interval_end - INTERVAL / 2
    sun = sun_fraction(midpoint, meter.longitude)
    if sun == 0.0:
        return Decimal(0)
    noise = random.Random(f"{seed}:{meter.serial}:{interval_end.isoformat()}").uniform(0.92, 1.04)
    kw = meter.capacity_kw * sun * cloudiness(meter, midpoint.date(), seed) * noise
    return (Decimal(repr(kw)) * Decimal("0.25")).quantize(WATT_HOUR)


def telemetry(meter: SimMeter, interval_end: datetime, kwh: Decimal, *, seed: int = 0) -> dict:
    """The gateway's telemetry fields, consistent with ``kwh`` (these are measurements, floats are fine)."""
    rng = random.Random(f"{seed}:{meter.serial}:{interval_end.isoformat()}:telemetry")
    generated = float(kwh)
    consumed = round(rng.uniform(0.05, 0.45), 3)
    power_kw = generated * 4
    voltage = round(rng.uniform(226.0, 234.0), 1)
    return {
        "energy_generated": generated,
        "energy_consumed": consumed,
        "surplus_energy": round(max(generated - consumed, 0.0), 3),
        "deficit_energy": round(max(consumed - generated, 0.0), 3),
        "power": round(power_kw, 3),
        "voltage": voltage,
        "current": round(power_kw * 1000 / voltage, 2),
        "power_factor": round(rng.uniform(0.95, 0.99), 3),
        "frequency": round(rng.uniform(49.95, 50.05), 3),
        "temperature": round(24 + 14 * sun_fraction(interval_end, meter.longitude) + rng.uniform(-2, 2), 1),
        "latitude": meter.latitude,
        "longitude": round(meter.longitude, 4),
        "zone_id": meter.zone_id,
        "weather_condition": weather(cloudiness(meter, (interval_end - INTERVAL / 2).date(), seed)),
        "rec_eligible": True,
    }


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _as_stored(value: float | None) -> Decimal | None:
    """A direction as the server stores it: the float's shortest text, cut to nine places."""
    return None if value is None else Decimal(repr(value)).quantize(KWH_QUANTUM, rounding=ROUND_DOWN)


def signature(meter: SimMeter, interval_end: datetime, kwh: Decimal, body: dict) -> str | None:
    """Base58 Ed25519 signature over the v2 message (docs/API.md), which covers the kWh and both directions the
    body sends, or None for unsigned meters."""
    if meter.keypair is None:
        return None
    message = full_message(
        serial=meter.serial,
        reading_timestamp=interval_end,
        kwh=kwh,
        import_kwh=_as_stored(body.get("energy_consumed")),
        export_kwh=_as_stored(body.get("energy_generated")),
    )
    return str(meter.keypair.sign_message(message))


@dataclass(frozen=True)
class Reading:
    meter: SimMeter
    timestamp: datetime
    kwh: Decimal
    seed: int = 0

    def v1_body(self, *, with_serial: bool = False) -> dict:
        """``POST /api/v1/meters/{serial}/readings`` (and, with the serial, a batch item)."""
        body = {"kwh": format(self.kwh, "f"), "timestamp": rfc3339(self.timestamp)}
        body.update(telemetry(self.meter, self.timestamp, self.kwh, seed=self.seed))
        if with_serial:
            body["meter_serial"] = self.meter.serial
        return self._signed(body)

    def legacy_body(self) -> dict:
        """``POST /api/meters/submit-reading``, the gateway's original body."""
        body = {
            "kwh_amount": format(self.kwh, "f"),
            "reading_timestamp": rfc3339(self.timestamp),
            "meter_serial": self.meter.serial,
        }
        return self._signed(body)

    def _signed(self, body: dict) -> dict:
        signed = signature(self.meter, self.timestamp, self.kwh, body)
        if signed is not None:
            body["meter_signature"] = signed
        return body


def readings_at(meters: list[SimMeter], interval_end: datetime, *, seed: int = 0) -> list[Reading]:
    """This interval's readings of every meter that produced something (the API refuses 0 kWh)."""
    readings = []
    for meter in meters:
        kwh = interval_kwh(meter, interval_end, seed=seed)
        if kwh > 0:
            readings.append(Reading(meter=meter, timestamp=interval_end, kwh=kwh, seed=seed))
    return readings


def live_readings(
    meters: list[SimMeter], stamp: datetime, sun: datetime, *, seed: int = 0
) -> tuple[datetime, list[Reading]]:
    """Readings stamped ``stamp`` carrying the energy of the interval ending at the sun clock ``sun``.

    A sun clock at night moves on, one interval at a time (at most a day), to the first interval in which
    any meter produces; returns that sun clock and the readings."""
    for _ in range(96):
        readings = []
        for meter in meters:
            kwh = interval_kwh(meter, sun, seed=seed)
            if kwh > 0:
                readings.append(Reading(meter=meter, timestamp=stamp, kwh=kwh, seed=seed))
        if readings:
            return sun, readings
        sun += INTERVAL
    return sun, []
