"""Ingestion's store stage: the per-meter lock, idempotent replays and 409s, the row written.

Race safety. Every write of a meter's readings first takes a transaction-scoped advisory lock on that
meter (``pg_advisory_xact_lock(LOCK_NAMESPACE, hashtext(meter_id))``), and only then, in a later statement
and so on a snapshot taken after the previous holder committed, looks for readings inside the duplicate
window. Twenty simultaneous identical posts therefore create one row (the others see it and answer as a
replay), and two posts at different timestamps inside the window cannot both land. The unique
(meter, reading_timestamp) constraint stays as the last line of defence (``ON CONFLICT DO NOTHING``).

Two ways to store, chosen by the pipeline (``meters.services.batch``):

- **One reading that needs no other readings** is one round trip: the server-side function
  ``meters_reading_insert`` (migration 0002) takes the lock, re-checks the meter, and inserts unless a
  neighbour exists (``reading_insert_one``). Only a replay or a conflict costs another query
  (``reading_classify``).
- **Everything else** (a batch, a reading whose energy depends on the meter's other readings): one statement
  takes the meters' locks and reads them again ``FOR SHARE`` (``meters_lock``); one query loads the stored
  readings around the items (``StoredNearby``), which classify each item in order as new, replay or conflict;
  one ``INSERT ... SELECT FROM json_populate_recordset(...) ON CONFLICT DO NOTHING`` writes the new ones
  (``readings_insert``).

Why ``FOR SHARE``: the advisory lock orders reading writers only; meter writes (suspending, a fleet
re-registration changing the wallet) do not take it. The row lock makes such a write wait until the
readings commit, so every row stores the owner and wallet the meter has when it commits, and a meter
suspended before the lock is taken gets no readings. (``FOR KEY SHARE`` would not conflict with those
updates.)

Rows travel as JSON documents naming every column, built from the model, so a column added later is filled
with its default without touching this module. SQL interpolates only the model's own identifiers; lists travel
as one JSON text (psycopg adapts Python lists element by element in Python, dearer than ``json_to_recordset``).
"""

from __future__ import annotations

import bisect
import functools
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection

