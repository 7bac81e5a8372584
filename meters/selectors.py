"""Reads: who is calling, which meter a submission names, the caller's meters, readings and totals."""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Q

from gridtoken.exceptions import Forbidden, NotFound, ValidationFailed
from meters.models import (
    LATENCY_BUCKETS,
    ApiKey,
    DeadLetter,
    FleetRollup,
    Meter,
    MeterHourRollup,
    MeterReading,
    MeterRollup,
    OwnerRollup,
    ReadingDelta,
)
from meters.services.api_keys import ApiKeyPrincipal

ZERO_KWH = Decimal("0.000000000")
PROTOCOL = "protocol"  # the Caller scope of a device protocol (Caller.protocol)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated party: a user (token or session), a device or fleet API key of a user, or a device
    protocol (``Caller.protocol()``) whose transport already established which meter speaks: the MQTT broker's
    ACL lets a meter's credentials publish only on its own topic."""

    user_id: uuid.UUID | None
    scope: str  # "user", "device", "fleet" or "protocol"
    key_id: uuid.UUID | None = None
    meter_id: uuid.UUID | None = None

    @classmethod
    def from_request(cls, request) -> Caller:
        auth = request.auth
        if isinstance(auth, ApiKeyPrincipal):
            return cls(user_id=auth.owner_id, scope=auth.scope, key_id=auth.key_id, meter_id=auth.meter_id)
        return cls(user_id=request.user.pk, scope="user")

    @classmethod
    def protocol(cls) -> Caller:
        """The MQTT ingester: may submit for any registered meter, as that meter (its owner and wallet)."""
        return cls(user_id=None, scope=PROTOCOL)

    @property
    def is_api_key(self) -> bool:
        return self.key_id is not None

    @property
    def is_device(self) -> bool:
        return self.scope == ApiKey.Scope.DEVICE


@dataclass(frozen=True, slots=True)
class MeterRow:
    """The columns of a meter that ingestion needs (read with one raw query on the hot path)."""

    id: uuid.UUID
    serial: str
    owner_id: uuid.UUID
    wallet_address: str
    public_key: str
    status: str
    capacity_kw: Decimal | None = None
    register_max_kwh: Decimal | None = None
    register_baseline_at: datetime | None = None
    vee_rules: dict | None = None

    COLUMNS = (
        "id, serial, owner_id, wallet_address, public_key, status, capacity_kw, register_max_kwh, "
        "register_baseline_at, vee_rules"
    )

    @property
    def is_active(self) -> bool:
        return self.status == Meter.Status.ACTIVE


METER_CACHE_SECS = 5.0
_meter_cache: dict[tuple[str, object], tuple[float, MeterRow]] = {}
METER_BY = {
    column: f"SELECT {MeterRow.COLUMNS} FROM {Meter._meta.db_table} WHERE {column} = %s"  # noqa: S608 (constants)
    for column in ("serial", "id")
}


def meter_get(column: str, reference: object, *, fresh: bool = False) -> tuple[MeterRow, bool]:
    """The meter whose ``column`` ("serial" or "id") is ``reference``, and whether it came from the cache.

    Single-reading posts name the same meters over and over, so a found meter is remembered in-process
    for METER_CACHE_SECS. The write re-checks the meter in the database (``meters_reading_insert``
    answers "stale"), and a refusal is only ever based on a fresh row, so the cache can delay nothing
    but a cheap re-read. Raises NotFound.
    """
    key = (column, reference)
    if not fresh:
        cached = _meter_cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], True
    with connection.cursor() as cursor:
        cursor.execute(METER_BY[column], [reference])
        row = cursor.fetchone()
    if row is None:
        _meter_cache.pop(key, None)
        raise meter_not_found(reference)
    meter = MeterRow(*row)
    if len(_meter_cache) >= 10_000:
        _meter_cache.clear()
    _meter_cache[key] = (time.monotonic() + METER_CACHE_SECS, meter)
    return meter, False


def meter_cache_clear() -> None:
    _meter_cache.clear()


