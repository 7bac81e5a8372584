"""Migration 0009 on a populated table, online: the test database is migrated back to meters 0008 (one plain
readings table), filled, then partitioned while a writer inserts, updates, moves and deletes readings, with
the copy's backend killed half-way and resumed. Nothing may be lost, doubled or left unconstrained."""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from meters import repartition
from meters.models import MeterReading, MeterRollup, ReadingDelta
from meters.partitions import (
    DEFAULT_PARTITION,
    TABLE,
    is_partitioned,
    month_start,
    partition_name,
    partitions_ensure,
)
from meters.services.rollups import rollups_fold
from tests.factories import MeterFactory, ReadingFactory
from tests.meters.test_partitions import partitions_restored_fixture  # noqa: F401 (the partitions_restored fixture)

pytestmark = pytest.mark.django_db(transaction=True)
R = MeterReading.Status


def migrate(*targets: tuple[str, str | None]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(list(targets) or executor.loader.graph.leaf_nodes())


@pytest.fixture
def unpartitioned(partitions_restored):
    """The readings table as migration 0008 left it; the schema is put back (0009 applied) afterwards."""
    migrate(("meters", "0008_reading_index_diet"))
    with connection.cursor() as cursor:
        assert not is_partitioned(cursor)
    yield
    if not _partitioned():
        repartition.abort()
    migrate()  # partitions what a test left unpartitioned, keeping the old table: dropped next
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {repartition.KEPT}")


def _partitioned() -> bool:
    with connection.cursor() as cursor:
        return is_partitioned(cursor)


AGGREGATES = "SELECT meter_id, count(*), sum(kwh_amount), sum(mintable_kwh), coalesce(sum(token_amount), 0) FROM {}"


def per_meter(table: str = TABLE) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(AGGREGATES.format(table) + " GROUP BY meter_id")
        return {meter: [n, kwh, mintable, int(units)] for meter, n, kwh, mintable, units in cursor.fetchall()}


def assert_meter_rollups_exact() -> None:
    """Each meter's rollup, folded, equals its measured readings' count and net kWh."""
    while rollups_fold() > 0:  # the readings' log: the flags' fold (0013) is not there while at 0008
        pass
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT meter_id, count(*), sum(kwh_amount) FROM {TABLE} WHERE source <> 'window' GROUP BY meter_id"
        )
        measured = {meter: (n, kwh) for meter, n, kwh in cursor.fetchall()}
    rolled = {r.meter_id: (r.readings, r.net_kwh) for r in MeterRollup.objects.filter(meter_id__in=measured)}
    assert rolled == measured


class Writer(threading.Thread):
    """Inserts, updates (kWh, base units, a move to another month) and deletes readings until stopped, one
    transaction each, keeping what each committed change did to the per-meter sums in ``changes``."""

    def __init__(self, meters, avoid: set) -> None:
        super().__init__(daemon=True)
        self.meters, self.avoid = meters, avoid
        self.stop = threading.Event()
        self.changes: dict = defaultdict(lambda: [0, Decimal(0), Decimal(0), 0])
        self.done = defaultdict(int)
        self.error: BaseException | None = None
        self.seconds = 0
        self.operations = itertools.cycle((self.insert, self.add_kwh, self.add_units, self.move, self.delete))

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                operation = next(self.operations)
                with transaction.atomic(), connection.cursor() as cursor:
                    change = operation(cursor)
                if change:
                    meter, n, kwh, mintable, units = change
                    for i, value in enumerate((n, kwh, mintable, units)):
                        self.changes[meter][i] += value
                    self.done[operation.__name__] += 1
        except BaseException as error:
            self.error = error
        finally:
            connection.close()

    def pick(self, cursor, condition: str = "true"):
        cursor.execute(
            f"SELECT id FROM {TABLE} WHERE {condition} AND NOT (id = ANY(%s)) ORDER BY random() LIMIT 1",
            [list(self.avoid)],
        )
        row = cursor.fetchone()
        return row[0] if row else None

    def insert(self, cursor):
        meter = random.choice(self.meters)
        self.seconds += 1
        moment = month_start(timezone.now()) + timedelta(days=random.choice((-400, -60, 0, 45)), seconds=self.seconds)
        ReadingFactory(meter=meter, reading_timestamp=moment, kwh_amount=Decimal("2.5"), mintable_kwh=Decimal("2.5"))
        return meter.id, 1, Decimal("2.5"), Decimal("2.5"), 0

    def add_kwh(self, cursor):
        cursor.execute(
            f"UPDATE {TABLE} SET kwh_amount = kwh_amount + 1 WHERE id = %s RETURNING meter_id",
            [self.pick(cursor)],
        )
        row = cursor.fetchone()
        return row and (row[0], 0, Decimal(1), Decimal(0), 0)

    def add_units(self, cursor):
        cursor.execute(
            f"UPDATE {TABLE} SET token_amount = coalesce(token_amount, 0) + 1000 WHERE id = %s RETURNING meter_id",
            [self.pick(cursor)],
        )
        row = cursor.fetchone()
        return row and (row[0], 0, Decimal(0), Decimal(0), 1000)

    def move(self, cursor):
        self.seconds += 1
        cursor.execute(
            f"UPDATE {TABLE} SET reading_timestamp = reading_timestamp + %s WHERE id = %s",
            [timedelta(days=40, seconds=self.seconds), self.pick(cursor, "source <> 'window'")],
        )
        return None

    def delete(self, cursor):
        cursor.execute(
            f"DELETE FROM {TABLE} WHERE id = %s"
            " RETURNING meter_id, kwh_amount, mintable_kwh, coalesce(token_amount, 0)",
            [self.pick(cursor, "source <> 'window'")],
        )
        row = cursor.fetchone()
        return row and (row[0], -1, -row[1], -row[2], -row[3])


