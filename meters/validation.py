"""Hand validation of reading bodies, shared by the single and the batch endpoints.

DRF serializers cost tens of microseconds per field, which would cap the batch endpoint well below its goal
(50,000 readings/s), so readings are checked here in plain Python instead. Everything a client can send
ends as a parsed ``ReadingInput`` or an ``ApplicationError`` with a stable code; nothing raises otherwise.

An error in the body is not raised at once: it is kept on the ``ReadingInput`` so the caller can first
resolve the meter (errors about the meter win, and a rejected reading of a known meter is announced with a
``meter_reading_validation_failed`` event).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from solders.pubkey import Pubkey

from gridtoken.exceptions import ApplicationError, ValidationFailed
from meters.models import KWH_DECIMAL_PLACES, KWH_MAX_DIGITS, MeterReading
from meters.numbers import read_integer, read_number
from meters.registers import Registers, registers_from_body
from meters.timestamps import (
    LOCAL_TIME_NONEXISTENT,
    check_timestamp_window,
    parse_local_timestamp,
    parse_register_start,
    parse_time_zone,
    parse_timestamp,
)

KWH_QUANTUM = Decimal(1).scaleb(-KWH_DECIMAL_PLACES)
# The column is numeric(18, 9): whatever the configured maximum, nothing at or above 10^9 fits.
KWH_COLUMN_LIMIT = Decimal(10) ** (KWH_MAX_DIGITS - KWH_DECIMAL_PLACES)
TELEMETRY_LIMIT = Decimal(10) ** 15
# Text PostgreSQL cannot store (text columns and json/jsonb alike): NUL, and UTF-16 surrogates, which JSON's
# \uXXXX escapes can carry alone but UTF-8 cannot encode.
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
MAX_SERIAL_LENGTH = 64
MAX_SIGNATURE_LENGTH = 4096
MAX_TEXT_LENGTH = 64

TELEMETRY_NUMBERS = (
    "energy_generated",
    "energy_consumed",
    "surplus_energy",
    "deficit_energy",
    "power",
    "voltage",
    "current",
    "power_factor",
    "frequency",
    "temperature",
    "thd_voltage",
    "thd_current",
    "latitude",
    "longitude",
    "battery_level",
    "carbon_offset",
    "max_sell_price",
    "max_buy_price",
    "power_generated",
    "power_consumed",
    "reactive_power_kvar",
    "nodal_price",
    "carbon_intensity",
)
# Kept as sent (strings or integers) so a fleet's own identifiers survive: GridTokenX sends all of these.
TELEMETRY_IDENTIFIERS = ("reading_id", "user_id", "interval_seconds", "quality", "wallet_address")
TELEMETRY_FIELDS = (*TELEMETRY_NUMBERS, "zone_id", "rec_eligible", "weather_condition", *TELEMETRY_IDENTIFIERS)
_TELEMETRY_SET = frozenset(TELEMETRY_FIELDS)
_GOOD_QUALITY = frozenset({"", "good", "ok", "valid", "normal", "measured", "actual"})
MAX_INTERVAL_SECS = 86400


@dataclass(slots=True)
class ReadingInput:
    """One reading as the client sent it, parsed; ``error`` is the first problem found in the body."""

    meter_serial: str | None = None
    meter_id: uuid.UUID | None = None
    kwh: Decimal | None = None
    reading_timestamp: datetime | None = None
    timestamp_sent: bool = False
    meter_signature: str | None = None
    wallet_address: str | None = None
    telemetry_json: str = "{}"
    # The energy picture (docs/METER_DATA.md): interval readings carry kwh (signed net), register reads totals.
    source: str = MeterReading.Source.INTERVAL
    registers: Registers | None = None
    generated: Decimal | None = None
    consumed: Decimal | None = None
    interval_secs: int | None = None
    # A local time without offset (``time_zone`` sent) that a DST change repeats or skips: reading_timestamp is
    # its earlier reading, this the later one; meters.services.local_time picks one under the meter lock.
    timestamp_alternative: datetime | None = None
    register_start: datetime | None = None  # when the meter's registers last started from zero (reset marker)
    flags: list[str] | None = None  # found while parsing: a wallet that is not the meter's, unusable fields
    meter_quality: bool = False  # the meter itself marked the reading as not good
    # Set only by a device protocol (never from a body): the forms (``meters.signatures.SignedForm``) its
    # signature may be over instead of GridToken's own (e.g. the aggregator bridge's "{device_id}:{v}:{ms}").
    signed_messages: tuple | None = None
    # Set once the signature verified: the quantities its form covers (None: no signature was checked).
    signature_covers: frozenset[str] | None = None
    error: ApplicationError | None = None
    # What the client sent, for the validation_failed event.
    raw_kwh: object = None
    raw_timestamp: object = None


def _invalid(code: str, message: str, name: str) -> ValidationFailed:
    return ValidationFailed(code, message, field=name)


def clean_text(value: object, name: str, *, max_length: int, required: bool = False) -> str | None:
    """A short printable string, or None when absent and optional."""
    if value is None:
        if required:
            raise _invalid("validation_error", "This field is required.", name)
        return None
    if not isinstance(value, str):
        raise _invalid("validation_error", "Must be a string.", name)
    if not value or len(value) > max_length or not value.isprintable():
        raise _invalid("validation_error", f"Must be 1 to {max_length} printable characters.", name)
    return value


def parse_kwh(value: object, name: str) -> Decimal:
    """An exact signed kWh amount: |kWh| <= TOKENIZATION_MAX_READING_KWH with at most 9 decimal places.

    Positive is surplus (export), negative a deficit (import), zero an interval without either; only
    positive amounts are ever minted."""
    limit = min(settings.TOKENIZATION.max_reading_kwh, KWH_COLUMN_LIMIT - KWH_QUANTUM)
    amount = read_number(
        value,
        name,
        limit=limit,
        strings=True,
        places=KWH_DECIMAL_PLACES,
        range_code="kwh_out_of_range",
        precision_code="kwh_too_precise",
    )
    return amount.quantize(KWH_QUANTUM)


def is_wallet_address(value: str) -> bool:
    try:
        Pubkey.from_string(value)
    except ValueError:
        return False
    return True


def parse_wallet(value: object, name: str = "wallet_address") -> str:
    if not isinstance(value, str) or not 32 <= len(value) <= 44 or not is_wallet_address(value):
        raise _invalid("invalid_wallet_address", "Not a base58 Solana address (32 bytes).", name)
    return value


def parse_uuid(value: object, name: str) -> uuid.UUID:
    if not isinstance(value, str) or len(value) > 40:
        raise _invalid("validation_error", "Must be a UUID.", name)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _invalid("validation_error", "Must be a UUID.", name) from None


def _telemetry_number(value: object, name: str) -> str:
    """A number as sent (JSON numbers only), below 10^15 in magnitude and within the reader's bounds (which
    also keep it inside PostgreSQL's numeric, 16,383 digits after the point)."""
    read_number(value, name, limit=TELEMETRY_LIMIT, below=True)
    return str(value)


