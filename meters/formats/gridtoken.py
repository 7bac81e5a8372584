"""GridToken JSON on ``gridtoken/meters/{serial}/readings``: the v1 REST reading body."""

from __future__ import annotations

from datetime import datetime

from gridtoken.exceptions import Forbidden, ValidationFailed
from meters.formats.base import json_object


def gridtoken(payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    """GridToken JSON: the v1 REST reading body (``kwh`` + ``timestamp``, or register totals)."""
    data = json_object(payload)
    named = data.get("meter_serial")
    if named is not None and named != serial:
        raise Forbidden(
            "forbidden", f"A message on {serial}'s topic may only carry {serial}'s readings.", field="meter_serial"
        )
    if data.get("timestamp") is None and data.get("reading_timestamp") is None:
        raise ValidationFailed("validation_error", "This field is required.", field="timestamp")
    return {**data, "meter_serial": serial}
