"""Query shapes, not timings: every query a surface sends that touches the readings table is read by index.

Each surface is requested for real (API, dashboard, /metrics, admin, the status API, token_balance) while its
queries are captured; each captured query on ``meters_meterreading`` is then explained with sequential scans
disabled. A plan that still scans the table (any of its monthly partitions) sequentially has no index to use;
an index scan with no index condition outside a LIMIT reads the whole index. Either is a read that grows with
history, and fails here. A query bounded in reading time reads only its months' partitions.
"""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token

from certificates.services.issuance import READINGS_FROM_SQL
from meters.models import FlagHourRollup, MeterReading, OwnerDayRollup, OwnerRollup
from meters.partitions import month_start, partition_name, readings_partitions
from meters.services.readings import NEIGHBOURS_SQL
from meters.services.rollups import rollups_fold_all
from minting.management.commands.token_balance import expected
from tests.factories import MeterFactory, ReadingFactory, UserFactory, api_key_for

pytestmark = pytest.mark.django_db
READINGS = MeterReading._meta.db_table
INDEX_SCANS = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
# Partial indexes of the rows still waiting for something: reading all of one costs the backlog, not history.
BACKLOG_INDEXES = {"reading_pending_due_idx", "reading_awaiting_idx", "reading_open_status_idx"}


def full_reads(
    plan: dict,
    *,
    table: str = READINGS,
    indexes: tuple[str, ...] = ("reading",),
    backlog: set[str] = BACKLOG_INDEXES,
    limited: bool = False,
) -> list[str]:
    """The nodes of ``plan`` that read all of ``table`` (a partition of it) or one of its indexes (named, or
    its partitions' copy named, starting with one of ``indexes``; reading all of a ``backlog`` index costs the
    backlog, not history)."""
    found = []
    node = plan["Node Type"]
    limited = limited or node == "Limit"
    if node == "Seq Scan" and plan.get("Relation Name", "").startswith(table):
        found.append(f"Seq Scan on {plan['Relation Name']}")
    whole = node in INDEX_SCANS and "Index Cond" not in plan and not limited
    index = parent_indexes().get(plan.get("Index Name"), plan.get("Index Name"))
    if whole and index.startswith(indexes) and index not in backlog:
        found.append(f"{node} of all of {plan['Index Name']} ({index})")
    for child in plan.get("Plans", []):
        found += full_reads(child, table=table, indexes=indexes, backlog=backlog, limited=limited)
    return found


def parent_indexes() -> dict[str, str]:
    """A partition's index -> the readings table's index it is part of (``reading_submitted_idx`` ...)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relkind = 'I'"
        )
        return dict(cursor.fetchall())


def scanned(plan: dict) -> set[str]:
    """The readings partitions ``plan`` reads."""
    found = {plan["Relation Name"]} if plan.get("Relation Name", "").startswith(READINGS) else set()
    for child in plan.get("Plans", []):
        found |= scanned(child)
    return found


def explained(sql: str) -> dict:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        return cursor.fetchone()[0][0]["Plan"]


def readings_queries(request) -> list[str]:
    """The queries ``request()`` sends that read the readings table (its answer must be 200)."""
    with CaptureQueriesContext(connection) as captured:
        response = request()
    assert response.status_code == 200, response.content[:500]
    sqls = [q["sql"] for q in captured.captured_queries]
    return [sql for sql in sqls if READINGS in sql and sql.lstrip().upper().startswith(("SELECT", "WITH"))]


@pytest.fixture(scope="module")
def fleet_rows(django_db_setup, django_db_blocker):
    """Two producers, one with three meters; readings of every kind, a few flagged, held, failed: built once for
    the module's tests (all of them read it), inside a transaction rolled back after them (each test runs in a
    savepoint of it, so what one test writes is gone before the next)."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield _fleet()
        transaction.set_rollback(True)


@pytest.fixture
def fleet(fleet_rows):
    """The fleet, the readings analysed again for this test: the planner's row counts live outside transactions,
    and autovacuum's ANALYZE (which sees none of the uncommitted fleet) may have reset them since."""
    analyze_readings()
    return fleet_rows


def analyze_readings() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {READINGS}")


