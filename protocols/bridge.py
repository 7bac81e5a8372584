"""GridTokenX's aggregator-bridge envelope: its payloads as GridToken reading bodies, and what their signatures cover.

The bridge (gridtokenx-aggregator-bridge ``crates/aggregator-api/src/handlers.rs``) takes
``{"protocol", "device_id", "payload": {...}}`` and ``{"protocol", "readings": [{..., "device_id"}]}``. Pure
functions only: ``protocols.apis`` stores what they return through ``meters.services``.

Energy. The DLMS payload's OBIS ``1.1.1.8.0.255`` (import = consumed) and ``1.1.2.8.0.255`` (export = generated)
are Wh and carry the INTERVAL's energy under total-register codes (the sender is GridTokenX's simulator), so they
become ``energy_consumed``/``energy_generated`` in kWh, never ``registers`` (GridToken reads those as
cumulative). A missing total is the sum of its tariff registers ``1.1.x.8.1-4.255``. Without OBIS energies the
plain ``energy_generated``/``energy_consumed`` (kWh) are used. The signed net ``kwh`` is the payload's when sent,
else ``generated - consumed``. All of it is Decimal arithmetic on the numbers' text as sent
(``meters.parsers.loads_exact``).

Signatures. Ed25519 (base58) over ``{device_id}:{v}:{timestamp_ms}``, then the legacy
``{device_id}:{v}:{timestamp_ms // 1000}``, then the payload's JSON without ``signature`` (sorted keys, compact,
as serde_json writes it). ``v`` is Rust's ``f64::to_string`` of the first JSON number among ``kwh``,
``energy_consumed``, ``energy_generated``, import Wh / 1000, export Wh / 1000. The message texts are rebuilt
with binary floats on purpose: they must be what the bridge's f64 arithmetic prints; no amount is taken from
them.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from functools import reduce

from gridtoken.exceptions import ApplicationError, ValidationFailed
from meters.numbers import EXACT, MAX_DIGITS, decimal_places, read_number, shift
from meters.signatures import EVERYTHING, EXPORT, IMPORT, NET, TIMESTAMP, SignedForm
from meters.timestamps import parse_timestamp
from meters.validation import (
    KWH_COLUMN_LIMIT,
    KWH_QUANTUM,
    MAX_SERIAL_LENGTH,
    TELEMETRY_FIELDS,
    clean_text,
)

DLMS, DLMS_ENC, SIMULATOR, AUTO = "dlms", "dlms-enc", "simulator", "auto"
PROTOCOLS = (DLMS, DLMS_ENC, SIMULATOR)
DEVICE_TYPE = "smart_meter"
# Where GridToken announces a stored reading: the meter_reading_received event on the WebSocket (/ws).
STREAM = "gridtoken:events:v1"
IMPORT_WH, EXPORT_WH = "1.1.1.8.0.255", "1.1.2.8.0.255"
IMPORT_TARIFFS = tuple(f"1.1.1.8.{tariff}.255" for tariff in range(1, 5))
EXPORT_TARIFFS = tuple(f"1.1.2.8.{tariff}.255" for tariff in range(1, 5))
# Instantaneous values, stored as telemetry (units as the bridge documents them).
OBIS_TELEMETRY = {
    "1.1.32.7.0.255": "voltage",  # V
    "1.1.31.7.0.255": "current",  # A
    "1.1.14.7.0.255": "frequency",  # Hz
    "1.1.13.7.0.255": "power_factor",
    "1.1.16.7.0.255": "power",  # kW, signed net import (negative = export)
}
_PASSED_THROUGH = tuple(name for name in TELEMETRY_FIELDS if name not in ("energy_generated", "energy_consumed"))
OBIS_WH_LIMIT = KWH_COLUMN_LIMIT * 1000  # an interval's energy, in Wh, below the kWh column's limit
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What Rust's f64 FromStr reads: an optional sign, decimal digits with an optional exponent, inf/infinity/nan.
_RUST_F64 = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class BridgeReading:
    """One bridge payload as a GridToken v1 reading body, and the messages its signature may cover."""

    device_id: str | None
    body: dict
    signed_messages: tuple[SignedForm, ...] | None


def _invalid(message: str, field: str, code: str = "validation_error") -> ValidationFailed:
    return ValidationFailed(code, message, field=field)


def envelope_protocol(envelope: object) -> str:
    """The envelope's protocol as the bridge reads it (``resolve_protocol``: any case, ``auto`` or empty is
    ``dlms``); 400 ``unsupported_protocol`` when it is not one the bridge speaks."""
    if not isinstance(envelope, dict):
        raise ValidationFailed("validation_error", "Expected a JSON object.")
    protocol = envelope.get("protocol")
    resolved = protocol.lower() if isinstance(protocol, str) else None
    if resolved in ("", AUTO):
        resolved = DLMS
    if resolved not in PROTOCOLS:
        allowed = f"{', '.join(PROTOCOLS)} (any case; {AUTO} or empty: {DLMS})"
        raise _invalid(f"protocol must be one of {allowed}.", "protocol", "unsupported_protocol")
    return resolved


def refuse_encrypted(payload: object, field: str = "payload") -> ApplicationError:
    """The refusal of a ``dlms-enc`` frame: 400 when it is malformed, else 422 ``encrypted_frame_unsupported``.

    GridToken holds no device AES keys, so it cannot read these frames; it says so rather than store nothing
    silently. The counter is echoed for the sender's logs.
    """
    enc = payload.get("enc") if isinstance(payload, dict) else None
    if not isinstance(enc, dict):
        return _invalid('A dlms-enc payload carries {"enc": {"counter", "nonce", "ciphertext"}}.', field)
    counter = enc.get("counter")
    if isinstance(counter, bool) or not isinstance(counter, int) or counter <= 0:
        return _invalid("enc.counter must be a positive integer.", f"{field}.enc.counter")
    for name in ("nonce", "ciphertext"):
        if not isinstance(enc.get(name), str) or not enc[name]:
            return _invalid(f"enc.{name} must be a non-empty string.", f"{field}.enc.{name}")
    return ApplicationError(
        "encrypted_frame_unsupported",
        "Encrypted DLMS frames (dlms-enc) cannot be read here; send the plaintext protocol dlms, signed.",
        field=field,
        details={"counter": counter},
        status=422,
    )


def device_id_of(envelope: dict) -> str:
    """The single envelope's ``device_id`` (the meter's serial)."""
    return clean_text(envelope.get("device_id"), "device_id", max_length=MAX_SERIAL_LENGTH, required=True)


def payload_of(envelope: dict) -> dict:
    payload = envelope.get("payload")
    if not isinstance(payload, dict):
        raise _invalid("payload must be a JSON object.", "payload")
    return payload


def reading_from_payload(payload: dict, *, device_id: str) -> BridgeReading:
    """A single envelope's payload, ``device_id`` naming the meter by serial."""
    return _reading(payload, device_id, {"meter_serial": device_id})


