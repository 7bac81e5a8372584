"""Storing readings: the checks that need the meter, the per-meter lock, idempotent replays and 409s.

Race safety. Every write of a meter's readings first takes a transaction-scoped advisory lock on that meter
(``pg_advisory_xact_lock(LOCK_NAMESPACE, hashtext(meter_id))``) in its own statement, so the window check
that follows runs on a snapshot taken after the previous holder committed. Twenty simultaneous identical
posts therefore create one row (the others see it and answer as a replay), and two posts at different
timestamps inside the duplicate window cannot both land. The unique (meter, reading_timestamp) constraint
stays as the last line of defence (``ON CONFLICT DO NOTHING``).

The hot path is raw SQL on purpose: lock and load the meter in one statement, insert-unless-a-neighbour
exists in a second. Only a replay or a conflict costs a third query.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction

from gridtoken.exceptions import ApplicationError, Conflict, Forbidden, ValidationFailed
from meters import signatures
from meters.models import Meter, MeterReading
from meters.selectors import Caller, MeterRow, meter_access_error, meter_not_found, meter_reference
from meters.validation import ReadingInput, is_wallet_address
from realtime import events

LOCK_NAMESPACE = 0x4754  # "GT": the advisory-lock class of per-meter reading writes
TABLE = MeterReading._meta.db_table
METER_TABLE = Meter._meta.db_table
ROW_COLUMNS = (
    ("id", "uuid"),
    ("user_id", "uuid"),
    ("meter_id", "uuid"),
    ("wallet_address", "text"),
    ("kwh_amount", "numeric"),
    ("reading_timestamp", "timestamptz"),
    ("meter_signature", "text"),
    ("telemetry", "jsonb"),
)
_ROW_NAMES = {name for name, _ in ROW_COLUMNS}
STORED_COLUMNS = (
    "id, user_id, wallet_address, kwh_amount, reading_timestamp, submitted_at, minted, mint_tx_signature, status"
)


@dataclass(slots=True)
class StoredReading:
    """A reading row as the API returns it and as ``events.reading_received`` reads it."""

    id: uuid.UUID
    user_id: uuid.UUID
    meter: MeterRow
    wallet_address: str
    kwh_amount: Decimal
    reading_timestamp: datetime
    submitted_at: datetime
    minted: bool = False
    mint_tx_signature: str | None = None
    status: str = MeterReading.Status.PENDING

    @property
    def meter_id(self) -> uuid.UUID:
        return self.meter.id

    @classmethod
    def from_row(cls, meter: MeterRow, row) -> StoredReading:
        return cls(row[0], row[1], meter, *row[2:])


@dataclass(slots=True)
class SubmitResult:
    reading: StoredReading
    duplicate: bool


@functools.cache
def shared_fields() -> tuple[tuple[object, str, str], ...]:
    """(field, column, SQL type) of every column whose value is the same for all rows of one request.

    Taken from the model, so a column added later is filled with its default without touching this module.
    """
    return tuple(
        (field, field.column, field.db_type(connection))
        for field in MeterReading._meta.concrete_fields
        if field.column not in _ROW_NAMES
    )


def shared_values(now: datetime) -> list:
    values = []
    for field, column, _ in shared_fields():
        if column in ("submitted_at", "next_attempt_at"):
            value = now
        elif column == "status":
            value = MeterReading.Status.PENDING
        else:
            value = field.get_default()
        values.append(field.get_db_prep_save(value, connection))
    return values


# SQL text below interpolates only the model's own table and column names; every value is a parameter.
@functools.cache
def _insert_one_sql() -> str:
    columns = [name for name, _ in ROW_COLUMNS] + [column for _, column, _ in shared_fields()]
    placeholders = [f"%s::{kind}" for _, kind in ROW_COLUMNS] + [f"%s::{kind}" for _, _, kind in shared_fields()]
    return (
        f"INSERT INTO {TABLE} ({', '.join(columns)}) SELECT {', '.join(placeholders)} WHERE NOT EXISTS ("  # noqa: S608
        f"SELECT 1 FROM {TABLE} WHERE meter_id = %s AND reading_timestamp > %s AND reading_timestamp < %s) "
        "ON CONFLICT (meter_id, reading_timestamp) DO NOTHING RETURNING id"
    )


LOCK_AND_LOAD_METER_SQL = {
    column: f"SELECT {MeterRow.COLUMNS}, pg_advisory_xact_lock(%s, hashtext(id::text)) "  # noqa: S608
    f"FROM {METER_TABLE} WHERE {column} = %s"
    for column in ("serial", "id")
}
NEIGHBOURS_SQL = (
    f"SELECT {STORED_COLUMNS} FROM {TABLE} WHERE meter_id = %s "  # noqa: S608
    "AND reading_timestamp >= %s AND reading_timestamp <= %s"
)


def reading_rejection(*, meter: MeterRow, item: ReadingInput) -> ApplicationError | None:
    """Why this reading of ``meter`` cannot be stored (before looking at other readings), or None."""
    if not meter.is_active:
        return Forbidden("meter_suspended", f"Meter {meter.serial} is suspended.")
    if item.error is not None:
        return item.error
    if item.wallet_address is not None and item.wallet_address != meter.wallet_address:
        if not is_wallet_address(item.wallet_address):
            return ValidationFailed(
                "invalid_wallet_address", "Not a base58 Solana address (32 bytes).", field="wallet_address"
            )
        return ValidationFailed(
            "wallet_mismatch",
            "Readings are credited to the meter's wallet; the wallet_address sent is a different one.",
            field="wallet_address",
        )
    if meter.public_key or settings.INGEST.signature_required:
        return _signature_rejection(meter, item)
    return None


def _signature_rejection(meter: MeterRow, item: ReadingInput) -> ApplicationError | None:
    if not item.meter_signature:
        return ValidationFailed("signature_required", "This meter's readings must be signed.", field="meter_signature")
    if not meter.public_key:
        return ValidationFailed(
            "invalid_signature", "The meter has no public key to verify signatures with.", field="meter_signature"
        )
    message = signatures.canonical_message(serial=meter.serial, reading_timestamp=item.reading_timestamp, kwh=item.kwh)
    if not signatures.verify(public_key=meter.public_key, signature=item.meter_signature, message=message):
        hint = "" if item.timestamp_sent else " (a signed reading must carry its timestamp)"
        return ValidationFailed(
            "invalid_signature",
            f"The signature does not verify over {message.decode()!r} with the meter's public key{hint}.",
            field="meter_signature",
        )
    return None


def announce_rejections(rejected: list[tuple[MeterRow, ReadingInput, ApplicationError]]) -> None:
    """A ``meter_reading_validation_failed`` event for each rejected reading of a known meter."""
    events.emit(
        [
            events.validation_failed(
                user_id=meter.owner_id,
                meter_serial=meter.serial,
                error_reason=f"{error.code}: {error.message}",
                kwh_amount=_short(item.raw_kwh),
                reading_timestamp=_short(item.raw_timestamp),
            )
            for meter, item, error in rejected
        ]
    )


def _short(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        return None
    return str(value)[:64]


def lock_meters(cursor, meter_ids: list[uuid.UUID]) -> None:
    """Take the per-meter write locks in one statement, in a fixed order (no deadlock between batches).

    The ids travel as one JSON text: psycopg adapts Python lists element by element in Python, which for
    a thousand values costs more than the whole statement.
    """
    cursor.execute(
        "SELECT pg_advisory_xact_lock(%s, k) FROM (SELECT hashtext(m) AS k FROM json_array_elements_text(%s::json) "
        "AS m GROUP BY 1 ORDER BY 1) AS keys",
        [LOCK_NAMESPACE, json.dumps([str(meter_id) for meter_id in meter_ids])],
    )


def reading_submit(*, caller: Caller, item: ReadingInput, now: datetime) -> SubmitResult:
    """Store one reading, or recognise it as a replay of a stored one.

    1. Lock and load the named meter (404 unknown, 403 another account's or another device's meter).
    2. Check the meter's state and the body (a rejection of a known meter is announced as an event).
    3. Insert unless any reading of the meter lies within the duplicate window.
    4. When nothing was inserted: the same timestamp and kWh is a replay (200, ``duplicate``); anything
       else is a 409.
    """
    column, reference = meter_reference(caller=caller, serial=item.meter_serial, meter_id=item.meter_id)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(LOCK_AND_LOAD_METER_SQL[column], [LOCK_NAMESPACE, reference])
        row = cursor.fetchone()
        if row is None:
            raise meter_not_found(reference)
        meter = MeterRow(*row[:-1])
        denied = meter_access_error(caller=caller, meter=meter, meter_id=item.meter_id if column == "serial" else None)
        if denied is not None:
            raise denied
        rejection = reading_rejection(meter=meter, item=item)
        if rejection is None:
            reading = _insert_unless_neighbour(cursor, meter, item, now)
            if reading is not None:
                events.emit([events.reading_received(reading)])
                return SubmitResult(reading, duplicate=False)
            existing, rejection = _classify(cursor, meter, item)
            if existing is not None:
                return SubmitResult(existing, duplicate=True)
    announce_rejections([(meter, item, rejection)])
    raise rejection


def _insert_unless_neighbour(cursor, meter: MeterRow, item: ReadingInput, now: datetime) -> StoredReading | None:
    reading = StoredReading(
        id=uuid.uuid4(),
        user_id=meter.owner_id,
        meter=meter,
        wallet_address=meter.wallet_address,
        kwh_amount=item.kwh,
        reading_timestamp=item.reading_timestamp,
        submitted_at=now,
    )
    window = timedelta(seconds=settings.TOKENIZATION.duplicate_window_secs)
    cursor.execute(
        _insert_one_sql(),
        [
            *row_values(reading, item),
            *shared_values(now),
            meter.id,
            item.reading_timestamp - window,
            item.reading_timestamp + window,
        ],
    )
    return reading if cursor.fetchone() is not None else None


def row_values(reading: StoredReading, item: ReadingInput) -> tuple:
    """The per-row column values, in ROW_COLUMNS order."""
    return (
        reading.id,
        reading.user_id,
        reading.meter.id,
        reading.wallet_address,
        reading.kwh_amount,
        reading.reading_timestamp,
        item.meter_signature,
        item.telemetry_json,
    )


def _classify(cursor, meter: MeterRow, item: ReadingInput) -> tuple[StoredReading | None, ApplicationError | None]:
    """After an insert found a neighbour: the replayed reading, or the 409 to answer."""
    window = timedelta(seconds=settings.TOKENIZATION.duplicate_window_secs)
    moment = item.reading_timestamp
    cursor.execute(NEIGHBOURS_SQL, [meter.id, moment - window, moment + window])
    stored = [StoredReading.from_row(meter, row) for row in cursor.fetchall()]
    for reading in stored:
        if reading.reading_timestamp == moment:
            if reading.kwh_amount == item.kwh:
                return reading, None
            return None, conflict_same_timestamp(reading)
    near = [r for r in stored if abs(r.reading_timestamp - moment) < window]
    if near:
        return None, conflict_within_window(min(near, key=lambda r: abs(r.reading_timestamp - moment)))
    # Unreachable while every writer takes the meter lock; answer 409 rather than guess.
    return None, Conflict("duplicate_reading_conflict", "A conflicting reading was stored concurrently.")


def conflict_same_timestamp(existing) -> Conflict:
    return Conflict(
        "duplicate_reading_conflict",
        "A reading with this timestamp and a different kWh amount is already stored for this meter.",
        details={"existing_reading_id": str(existing.id), "existing_kwh_amount": format(existing.kwh_amount, "f")},
    )


def conflict_within_window(existing) -> Conflict:
    window = settings.TOKENIZATION.duplicate_window_secs
    return Conflict(
        "reading_within_duplicate_window",
        f"Another reading of this meter lies less than {window} seconds away.",
        details={
            "existing_reading_id": str(existing.id),
            "existing_reading_timestamp": events.rfc3339(existing.reading_timestamp),
        },
    )
