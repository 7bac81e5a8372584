"""The readings table partitioned by month (docs/PARTITIONS.md): where readings land, late and far readings,
partitions made ahead and on demand, every constraint still the database's, rollups across partitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from gridtoken import admin as record_admin
from meters.models import MeterReading, ReadingDelta
from meters.partitions import (
    DEFAULT_PARTITION,
    MONTHS_AHEAD,
    ReadingPartition,
    add_months,
    month_start,
    partition_name,
    partitions_ensure,
    readings_partitions,
)
from tests.conftest import concurrently
from tests.factories import MeterFactory, ReadingFactory, api_key_for
from tests.meters.conftest import rfc3339
from tests.meters.test_rollups import assert_folded_exactly

SUBMIT = "/api/meters/submit-reading"


def home(reading_id) -> str:
    """The partition a reading is stored in."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM meters_meterreading WHERE id = %s", [reading_id])
        return cursor.fetchone()[0]


def submit(post, meter, moment: datetime, kwh: str = "1.5"):
    body = {"meter_serial": meter.serial, "kwh_amount": kwh, "reading_timestamp": rfc3339(moment)}
    return post(SUBMIT, body, key=api_key_for(meter=meter)[1])


def test_partition_names_and_bounds_are_utc_months():
    moment = datetime(2026, 12, 31, 23, 30, tzinfo=UTC) + timedelta(hours=1)  # 2027-01-01 00:30 UTC

    assert partition_name(moment) == "meters_meterreading_p202701"
    assert partition_name(moment.astimezone(timezone.get_fixed_timezone(-120))) == "meters_meterreading_p202701"
    assert add_months(datetime(2026, 12, 1, tzinfo=UTC), 1) == datetime(2027, 1, 1, tzinfo=UTC)
    assert add_months(datetime(2027, 1, 1, tzinfo=UTC), -1) == datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.django_db
def test_the_migration_leaves_the_current_month_and_those_ahead():
    this = month_start(timezone.now())
    expected = [add_months(this, i) for i in range(MONTHS_AHEAD + 1)]

    partitions = [p for p in readings_partitions() if p.lower >= this]

    assert partitions[: len(expected)] == [
        ReadingPartition(partition_name(lower), lower, add_months(lower, 1)) for lower in expected
    ]


@pytest.mark.django_db
def test_readings_either_side_of_a_month_boundary_land_in_their_months(post, ingest_settings):
    ingest_settings(reading_max_age_days=3650)
    meter, boundary = MeterFactory(), month_start(timezone.now())

    before = submit(post, meter, boundary - timedelta(minutes=15))
    after = submit(post, meter, boundary)
    assert (before.status_code, after.status_code) == (201, 201)
    waiting = home(before.json()["id"])
    created = partitions_ensure()

    assert waiting == DEFAULT_PARTITION  # no partition of last month yet: stored all the same
    assert created == [partition_name(boundary - timedelta(minutes=15))]
    assert home(before.json()["id"]) == partition_name(boundary - timedelta(days=1))
    assert home(after.json()["id"]) == partition_name(boundary)
    assert partitions_ensure() == []  # idempotent


@pytest.mark.django_db
def test_partitions_ensure_since_creates_the_past_months_a_history_import_will_fill(post, ingest_settings):
    ingest_settings(reading_max_age_days=3650)
    this_month = month_start(timezone.now())
    since = add_months(this_month, -7) + timedelta(days=12)

    created = partitions_ensure(since=since)
    imported = submit(post, MeterFactory(), since + timedelta(hours=1))

    assert created[:7] == [partition_name(add_months(this_month, -k)) for k in range(7, 0, -1)]
    assert imported.status_code == 201 and home(imported.json()["id"]) == partition_name(since)
    assert partitions_ensure(since=since) == []


@pytest.mark.django_db
def test_a_late_reading_goes_into_its_old_month_and_its_duplicate_is_still_refused(post, ingest_settings):
    ingest_settings(reading_max_age_days=3650)
    meter, old = MeterFactory(), add_months(month_start(timezone.now()), -5) + timedelta(days=3, hours=7)
    partitions_ensure(through=None)
    assert submit(post, meter, old).status_code == 201
    partitions_ensure()

    late = submit(post, meter, old + timedelta(hours=1))
    again = submit(post, meter, old + timedelta(hours=1))

    assert late.status_code == 201 and home(late.json()["id"]) == partition_name(old)
    assert again.json()["duplicate"] is True and again.json()["id"] == late.json()["id"]
    assert MeterReading.objects.filter(meter=meter).count() == 2


