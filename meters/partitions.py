"""The readings table's monthly partitions (docs/PARTITIONS.md).

``meters_meterreading`` is partitioned by range of ``reading_timestamp``, one partition per calendar month in
UTC, named ``meters_meterreading_pYYYYMM``, plus one DEFAULT partition (``meters_meterreading_default``) that
takes any reading no monthly partition covers (a late reading from 2019, a device whose clock says 2040), so
an insert never fails for want of a partition. ``partitions_ensure`` (the beat task ``meters-partitions-
ensure``, ``manage.py readings_partition``) creates the months ahead and moves what sits in the default
partition into monthly partitions of its own. Every constraint and index is declared on the parent, so it
holds for the default partition too: each unique key includes ``reading_timestamp``, and one timestamp lies in
exactly one partition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

TABLE = "meters_meterreading"
DEFAULT_PARTITION = f"{TABLE}_default"
# How many months past the current one are created ahead: the task runs hourly, so three months leave a
# quarter of a year to notice a stopped beat before readings start landing in the default partition.
MONTHS_AHEAD = 3
# Maintenance never queues behind a long transaction for long: it waits this much for a lock, then gives up
# (the next run retries), instead of holding every reader of the table up behind it.
LOCK_TIMEOUT = "2s"
ENSURE_LOCK = "meters_partitions_ensure"
# The parent's indexes carry this suffix while the online migration builds them (meters.repartition).
BUILDING_SUFFIX = "_partitioned"
_ON_PARENT = re.compile(r"CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ ")
_BOUNDS = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class ReadingPartition:
    name: str
    lower: datetime  # first instant of the month, UTC (included)
    upper: datetime  # first instant of the next month, UTC (excluded)


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the month ``moment`` lies in."""
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(lower: datetime, months: int) -> datetime:
    """``lower`` (a month's first instant) moved by ``months`` months."""
    index = lower.year * 12 + lower.month - 1 + months
    return lower.replace(year=index // 12, month=index % 12 + 1)


def partition_name(moment: datetime) -> str:
    """The name of the partition that holds readings taken at ``moment``: ``meters_meterreading_pYYYYMM``."""
    return f"{TABLE}_p{month_start(moment):%Y%m}"


def is_partitioned(cursor, table: str = TABLE) -> bool:
    cursor.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", [table])
    row = cursor.fetchone()
    return bool(row and row[0])


def partitions_of(cursor, parent: str) -> list[ReadingPartition]:
    """The monthly partitions of ``parent`` from the catalogue, oldest first (its default partition left out)."""
    cursor.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        [parent],
    )
    found = []
    for name, bound in cursor.fetchall():
        match = _BOUNDS.search(bound)
        if match:  # the default partition's bound is "DEFAULT"
            lower, upper = (datetime.fromisoformat(text).astimezone(UTC) for text in match.groups())
            found.append(ReadingPartition(name, lower, upper))
    return sorted(found, key=lambda partition: partition.lower)


def readings_partitions() -> list[ReadingPartition]:
    """The readings table's monthly partitions, oldest first (the default partition left out)."""
    with connection.cursor() as cursor:
        return partitions_of(cursor, TABLE)


def partition_create(cursor, *, parent: str, lower: datetime | None) -> str:
    """Create the month starting at ``lower`` (None: the default partition) as a partition of ``parent``,
    moving the default partition's rows of that month into it (in the caller's transaction, which holds
    ``parent`` exclusively or is the only one to know it). The month is built as a plain table with every
    index, filled, and attached. The moved rows go straight into the new table, not through the parent, so
    the rollup triggers see no change (there is none: the same rows, in the same hours)."""
    name = partition_name(lower) if lower else DEFAULT_PARTITION
    default = _default_of(cursor, parent)
    cursor.execute(f"CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    if lower is None:
        bounds = "DEFAULT"
    else:
        upper = add_months(lower, 1)
        bounds = f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"  # DDL takes no parameters
        if default:
            cursor.execute(
                f"WITH moved AS (DELETE FROM {default} WHERE reading_timestamp >= %s AND reading_timestamp < %s"  # noqa: S608
                f" RETURNING *) INSERT INTO {name} SELECT * FROM moved",
                [lower, upper],
            )
    _index_like(cursor, parent=parent, name=name)
    cursor.execute(f"ALTER TABLE {parent} ATTACH PARTITION {name} {bounds}")
    return name


def _index_like(cursor, *, parent: str, name: str) -> None:
    """Every index of ``parent`` on the partition ``name``, named ``<parent's index>_<pYYYYMM|default>`` (plans
    and unique violations then name the readings index they are part of); ATTACH adopts them."""
    cursor.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), pg_get_constraintdef(k.oid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid"
        " WHERE i.indrelid = to_regclass(%s)",
        [parent],
    )
    tail = name.removeprefix(f"{TABLE}_")
    for index, definition, constraint in cursor.fetchall():
        own = f"{index.removesuffix(BUILDING_SUFFIX)}_{tail}"
        if constraint:
            cursor.execute(f"ALTER TABLE {name} ADD CONSTRAINT {own} {constraint}")
        else:
            head = _ON_PARENT.match(definition)
            cursor.execute(f"CREATE {head[1] or ''}INDEX {own} ON {name} {definition[head.end() :]}")


def _default_of(cursor, parent: str) -> str | None:
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(%s) AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'",
        [parent],
    )
    row = cursor.fetchone()
    return row[0] if row else None


def months_needed(
    cursor, *, parent: str, rows_from: str, through: datetime, since: datetime | None = None
) -> list[datetime]:
    """The first instants of the months ``parent`` lacks: from the current month (or ``since``'s, when earlier)
    through ``through``'s, and every month holding a row of ``rows_from`` (the default partition, or the table
    being partitioned)."""
    cursor.execute(
        f"SELECT DISTINCT date_trunc('month', reading_timestamp, 'UTC') FROM {rows_from}"  # noqa: S608
    )
    wanted = {month_start(moment) for (moment,) in cursor.fetchall()}
    lower, last = month_start(min(since or timezone.now(), timezone.now())), month_start(through)
    while lower <= last:
        wanted.add(lower)
        lower = add_months(lower, 1)
    existing = {partition.lower for partition in partitions_of(cursor, parent)}
    return sorted(wanted - existing)


def partitions_ensure(*, through: datetime | None = None, since: datetime | None = None) -> list[str]:
    """Create the readings' missing monthly partitions through ``through`` (default: MONTHS_AHEAD months past
    this one), from ``since``'s month when given (before importing history: its rows then never wait in the
    default partition) and one for every month with readings waiting in the default partition; the names created.
    Idempotent and safe to run concurrently (one run at a time holds an advisory lock; another waits for it
    and then finds nothing to do). Before the table is partitioned (migration 0009), it does nothing."""
    through = through or add_months(month_start(timezone.now()), MONTHS_AHEAD)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [ENSURE_LOCK])
        if not is_partitioned(cursor):
            return []
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        needed = months_needed(cursor, parent=TABLE, rows_from=DEFAULT_PARTITION, through=through, since=since)
        if needed:
            # The whole table, taken at once, for the milliseconds a month takes to attach (once a month, and
            # after outliers). Less is not enough: an insert routed to the default partition before ATTACH
            # commits fails its partition check after, and locking the default partition alone (or writes only)
            # deadlocks with a transaction that read the default partition and then writes.
            cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        return [partition_create(cursor, parent=TABLE, lower=lower) for lower in needed]