def history(meters) -> None:
    """Three months of readings per meter, some priced in base units, one window row."""
    now = timezone.now()
    for meter in meters:
        for i in range(60):
            ReadingFactory(
                meter=meter,
                reading_timestamp=now - timedelta(hours=37 * i),
                kwh_amount=Decimal(i) / 7,
                mintable_kwh=Decimal(i + 1) / 7,
                status=R.FAILED if i % 3 == 0 else R.PENDING,
                token_amount=1_000_000 * i if i % 3 == 0 else None,
            )
        start = month_start(now) - timedelta(days=20)
        ReadingFactory(meter=meter, source="window", window_start=start, reading_timestamp=start, status=R.RECORDED)


def kill_the_copy_half_way(holder_pages: int) -> tuple[int, BaseException]:
    """Run the copy in a thread of its own, hold a row of the last page so the copy stops there, and terminate
    its backend: a crash in the middle of the copy. The progress it recorded, and the copy's error."""
    pid: list[int] = []
    failure: list[BaseException] = []

    def copying() -> None:
        try:
            connection.ensure_connection()
            pid.append(connection.connection.info.backend_pid)
            repartition.copy(chunk_rows=1)  # a page per chunk
        except BaseException as error:
            failure.append(error)
        finally:
            connection.close()

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {TABLE} WHERE ctid >= %s::tid FOR UPDATE",
            [f"({holder_pages - 1},0)"],
        )
        thread = threading.Thread(target=copying)
        thread.start()
        for _ in range(200):
            state = repartition.progress()
            if state.next_page >= holder_pages - 1:
                break
            threading.Event().wait(0.05)
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid[0]])
        thread.join(10)
    return repartition.progress().next_page, failure[0]


def test_a_populated_table_is_partitioned_online_through_a_crash_and_concurrent_writes(unpartitioned):
    meters = [MeterFactory() for _ in range(4)]
    history(meters)
    before = per_meter()
    rows = sum(values[0] for values in before.values())

    repartition.prepare()
    pages = repartition.progress().pages
    assert pages >= 4
    writer = Writer(meters, avoid=set())
    writer.start()
    stopped_at, crash = kill_the_copy_half_way(pages)
    assert isinstance(crash, OperationalError)  # the backend died mid-copy
    assert 0 < stopped_at < pages
    status = StringIO()
    call_command("readings_partition", "--status", stdout=status)
    assert f"page {stopped_at:,} of {pages:,}" in status.getvalue()

    out = StringIO()
    call_command("readings_partition", "--chunk", "1", stdout=out)  # resumes, verifies, swaps, ensures
    writer.stop.set()
    writer.join(30)
    partitions_ensure()  # the months of what the writer stored after the command's own run

    assert writer.error is None, writer.error
    assert set(writer.done) >= {"insert", "add_kwh", "add_units", "delete"}, writer.done
    assert "rows/s" in out.getvalue() and "ETA" in out.getvalue() and "Swapped" in out.getvalue()
    assert f"page {stopped_at + 1:,}/{pages:,}" in out.getvalue()  # resumed after the crash, not from 0
    assert _partitioned()
    expected = {meter: list(values) for meter, values in before.items()}
    for meter, change in writer.changes.items():
        expected[meter] = [a + b for a, b in zip(expected[meter], change, strict=True)]
    assert per_meter() == expected
    assert rows > 0
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) - count(DISTINCT id) FROM {TABLE}")
        assert cursor.fetchone()[0] == 0
        cursor.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION}")
        assert cursor.fetchone()[0] == 0  # the writer's months got partitions of their own
    assert_meter_rollups_exact()  # the old table's triggers, then the new one's; the copy and moves added none