@pytest.mark.django_db
def test_a_reading_far_outside_the_partitions_is_stored_and_moved_without_touching_the_rollups(post, ingest_settings):
    ingest_settings(reading_max_age_days=3650)
    meter = MeterFactory()
    far = datetime(2017, 3, 4, 5, 0, tzinfo=UTC)
    future = ReadingFactory(meter=meter, reading_timestamp=datetime(2040, 1, 2, tzinfo=UTC))  # a clock in 2040

    response = submit(post, meter, far)
    duplicate = submit(post, meter, far)  # the unique index holds in the default partition too
    assert response.status_code == 201 and duplicate.json()["duplicate"] is True
    assert {home(response.json()["id"]), home(future.id)} == {DEFAULT_PARTITION}
    deltas = ReadingDelta.objects.count()
    created = partitions_ensure()

    assert set(created) >= {"meters_meterreading_p201703", "meters_meterreading_p204001"}
    assert home(response.json()["id"]) == "meters_meterreading_p201703"
    assert home(future.id) == "meters_meterreading_p204001"
    assert ReadingDelta.objects.count() == deltas  # rows moved, nothing changed: no delta
    assert_folded_exactly()


@pytest.mark.django_db
def test_an_update_that_moves_a_reading_to_another_month_keeps_the_rollups_exact():
    meter, this = MeterFactory(), month_start(timezone.now())
    readings = [ReadingFactory(meter=meter, reading_timestamp=this + timedelta(hours=i)) for i in range(4)]

    MeterReading.objects.filter(id__in=[r.id for r in readings[:2]]).update(
        reading_timestamp=F("reading_timestamp") + timedelta(days=40), status=MeterReading.Status.FAILED
    )

    assert {home(r.id) for r in readings[:2]} == {partition_name(this + timedelta(days=40))}
    assert_folded_exactly(maxima=False)


@pytest.mark.django_db
def test_a_window_row_lives_at_its_window_start_and_is_one_per_window():
    meter, start = MeterFactory(), month_start(timezone.now()) + timedelta(hours=3)
    window = {"meter": meter, "source": MeterReading.Source.WINDOW, "window_start": start}
    ReadingFactory(**window, reading_timestamp=start)

    with pytest.raises(IntegrityError, match="reading_window_at_its_start"), transaction.atomic():
        ReadingFactory(**window, reading_timestamp=start + timedelta(minutes=15))
    # A partition's copy of an index is named after it: reading_one_per_window_p202612.
    with (
        pytest.raises(IntegrityError, match="reading_one_per_window_p"),
        transaction.atomic(),
    ):
        ReadingFactory(**window, reading_timestamp=start)
    with pytest.raises(IntegrityError, match="reading_unique_meter_timestamp_p"), transaction.atomic():
        ReadingFactory(meter=meter, reading_timestamp=start + timedelta(days=1))
        ReadingFactory(meter=meter, reading_timestamp=start + timedelta(days=1), kwh_amount=Decimal(2))


@pytest.fixture(name="partitions_restored")
def partitions_restored_fixture():
    """Partitions a transactional test creates outlive it (DDL is not flushed): drop the ones it added, so the
    next test finds the months a fresh database has."""
    before = {p.name for p in readings_partitions()}
    yield
    with connection.cursor() as cursor:
        for name in {p.name for p in readings_partitions()} - before:
            cursor.execute(f"DROP TABLE {name}")


@pytest.mark.django_db(transaction=True)
def test_partitions_ensure_run_concurrently_creates_each_month_once(partitions_restored):
    through = add_months(month_start(timezone.now()), MONTHS_AHEAD + 4)
    before = {p.name for p in readings_partitions()}
    results = concurrently(lambda: partitions_ensure(through=through), 3, timeout=30)

    created = [name for names in results for name in names]
    assert sorted(created) == sorted({p.name for p in readings_partitions()} - before)
    assert len(created) == 4 and len(set(created)) == 4


@pytest.mark.django_db
def test_the_admin_estimates_the_readings_from_their_partitions_without_counting(monkeypatch):
    monkeypatch.setattr(record_admin, "COUNT_CAP", 5)
    meter, this = MeterFactory(), month_start(timezone.now())
    for hour in range(8):
        ReadingFactory(meter=meter, reading_timestamp=this + timedelta(hours=hour))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {partition_name(this)}")  # as autovacuum does: never the partitioned parent

    with CaptureQueriesContext(connection) as captured:
        count = record_admin.EstimatedCountPaginator(MeterReading.objects.all(), 5).count

    assert count == 8
    assert not [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]


@pytest.mark.django_db
def test_the_admin_counts_an_open_status_exactly_from_the_fleet_rollup(monkeypatch, admin_client):
    monkeypatch.setattr(record_admin, "COUNT_CAP", 3)
    meter = MeterFactory()
    for status in [MeterReading.Status.FAILED] * 5 + [MeterReading.Status.MINTED] * 4:
        ReadingFactory(meter=meter, status=status)  # its delta not folded: the count adds it

    with CaptureQueriesContext(connection) as captured:
        failed = admin_client.get("/admin/meters/meterreading/?status__exact=failed")
    minted = admin_client.get("/admin/meters/meterreading/?status__exact=minted")
    both = admin_client.get("/admin/meters/meterreading/?status__exact=failed&source__exact=interval")

    assert failed.context["cl"].result_count == 5  # past the cap, and exact
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert not [sql for sql in counts if "meters_meterreading" in sql], counts
    # A final status (archived partitions leave it in the rollup) and any other filter: the capped count.
    assert minted.context["cl"].result_count == 3
    assert both.context["cl"].result_count == 3
