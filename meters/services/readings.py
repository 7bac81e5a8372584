"""Storing readings: the checks that need the meter, the per-meter lock, idempotent replays and 409s.

Race safety. Every write of a meter's readings first takes a transaction-scoped advisory lock on that
meter (``pg_advisory_xact_lock(LOCK_NAMESPACE, hashtext(meter_id))``), and only then, in a later statement
and so on a snapshot taken after the previous holder committed, looks for readings inside the duplicate
window. Twenty simultaneous identical posts therefore create one row (the others see it and answer as a
replay), and two posts at different timestamps inside the window cannot both land. The unique
(meter, reading_timestamp) constraint stays as the last line of defence (``ON CONFLICT DO NOTHING``).

The single post is one round trip: the meter comes from a short in-process cache (``meter_get``) and
the write is the server-side function ``meters_reading_insert`` (migration 0002), which takes the lock,
re-checks the meter, and inserts unless a neighbour exists. Only a replay or a conflict costs another
query. Rows travel as JSON documents naming every column (``json_populate_record``), built from the model,
so a column added later is filled with its default without touching this module.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection

from gridtoken import events
from gridtoken.exceptions import ApplicationError, Conflict, Forbidden, ValidationFailed
from gridtoken.ids import uuid7
from meters import hooks, signatures
from meters.models import MeterReading
from meters.selectors import Caller, MeterRow, meter_access_error, meter_get, meter_reference
from meters.services.energy import Assessment, assess, needs_context
from meters.validation import ReadingInput

LOCK_NAMESPACE = 0x4754  # "GT": the advisory-lock class of per-meter reading writes
TABLE = MeterReading._meta.db_table
ROW_COLUMNS = ("id", "user_id", "meter_id", "wallet_address", "kwh_amount", "reading_timestamp", "meter_signature")
# The energy picture, decided per row by meters.services.energy.
ENERGY_COLUMNS = (
    "source", "generated_kwh", "consumed_kwh", "interval_secs", "import_register_kwh", "export_register_kwh",
    "mintable_kwh", "flags", "window_start", "status",
)  # fmt: skip
STORED_COLUMNS = (
    "id, user_id, wallet_address, kwh_amount, reading_timestamp, submitted_at, minted, mint_tx_signature, "
    + ", ".join(ENERGY_COLUMNS)
)
INSERTED, TAKEN, STALE = "inserted", "taken", "stale"
INSERT_ONE_SQL = "SELECT meters_reading_insert(%s::json, %s, %s, %s, %s, %s, %s)"
NEIGHBOURS_SQL = (
    f"SELECT {STORED_COLUMNS} FROM {TABLE} WHERE meter_id = %s "  # noqa: S608 (constant identifiers)
    "AND NOT (source = 'window') AND reading_timestamp >= %s AND reading_timestamp <= %s"
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
    source: str = MeterReading.Source.INTERVAL
    generated_kwh: Decimal | None = None
    consumed_kwh: Decimal | None = None
    interval_secs: int | None = None
    import_register_kwh: Decimal | None = None
    export_register_kwh: Decimal | None = None
    mintable_kwh: Decimal = Decimal(0)
    flags: list = field(default_factory=list)
    window_start: datetime | None = None
    status: str = MeterReading.Status.PENDING

    @property
    def meter_id(self) -> uuid.UUID:
        return self.meter.id

    @classmethod
    def from_row(cls, meter: MeterRow, row) -> StoredReading:
        reading = cls(row[0], row[1], meter, *row[2:])
        if isinstance(reading.flags, str):
            reading.flags = json.loads(reading.flags)
        return reading

    @classmethod
    def new(cls, meter: MeterRow, item: ReadingInput, now: datetime, verdict: Assessment, reading_id=None):
        """The row ingestion stores: attributed to the meter's owner and wallet, whatever the body said."""
        registers = verdict.registers
        return cls(
            reading_id or uuid7(),
            meter.owner_id,
            meter,
            meter.wallet_address,
            verdict.kwh,
            item.reading_timestamp,
            now,
            source=item.source,
            generated_kwh=verdict.generated,
            consumed_kwh=verdict.consumed,
            interval_secs=verdict.interval_secs,
            import_register_kwh=registers.import_kwh if registers else None,
            export_register_kwh=registers.export_kwh if registers else None,
            mintable_kwh=verdict.mintable,
            flags=verdict.flags,
            window_start=verdict.window_start,
            status=verdict.status,
        )


