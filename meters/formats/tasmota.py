"""Tasmota SML readers on ``tele/{serial}/SENSOR``."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from gridtoken.exceptions import ValidationFailed
from meters.formats.base import Ignored, has_registers, json_object
from meters.validation import parse_timestamp


def tasmota_time(value: object, timezone: str) -> str:
    """Tasmota's ``Time``: local time without an offset (unless ``SetOption52 1`` adds one), read in
    ``MQTT_TASMOTA_TIMEZONE``; an offset when sent wins. Returns RFC 3339 text."""
    if not isinstance(value, str) or len(value) > 40:
        raise ValidationFailed("validation_error", "Time must be an ISO 8601 date and time.", field="Time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed("validation_error", "Time must be an ISO 8601 date and time.", field="Time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))  # fold=0: an ambiguous autumn hour is its first pass
        return moment.isoformat()
    return parse_timestamp(value, "Time").isoformat()


def tasmota(payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    """Tasmota ``tele/<topic>/SENSOR``: ``{"Time": ..., "SML": {"Total_in": kWh, "Total_out": kWh, ...}}``."""
    data = json_object(payload)
    sensors = {name: value for name, value in data.items() if isinstance(value, dict)}
    body = {"meter_serial": serial, **sensors}
    if not has_registers(body):
        raise Ignored("no energy registers")
    if data.get("Time") is None:
        raise ValidationFailed("validation_error", "This field is required.", field="Time")
    body["timestamp"] = tasmota_time(data["Time"], timezone)
    return body
