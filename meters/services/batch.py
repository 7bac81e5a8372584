"""Batch ingestion: up to INGEST_BATCH_MAX readings in a few queries, one result per item, in order.

1. Parse and check every item in Python (no query).
2. One query loads every meter the items name.
3. Per item: access, meter state, body, wallet and signature checks.
4. In one transaction: one statement takes the per-meter write locks (fixed order) and reads the meters
   again ``FOR SHARE``; an item whose meter changed since step 2 is checked again against the row read
   under the lock (suspended, re-walleted, re-owned: the single post's error codes). Then load the stored
   readings in each meter's window range (one query), classify each remaining item in order as new,
   replay or conflict (items of the same batch see each other), and one ``INSERT ... SELECT FROM
   json_populate_recordset(...) ON CONFLICT DO NOTHING RETURNING id`` for the new ones.
5. Events leave on commit: ``meter_reading_received`` per new row, ``meter_reading_validation_failed``
   per rejected item of a known meter.

Why ``FOR SHARE``: the advisory lock orders reading writers only; meter writes (suspending, a fleet
re-registration changing the wallet) do not take it. The row lock makes such a write wait until the
readings commit, so every row stores the owner and wallet the meter has when it commits, and a meter
suspended before the lock is taken gets no readings. (``FOR KEY SHARE`` would not conflict with those
updates.) The checks of step 3 are not repeated for unchanged meters, so signatures are verified
outside the lock.

``success_count`` counts accepted and duplicate items, ``failed_count`` rejected ones.
"""

from __future__ import annotations

