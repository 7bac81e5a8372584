"""Shelly energy meters: ``{serial}/status/emdata:0`` (EMData status) and ``{serial}/events/rpc``
(``NotifyStatus``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gridtoken.exceptions import ValidationFailed
from meters.formats.base import Ignored, has_registers, json_object
from meters.numbers import read_number, shift

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_SECOND = Decimal(2**35)  # 3058: past it a ts is not unix seconds
SHELLY_COMPONENTS = ("emdata:0", "em1data:0")
SHELLY_METHODS = ("NotifyStatus", "NotifyFullStatus")


def shelly(payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    """Shelly ``<prefix>/status/emdata:0``: EMData status (``total_act`` / ``total_act_ret`` in Wh), no time."""
    data = json_object(payload)
    body = {key: value for key, value in data.items() if key not in ("meter_serial", "meter_id", "timestamp")}
    body["meter_serial"] = serial
    if not has_registers(body):
        raise Ignored("no energy registers")
    body["timestamp"] = received_at.isoformat()
    return body


def _unix_time(value: object) -> str:
    seconds = read_number(value, "params.ts", limit=_LAST_SECOND, below=True, signed=False)
    if not seconds:
        raise ValidationFailed("validation_error", "params.ts must be unix seconds.", field="params.ts")
    return (_EPOCH + timedelta(microseconds=int(shift(seconds, 6)))).isoformat()


def shelly_rpc(payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    """Shelly ``<prefix>/events/rpc``: ``NotifyStatus`` with ``params.ts`` (unix s) and ``emdata:0`` /
    ``em1data:0`` totals (Wh). Other notifications (power, inputs, ...) are ignored."""
    data = json_object(payload)
    params = data.get("params")
    if data.get("method") not in SHELLY_METHODS or not isinstance(params, dict):
        raise Ignored("not a status notification")
    component = next((name for name in SHELLY_COMPONENTS if isinstance(params.get(name), dict)), None)
    if component is None:
        raise Ignored("no energy component")
    body = {"meter_serial": serial, component: params[component]}
    if not has_registers(body):
        raise Ignored("no energy registers")
    body["timestamp"] = _unix_time(params.get("ts"))
    return body