@dataclass(slots=True)
class SubmitResult:
    reading: StoredReading
    duplicate: bool


@functools.cache
def _shared_fields() -> tuple:
    excluded = {*ROW_COLUMNS, *ENERGY_COLUMNS, "telemetry"}
    return tuple(column for column in MeterReading._meta.concrete_fields if column.column not in excluded)


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"a default of type {type(value).__name__} needs a JSON form in row documents")


def shared_document(now: datetime) -> str:
    """The JSON members (no braces) of every column that is the same for all rows of one request."""
    values = {}
    for column in _shared_fields():
        if column.column in ("submitted_at", "next_attempt_at"):
            values[column.column] = now
        else:
            values[column.column] = column.get_default()
    return json.dumps(values, default=_plain)[1:-1]


def _number(value) -> str:
    return "null" if value is None else f'"{value:f}"'


def row_document(reading: StoredReading, item: ReadingInput, shared: str) -> str:
    """One row, every column, as JSON text; telemetry is spliced in already rendered so numbers stay exact."""
    signature = "null" if item.meter_signature is None else json.dumps(item.meter_signature)
    window = "null" if reading.window_start is None else f'"{reading.window_start.isoformat()}"'
    interval = "null" if reading.interval_secs is None else str(reading.interval_secs)
    return (
        f'{{"id":"{reading.id}","user_id":"{reading.user_id}","meter_id":"{reading.meter.id}",'
        f'"wallet_address":{json.dumps(reading.wallet_address)},"kwh_amount":"{reading.kwh_amount:f}",'
        f'"reading_timestamp":"{reading.reading_timestamp.isoformat()}","meter_signature":{signature},'
        f'"source":"{reading.source}","generated_kwh":{_number(reading.generated_kwh)},'
        f'"consumed_kwh":{_number(reading.consumed_kwh)},"interval_secs":{interval},'
        f'"import_register_kwh":{_number(reading.import_register_kwh)},'
        f'"export_register_kwh":{_number(reading.export_register_kwh)},'
        f'"mintable_kwh":"{reading.mintable_kwh:f}","flags":{json.dumps(reading.flags)},"window_start":{window},'
        f'"status":"{reading.status}",{shared},"telemetry":{item.telemetry_json}}}'
    )


def reading_rejection(*, meter: MeterRow, item: ReadingInput) -> ApplicationError | None:
    """Why this reading of ``meter`` cannot be stored (before looking at other readings), or None."""
    if not meter.is_active:
        return Forbidden("meter_suspended", f"Meter {meter.serial} is suspended.")
    if item.error is not None:
        return item.error
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
    forms = item.signed_messages or signatures.canonical_forms(serial=meter.serial, item=item)
    for form in forms:
        if signatures.verify(public_key=meter.public_key, signature=item.meter_signature, message=form.message):
            item.signature_covers = form.covers  # what the verified form vouches for (energy.assess checks it)
            return None
    hint = "" if item.timestamp_sent else " (a signed reading must carry its timestamp)"
    return ValidationFailed(
        "invalid_signature",
        f"The signature does not verify over {forms[0].message.decode()!r} with the meter's public key{hint}.",
        field="meter_signature",
    )