def reading_from_item(item: object) -> BridgeReading:
    """A batch item: its own ``device_id`` (or ``meter_id`` / ``meter_serial``) names the meter.

    GridTokenX puts serials in ``meter_id`` too; only a UUID there is read as GridToken's meter id.
    """
    if not isinstance(item, dict):
        raise ValidationFailed("validation_error", "Expected a JSON object.")
    identity: dict = {}
    device_id = None
    for name in ("device_id", "meter_id", "meter_serial"):
        if item.get(name) is not None:
            device_id = clean_text(item[name], name, max_length=MAX_SERIAL_LENGTH)
            break
    if item.get("device_id") is not None:
        identity["meter_serial"] = device_id
    elif item.get("meter_serial") is not None:
        identity["meter_serial"] = item["meter_serial"]
        if item.get("meter_id") is not None and _is_uuid(item["meter_id"]):
            identity["meter_id"] = item["meter_id"]
    elif device_id is not None:
        identity["meter_id" if _is_uuid(device_id) else "meter_serial"] = device_id
    return _reading(item, device_id, identity)


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _reading(payload: dict, device_id: str | None, identity: dict) -> BridgeReading:
    body = dict(identity)
    for name in _PASSED_THROUGH:
        if payload.get(name) is not None:
            body[name] = payload[name]
    for code, name in OBIS_TELEMETRY.items():
        if _is_number(payload.get(code)):
            body[name] = payload[code]
    zone = payload.get("zone_code")
    if "zone_id" not in body and isinstance(zone, str) and zone.isascii() and zone.isdigit() and len(zone) < 10:
        body["zone_id"] = int(zone)
    directions = {
        "energy_consumed": _obis_kwh(payload, IMPORT_WH, IMPORT_TARIFFS),
        "energy_generated": _obis_kwh(payload, EXPORT_WH, EXPORT_TARIFFS),
    }
    for name, amount in directions.items():
        directions[name] = payload.get(name) if amount is None else amount
        if directions[name] is not None:
            body[name] = directions[name]
    if payload.get("kwh") is not None:
        body["kwh"] = payload["kwh"]
    elif any(amount is not None for amount in directions.values()):
        body["kwh"] = _net(**directions)
    else:
        raise _invalid(
            "The payload carries no energy: kwh, OBIS 1.1.1.8.0.255/1.1.2.8.0.255 (Wh) or "
            "energy_generated/energy_consumed (kWh) is required.",
            "kwh",
        )
    if payload.get("timestamp") is not None:
        body["timestamp"] = payload["timestamp"]
    signature = payload.get("signature")
    if signature is None:
        signature = payload.get("meter_signature")  # the simulator's flat reading's spelling
    if signature is not None:
        body["meter_signature"] = signature
    return BridgeReading(device_id, body, signed_messages(payload, device_id=device_id))


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, Decimal))