def telemetry_json(data: dict) -> str:
    """The known telemetry fields of ``data`` as JSON text, numbers kept exactly as sent."""
    parts = []
    for name in data.keys() & _TELEMETRY_SET:  # jsonb does not keep key order anyway
        value = data[name]
        if value is None:
            continue
        if name == "zone_id":
            text = str(read_integer(value, name, minimum=-(2**31), maximum=2**31 - 1))
        elif name == "rec_eligible":
            if not isinstance(value, bool):
                raise _invalid("validation_error", "Must be true or false.", name)
            text = "true" if value else "false"
        elif name == "weather_condition":
            text = json.dumps(clean_text(value, name, max_length=MAX_TEXT_LENGTH))
        elif name in TELEMETRY_IDENTIFIERS:
            text = _identifier(value)
            if text is None:
                continue
        else:
            text = _telemetry_number(value, name)
        parts.append(f'"{name}":{text}')
    return "{" + ",".join(parts) + "}"


def _identifier(value: object) -> str | None:
    """A fleet's identifier as JSON text when it can be stored as sent (a short printable string, an integer,
    or a short list of them); None drops it (it is context, never a reason to refuse the reading)."""
    if isinstance(value, list) and len(value) <= 8:
        items = [_identifier(item) for item in value]
        return None if None in items else "[" + ",".join(items) + "]"
    if isinstance(value, str) and len(value) <= 128 and value.isprintable():
        return json.dumps(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return str(value)
    return None


def _energy(value: object, name: str, flags: list[str]) -> Decimal | None:
    """A direction's energy (kWh, zero or more). Meters send floats with any number of digits: the amount is
    cut (never rounded up) to the token's 9 places. Unusable values are flagged, not refused."""
    if value is None:
        return None
    try:
        amount = read_number(value, name, limit=KWH_COLUMN_LIMIT, below=True, signed=False)
    except ValidationFailed:
        flags.append(f"{name}_unusable")
        return None
    return amount.quantize(KWH_QUANTUM, rounding=ROUND_DOWN)


def _interval(value: object, flags: list[str]) -> int | None:
    if value is None:
        return None
    try:
        return read_integer(value, "interval_seconds", minimum=1, maximum=MAX_INTERVAL_SECS)
    except ValidationFailed:
        flags.append("interval_unusable")
        return None


def _meter_quality(value: object) -> bool:
    """Whether a meter's own quality mark (a string or a list of strings) says the reading is not good."""
    marks = value if isinstance(value, list) else [value]
    return any(not isinstance(mark, str) or mark.strip().lower() not in _GOOD_QUALITY for mark in marks)


def _signature_text(value: object) -> str | None:
    """The signature as sent. It is only parsed when the meter has a key (or signatures are required), so
    here it merely has to be storable: a string without NUL, of bounded length."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_SIGNATURE_LENGTH:
        raise _invalid(
            "validation_error", f"Must be a string of at most {MAX_SIGNATURE_LENGTH} characters.", "meter_signature"
        )
    storable_text(value, "meter_signature")
    return value


def storable_text(value: str, name: str) -> str:
    """``value`` when PostgreSQL can store it; else 400 ``unstorable_text`` (a NUL or a lone surrogate)."""
    if UNSTORABLE_TEXT.search(value):
        raise _invalid(
            "unstorable_text", "Must not contain NUL or unpaired UTF-16 surrogates (\\u0000, \\ud800).", name
        )
    return value


def parse_reading(
    data: object,
    *,
    kwh_key: str,
    timestamp_key: str,
    timestamp_required: bool,
    now: datetime,
    path_serial: str | None = None,
) -> ReadingInput:
    """Parse one reading body. Raises only when the meter itself cannot be identified from it.

    ``kwh_key``/``timestamp_key`` name the fields (``kwh_amount``/``reading_timestamp`` on the submit
    endpoint, ``kwh``/``timestamp`` on the v1 ones; the other spelling is accepted as an alias).
    """
    if not isinstance(data, dict):
        raise ValidationFailed("validation_error", "Expected a JSON object.")
    item = ReadingInput()
    if path_serial is not None:
        item.meter_serial = path_serial
    else:
        item.meter_serial = clean_text(data.get("meter_serial"), "meter_serial", max_length=MAX_SERIAL_LENGTH)
        if data.get("meter_id") is not None:
            try:
                item.meter_id = parse_uuid(data["meter_id"], "meter_id")
            except ValidationFailed:
                if item.meter_serial is None:
                    raise
                # GridTokenX's monitoring payload repeats its serial as meter_id: the serial names the meter.
    try:
        _parse_body(item, data, kwh_key=kwh_key, timestamp_key=timestamp_key, required=timestamp_required, now=now)
    except ApplicationError as error:
        item.error = error
    return item


_ALIASES = {
    "kwh": "kwh_amount",
    "kwh_amount": "kwh",
    "timestamp": "reading_timestamp",
    "reading_timestamp": "timestamp",
}


def _parse_body(item: ReadingInput, data: dict, *, kwh_key: str, timestamp_key: str, required: bool, now) -> None:
    if kwh_key not in data and _ALIASES[kwh_key] in data:
        kwh_key = _ALIASES[kwh_key]
    if timestamp_key not in data and _ALIASES[timestamp_key] in data:
        timestamp_key = _ALIASES[timestamp_key]
    item.raw_kwh = data.get(kwh_key)
    item.raw_timestamp = data.get(timestamp_key)
    item.registers = registers_from_body(data)
    if item.registers is not None:
        item.source = MeterReading.Source.REGISTER  # any kwh sent alongside stays in telemetry, unused
    elif item.raw_kwh is None:
        raise _invalid("validation_error", "This field (or register totals) is required.", kwh_key)
    else:
        item.kwh = parse_kwh(item.raw_kwh, kwh_key)
    flags: list[str] = []
    zone = None if data.get("time_zone") is None else parse_time_zone(data["time_zone"])
    if item.raw_timestamp is None:
        if required:
            raise _invalid("validation_error", "This field is required.", timestamp_key)
        item.reading_timestamp = now
    elif zone is not None:
        item.reading_timestamp, item.timestamp_alternative, nonexistent = parse_local_timestamp(
            item.raw_timestamp, timestamp_key, zone
        )
        item.timestamp_sent = True
        if nonexistent:
            flags.append(LOCAL_TIME_NONEXISTENT)
    else:
        item.reading_timestamp = parse_timestamp(item.raw_timestamp, timestamp_key)
        item.timestamp_sent = True
    check_timestamp_window(item.reading_timestamp, now=now, name=timestamp_key)
    if item.registers is not None and data.get("register_start") is not None:
        item.register_start = parse_register_start(data["register_start"], zone)
    wallet = data.get("wallet_address")
    if wallet is not None:  # never credited: the meter's registered wallet is paid; compared once the meter is known
        item.wallet_address = wallet if isinstance(wallet, str) else ""
    item.generated = _energy(data.get("energy_generated"), "energy_generated", flags)
    item.consumed = _energy(data.get("energy_consumed"), "energy_consumed", flags)
    item.interval_secs = _interval(data.get("interval_seconds", data.get("interval_secs")), flags)
    if data.get("quality") is not None:
        item.meter_quality = _meter_quality(data["quality"])
    item.flags = flags
    item.meter_signature = _signature_text(data.get("meter_signature"))
    item.telemetry_json = telemetry_json(data)