def announce_stored(readings: list[StoredReading]) -> None:
    """Once the readings' transaction commits: their events, and the stored-readings hooks (minting's trigger)."""
    if readings:
        at = events.rfc3339()
        events.emit([events.reading_received(reading, timestamp=at) for reading in readings])
        hooks.readings_stored()


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


def reading_submit(*, caller: Caller, item: ReadingInput, now: datetime) -> SubmitResult:
    """Store one reading, or recognise it as a replay of a stored one.

    1. Find the named meter (404 unknown; 403 another account's, or another meter than a device key's).
    2. Check the meter's state and the body. A refusal is only ever decided on a freshly read meter, and a
       rejected reading of a known meter is announced as a validation_failed event.
    3. ``meters_reading_insert``: lock, re-check the meter, insert unless a neighbour lies in the window.
    4. When nothing was inserted: the same timestamp and kWh is a replay (200, ``duplicate``); anything
       else is a 409.
    """
    column, reference = meter_reference(caller=caller, serial=item.meter_serial, meter_id=item.meter_id)
    meter_id_to_match = item.meter_id if column == "serial" else None
    fresh = False
    for _ in range(3):
        meter, cached = meter_get(column, reference, fresh=fresh)
        denied = meter_access_error(caller=caller, meter=meter, meter_id=meter_id_to_match)
        rejection = None if denied else reading_rejection(meter=meter, item=item)
        if (denied or rejection) and cached:
            fresh = True
            continue
        if denied:
            raise denied
        if rejection:
            break
        if needs_context(item):  # registers, windows, history rules: the batch path's locked read of the meter
            from meters.services.batch import reading_store_one

            return reading_store_one(caller=caller, item=item, meter=meter, now=now)
        try:
            verdict = assess(item, meter, None, reading_id=uuid7(), now=now)
        except ApplicationError as error:
            rejection = error
            break
        reading = StoredReading.new(meter, item, now, verdict)
        outcome = _insert_one(reading, item, now)
        if outcome == STALE:  # the meter changed since it was read: read it again
            fresh = True
            continue
        if outcome == INSERTED:
            announce_stored([reading])
            return SubmitResult(reading, duplicate=False)
        existing, rejection = _classify(meter, item)
        if existing is not None:
            return SubmitResult(existing, duplicate=True)
        break
    else:
        rejection = Conflict("meter_changed", "The meter changed repeatedly while the reading was stored; retry.")
    announce_rejections([(meter, item, rejection)])
    raise rejection


def _insert_one(reading: StoredReading, item: ReadingInput, now: datetime) -> str:
    meter = reading.meter
    window = timedelta(seconds=settings.TOKENIZATION.duplicate_window_secs)
    with connection.cursor() as cursor:
        cursor.execute(
            INSERT_ONE_SQL,
            [
                row_document(reading, item, shared_document(now)),
                LOCK_NAMESPACE,
                meter.id,
                meter.owner_id,
                meter.wallet_address,
                meter.public_key,
                window,
            ],
        )
        return cursor.fetchone()[0]


def reading_get(meter: MeterRow, reading_id: uuid.UUID) -> StoredReading:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {STORED_COLUMNS} FROM {TABLE} WHERE id = %s", [reading_id])  # noqa: S608
        return StoredReading.from_row(meter, cursor.fetchone())


def _classify(meter: MeterRow, item: ReadingInput) -> tuple[StoredReading | None, ApplicationError | None]:
    """After an insert found a neighbour: the replayed reading, or the 409 to answer."""
    window = timedelta(seconds=settings.TOKENIZATION.duplicate_window_secs)
    moment = item.reading_timestamp
    with connection.cursor() as cursor:
        cursor.execute(NEIGHBOURS_SQL, [meter.id, moment - window, moment + window])
        stored = [StoredReading.from_row(meter, row) for row in cursor.fetchall()]
    for reading in stored:
        if reading.reading_timestamp == moment:
            if reading.source == item.source and reading.kwh_amount == item.kwh:
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