import bisect
import json
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from gridtoken.exceptions import ApplicationError, Conflict, ValidationFailed
from gridtoken.ids import uuid7
from meters.models import Meter
from meters.registers import Registers
from meters.selectors import Caller, MeterRow, meter_access_error, meter_not_found, meters_by_reference
from meters.services.dead_letters import TRANSIENT, DeadLetterHook, rest_batch_hook
from meters.services.energy import assess, contexts_load, late_register_read, needs_context
from meters.services.local_time import local_times_resolve
from meters.services.readings import (
    LOCK_NAMESPACE,
    TABLE,
    StoredReading,
    SubmitResult,
    announce_rejections,
    announce_stored,
    conflict_same_timestamp,
    conflict_within_window,
    reading_get,
    reading_rejection,
    row_document,
    shared_document,
)
from meters.validation import ReadingInput, parse_reading

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"
_MICROSECOND = timedelta(microseconds=1)
MISSING_METER = "meter_serial or meter_id is required."
# SQL text interpolates only the model's own table and column names; every value is a parameter.
# Row data travels as one JSON text per statement: psycopg adapts Python lists element by element in
# Python, which for a thousand rows costs more than PostgreSQL's json_to_recordset does.
WINDOW_READINGS_SQL = (
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
METER_CHANGED = "The meter changed while the readings were stored; retry."


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


def batch_check(readings: object) -> None:
    """A batch is a list of at most INGEST_BATCH_MAX items (else 400, nothing stored)."""
    if not isinstance(readings, list):
        raise ValidationFailed("validation_error", "readings must be a list.", field="readings")
    limit = settings.INGEST.batch_max
    if len(readings) > limit:
        raise ValidationFailed(
            "batch_too_large", f"A batch holds at most {limit} readings; got {len(readings)}.", field="readings"
        )


def readings_submit_batch(
    *, caller: Caller, readings: object, now: datetime, signed_messages=None, dead_letter: DeadLetterHook | None = None
) -> dict:
    """Store a batch of reading bodies; one result per item, in order.

    ``signed_messages`` (device protocols only, aligned with ``readings``): per item, the messages its
    signature may cover instead of the canonical one, or None for the canonical message.
    ``dead_letter(index, error)``: the door's record of an item that met an unexpected exception, returning
    its refusal (default: the item's JSON as a REST batch item). A transient database error still propagates.
    """
    batch_check(readings)
    if dead_letter is None:
        dead_letter = rest_batch_hook(caller=caller, readings=readings)
    results: list[dict | None] = [None] * len(readings)
    rejected_known: list[tuple[MeterRow, ReadingInput, ApplicationError]] = []
    reject = _rejecter(results, rejected_known)

    parsed: list[tuple[int, ReadingInput]] = []
    for index, data in enumerate(readings):
        try:
            item = parse_reading(data, kwh_key="kwh", timestamp_key="timestamp", timestamp_required=False, now=now)
            if signed_messages is not None:
                item.signed_messages = signed_messages[index]
        except ApplicationError as error:
            reject(index, error)
            continue
        except Exception as error:  # a bug met by this item only
            reject(index, dead_letter(index, error))
            continue
        if item.meter_serial is None and item.meter_id is None and caller.is_device:
            item.meter_id = caller.meter_id
        if item.meter_serial is None and item.meter_id is None:
            reject(index, ValidationFailed("validation_error", MISSING_METER, field="meter_serial"))
            continue
        parsed.append((index, item))

    by_serial, by_id = meters_by_reference(
        serials=list({item.meter_serial for _, item in parsed if item.meter_serial is not None}),
        ids=list({item.meter_id for _, item in parsed if item.meter_serial is None}),
    )
    candidates: list[tuple[int, ReadingInput, MeterRow]] = []
    for index, item in parsed:
        meter = by_serial.get(item.meter_serial) if item.meter_serial is not None else by_id.get(item.meter_id)
        meter_id = item.meter_id if item.meter_serial is not None else None
        try:
            allowed = _allowed(caller, index, item, meter, reject, meter_id=meter_id)
        except Exception as error:  # (the hook re-raises a transient database error)
            reject(index, dead_letter(index, error))
            continue
        if allowed:
            candidates.append((index, item, meter))

    if candidates:
        _store_isolating(caller, candidates, results, now, dead_letter)
    announce_rejections(rejected_known)  # (events leave on commit, or now outside a transaction)
    failed = sum(1 for result in results if result["status"] == REJECTED)
    return {"success_count": len(results) - failed, "failed_count": failed, "results": results}


def _rejecter(results: list, known: list):
    """``reject(index, error, meter=None, item=None)``: the item's refusal; one of a known meter is announced."""

    def reject(index: int, error: ApplicationError, meter: MeterRow | None = None, item=None) -> None:
        results[index] = {"index": index, "status": REJECTED, "error": error.as_dict()}
        if meter is not None:
            known.append((meter, item, error))

    return reject


def _store_isolating(caller: Caller, candidates, results, now: datetime, dead_letter: DeadLetterHook) -> None:
    """``_store`` in one transaction. If it raises unexpectedly (a bug, or a database error that is not an
    outage), that transaction rolled back with nothing stored, and each half is stored the same way in its own
    transaction, down to the one item that fails alone: that item is a dead letter, every other item is stored
    exactly once. Its cost (2 log2 n transactions for one bad item) is paid only when something is broken."""
    known: list = []
    try:
        with transaction.atomic():
            _store(caller, candidates, results, _rejecter(results, known), now)
            announce_rejections(known)
    except TRANSIENT:
        raise
    except Exception as error:
        if len(candidates) == 1:
            index = candidates[0][0]
            results[index] = {"index": index, "status": REJECTED, "error": dead_letter(index, error).as_dict()}
            return
        middle = len(candidates) // 2
        _store_isolating(caller, candidates[:middle], results, now, dead_letter)
        _store_isolating(caller, candidates[middle:], results, now, dead_letter)


def _store(caller: Caller, candidates, results, reject, now: datetime) -> list[StoredReading]:
    window = timedelta(seconds=settings.TOKENIZATION.duplicate_window_secs)
    with connection.cursor() as cursor:
        locked = _lock_meters(cursor, list({meter.id for _, _, meter in candidates}))
        candidates = _recheck(caller, candidates, locked, reject)
        if not candidates:
            return []
        local_times_resolve(cursor, candidates)  # a DST change's repeated hour: which pass, under the lock
        ranges: dict[uuid.UUID, list[datetime]] = {}
        for _, item, meter in candidates:
            span = ranges.setdefault(meter.id, [item.reading_timestamp, item.reading_timestamp])
            span[0] = min(span[0], item.reading_timestamp)
            span[1] = max(span[1], item.reading_timestamp)
        meter_ids = list(ranges)
        exact: dict[uuid.UUID, dict[datetime, _Existing]] = defaultdict(dict)
        times: dict[uuid.UUID, list[datetime]] = defaultdict(list)
        # Inclusive bounds; with a window the edges themselves are never conflicts, so skip them.
        edge = window - _MICROSECOND if window else window
        spans = [
            {"meter_id": str(m), "lo": (ranges[m][0] - edge).isoformat(), "hi": (ranges[m][1] + edge).isoformat()}
            for m in meter_ids
        ]
        cursor.execute(WINDOW_READINGS_SQL, [json.dumps(spans)])
        for meter_id, reading_id, kwh, moment, imported, exported in cursor.fetchall():
            registers = None if imported is None and exported is None else Registers(imported, exported)
            exact[meter_id][moment] = _Existing(reading_id, kwh, moment, registers)
            times[meter_id].append(moment)
        for moments in times.values():
            moments.sort()

        new: list[tuple[int, ReadingInput, StoredReading]] = []
        for index, item, meter in candidates:
            moment = item.reading_timestamp
            same = exact[meter.id].get(moment)
            if same is not None:
                if same.replayed_by(item):
                    results[index] = {"index": index, "status": DUPLICATE, "id": str(same.id)}
                else:
                    reject(index, conflict_same_timestamp(same), meter, item)
                continue
            neighbour = _neighbour(times[meter.id], moment, window, exact[meter.id])
            if neighbour is not None:
                reject(index, conflict_within_window(neighbour), meter, item)
                continue
            reading_id = uuid7()
            exact[meter.id][moment] = _Existing(reading_id, item.kwh, moment, item.registers)
            bisect.insort(times[meter.id], moment)
            new.append((index, item, meter, reading_id))
        new, refused = _assess(cursor, new, reject, now)
        for index, result in enumerate(results):  # a repeat of an item a VEE rule refused shares its refusal
            if result is not None and result["status"] == DUPLICATE and result["id"] in refused:
                reject(index, refused[result["id"]], *refused_item(candidates, index))
        inserted = _insert(cursor, new, now)

    created = []
    for index, _, reading in new:
        if reading.id in inserted:
            results[index] = {"index": index, "status": ACCEPTED, "id": str(reading.id)}
            created.append(reading)
        else:  # only possible if a writer bypassed the meter lock
            reject(index, Conflict("duplicate_reading_conflict", "A conflicting reading was stored concurrently."))
    announce_stored(created)
    return created


def refused_item(candidates, index: int) -> tuple:
    """(meter, item) of the candidate at batch ``index``, for announcing its rejection."""
    return next((meter, item) for position, item, meter in candidates if position == index)


def _assess(cursor, new: list, reject, now: datetime) -> tuple[list[tuple[int, ReadingInput, StoredReading]], dict]:
    """The energy picture of each new item, in timestamp order per meter (so arrival order never changes what
    registers derive); items a VEE rule rejects are rejected (returned by id with their error). Re-derives
    stored reads a late read splits."""
    contextual = [(item, meter) for _, item, meter, _ in new if needs_context(item)]
    contexts = contexts_load(cursor, contextual) if contextual else {}
    rows, refused = [], {}
    for index, item, meter, reading_id in sorted(new, key=lambda entry: entry[1].reading_timestamp):
        try:
            verdict = assess(item, meter, contexts.get(meter.id), reading_id=reading_id, now=now)
        except ApplicationError as error:
            reject(index, error, meter, item)
            refused[str(reading_id)] = error
            continue
        if verdict.resplit is not None and not _resplit(cursor, verdict.resplit):
            verdict = late_register_read(verdict)
        rows.append((index, item, StoredReading.new(meter, item, now, verdict, reading_id)))
    rows.sort(key=lambda row: row[0])
    return rows, refused


RESPLIT_SQL = (
    f"UPDATE {TABLE} SET kwh_amount = %s, generated_kwh = %s, consumed_kwh = %s, mintable_kwh = %s, status = %s, "  # noqa: S608
    "interval_secs = %s "
    "WHERE id = %s AND token_amount IS NULL AND batch_id IS NULL "
    "AND (status IN ('pending', 'held', 'awaiting_window') OR (status = 'recorded' AND window_start IS NULL)) "
    "RETURNING id"
)


def _resplit(cursor, change) -> bool:
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


def reading_store_one(*, caller: Caller, item: ReadingInput, meter: MeterRow, now: datetime):
    """The single post of a reading that needs its meter's other readings (a register read, the window basis,
    history rules): the batch path with one item, answered as the single post answers."""
    results: list[dict | None] = [None]
    errors: list[ApplicationError] = []
    rejected_known: list = []

    def reject(index: int, error: ApplicationError, known: MeterRow | None = None, known_item=None) -> None:
        results[index] = {"index": index, "status": REJECTED}
        errors.append(error)
        if known is not None:
            rejected_known.append((known, known_item, error))

    with transaction.atomic():
        created = _store(caller, [(0, item, meter)], results, reject, now)
        announce_rejections(rejected_known)
    if errors:
        raise errors[0]
    if created:
        return SubmitResult(created[0], duplicate=False)
    return SubmitResult(reading_get(meter, uuid.UUID(results[0]["id"])), duplicate=True)


def _lock_meters(cursor, meter_ids: list[uuid.UUID]) -> dict[uuid.UUID, MeterRow]:
    """Take the meters' write locks and share-lock their rows; the meters as they are now, by id.

    The ids travel as one JSON text: psycopg adapts Python lists element by element in Python.
    """
    cursor.execute(LOCK_METERS_SQL, [json.dumps([str(meter_id) for meter_id in meter_ids]), LOCK_NAMESPACE])
    return {row[0]: MeterRow(*row) for row in cursor.fetchall()}


def _recheck(caller: Caller, candidates, locked: dict[uuid.UUID, MeterRow], reject) -> list:
    """The candidates still allowed by their meter as read under the lock, carrying that meter row."""
    allowed = []
    for index, item, seen in candidates:
        meter = locked.get(seen.id)
        if meter == seen:
            allowed.append((index, item, meter))
        elif meter is not None and item.meter_serial is not None and meter.serial != item.meter_serial:
            reject(index, Conflict("meter_changed", METER_CHANGED), meter, item)
        elif _allowed(caller, index, item, meter, reject):
            allowed.append((index, item, meter))
    return allowed


def _allowed(caller: Caller, index: int, item, meter: MeterRow | None, reject, *, meter_id=None) -> bool:
    """Whether ``meter`` takes ``item`` from ``caller``; if not, the item is rejected with the reason."""
    if meter is None:
        reject(index, meter_not_found(item.meter_serial or item.meter_id))
        return False
    denied = meter_access_error(caller=caller, meter=meter, meter_id=meter_id)
    if denied is not None:
        reject(index, denied)
        return False
    rejection = reading_rejection(meter=meter, item=item)
    if rejection is not None:
        reject(index, rejection, meter, item)
        return False
    return True


def _neighbour(moments: list[datetime], moment: datetime, window: timedelta, by_moment: dict):
    """A stored (or earlier accepted) reading strictly less than ``window`` from ``moment``, if any."""
    if not window:
        return None
    position = bisect.bisect_left(moments, moment)
    for candidate in moments[max(0, position - 1) : position + 1]:
        if abs(candidate - moment) < window:
            return by_moment[candidate]
    return None


INSERT_MANY_SQL = (
    f"INSERT INTO {TABLE} SELECT * FROM json_populate_recordset(NULL::{TABLE}, %s::json) "  # noqa: S608
    "ON CONFLICT (meter_id, reading_timestamp) WHERE NOT (source = 'window') DO NOTHING RETURNING id"
)


def _insert(cursor, new: list, now: datetime) -> set[uuid.UUID]:
    """One INSERT for all new rows; the ids that were actually inserted."""
    if not new:
        return set()
    shared = shared_document(now)
    rows = "[" + ",".join(row_document(reading, item, shared) for _, item, reading in new) + "]"
    cursor.execute(INSERT_MANY_SQL, [rows])
    return {row[0] for row in cursor.fetchall()}
