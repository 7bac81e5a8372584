"""Partition a populated readings table online (docs/PARTITIONS.md, "Partitioning a populated table").

Migration 0009 and ``manage.py readings_partition`` run the same resumable steps:

1. ``prepare``: build the partitioned shadow ``meters_meterreading_partitioned`` (every column, constraint,
   index and foreign key of the readings table; a monthly partition for every month holding readings and
   those ahead; the default partition) and mirror every later INSERT, UPDATE and DELETE on the readings table
   into it with statement-level triggers, in the writer's own transaction. The number of heap pages to copy
   is fixed then: a row written later is the mirror's.
2. ``copy``: copy those pages in chunks (a TID range, each chunk its own transaction recording its
   high-water mark in ``meters_readings_repartition``, so a crash or Ctrl-C resumes at the next chunk).
   A chunk locks the rows it copies (FOR SHARE NOWAIT) and skips rows already there (ON CONFLICT DO NOTHING):
   a writer changing a row waits for the chunk that copies it, and its mirror then writes the newer version
   over it; a chunk that meets a row a writer holds backs off and retries, so it never makes a writer wait
   long and never deadlocks with one. The end state of every row is its last committed version.
3. ``verify``: per meter, count and sums of kwh_amount, mintable_kwh and token_amount of both tables in one
   REPEATABLE READ snapshot (the mirror keeps them equal in every snapshot, so this needs no lock).
4. ``swap``: one short ACCESS EXCLUSIVE transaction renames the tables and their indexes, moves the rollup
   triggers (migration 0007) and drops the mirror. The old table is kept as ``meters_meterreading_unpartitioned``
   when it held rows (drop it once satisfied: ``DROP TABLE meters_meterreading_unpartitioned``), dropped
   when empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from meters.partitions import (
    BUILDING_SUFFIX,
    LOCK_TIMEOUT,
    MONTHS_AHEAD,
    TABLE,
    add_months,
    is_partitioned,
    month_start,
    months_needed,
    partition_create,
    partitions_ensure,
)

SHADOW = f"{TABLE}_partitioned"
PLAIN = f"{TABLE}_plain"  # the plain table the reverse migration builds
KEPT = f"{TABLE}_unpartitioned"
PROGRESS = "meters_readings_repartition"
MIRROR = "meters_reading_mirror"
CHUNK_ROWS = 20_000
LOCK_RETRIES = 60
# Every index of migration 0008 (and 0005's reading_flagged_idx), as built on either table.
INDEXES = {
    "meters_meterreading_batch_id_75155d8a": "(batch_id)",
    "reading_awaiting_idx": "(meter_id, window_start) WHERE status = 'awaiting_window'",
    "reading_flagged_idx": "(submitted_at) WHERE flags <> '[]'::jsonb",
    "reading_meter_submitted_idx": "(meter_id, submitted_at)",
    "reading_open_status_idx": "(status, submitted_at) WHERE NOT (status IN ('minted', 'recorded'))",
    "reading_pending_due_idx": "(next_attempt_at) WHERE status = 'pending'",
    "reading_submitted_idx": "(submitted_at)",
    "reading_user_submitted_idx": "(user_id, submitted_at DESC)",
}
# A unique index of a partitioned table includes the partition key. A window row is stored at its window's
# start (CHECK reading_window_at_its_start), so (meter, window_start, reading_timestamp) is exactly as unique
# as (meter, window_start).
UNIQUE = {
    "reading_unique_meter_timestamp": "(meter_id, reading_timestamp) WHERE NOT (source = 'window')",
    "reading_one_per_window": "(meter_id, window_start, reading_timestamp) WHERE source = 'window'",
}
UNIQUE_PLAIN = {**UNIQUE, "reading_one_per_window": "(meter_id, window_start) WHERE source = 'window'"}
WINDOW_CHECK = "reading_window_at_its_start"
FOREIGN_KEYS = {
    "meters_meterreading_batch_id_75155d8a_fk_minting_mintbatch_id": "(batch_id) REFERENCES minting_mintbatch (id)",
    "meters_meterreading_meter_id_8e542104_fk_meters_meter_id": "(meter_id) REFERENCES meters_meter (id)",
    "meters_meterreading_user_id_fa3d6aac_fk_meters_user_id": "(user_id) REFERENCES meters_user (id)",
}
PRIMARY_KEY = f"{TABLE}_pkey"
AGGREGATES = (
    "SELECT meter_id, count(*) AS readings, sum(kwh_amount) AS kwh, sum(mintable_kwh) AS mintable,"
    " sum(token_amount) AS units FROM {table} GROUP BY meter_id"
)


@dataclass(frozen=True)
class Progress:
    pages: int  # heap pages of the readings table to copy
    next_page: int  # the high-water mark: pages before it are copied
    rows_copied: int


def _say(out: Callable[[str], None] | None, line: str) -> None:
    if out:
        out(line)


def _with_lock_retries(step: Callable[[], None], out: Callable[[str], None] | None, what: str) -> None:
    """Run ``step`` (a transaction that waits at most LOCK_TIMEOUT for its locks) until it gets them."""
    for attempt in range(1, LOCK_RETRIES + 1):
        try:
            step()
            return
        except OperationalError as error:
            if getattr(error.__cause__, "sqlstate", None) != "55P03" or attempt == LOCK_RETRIES:
                raise
            _say(out, f"{what}: a long transaction holds the readings table; retrying ({attempt}/{LOCK_RETRIES})")
            time.sleep(1)


def _create(cursor, *, name: str, like: str, partitioned: bool) -> None:
    """``name``: the columns, defaults and checks of ``like``, the window check when partitioned."""
    by = " PARTITION BY RANGE (reading_timestamp)" if partitioned else ""
    cursor.execute(f"CREATE TABLE {name} (LIKE {like} INCLUDING DEFAULTS INCLUDING CONSTRAINTS){by}")
    if partitioned:
        cursor.execute(
            f"ALTER TABLE {name} ADD CONSTRAINT {WINDOW_CHECK}"
            " CHECK (NOT (source = 'window') OR reading_timestamp = window_start)"
        )
    else:
        cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {WINDOW_CHECK}")


def _constrain(cursor, *, name: str, partitioned: bool, suffix: str) -> None:
    """The primary key, indexes and foreign keys of the readings table on ``name`` (index names + ``suffix``
    until the swap renames them)."""
    key = "(id, reading_timestamp)" if partitioned else "(id)"
    cursor.execute(f"ALTER TABLE {name} ADD CONSTRAINT {PRIMARY_KEY}{suffix} PRIMARY KEY {key}")
    for index, definition in (UNIQUE if partitioned else UNIQUE_PLAIN).items():
        cursor.execute(f"CREATE UNIQUE INDEX {index}{suffix} ON {name} {definition}")
    for index, definition in INDEXES.items():
        cursor.execute(f"CREATE INDEX {index}{suffix} ON {name} {definition}")
    for constraint, definition in FOREIGN_KEYS.items():
        cursor.execute(
            f"ALTER TABLE {name} ADD CONSTRAINT {constraint} FOREIGN KEY {definition} DEFERRABLE INITIALLY DEFERRED"
        )


def _index_names(cursor, table: str) -> list[str]:
    cursor.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = to_regclass(%s)", [table])
    return [name for (name,) in cursor.fetchall()]


def _rename_indexes(cursor, table: str, *, drop_suffix: str = "", add_suffix: str = "") -> None:
    for index in _index_names(cursor, table):
        renamed = index.removesuffix(drop_suffix) + add_suffix
        if renamed != index:
            cursor.execute(f"ALTER INDEX {index} RENAME TO {renamed}")


def _own_triggers(cursor, table: str) -> list[tuple[str, str]]:
    """The (name, CREATE statement) of ``table``'s triggers other than the mirror's: the rollup triggers."""
    cursor.execute(
        "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger"
        " WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal AND tgname NOT LIKE %s ORDER BY tgname",
        [table, f"{MIRROR}%"],
    )
    return cursor.fetchall()


def _columns(cursor, table: str) -> list[str]:
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        [table],
    )
    return [name for (name,) in cursor.fetchall()]


def _mirror_sql(columns: list[str]) -> str:
    upsert = (
        f"INSERT INTO {SHADOW} SELECT * FROM new_rows ON CONFLICT (id, reading_timestamp) DO UPDATE SET "  # noqa: S608
        + ", ".join(f"{column} = excluded.{column}" for column in columns if column not in ("id", "reading_timestamp"))
    )
    gone = f"DELETE FROM {SHADOW} s USING old_rows o WHERE s.id = o.id AND s.reading_timestamp = o.reading_timestamp"  # noqa: S608
    moved = "NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id AND n.reading_timestamp = o.reading_timestamp)"
    return f"""