def _fleet() -> tuple:
    producer, other = UserFactory(), UserFactory()
    meters = [MeterFactory(owner=producer) for _ in range(3)] + [MeterFactory(owner=other)]
    now = timezone.now()
    for i in range(60):
        ReadingFactory(
            meter=meters[i % 4],
            reading_timestamp=now - timedelta(minutes=15 * i),
            kwh_amount=Decimal("1.250000000"),
            mintable_kwh=Decimal("1.250000000"),
            status=("pending", "minted", "recorded", "held", "failed")[i % 5],
            minted=i % 5 == 1,
            mint_tx_signature="Sig" if i % 5 == 1 else None,
            flags=["spike"] if i % 7 == 0 else [],
        )
    analyze_readings()
    return producer, meters


def bearer(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=user).key}")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def surfaces(producer, meters) -> dict:
    device = Client(HTTP_AUTHORIZATION=f"Bearer {api_key_for(meter=meters[0])[1]}")
    api, operator = bearer(producer), UserFactory(is_staff=True, is_superuser=True)
    admin, staff_api, dashboard = logged_in(operator), bearer(operator), logged_in(producer)
    first = api.get("/api/meters/my-readings?page_size=5").json()["pagination"]["next_cursor"]
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "stats (producer)": lambda: api.get("/api/meters/stats"),
        "stats (device)": lambda: device.get("/api/meters/stats"),
        "my-readings page 1": lambda: api.get("/api/meters/my-readings"),
        "my-readings by meter": lambda: api.get(f"/api/meters/my-readings?meter_serial={meters[1].serial}"),
        "my-readings by status": lambda: api.get("/api/meters/my-readings?status=held,failed"),
        "my-readings next page by cursor": lambda: api.get(f"/api/meters/my-readings?page_size=5&cursor={first}"),
        "my-readings deep page": lambda: api.get("/api/meters/my-readings?page=9&page_size=5"),
        "dashboard (producer)": lambda: dashboard.get("/dashboard/"),
        "dashboard (operator)": lambda: admin.get("/dashboard/"),
        "dashboard stats.json (operator)": lambda: admin.get("/dashboard/stats.json"),
        "dashboard readings.json": lambda: dashboard.get("/dashboard/readings.json"),
        "metrics": lambda: Client().get("/metrics"),
        "status API": lambda: staff_api.get("/api/admin/tokenization/status"),
        "admin readings list": lambda: admin.get("/admin/meters/meterreading/"),
        "admin by status": lambda: admin.get("/admin/meters/meterreading/?status__exact=failed"),
        "admin by flag": lambda: admin.get("/admin/meters/meterreading/?flag=spike"),
        "admin by serial": lambda: admin.get(f"/admin/meters/meterreading/?q={meters[2].serial}"),
        # The admin's date filter sends aware bounds (a bare date would be read as a naive datetime).
        "admin today": lambda: admin.get(
            "/admin/meters/meterreading/",
            {"submitted_at__gte": str(today), "submitted_at__lt": str(today + timedelta(days=1))},
        ),
    }


@pytest.mark.parametrize(
    "surface",
    [
        "stats (producer)",
        "stats (device)",
        "my-readings page 1",
        "my-readings by meter",
        "my-readings by status",
        "my-readings next page by cursor",
        "my-readings deep page",
        "dashboard (producer)",
        "dashboard (operator)",
        "dashboard stats.json (operator)",
        "dashboard readings.json",
        "metrics",
        "status API",
        "admin readings list",
        "admin by status",
        "admin by flag",
        "admin by serial",
        "admin today",
    ],
)
def test_every_query_of_a_surface_reads_the_readings_by_index(fleet, surface, monkeypatch):
    # More than one admin page, as in production: a list that fits one page is fetched without a LIMIT.
    monkeypatch.setattr(admin.site._registry[MeterReading], "list_per_page", 5)
    producer, meters = fleet
    queries = readings_queries(surfaces(producer, meters)[surface])

    reads = {sql: full_reads(explained(sql)) for sql in queries}

    assert {sql: found for sql, found in reads.items() if found} == {}


@pytest.mark.parametrize("surface", ["stats (producer)", "stats (device)", "status API"])
def test_totals_come_from_the_rollups_without_reading_any_reading(fleet, surface):
    producer, meters = fleet

    assert readings_queries(surfaces(producer, meters)[surface]) == []


