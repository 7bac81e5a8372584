"""The ingestion pipeline: every reading, posted alone or in a batch, passes through the same stages in order.

1. **Parse** (``meters.validation.parse_reading``): the body becomes a ``ReadingInput``, checked in Python.
2. **Check against the meter** (``meters.services.checks``): access, meter state, body, wallet and signature.
3. **Assess energy and VEE** (``meters.services.energy``): the row's energy picture and rule verdicts.
4. **Store under the meter lock** (``meters.services.readings``): new, replay or conflict, and the insert.
5. **Announce** (``meters.services.announce``): events and the stored-readings hooks, on commit.

No stage imports a later one or calls back into an earlier one: this module runs them. Two doors share it:

- ``readings_submit_batch``: up to INGEST_BATCH_MAX items in a few queries, one result per item, in order.
  Every item is parsed and checked first (one query loads every meter named); then, in one transaction, the
  meters are locked and read again (an item whose meter changed meanwhile is checked again against the row
  read under the lock: suspended, re-walleted, re-owned), each remaining item is classified in order (items
  of the same batch see each other), the new ones are assessed in timestamp order per meter, and stored.
  ``success_count`` counts accepted and duplicate items, ``failed_count`` rejected ones.
- ``reading_submit``: one item, answered with the stored row (or the replayed one) or its refusal. A reading
  whose energy depends on none of the meter's other readings takes the store stage's one-round-trip insert
  (the meter comes from a short in-process cache, re-checked by the insert); any other takes the batch's
  locked store with one item.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction

from gridtoken.exceptions import ApplicationError, Conflict, ValidationFailed
from meters.selectors import Caller, MeterRow, meter_access_error, meter_get, meter_reference, meters_by_reference
from meters.services.announce import announce_rejections, announce_stored
from meters.services.checks import reading_allowed, reading_rejection, readings_recheck
from meters.services.dead_letters import TRANSIENT, DeadLetterHook, rest_batch_hook
from meters.services.energy import assess, contexts_load, late_register_read, needs_context
from meters.services.local_time import local_times_resolve
from meters.services.readings import (
    INSERTED,
    STALE,
    StoredNearby,
    StoredReading,
    SubmitResult,
    meters_lock,
    reading_classify,
    reading_get,
    reading_id_new,
    reading_insert_one,
    reading_resplit,
    readings_insert,
    row_document,
    shared_document,
)
from meters.validation import ReadingInput, parse_reading

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"
MISSING_METER = "meter_serial or meter_id is required."


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
            allowed = reading_allowed(caller, index, item, meter, reject, meter_id=meter_id)
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
    """Steps 2 (again, for changed meters) to 5 of the checked ``candidates``, under their meters' locks."""
    with connection.cursor() as cursor:
        locked = meters_lock(cursor, list({meter.id for _, _, meter in candidates}))
        candidates = readings_recheck(caller, candidates, locked, reject)
        if not candidates:
            return []
        local_times_resolve(cursor, candidates)  # a DST change's repeated hour: which pass, under the lock
        nearby = StoredNearby(cursor, candidates)
        new: list[tuple[int, ReadingInput, MeterRow, uuid.UUID]] = []
        for index, item, meter in candidates:
            found = nearby.classify(item, meter)
            if isinstance(found, ApplicationError):
                reject(index, found, meter, item)
            elif found is not None:
                results[index] = {"index": index, "status": DUPLICATE, "id": str(found.id)}
            else:
                reading_id = reading_id_new()
                nearby.accept(item, meter, reading_id)
                new.append((index, item, meter, reading_id))
        rows, refused = _assess(cursor, new, reject, now)
        for index, result in enumerate(results):  # a repeat of an item a VEE rule refused shares its refusal
            if result is not None and result["status"] == DUPLICATE and result["id"] in refused:
                reject(index, refused[result["id"]], *_candidate(candidates, index))
        shared = shared_document(now)
        inserted = readings_insert(cursor, [row_document(reading, item, shared) for _, item, reading in rows])

    created = []
    for index, _, reading in rows:
        if reading.id in inserted:
            results[index] = {"index": index, "status": ACCEPTED, "id": str(reading.id)}
            created.append(reading)
        else:  # only possible if a writer bypassed the meter lock
            reject(index, Conflict("duplicate_reading_conflict", "A conflicting reading was stored concurrently."))
    announce_stored(created)
    return created


def _candidate(candidates, index: int) -> tuple:
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
        if verdict.resplit is not None and not reading_resplit(cursor, verdict.resplit):
            verdict = late_register_read(verdict)
        rows.append((index, item, StoredReading.new(meter, item, now, verdict, reading_id)))
    rows.sort(key=lambda row: row[0])
    return rows, refused


def reading_submit(*, caller: Caller, item: ReadingInput, now: datetime) -> SubmitResult:
    """Store one reading, or recognise it as a replay of a stored one.

    1. Find the named meter (404 unknown; 403 another account's, or another meter than a device key's).
    2. Check the meter's state and the body. A refusal is only ever decided on a freshly read meter, and a
       rejected reading of a known meter is announced as a validation_failed event.
    3. Assess, then ``reading_insert_one``: lock, re-check the meter, insert unless a neighbour lies in the
       window; a meter changed since it was read is read again and checked again (at most three times).
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
        if needs_context(item):  # registers, windows, history rules: the locked store reads the other readings
            return _submit_locked(caller, item, meter, now)
        reading_id = reading_id_new()
        try:
            verdict = assess(item, meter, None, reading_id=reading_id, now=now)
        except ApplicationError as error:
            rejection = error
            break
        reading = StoredReading.new(meter, item, now, verdict, reading_id)
        outcome = reading_insert_one(meter, row_document(reading, item, shared_document(now)))
        if outcome == STALE:  # the meter changed since it was read: read it again
            fresh = True
            continue
        if outcome == INSERTED:
            announce_stored([reading])
            return SubmitResult(reading, duplicate=False)
        existing, rejection = reading_classify(meter, item)
        if existing is not None:
            return SubmitResult(existing, duplicate=True)
        break
    else:
        rejection = Conflict("meter_changed", "The meter changed repeatedly while the reading was stored; retry.")
    announce_rejections([(meter, item, rejection)])
    raise rejection


def _submit_locked(caller: Caller, item: ReadingInput, meter: MeterRow, now: datetime) -> SubmitResult:
    """One reading through the batch's locked store, answered as the single post answers."""
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