def _net(*, energy_consumed: object, energy_generated: object) -> Decimal:
    """generated - consumed (an absent direction is zero), each cut to nine places as ``meters.validation``
    stores it, so the stored kwh is exactly stored generated - stored consumed."""
    net = Decimal(0)
    for name, value, sign in (("energy_generated", energy_generated, 1), ("energy_consumed", energy_consumed, -1)):
        if value is None:
            continue
        amount = read_number(value, name, limit=KWH_COLUMN_LIMIT, below=True, signed=False)
        net += sign * amount.quantize(KWH_QUANTUM, rounding=ROUND_DOWN)
    return net


def _obis_kwh(payload: dict, total: str, tariffs: tuple[str, ...]) -> Decimal | None:
    """An OBIS interval energy (Wh) in kWh, exactly (cut to nine places only past them, as it is stored);
    the tariff registers' sum when the total is absent."""
    codes = (total,) if payload.get(total) is not None else tuple(code for code in tariffs if code in payload)
    amounts = [
        read_number(payload[code], code, limit=OBIS_WH_LIMIT, below=True, signed=False)
        for code in codes
        if payload[code] is not None
    ]
    if not amounts:
        return None
    kwh = shift(reduce(EXACT.add, amounts), -3)
    if decimal_places(kwh) > 9 or len(kwh.as_tuple().digits) > MAX_DIGITS:
        kwh = kwh.quantize(KWH_QUANTUM, rounding=ROUND_DOWN)  # below 4 * 10^9 kWh: at most 19 digits
    return kwh


# --- What the signature covers ---------------------------------------------------------------------------------


def signed_messages(payload: dict, *, device_id: str | None) -> tuple[SignedForm, ...] | None:
    """The bridge's three message forms for ``payload`` and what each covers, or None when it names no device
    or carries no timestamp (a signed reading must carry both; GridToken's own forms are then checked).

    ``{device_id}:{v}:{timestamp_ms}`` vouches for the timestamp (to the millisecond) and for the one quantity
    ``v`` was read from; the seconds form for the timestamp only when it is on a whole second; the JSON form
    for everything the payload says.
    """
    if device_id is None or not isinstance(payload.get("timestamp"), str):
        return None
    try:
        moment = parse_timestamp(payload["timestamp"], "timestamp")
    except ValidationFailed:
        return None
    signed = _signed_source(payload)
    if signed is None:
        return None
    value, source = signed
    millis = (moment - _EPOCH) // _MILLISECOND
    quantities = _value_covers(payload, source)
    unsigned = {key: item for key, item in payload.items() if key != "signature"}
    exact_ms = moment.microsecond % 1000 == 0
    return (
        SignedForm(f"{device_id}:{value}:{millis}".encode(), quantities | ({TIMESTAMP} if exact_ms else set())),
        SignedForm(
            f"{device_id}:{value}:{millis // 1000}".encode(),
            quantities | ({TIMESTAMP} if moment.microsecond == 0 else set()),
        ),
        SignedForm(serde_json(unsigned).encode(), EVERYTHING),
    )