def index_conditions(plan: dict) -> list[str | None]:
    """The index condition of every scan of a readings partition in ``plan`` (None: the scan has none)."""
    found = [plan.get("Index Cond")] if plan.get("Relation Name", "").startswith(READINGS) else []
    for child in plan.get("Plans", []):
        found += index_conditions(child)
    return found


def test_a_cursor_page_starts_its_index_range_at_the_cursor(fleet):
    producer, _ = fleet
    api = bearer(producer)
    cursor = api.get("/api/meters/my-readings?page_size=5").json()["pagination"]["next_cursor"]
    for _ in range(4):  # a few pages deep
        cursor = api.get(f"/api/meters/my-readings?page_size=5&cursor={cursor}").json()["pagination"]["next_cursor"]

    (sql,) = readings_queries(lambda: api.get(f"/api/meters/my-readings?page_size=5&cursor={cursor}"))
    conditions = index_conditions(explained(sql))

    # Not a filter over every row newer than the cursor: each partition's scan starts at the cursor's time.
    assert conditions and all("submitted_at" in (condition or "") for condition in conditions), conditions


@pytest.mark.usefixtures("fleet")
def test_metrics_counts_the_flagged_readings_from_the_flag_rollup():
    flagged = MeterReading.objects.exclude(flags=[]).count()

    with CaptureQueriesContext(connection) as captured:
        response = Client().get("/metrics")
    sqls = [q["sql"] for q in captured.captured_queries]

    assert f'gridtoken_readings_flagged{{flag="spike"}} {flagged}.0' in response.content.decode()
    assert not [sql for sql in sqls if READINGS in sql and "flags" in sql]
    rollup = [sql for sql in sqls if FlagHourRollup._meta.db_table in sql]
    assert len(rollup) == 1
    assert "flaghour_unique" in json.dumps(explained(rollup[0]))  # an hour range of the rollup's index


def test_an_owners_totals_are_one_rollup_row_whatever_the_days_of_history(fleet):
    producer, meters = fleet
    for day in range(1, 40):  # history over 40 days: one day row each, one owner row
        ReadingFactory(meter=meters[1], reading_timestamp=timezone.now() - timedelta(days=day))
    rollups_fold_all()
    api = bearer(producer)

    with CaptureQueriesContext(connection) as captured:
        assert api.get("/api/meters/stats").status_code == 200
        assert api.get("/api/meters/my-readings").status_code == 200
    sqls = [q["sql"] for q in captured.captured_queries]

    assert OwnerDayRollup.objects.filter(user_id=producer.pk).count() >= 40
    assert OwnerRollup.objects.filter(user_id=producer.pk).count() == 1
    assert not [sql for sql in sqls if OwnerDayRollup._meta.db_table in sql]
    owner = [sql for sql in sqls if OwnerRollup._meta.db_table in sql]
    assert len(owner) == 2
    for sql in owner:
        assert "meters_ownerrollup_pkey" in json.dumps(explained(sql))


def test_token_balance_reads_no_reading(fleet):
    _, meters = fleet
    with CaptureQueriesContext(connection) as captured:
        expected(mint="Mint111", wallet=meters[0].wallet_address)
        expected(mint="Mint111", wallet=None)

    assert [q["sql"] for q in captured.captured_queries if READINGS in q["sql"]] == []


def test_a_query_bounded_in_reading_time_reads_only_its_months_partition(fleet):
    _, meters = fleet
    moment = month_start(timezone.now()) + timedelta(days=14)
    sql = connection.ops.compose_sql(
        NEIGHBOURS_SQL, [meters[0].id, moment - timedelta(minutes=15), moment + timedelta(minutes=15)]
    )

    plan = explained(sql)

    assert scanned(plan) == {partition_name(moment)}
    assert full_reads(plan) == []


def test_the_certificates_hourly_sums_skip_the_months_before_their_range(fleet):
    _, meters = fleet
    since = month_start(timezone.now())
    sql = connection.ops.compose_sql(READINGS_FROM_SQL, [meters[0].id, since])

    plan = explained(sql)

    older = {partition.name for partition in readings_partitions() if partition.upper <= since}
    assert scanned(plan) & older == set()
    assert partition_name(since) in scanned(plan)