CREATE FUNCTION {MIRROR}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {upsert};
    ELSIF TG_OP = 'UPDATE' THEN
        {gone} AND {moved};
        {upsert};
    ELSE
        {gone};
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER {MIRROR}_insert AFTER INSERT ON {TABLE}
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {MIRROR}();
CREATE TRIGGER {MIRROR}_update AFTER UPDATE ON {TABLE}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {MIRROR}();
CREATE TRIGGER {MIRROR}_delete AFTER DELETE ON {TABLE}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {MIRROR}();
"""


def progress() -> Progress | None:
    """Where an online partitioning stands; None when none is under way."""
    with connection.cursor() as cursor:
        if not _exists(cursor, PROGRESS):
            return None
        cursor.execute(f"SELECT pages, next_page, rows_copied FROM {PROGRESS}")  # noqa: S608
        return Progress(*cursor.fetchone())


def _exists(cursor, table: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
    return cursor.fetchone()[0]


def prepare(*, out: Callable[[str], None] | None = None) -> None:
    """Step 1: the shadow, its partitions, the mirror and the progress row, in one transaction."""

    def step() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            if _exists(cursor, KEPT):
                raise RuntimeError(
                    f"{KEPT} (the readings table of an earlier partitioning) still exists: check it and"
                    f" DROP TABLE {KEPT}, then run this again."
                )
            _create(cursor, name=SHADOW, like=TABLE, partitioned=True)
            _constrain(cursor, name=SHADOW, partitioned=True, suffix=BUILDING_SUFFIX)
            partition_create(cursor, parent=SHADOW, lower=None)
            through = add_months(month_start(timezone.now()), MONTHS_AHEAD)
            for lower in months_needed(cursor, parent=SHADOW, rows_from=TABLE, through=through):
                partition_create(cursor, parent=SHADOW, lower=lower)
            cursor.execute(_mirror_sql(_columns(cursor, TABLE)))
            cursor.execute(
                f"CREATE TABLE {PROGRESS} (id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1), pages bigint NOT NULL,"
                " next_page bigint NOT NULL DEFAULT 0, rows_copied bigint NOT NULL DEFAULT 0,"
                " started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())"
            )
            # With the mirror in place (its lock waited for every writer), the pages to copy are fixed.
            cursor.execute(
                f"INSERT INTO {PROGRESS} (pages) SELECT pg_relation_size(%s) / current_setting('block_size')::bigint",
                [TABLE],
            )

    _with_lock_retries(step, out, "prepare")
    _say(out, f"Prepared {SHADOW}: {progress().pages} pages to copy, later writes mirrored.")


def _pages_per_chunk(cursor, chunk_rows: int) -> int:
    cursor.execute("SELECT reltuples, relpages FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
    tuples, pages = cursor.fetchone()
    per_page = tuples / pages if tuples > 0 and pages > 0 else 50
    return max(1, int(chunk_rows / per_page))


def copy(*, chunk_rows: int = CHUNK_ROWS, chunks: int | None = None, out: Callable[[str], None] | None = None) -> None:
    """Step 2: copy the remaining pages, a chunk per transaction (at most ``chunks`` of them)."""
    with connection.cursor() as cursor:
        span = _pages_per_chunk(cursor, chunk_rows)
    first = progress().next_page
    began, copied_here, done = time.monotonic(), 0, 0
    while chunks is None or done < chunks:
        state = progress()
        if state.next_page >= state.pages:
            break
        upper = min(state.pages, state.next_page + span)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {SHADOW} SELECT * FROM {TABLE}"  # noqa: S608
                    " WHERE ctid >= %s::tid AND ctid < %s::tid FOR SHARE NOWAIT ON CONFLICT DO NOTHING",
                    [f"({state.next_page},0)", f"({upper},0)"],
                )
                rows = cursor.rowcount
                cursor.execute(
                    f"UPDATE {PROGRESS} SET next_page = %s, rows_copied = rows_copied + %s, updated_at = now()",  # noqa: S608
                    [upper, rows],
                )
        except OperationalError as error:
            if getattr(error.__cause__, "sqlstate", None) != "55P03":
                raise
            time.sleep(0.05)  # a writer holds one of the chunk's rows: let it finish, then copy the chunk again
            continue
        copied_here, done = copied_here + rows, done + 1
        elapsed = max(time.monotonic() - began, 1e-6)
        left = (state.pages - upper) * elapsed / (upper - first)
        _say(
            out,
            f"copied {state.rows_copied + rows:,} rows (page {upper:,}/{state.pages:,}),"
            f" {copied_here / elapsed:,.0f} rows/s, ETA {left:,.0f} s",
        )


@dataclass(frozen=True)
class Verified:
    meters: int
    readings: int
    mismatches: list[tuple]  # (meter_id, old (count, kwh, mintable, units), new (...)) where they differ


def verify(*, out: Callable[[str], None] | None = None) -> Verified:
    """Step 3: per meter, count, kWh, mintable kWh and base units of both tables, in one snapshot."""
    old, new = AGGREGATES.format(table=TABLE), AGGREGATES.format(table=SHADOW)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute(
            "SELECT coalesce(o.meter_id, n.meter_id), (o.readings, o.kwh, o.mintable, o.units)::text,"  # noqa: S608
            f" (n.readings, n.kwh, n.mintable, n.units)::text, coalesce(o.readings, 0) FROM ({old}) o"
            f" FULL JOIN ({new}) n ON n.meter_id = o.meter_id"
        )
        rows = cursor.fetchall()
    mismatches = [row[:3] for row in rows if row[1] != row[2]]
    result = Verified(len(rows), sum(row[3] for row in rows), mismatches)
    _say(
        out,
        f"Verified {result.readings:,} readings of {result.meters:,} meters: counts, kWh, mintable kWh and base"
        f" units per meter {'equal' if not mismatches else f'DIFFER for {len(mismatches)} meters'}.",
    )
    return result


def swap(*, out: Callable[[str], None] | None = None) -> None:
    """Step 4: the shadow becomes the readings table, in one short ACCESS EXCLUSIVE transaction."""
    kept: list[bool] = []

    def step() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
            triggers = _own_triggers(cursor, TABLE)
            cursor.execute(f"DROP FUNCTION {MIRROR}() CASCADE")
            for name, _ in triggers:
                cursor.execute(f"DROP TRIGGER {name} ON {TABLE}")
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {TABLE})")  # noqa: S608
            kept[:] = [cursor.fetchone()[0]]
            if kept[0]:
                cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {KEPT}")
                _rename_indexes(cursor, KEPT, add_suffix="_unpartitioned")
            else:
                cursor.execute(f"DROP TABLE {TABLE}")
            cursor.execute(f"ALTER TABLE {SHADOW} RENAME TO {TABLE}")
            _rename_indexes(cursor, TABLE, drop_suffix=BUILDING_SUFFIX)
            for _, create in triggers:
                cursor.execute(create)
            cursor.execute(f"DROP TABLE {PROGRESS}")

    _with_lock_retries(step, out, "swap")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TABLE}")
    _say(out, f"Swapped: {TABLE} is partitioned by month." + (f" The old table is kept as {KEPT}." if kept[0] else ""))


def abort() -> None:
    """Undo an unfinished partitioning: drop the mirror, the shadow and the progress row (the readings table
    is untouched)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DROP FUNCTION IF EXISTS {MIRROR}() CASCADE")
        cursor.execute(f"DROP TABLE IF EXISTS {SHADOW}, {PROGRESS}")