def _value_covers(payload: dict, source: str) -> frozenset[str]:
    """What ``v`` vouches for in the reading GridToken stores: the direction (or net) it was read from, when
    that payload field is what the direction (or net) is stored from. A net derived from the directions
    (no ``kwh`` sent) is never covered by ``v``, which carries one number."""
    from_obis = {
        IMPORT: any(payload.get(code) is not None for code in (IMPORT_WH, *IMPORT_TARIFFS)),
        EXPORT: any(payload.get(code) is not None for code in (EXPORT_WH, *EXPORT_TARIFFS)),
    }
    covered = {
        "kwh": NET,
        IMPORT_WH: IMPORT,
        EXPORT_WH: EXPORT,
        "energy_consumed": None if from_obis[IMPORT] else IMPORT,
        "energy_generated": None if from_obis[EXPORT] else EXPORT,
    }[source]
    return frozenset(() if covered is None else (covered,))


def _signed_source(payload: dict) -> tuple[str, str] | None:
    """``v`` and the field it was read from: the first JSON number of kwh, energy_consumed, energy_generated,
    import Wh/1000, export Wh/1000."""
    for name, scale in (("kwh", 1.0), ("energy_consumed", 1.0), ("energy_generated", 1.0),
                        (IMPORT_WH, 1000.0), (EXPORT_WH, 1000.0)):  # fmt: skip
        number = _sign_number(payload.get(name))
        if number is not None:
            value = _display(number if scale == 1.0 else number / scale)
            return None if value is None else (value, name)
    return None


def _sign_number(value: object) -> float | None:
    """The f64 the bridge signs for a field: a JSON number, or text Rust's ``str::parse::<f64>`` accepts."""
    if _is_number(value):
        return _f64(value)
    if isinstance(value, str) and _RUST_F64.match(value):
        return float(value)
    return None


def signed_value(payload: dict) -> str | None:
    """``v``: the first JSON number of kwh, energy_consumed, energy_generated, import Wh/1000, export Wh/1000."""
    signed = _signed_source(payload)
    return None if signed is None else signed[0]


def _f64(number: int | Decimal) -> float:
    """The f64 the bridge parses from the number's text (Python's float() rounds correctly; serde_json without
    its float_roundtrip feature can be one ulp off on rare inputs, which no test fixture hits). An integer
    past f64's range is infinite, as a Decimal's float() is: the bridge cannot have signed either."""
    try:
        return float(number)
    except OverflowError:
        return math.inf


def _display(value: float) -> str | None:
    """Rust ``f64::to_string``: the shortest digits that round-trip, never an exponent, ``1.0`` -> ``"1"``."""
    if not math.isfinite(value):
        return None
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def rust_f64_to_string(number: int | Decimal) -> str | None:
    """Rust ``f64::to_string`` of a JSON number as sent (e.g. ``Decimal("1.0")`` -> ``"1"``)."""
    return _display(_f64(number))


def serde_json(value: object) -> str:
    """``serde_json::to_string`` of a parsed ``serde_json::Value`` (sorted keys: its default BTreeMap)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # escapes exactly '"', '\\' and U+0000-U+001F, as serde_json
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, (int, Decimal)):
        return _ryu(_f64(value))
    if isinstance(value, list):
        return "[" + ",".join(serde_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{serde_json(key)}:{serde_json(value[key])}" for key in sorted(value)) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _ryu(value: float) -> str:
    """How serde_json writes an f64 (the ``ryu`` crate): ``400.0``, ``0.85``, ``1e16``, ``1.5e-7``; a
    non-finite one as ``null``, as ``serde_json::Value::from`` makes it."""
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "-0.0" if math.copysign(1, value) < 0 else "0.0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0")
    exponent += len(digits) - len(text)
    length, point = len(text), len(text) + exponent
    if exponent >= 0 and point <= 16:
        out = f"{text}{'0' * exponent}.0"
    elif 0 < point <= 16:
        out = f"{text[:point]}.{text[point:]}"
    elif -5 < point <= 0:
        out = f"0.{'0' * -point}{text}"
    elif length == 1:
        out = f"{text}e{point - 1}"
    else:
        out = f"{text[0]}.{text[1:]}e{point - 1}"
    return ("-" if sign else "") + out
