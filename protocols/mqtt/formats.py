"""Message -> reading body, one parser per topic layout; ``meters.validation`` does every other check.

Each parser returns the body ``readings_submit_batch`` takes (``meter_serial`` always the topic's), raises an
``ApplicationError`` for a message refused for good, or ``Ignored`` for a message that carries no reading
(a Tasmota SENSOR without energy registers, a Shelly notification about another component). Numbers are read
as ``Decimal`` (``meters.parsers.loads_exact``), never ``float``.

Every reading needs a timestamp from the message itself: a redelivered message must name the same instant to
be a duplicate. The one exception is Shelly's ``status/emdata:0``, which carries no time: it is stamped when
the ingester receives it (docs/PROTOCOLS.md says what that means after a crash).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from gridtoken.exceptions import ApplicationError, Forbidden, ValidationFailed
from meters.parsers import loads_exact
from meters.registers import registers_from_body
from meters.validation import parse_timestamp

MAX_PAYLOAD_BYTES = 64 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SHELLY_COMPONENTS = ("emdata:0", "em1data:0")
SHELLY_METHODS = ("NotifyStatus", "NotifyFullStatus")


class Ignored(Exception):
    """The message carries no reading: acknowledged, counted, not stored and not answered."""


def _json_object(payload: bytes) -> dict:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ApplicationError(
            "payload_too_large", f"The message is larger than {MAX_PAYLOAD_BYTES} bytes.", status=413
        )
    try:
        data = loads_exact(payload)
    except (ValueError, UnicodeDecodeError):
        raise ApplicationError("malformed_json", "The message is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ValidationFailed("validation_error", "Expected a JSON object.")
    return data


def _has_registers(body: dict) -> bool:
    """Whether ``body`` carries energy registers; a malformed register counts (the batch refuses it)."""
    try:
        return registers_from_body(body) is not None
    except ApplicationError:
        return True


def gridtoken(payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    """GridToken JSON: the v1 REST reading body (``kwh`` + ``timestamp``, or register totals)."""
    data = _json_object(payload)
    named = data.get("meter_serial")
    if named is not None and named != serial:
        raise Forbidden(
            "forbidden", f"A message on {serial}'s topic may only carry {serial}'s readings.", field="meter_serial"
        )
    if data.get("timestamp") is None and data.get("reading_timestamp") is None:
        raise ValidationFailed("validation_error", "This field is required.", field="timestamp")
    return {**data, "meter_serial": serial}


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
    data = _json_object(payload)
    sensors = {name: value for name, value in data.items() if isinstance(value, dict)}
    body = {"meter_serial": serial, **sensors}
    if not _has_registers(body):
        raise Ignored("no energy registers")
    if data.get("Time") is None:
        raise ValidationFailed("validation_error", "This field is required.", field="Time")
    body["timestamp"] = tasmota_time(data["Time"], timezone)
    return body


def shelly(payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    """Shelly ``<prefix>/status/emdata:0``: EMData status (``total_act`` / ``total_act_ret`` in Wh), no time."""
    data = _json_object(payload)
    body = {key: value for key, value in data.items() if key not in ("meter_serial", "meter_id", "timestamp")}
    body["meter_serial"] = serial
    if not _has_registers(body):
        raise Ignored("no energy registers")
    body["timestamp"] = received_at.isoformat()
    return body


def _unix_time(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or not 0 < value < 2**35:
        raise ValidationFailed("validation_error", "params.ts must be unix seconds.", field="params.ts")
    return (_EPOCH + timedelta(microseconds=int(Decimal(value) * 1_000_000))).isoformat()


def shelly_rpc(payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    """Shelly ``<prefix>/events/rpc``: ``NotifyStatus`` with ``params.ts`` (unix s) and ``emdata:0`` /
    ``em1data:0`` totals (Wh). Other notifications (power, inputs, ...) are ignored."""
    data = _json_object(payload)
    params = data.get("params")
    if data.get("method") not in SHELLY_METHODS or not isinstance(params, dict):
        raise Ignored("not a status notification")
    component = next((name for name in SHELLY_COMPONENTS if isinstance(params.get(name), dict)), None)
    if component is None:
        raise Ignored("no energy component")
    body = {"meter_serial": serial, component: params[component]}
    if not _has_registers(body):
        raise Ignored("no energy registers")
    body["timestamp"] = _unix_time(params.get("ts"))
    return body


PARSERS: dict[str, Callable[..., dict]] = {
    "gridtoken": gridtoken,
    "tasmota": tasmota,
    "shelly": shelly,
    "shelly-rpc": shelly_rpc,
}


def reading_body(fmt: str, payload: bytes, *, serial: str, received_at: datetime, timezone: str) -> dict:
    return PARSERS[fmt](payload, serial=serial, received_at=received_at, timezone=timezone)