def repartition(
    *, chunk_rows: int = CHUNK_ROWS, swap_tables: bool = True, out: Callable[[str], None] | None = None
) -> bool:
    """Partition the readings table, resuming wherever an earlier run stopped; True once it is partitioned
    (False when ``swap_tables`` is off and the copy is verified, waiting for the swap)."""
    with connection.cursor() as cursor:
        if is_partitioned(cursor):
            return True
    if progress() is None:
        prepare(out=out)
    copy(chunk_rows=chunk_rows, out=out)
    verified = verify(out=out)
    if verified.mismatches:
        raise RuntimeError(
            f"The partitioned copy differs from {TABLE} for {len(verified.mismatches)} meters (first:"
            f" {verified.mismatches[0]}); nothing was swapped. Undo it with `manage.py readings_partition --abort`"
            " and run it again."
        )
    if not swap_tables:
        return False
    swap(out=out)
    partitions_ensure()
    return True


def unpartition() -> None:
    """Back to one plain table (reverse migration; offline: it holds the table for the whole copy)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        triggers = _own_triggers(cursor, TABLE)
        _create(cursor, name=PLAIN, like=TABLE, partitioned=False)
        cursor.execute(f"INSERT INTO {PLAIN} SELECT * FROM {TABLE}")  # noqa: S608
        _constrain(cursor, name=PLAIN, partitioned=False, suffix="_plain")
        cursor.execute(f"DROP TABLE {TABLE}")
        cursor.execute(f"ALTER TABLE {PLAIN} RENAME TO {TABLE}")
        _rename_indexes(cursor, TABLE, drop_suffix="_plain")
        for _, create in triggers:
            cursor.execute(create)
