"""Tasmota on ``tele/{serial}/SENSOR``: SML readers' registers and energy plugs' ``ENERGY.Total``.

``Time`` (and ``ENERGY.TotalStartTime``) is the device's local time without an offset unless ``SetOption52 1``
adds one: it is passed on with ``time_zone`` = ``MQTT_TASMOTA_TIMEZONE``, and ``meters.validation`` reads it
(an offset when sent wins; a DST change's repeated or skipped hour is resolved or held, never guessed).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import reduce

from gridtoken.exceptions import ValidationFailed
from meters.formats.base import Ignored, has_registers, json_object
from meters.numbers import EXACT, read_number
from meters.registers import EXPORT, IMPORT

# The OBIS register a plug's ENERGY.Total stands for: a plug measures a load (import) or, in front of a balcony
# panel or a micro-inverter, production (export).
_PLUG_REGISTER = {IMPORT: "1.8.0", EXPORT: "2.8.0"}
_MAX_CHANNELS = 8


def _plug_total(value: object) -> Decimal:
    """``ENERGY.Total`` in kWh; a multi-channel device's list (``SetOption129 1``) is the channels' sum."""
    name = "ENERGY.Total"
    values = value if isinstance(value, list) and 0 < len(value) <= _MAX_CHANNELS else [value]
    return reduce(EXACT.add, [read_number(v, name, signed=False, code="invalid_register") for v in values])


def _plug(energy: dict, serial: str, total: str) -> dict:
    body = {"meter_serial": serial, "registers": {_PLUG_REGISTER[total]: _plug_total(energy["Total"])}}
    if energy.get("TotalStartTime") is not None:
        body["register_start"] = energy["TotalStartTime"]  # Today, Yesterday, Period: derived, not read
    return body


def tasmota(payload: bytes, *, serial: str, received_at: datetime, timezone: str, plug_total: str = IMPORT) -> dict:
    """Tasmota ``tele/<topic>/SENSOR``: ``{"Time", "SML": {"Total_in": kWh, "Total_out": kWh}}`` (a meter's
    registers win), else a plug's ``{"Time", "ENERGY": {"TotalStartTime", "Total": kWh, ...}}``."""
    data = json_object(payload)
    sensors = {name: value for name, value in data.items() if isinstance(value, dict)}
    body = {"meter_serial": serial, **sensors}
    if not has_registers(body):
        energy = data.get("ENERGY")
        if not isinstance(energy, dict) or energy.get("Total") is None:
            raise Ignored("no energy registers")
        body = _plug(energy, serial, plug_total)
    if data.get("Time") is None:
        raise ValidationFailed("validation_error", "This field is required.", field="Time")
    body["timestamp"] = data["Time"]
    body["time_zone"] = timezone
    return body


def tasmota_export(payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    """The ``tasmota-export`` layout: a plug's ``ENERGY.Total`` is production (export), e.g. a balcony panel's."""
    return tasmota(payload, serial=serial, received_at=received_at, timezone=timezone, plug_total=EXPORT)