from gridtoken import events
from gridtoken.exceptions import ApplicationError, Conflict
from gridtoken.ids import uuid7
from meters.models import Meter, MeterReading
from meters.registers import Registers
from meters.selectors import MeterRow
from meters.services.energy import Assessment, Resplit
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
    def new(cls, meter: MeterRow, item: ReadingInput, now: datetime, verdict: Assessment, reading_id: uuid.UUID):
        """The row ingestion stores: attributed to the meter's owner and wallet, whatever the body said."""
        registers = verdict.registers
        return cls(
            reading_id,
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


def reading_id_new() -> uuid.UUID:
    """The id of a new reading row, the one place ingestion makes one: time-ordered (UUIDv7), so the readings'
    primary key grows at its right edge (docs/PARTITIONS.md, "Ids")."""
    return uuid7()


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


def reading_insert_one(meter: MeterRow, document: str) -> str:
    """Lock the meter, re-check it, insert the row ``document`` unless a neighbour lies in the duplicate window:
    INSERTED, TAKEN (a neighbour exists) or STALE (the meter changed since ``meter`` was read)."""
    window = timedelta(seconds=settings.TOKENIZATION.duplicate_window_secs)
    with connection.cursor() as cursor:
        cursor.execute(
            INSERT_ONE_SQL,
            [
                document,
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


def reading_classify(meter: MeterRow, item: ReadingInput) -> tuple[StoredReading | None, ApplicationError | None]:
    """After ``reading_insert_one`` found a neighbour: the replayed reading, or the 409 to answer."""
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


# The advisory locks are taken while the locks CTE is scanned, which the sort below LockRows finishes
# before the first meter row is locked; pg_advisory_xact_lock is volatile, so the CTE is never inlined.
LOCK_METERS_SQL = (
    "WITH ids AS (SELECT DISTINCT m::uuid AS id FROM json_array_elements_text(%s::json) AS m), "  # noqa: S608
    "locks AS (SELECT count(pg_advisory_xact_lock(%s, k)) AS taken "
    "FROM (SELECT hashtext(id::text) AS k FROM ids GROUP BY 1 ORDER BY 1) AS keys) "
    f"SELECT {', '.join(f'meter.{column.strip()}' for column in MeterRow.COLUMNS.split(','))} "
    f"FROM {Meter._meta.db_table} AS meter, locks "
    "WHERE meter.id IN (SELECT id FROM ids) AND locks.taken >= 0 ORDER BY meter.id FOR SHARE OF meter"
)


def meters_lock(cursor, meter_ids: list[uuid.UUID]) -> dict[uuid.UUID, MeterRow]:
    """Take the meters' write locks and share-lock their rows; the meters as they are now, by id."""
    cursor.execute(LOCK_METERS_SQL, [json.dumps([str(meter_id) for meter_id in meter_ids]), LOCK_NAMESPACE])
    return {row[0]: MeterRow(*row) for row in cursor.fetchall()}


_MICROSECOND = timedelta(microseconds=1)
NEARBY_SQL = (
    "SELECT q.meter_id, r.id, r.kwh_amount, r.reading_timestamp, r.import_register_kwh, r.export_register_kwh "  # noqa: S608
    "FROM json_to_recordset(%s::json) AS q(meter_id uuid, lo timestamptz, hi timestamptz) "
    "CROSS JOIN LATERAL ("
    f"SELECT id, kwh_amount, reading_timestamp, import_register_kwh, export_register_kwh FROM {TABLE} "
    "WHERE meter_id = q.meter_id AND NOT (source = 'window') AND reading_timestamp >= q.lo "
    "AND reading_timestamp <= q.hi "
    # OFFSET 0 keeps this a per-meter index probe: the planner guesses 100 rows for json_to_recordset
    # and would otherwise hash-join against a full scan of the readings table.
    "OFFSET 0) AS r"
)


class _Existing:
    """A stored reading's identity for in-batch classification: what a replay must repeat."""

    __slots__ = ("id", "kwh_amount", "reading_timestamp", "registers")

    def __init__(self, reading_id, kwh_amount, reading_timestamp, registers=None) -> None:
        self.id, self.kwh_amount, self.reading_timestamp = reading_id, kwh_amount, reading_timestamp
        self.registers = registers

    def replayed_by(self, item: ReadingInput) -> bool:
        if item.registers is not None:  # a partial update repeats the registers it sends (the rest were overlaid)
            sent, stored = item.registers, self.registers
            return stored is not None and all(
                value is None or value == kept
                for value, kept in ((sent.import_kwh, stored.import_kwh), (sent.export_kwh, stored.export_kwh))
            )
        return self.registers is None and self.kwh_amount == item.kwh


class StoredNearby:
    """The stored readings within the duplicate window of a batch's items, by meter, and the items accepted so
    far: what decides, item by item in order, whether one is new, a replay or a conflict (items of one batch
    see each other). Loaded with one query, under the meters' locks."""

    def __init__(self, cursor, candidates: list) -> None:
        self.window = timedelta(seconds=settings.TOKENIZATION.duplicate_window_secs)
        ranges: dict[uuid.UUID, list[datetime]] = {}
        for _, item, meter in candidates:
            span = ranges.setdefault(meter.id, [item.reading_timestamp, item.reading_timestamp])
            span[0] = min(span[0], item.reading_timestamp)
            span[1] = max(span[1], item.reading_timestamp)
        self.exact: dict[uuid.UUID, dict[datetime, _Existing]] = defaultdict(dict)
        self.times: dict[uuid.UUID, list[datetime]] = defaultdict(list)
        # Inclusive bounds; with a window the edges themselves are never conflicts, so skip them.
        edge = self.window - _MICROSECOND if self.window else self.window
        spans = [
            {"meter_id": str(m), "lo": (lo - edge).isoformat(), "hi": (hi + edge).isoformat()}
            for m, (lo, hi) in ranges.items()
        ]
        cursor.execute(NEARBY_SQL, [json.dumps(spans)])
        for meter_id, reading_id, kwh, moment, imported, exported in cursor.fetchall():
            registers = None if imported is None and exported is None else Registers(imported, exported)
            self.exact[meter_id][moment] = _Existing(reading_id, kwh, moment, registers)
            self.times[meter_id].append(moment)
        for moments in self.times.values():
            moments.sort()

    def classify(self, item: ReadingInput, meter: MeterRow) -> _Existing | ApplicationError | None:
        """The stored (or earlier accepted) reading ``item`` replays, the 409 it meets, or None when it is new."""
        moment = item.reading_timestamp
        same = self.exact[meter.id].get(moment)
        if same is not None:
            return same if same.replayed_by(item) else conflict_same_timestamp(same)
        neighbour = self._neighbour(meter.id, moment)
        return None if neighbour is None else conflict_within_window(neighbour)

    def accept(self, item: ReadingInput, meter: MeterRow, reading_id: uuid.UUID) -> None:
        """``item`` will be stored as ``reading_id``: the batch's later items see it."""
        moment = item.reading_timestamp
        self.exact[meter.id][moment] = _Existing(reading_id, item.kwh, moment, item.registers)
        bisect.insort(self.times[meter.id], moment)

    def _neighbour(self, meter_id: uuid.UUID, moment: datetime) -> _Existing | None:
        """A stored (or earlier accepted) reading strictly less than the window from ``moment``, if any."""
        if not self.window:
            return None
        moments = self.times[meter_id]
        position = bisect.bisect_left(moments, moment)
        for candidate in moments[max(0, position - 1) : position + 1]:
            if abs(candidate - moment) < self.window:
                return self.exact[meter_id][candidate]
        return None


RESPLIT_SQL = (
    f"UPDATE {TABLE} SET kwh_amount = %s, generated_kwh = %s, consumed_kwh = %s, mintable_kwh = %s, status = %s, "  # noqa: S608
    "interval_secs = %s "
    "WHERE id = %s AND token_amount IS NULL AND batch_id IS NULL "
    "AND (status IN ('pending', 'held', 'awaiting_window') OR (status = 'recorded' AND window_start IS NULL)) "
    "RETURNING id"
)


def reading_resplit(cursor, change: Resplit) -> bool:
    """Re-derive a stored read's energy from the late read before it; False when it was claimed meanwhile
    (the UPDATE waits for a claiming transaction's row lock, then re-checks the row as it committed)."""
    cursor.execute(
        RESPLIT_SQL,
        [
            change.kwh,
            change.generated,
            change.consumed,
            change.mintable,
            change.status,
            change.interval_secs,
            change.reading_id,
        ],
    )
    return cursor.fetchone() is not None


INSERT_MANY_SQL = (
    f"INSERT INTO {TABLE} SELECT * FROM json_populate_recordset(NULL::{TABLE}, %s::json) "  # noqa: S608
    "ON CONFLICT (meter_id, reading_timestamp) WHERE NOT (source = 'window') DO NOTHING RETURNING id"
)


def readings_insert(cursor, documents: list[str]) -> set[uuid.UUID]:
    """One INSERT for the row ``documents``; the ids that were actually inserted."""
    if not documents:
        return set()
    cursor.execute(INSERT_MANY_SQL, ["[" + ",".join(documents) + "]"])
    return {row[0] for row in cursor.fetchall()}
