"""Which instant a local time that a DST change repeats or skips belongs to, decided under the meter's lock.

A local time sent without offset (``meters.validation``) in the hour an autumn change repeats has two instants,
its first pass (``reading_timestamp``) and its second (``timestamp_alternative``); one in the hour a spring
change skips does not exist and has two readings too (the offsets after and before the change), flagged
``local_time_nonexistent``. The rule, in order:

1. A stored reading at either instant that this one repeats (same kWh, or the same register totals): that one,
   so a redelivery is a duplicate, exactly once.
2. Register reads: the instant where its totals fit between the meter's reads around it (registers only grow),
   when exactly one does (a nonexistent time so resolved loses its flag).
3. A nonexistent time not resolved by 2 stays flagged and is held at the earlier instant.
4. An ambiguous register read that fits at neither instant is held at the first pass, ``local_time_ambiguous``.
5. Otherwise order of arrival: the second pass once the meter has a reading at or after the first pass's instant
   (the first pass has begun), unless that instant is taken and the first is free; else the first pass.

Readings of one batch are decided in arrival order, each seeing the ones decided before it. A signed reading
placed at its later instant was signed at the earlier one (the canonical message names an instant in UTC): its
signature no longer covers its timestamp, so it is held (``unsigned_timestamp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from meters.models import MeterReading
from meters.signatures import TIMESTAMP
from meters.timestamps import LOCAL_TIME_AMBIGUOUS, LOCAL_TIME_NONEXISTENT
from meters.validation import ReadingInput

TABLE = MeterReading._meta.db_table
_SPAN = timedelta(hours=2)
NEARBY_SQL = (
    "SELECT reading_timestamp, kwh_amount, import_register_kwh, export_register_kwh, source = 'register' "  # noqa: S608
    f"FROM {TABLE} WHERE meter_id = %s AND NOT (source = 'window') "
    "AND reading_timestamp >= %s AND reading_timestamp <= %s"
)


@dataclass(frozen=True, slots=True)
class _Known:
    moment: datetime
    kwh: Decimal | None
    totals: tuple[Decimal | None, Decimal | None] | None  # (import, export) of a register read


def _known(item: ReadingInput) -> _Known:
    registers = item.registers
    totals = None if registers is None else (registers.import_kwh, registers.export_kwh)
    return _Known(item.reading_timestamp, item.kwh, totals)


def _repeats(known: _Known, item: ReadingInput) -> bool:
    mine = _known(item)
    if mine.totals is None or known.totals is None:
        return mine.totals is None and known.totals is None and known.kwh == mine.kwh
    return all(sent is None or sent == kept for sent, kept in zip(mine.totals, known.totals, strict=True))


def _fits(moment: datetime, item: ReadingInput, known: list[_Known]) -> bool:
    """Whether ``item``'s totals at ``moment`` lie between the register reads before and after it."""
    totals = _known(item).totals
    for other in known:
        if other.moment == moment:
            return False  # taken by another reading (a repeat was recognised before)
        if other.totals is None:
            continue
        for mine, theirs in zip(totals, other.totals, strict=True):
            if mine is None or theirs is None:
                continue
            if (other.moment < moment and theirs > mine) or (other.moment > moment and theirs < mine):
                return False
    return True


def _decide(item: ReadingInput, known: list[_Known]) -> None:
    first, second = item.reading_timestamp, item.timestamp_alternative
    flags = list(item.flags or ())
    nonexistent = LOCAL_TIME_NONEXISTENT in flags
    at = {k.moment: k for k in known}
    for moment in (first, second):
        if moment in at and _repeats(at[moment], item):
            item.reading_timestamp = moment
            return
    if item.registers is not None:
        fits = [moment for moment in (first, second) if _fits(moment, item, known)]
        if len(fits) == 1:
            item.reading_timestamp = fits[0]
            item.flags = [flag for flag in flags if flag != LOCAL_TIME_NONEXISTENT]
            return
        if not fits and not nonexistent:
            item.flags = [*flags, LOCAL_TIME_AMBIGUOUS]
            return
    if nonexistent:
        return
    begun = any(k.moment >= first for k in known)
    item.reading_timestamp = second if begun and not (second in at and first not in at) else first


def local_times_resolve(cursor, candidates: list) -> None:
    """Give each ambiguous candidate ``(index, item, meter)`` its instant (module docstring), in batch order."""
    ambiguous = [(item, meter) for _, item, meter in candidates if item.timestamp_alternative is not None]
    spans: dict = {}
    for item, meter in ambiguous:
        lo, hi = spans.get(meter.id, (item.reading_timestamp, item.timestamp_alternative))
        spans[meter.id] = (min(lo, item.reading_timestamp), max(hi, item.timestamp_alternative))
    known: dict = {}
    for meter_id, (lo, hi) in spans.items():  # once a year per meter: a query each is fine
        cursor.execute(NEARBY_SQL, [meter_id, lo - _SPAN, hi + _SPAN])
        known[meter_id] = [
            _Known(moment, kwh, (imported, exported) if register else None)
            for moment, kwh, imported, exported, register in cursor.fetchall()
        ]
    for item, meter in ambiguous:
        signed_at = item.reading_timestamp  # a signature's messages name the first instant
        _decide(item, known[meter.id])
        item.timestamp_alternative = None
        if item.signature_covers is not None and item.reading_timestamp != signed_at:
            item.signature_covers = item.signature_covers - {TIMESTAMP}  # held: the instant stored was not signed
        known[meter.id].append(_known(item))