def constraint_violations(meter) -> dict:
    """Each constraint of the readings table, violated once: what the database said."""
    moment = month_start(timezone.now()) + timedelta(days=3)
    ReadingFactory(meter=meter, reading_timestamp=moment)
    window = {"meter": meter, "source": "window", "window_start": moment, "status": R.RECORDED}
    ReadingFactory(**window, reading_timestamp=moment)
    attempts = {
        "reading_unique_meter_timestamp": {"reading_timestamp": moment},
        "reading_one_per_window": {**window, "reading_timestamp": moment},
        "reading_window_at_its_start": {**window, "window_start": moment - timedelta(hours=1)},
        "reading_mintable_not_negative": {"mintable_kwh": Decimal(-1), "status": R.RECORDED},
        "reading_minted_only_if_mintable": {"mintable_kwh": Decimal(0), "status": R.PENDING},
        "reading_minted_has_signature": {"minted": True, "status": R.MINTED, "mint_tx_signature": None},
        "fk_meters_meter_id": {"meter_id": uuid.uuid4()},
    }
    said = {}
    for name, fields in attempts.items():
        fields = {"meter": meter, "reading_timestamp": moment + timedelta(minutes=15), **fields}
        if "meter_id" in fields:
            fields.pop("meter")
            fields.update(user_id=meter.owner_id, wallet_address=meter.wallet_address, kwh_amount=1, mintable_kwh=1)
        try:
            with transaction.atomic():
                MeterReading.objects.create(**fields) if "meter_id" in fields else ReadingFactory(**fields)
        except IntegrityError as error:
            said[name] = str(error)
    return said


def test_copied_ahead_of_the_deploy_then_migrate_swaps_and_every_constraint_holds(unpartitioned):
    meters = [MeterFactory() for _ in range(2)]
    history(meters[:1])
    out = StringIO()
    call_command("readings_partition", "--no-swap", stdout=out)
    assert "Copied and verified" in out.getvalue() and not _partitioned()

    migrate()  # 0009 finds the copy done: it verifies and swaps
    said = constraint_violations(meters[1])

    assert sorted(said) == sorted(
        [
            "reading_unique_meter_timestamp",
            "reading_one_per_window",
            "reading_window_at_its_start",
            "reading_mintable_not_negative",
            "reading_minted_only_if_mintable",
            "reading_minted_has_signature",
            "fk_meters_meter_id",
        ]
    )
    for name, message in said.items():
        assert name in message, (name, message)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {repartition.KEPT}")
        assert cursor.fetchone()[0] == 61  # the old table, kept for a second look
    deltas = ReadingDelta.objects.count()
    ReadingFactory(meter=meters[1], reading_timestamp=month_start(timezone.now()) + timedelta(days=9))
    assert ReadingDelta.objects.count() > deltas  # the rollup triggers moved to the partitioned table
    assert partition_name(timezone.now()) in {p for p in _partitions()}


def _partitions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass", [TABLE])
        return [name for (name,) in cursor.fetchall()]


def test_an_unfinished_copy_is_dropped_and_the_readings_stay_as_they_were(unpartitioned):
    history([MeterFactory()])
    before = per_meter()
    repartition.prepare()
    repartition.copy(chunk_rows=1, chunks=2)

    call_command("readings_partition", "--abort", stdout=StringIO())

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s), to_regclass(%s)", [repartition.SHADOW, repartition.PROGRESS])
        assert cursor.fetchone() == (None, None)
        cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE %s", [f"{repartition.MIRROR}%"])
        assert cursor.fetchone()[0] == 0
    assert per_meter() == before and not _partitioned()