def meter_reference(*, caller: Caller, serial: str | None, meter_id: uuid.UUID | None) -> tuple[str, object]:
    """The (column, value) a submission uses to name its meter; a device key defaults to its own meter."""
    if serial is not None:
        return "serial", serial
    if meter_id is not None:
        return "id", meter_id
    if caller.is_device:
        return "id", caller.meter_id
    raise ValidationFailed("validation_error", "meter_serial or meter_id is required.", field="meter_serial")


def meter_access_error(*, caller: Caller, meter: MeterRow, meter_id: uuid.UUID | None = None):
    """Why ``caller`` may not submit for ``meter`` (an error to raise), or None when it may."""
    if meter_id is not None and meter.id != meter_id:
        return ValidationFailed(
            "validation_error", "meter_id and meter_serial name different meters.", field="meter_id"
        )
    if caller.scope == PROTOCOL:
        return None
    if caller.is_device and meter.id != caller.meter_id:
        return Forbidden("forbidden", "This device key may only submit readings for its own meter.")
    if meter.owner_id != caller.user_id:
        return Forbidden("forbidden", "This meter belongs to another account.")
    return None


def meter_not_found(reference: object) -> NotFound:
    return NotFound("meter_not_found", f"No meter {reference}.")


def meters_by_reference(*, serials: list[str], ids: list[uuid.UUID]) -> tuple[dict, dict]:
    """One query: the meters named by any of ``serials`` or ``ids``, as (by serial, by id)."""
    by_serial: dict[str, MeterRow] = {}
    by_id: dict[uuid.UUID, MeterRow] = {}
    if not serials and not ids:
        return by_serial, by_id
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {MeterRow.COLUMNS} FROM {Meter._meta.db_table} "  # noqa: S608 (constant identifiers)
            # A semi-join per list: ``serial = ANY(array)`` compared every meter with every serial (23 ms for
            # 500 serials among 2,000 meters, against 1.7 ms), and an OR of the two keeps the index unused.
            f"WHERE id IN (SELECT named.id FROM {Meter._meta.db_table} AS named "
            "WHERE named.serial IN (SELECT json_array_elements_text(%s::json)) "
            "UNION ALL SELECT json_array_elements_text(%s::json)::uuid)",
            # JSON rather than Python lists: psycopg adapts lists element by element in Python.
            [json.dumps(serials), json.dumps([str(meter_id) for meter_id in ids])],
        )
        for row in cursor.fetchall():
            meter = MeterRow(*row)
            by_serial[meter.serial] = meter
            by_id[meter.id] = meter
    return by_serial, by_id


def meter_list(*, caller: Caller):
    meters = Meter.objects.filter(owner_id=caller.user_id)
    if caller.is_device:
        meters = meters.filter(pk=caller.meter_id)
    return meters.order_by("serial")


def _own_readings(caller: Caller):
    readings = MeterReading.objects.filter(user_id=caller.user_id)
    if caller.is_device:
        readings = readings.filter(meter_id=caller.meter_id)
    return readings


SORTABLE = ("submitted_at", "reading_timestamp", "kwh_amount")


def paginate(queryset, *, page: int, page_size: int) -> dict:
    """One page of ``queryset`` and the gateway's pagination envelope fields."""
    total = queryset.count()
    start = (page - 1) * page_size
    return {
        "items": list(queryset[start : start + page_size]),
        "pagination": {
            "current_page": page,
            "total_pages": math.ceil(total / page_size),
            "total_items": total,
            "items_per_page": page_size,
            "has_next": start + page_size < total,
            "has_previous": page > 1,
        },
    }


# reading_list's filters: parameter -> lookup. Each narrows the caller's own readings, never widens them, so
# naming another account's meter finds nothing rather than telling that it exists.
READING_FILTERS = {
    "minted": "minted",
    "meter_serial": "meter__serial",
    "meter_id": "meter_id",
    "status": "status__in",  # a list: any of these
    "source": "source",
    "since": "reading_timestamp__gte",
    "until": "reading_timestamp__lt",
}


# Page numbers are read with OFFSET, which costs the rows skipped: past this many, a page is asked for by
# cursor (docs/API.md). Counts that the rollups cannot answer (source, since, until) stop at COUNT_CAP.
MAX_OFFSET = 100_000
COUNT_CAP = 10_000


def cursor_encode(*, sort_by: str, sort_order: str, value, reading_id: uuid.UUID) -> str:
    raw = json.dumps(
        [sort_by, sort_order, value.isoformat() if isinstance(value, datetime) else str(value), str(reading_id)]
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cursor_decode(cursor: str, *, sort_by: str, sort_order: str) -> tuple[object, uuid.UUID]:
    """The (sort value, id) a cursor continues after; 400 for a malformed cursor or one of another ordering."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        by, order, value, reading_id = raw
        if (by, order) != (sort_by, sort_order):
            raise ValueError("another ordering")
        parsed = Decimal(value) if sort_by == "kwh_amount" else datetime.fromisoformat(value)
        return parsed, uuid.UUID(reading_id)
    except (ValueError, TypeError, ArithmeticError, json.JSONDecodeError):
        raise ValidationFailed(
            "validation_error", "cursor is not a next_cursor of this sort_by and sort_order.", field="cursor"
        ) from None


def _reading_count(caller: Caller, filters: dict, readings) -> int:
    """The number of readings a list's filters select: exact from the rollups when only the meter, status and
    minted narrow it; otherwise counted, at most COUNT_CAP."""
    if any(filters.get(name) is not None for name in ("source", "since", "until")):
        return readings[:COUNT_CAP].count()
    serial, meter_id = filters.get("meter_serial"), filters.get("meter_id")
    if serial is not None or meter_id is not None or caller.is_device:
        meters = meter_list(caller=caller)
        if serial is not None:
            meters = meters.filter(serial=serial)
        if meter_id is not None:
            meters = meters.filter(pk=meter_id)
        meter_ids = list(meters.values_list("pk", flat=True))
        if not meter_ids:
            return 0
        totals = rollup_totals(MeterRollup, meter_id=meter_ids)
    else:
        totals = rollup_totals(OwnerRollup, user_id=caller.user_id)
    statuses = set(filters.get("status") or MeterReading.Status.values)
    if filters.get("minted") is True:
        statuses &= {MeterReading.Status.MINTED}
    elif filters.get("minted") is False:
        statuses -= {MeterReading.Status.MINTED}
    return sum(totals[status] for status in statuses)


def reading_list(
    *, caller: Caller, page: int, page_size: int, sort_by: str, sort_order: str, cursor: str | None = None, **filters
) -> dict:
    """A page of the caller's readings; ``filters`` (READING_FILTERS, None for "any") narrow it.

    ``cursor`` (a page's ``next_cursor``) continues after that page's last reading by keyset, at the cost of
    one page whatever its depth; ``page`` alone skips rows (OFFSET), up to MAX_OFFSET of them. The total comes
    from the rollups (exact) or a capped count (``_reading_count``), never from counting the caller's history.
    """
    narrowing = {READING_FILTERS[name]: value for name, value in filters.items() if value is not None}
    if filters.get("meter_serial") is not None:
        # The meter's id first, so the list reads reading_meter_submitted_idx rather than walking every one
        # of the owner's readings through a join on the serial.
        narrowing.pop("meter__serial")
        narrowing["meter_id__in"] = list(
            Meter.objects.filter(serial=filters["meter_serial"]).values_list("pk", flat=True)
        )
    readings = _own_readings(caller).filter(**narrowing)
    prefix = "-" if sort_order == "desc" else ""
    ordered = readings.select_related("meter").order_by(f"{prefix}{sort_by}", f"{prefix}id")
    start = (page - 1) * page_size
    if cursor is not None:
        value, after = cursor_decode(cursor, sort_by=sort_by, sort_order=sort_order)
        beyond = "lt" if sort_order == "desc" else "gt"
        # The first condition bounds the index range (the OR alone is a filter: every row before the cursor's
        # place read and thrown away, more the deeper the page); the second orders ties by id.
        ordered = ordered.filter(**{f"{sort_by}__{beyond}e": value}).filter(
            Q(**{f"{sort_by}__{beyond}": value}) | Q(**{sort_by: value, f"id__{beyond}": after})
        )
        start = 0
    elif start > MAX_OFFSET:
        raise ValidationFailed(
            "validation_error",
            f"page skips more than {MAX_OFFSET} readings: follow next_cursor to read further.",
            field="page",
        )
    items = list(ordered[start : start + page_size + 1])
    more = len(items) > page_size
    items = items[:page_size]
    total = _reading_count(caller, filters, readings)
    last = items[-1] if more else None
    return {
        "items": items,
        "pagination": {
            "current_page": page,
            "total_pages": math.ceil(total / page_size),
            "total_items": total,
            "items_per_page": page_size,
            "has_next": more,
            "has_previous": page > 1 or cursor is not None,
            "next_cursor": None
            if last is None
            else cursor_encode(
                sort_by=sort_by, sort_order=sort_order, value=getattr(last, sort_by), reading_id=last.id
            ),
        },
    }


def reading_stats(*, caller: Caller) -> dict:
    """Totals over the caller's readings: ``total_kwh`` is their net energy as the meters measured it (a window's
    derived row is not counted again), ``minted_kwh``/``unminted_kwh`` what was minted and what is still to be.

    Read from the rollups (the owner's row, or a device key's meter), never from the readings."""
    if caller.is_device:
        totals = rollup_totals(MeterRollup, meter_id=caller.meter_id)
    else:
        totals = rollup_totals(OwnerRollup, user_id=caller.user_id)
    return {
        "total_readings": totals["readings"],
        "minted_kwh": totals["minted_kwh"],
        # Minted readings are never rejected, so what is still to mint is the rest of the mintable kWh.
        "unminted_kwh": totals["mintable_kwh"] - totals["minted_kwh"],
        "total_kwh": totals["net_kwh"],
    }


ROLLUP_COUNTS = ("readings", *MeterReading.Status.values, "flagged")
ROLLUP_KWH = ("net_kwh", "generated_kwh", "consumed_kwh", "mintable_kwh", "minted_kwh")
ROLLUP_UNITS = ("minted_units", "minting_units")
ROLLUP_MAXES = ("last_submitted_at", "mint_slot")
LATENCY_COLUMNS = (*(f"latency_le_{i}" for i in range(len(LATENCY_BUCKETS))), "latency_count", "latency_seconds")


# A rollup key the delta rows hold in another shape: the owner's UTC day of the delta's hour.
DELTA_KEYS = {"day": "(hour AT TIME ZONE 'UTC')::date"}


def rollup_totals(model, *, group_by: str | None = None, latency: bool = False, **where) -> dict:
    """The sums of a rollup table's rows matching ``where`` (column -> value, or a list: any of them) plus the
    deltas not folded yet, so the answer is exact (docs/ROLLUPS.md); per value of ``group_by`` when given.

    Every rollup table names its keys as the delta table does, so one condition serves both halves. Counts
    are ints, kWh Decimals with nine places, base units ints; ``last_submitted_at`` and ``mint_slot`` maxima.
    """
    conditions = " AND ".join(
        f"{column} = ANY(%({column})s)" if isinstance(value, list | tuple) else f"{column} = %({column})s"
        for column, value in where.items()
    )
    sums = (*ROLLUP_COUNTS, *ROLLUP_KWH, *ROLLUP_UNITS, *(LATENCY_COLUMNS if latency else ()))
    keys = (group_by,) if group_by else ()
    inner = ", ".join((*keys, *sums, *ROLLUP_MAXES))
    delta_keys = tuple(f"{DELTA_KEYS.get(key, key)} AS {key}" for key in keys)
    delta_inner = ", ".join((*delta_keys, *sums, *ROLLUP_MAXES))
    zero = {column: ZERO_KWH if column in ROLLUP_KWH else 0 for column in sums}
    outer = ", ".join(
        (*keys, *(f"coalesce(sum({c}), %(zero_{c})s)" for c in sums), *(f"max({c})" for c in ROLLUP_MAXES))
    )
    where_sql = f"WHERE {conditions}" if conditions else ""
    sql = (
        f"SELECT {outer} FROM (SELECT {inner} FROM {model._meta.db_table} {where_sql} "  # noqa: S608 (model names)
        f"UNION ALL SELECT {delta_inner} FROM {ReadingDelta._meta.db_table} {where_sql}) t"
        + (f" GROUP BY {group_by}" if group_by else "")
    )
    params = {**{key: list(value) if isinstance(value, tuple) else value for key, value in where.items()}}
    params.update({f"zero_{column}": value for column, value in zero.items()})
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    names = (*sums, *ROLLUP_MAXES)

    def totals(values) -> dict:
        row = dict(zip(names, values, strict=True))
        for column in (*ROLLUP_COUNTS, *ROLLUP_UNITS, "mint_slot"):
            row[column] = int(row[column] or 0)
        row["rows"] = sum(row[status] for status in MeterReading.Status.values)
        return row

    if group_by:
        return {row[0]: totals(row[1:]) for row in rows}
    return totals(rows[0])


UNSETTLED_STATUSES = ("pending", "minting", "held", "awaiting_window")


@dataclass(frozen=True)
class MeterHour:
    """One meter's readings in one UTC hour, as its hourly rollup and the deltas not folded yet add up."""

    rows: int  # stored rows of every status and source
    unsettled: int  # rows still pending, minting, held or awaiting their window
    generated_kwh: Decimal
    consumed_kwh: Decimal


def meter_hours(*, meter_ids: list, start: datetime, end: datetime) -> dict[tuple, MeterHour]:
    """(meter id, hour) -> its ``MeterHour`` for the hours in [start, end) with rows, exact at every moment
    (rollup plus waiting deltas). Index-bounded: ``meterhour_unique`` (meter_id, hour) per meter."""
    if not meter_ids:
        return {}
    columns = ", ".join((*MeterReading.Status.values, "generated_kwh", "consumed_kwh"))
    where = "meter_id = ANY(%(meters)s) AND hour >= %(start)s AND hour < %(end)s"
    rows_sql = " + ".join(f"sum({status})" for status in MeterReading.Status.values)
    unsettled_sql = " + ".join(f"sum({status})" for status in UNSETTLED_STATUSES)
    sql = (
        f"SELECT meter_id, hour, {rows_sql}, {unsettled_sql}, sum(generated_kwh), sum(consumed_kwh) FROM ("  # noqa: S608
        f"SELECT meter_id, hour, {columns} FROM {MeterHourRollup._meta.db_table} WHERE {where}"
        f" UNION ALL SELECT meter_id, hour, {columns} FROM {ReadingDelta._meta.db_table} WHERE {where}"
        ") t GROUP BY meter_id, hour"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"meters": [uuid.UUID(str(m)) for m in meter_ids], "start": start, "end": end})
        found = cursor.fetchall()
    return {
        (meter_id, hour): MeterHour(int(rows), int(unsettled), generated, consumed)
        for meter_id, hour, rows, unsettled, generated, consumed in found
        if rows
    }


def meters_next_hour(*, meter_ids: list, start: datetime) -> datetime | None:
    """The first UTC hour at or after ``start`` in which any of the meters has readings (rollup or waiting
    deltas); one index probe per meter (``meterhour_unique``)."""
    if not meter_ids:
        return None
    sql = (
        f"SELECT min(hour) FROM (SELECT min(hour) AS hour FROM {MeterHourRollup._meta.db_table}"  # noqa: S608
        " WHERE meter_id = ANY(%(meters)s) AND hour >= %(start)s"
        f" UNION ALL SELECT min(hour) FROM {ReadingDelta._meta.db_table}"
        " WHERE meter_id = ANY(%(meters)s) AND hour >= %(start)s) t"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"meters": [uuid.UUID(str(m)) for m in meter_ids], "start": start})
        return cursor.fetchone()[0]


def fleet_totals(*, latency: bool = False) -> dict:
    """Every reading's rollup: counts by status, energy, base units (and the latency histogram)."""
    return rollup_totals(FleetRollup, latency=latency)


def dead_letter_list(*, door: str | None, status: str | None, before: int | None, limit: int) -> dict:
    """Dead letters newest first, a keyset page at a time: ``before`` is the previous page's ``next_before``."""
    rows = DeadLetter.objects.defer("payload", "error_traceback").order_by("-id")
    if door is not None:
        rows = rows.filter(door=door)
    if status is not None:
        rows = rows.filter(status=status)
    if before is not None:
        rows = rows.filter(id__lt=before)
    page = list(rows[: limit + 1])
    return {"items": page[:limit], "next_before": page[limit - 1].id if len(page) > limit else None}
