"""Query shapes of the other tables that grow with history: mint batches, the certificate registry (issuances,
bundles, chain operations) and dead letters. As ``tests/meters/test_plans.py`` does for the readings: every
surface that reads them (/metrics, /ready, the dashboard, the status API, the operator and certificate APIs,
their admin lists with each filter and search) is requested for real, every captured query on those tables
is explained with sequential scans disabled, and a sequential scan of one, or a whole-index read outside a
LIMIT, fails.
"""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from certificates.models import CertificateBundle, ChainOperation, Issuance
from certificates.services.issuance import certificates_issue_due
from meters.history import COUNTERS as MINUTE_COUNTERS
from meters.history import GAUGES as MINUTE_GAUGES
from meters.models import DeadLetter, FleetMinute, MeterHourRollup
from meters.services.dead_letters import Origin, dead_letter_record
from meters.services.rollups import rollups_fold_all
from minting.models import MintBatch
from tests.certificates.helpers import add_readings, close_hour, make_device
from tests.factories import UserFactory
from tests.meters.test_plans import bearer, explained, full_reads, logged_in

pytestmark = pytest.mark.django_db
MINUTE_FIGURES = (*MINUTE_COUNTERS, *MINUTE_GAUGES)
# Each table, and its partial indexes of rows still waiting for something (reading all of one costs the
# backlog, not history).
WATCHED = {
    MintBatch._meta.db_table: set(),
    Issuance._meta.db_table: {"issuance_held_idx"},
    CertificateBundle._meta.db_table: set(),
    ChainOperation._meta.db_table: {"operation_pending_idx"},
    DeadLetter._meta.db_table: set(),
    MeterHourRollup._meta.db_table: set(),  # the dashboard's energy charts
    FleetMinute._meta.db_table: set(),  # the dashboard's fleet charts (two days of minutes, yet never a scan)
}


@pytest.fixture
def history(db):
    """Batches of every status over months, three devices' issued hours, dead letters of two doors."""
    now = timezone.now()
    MintBatch.objects.bulk_create(
        MintBatch(
            signature=f"Sig{i:04d}",
            raw_transaction=b"raw",
            last_valid_block_height=1,
            mint_address="Mint111",
            status=("confirmed", "confirmed", "failed", "expired", "signed")[i % 5],
            created_at=now - timedelta(hours=7 * i),
            settled_at=None if i % 5 == 4 else now - timedelta(hours=7 * i) + timedelta(seconds=i % 90),
        )
        for i in range(400)
    )
    devices = [make_device() for _ in range(3)]
    for device in devices:
        for hour in range(6):
            add_readings(device, hour, ["1", "2"])
        close_hour(device, 5)
    certificates_issue_due()
    rollups_fold_all()  # the devices' readings into the meters' hour rollups
    FleetMinute.objects.bulk_create(
        FleetMinute(
            minute=now.replace(second=0, microsecond=0) - timedelta(minutes=i), **dict.fromkeys(MINUTE_FIGURES, i)
        )
        for i in range(2 * 24 * 60)
    )
    for i in range(40):
        origin = Origin(door=("mqtt", "rest_batch")[i % 2], topic=f"gridtoken/meters/M-{i}/readings", payload=b"{}")
        dead_letter_record(origin=origin, error=KeyError(i))
    with connection.cursor() as cursor:
        for table in WATCHED:
            cursor.execute(f"ANALYZE {table}")
    assert Issuance.objects.count() >= 3 and ChainOperation.objects.exists()
    return devices


def surfaces(devices) -> dict:
    operator = UserFactory(is_staff=True, is_superuser=True)
    site, api, producer = logged_in(operator), bearer(operator), bearer(devices[0].meter.owner)
    producer_site = logged_in(devices[0].meter.owner)
    batch = MintBatch.objects.filter(status="failed").first()
    issuance = Issuance.objects.first()
    operation = ChainOperation.objects.exclude(signature="").first() or ChainOperation.objects.first()
    today = timezone.now().date()
    return {
        "metrics": lambda: Client().get("/metrics"),
        "ready": lambda: Client().get("/ready"),
        "dashboard (operator)": lambda: site.get("/dashboard/"),
        "dashboard stats.json (operator)": lambda: site.get("/dashboard/stats.json"),
        "dashboard fleet.json (operator)": lambda: site.get("/dashboard/fleet.json?span=24h"),
        "dashboard energy.json (producer)": lambda: producer_site.get("/dashboard/energy.json?span=30d"),
        "status API": lambda: api.get("/api/admin/tokenization/status"),
        "unminted API": lambda: api.get("/api/admin/meters/unminted"),
        "dead letters API": lambda: api.get("/api/admin/dead-letters"),
        "dead letters API by door": lambda: api.get("/api/admin/dead-letters?door=mqtt&status=pending"),
        "held certificates API": lambda: api.get("/api/admin/certificates/held"),
        "certificate bundles API": lambda: producer.get("/api/certificates/bundles"),
        "certificate devices API": lambda: producer.get("/api/certificates/devices"),
        "admin batches": lambda: site.get("/admin/minting/mintbatch/"),
        "admin batches by status": lambda: site.get("/admin/minting/mintbatch/?status__exact=failed"),
        "admin batches today": lambda: site.get(
            f"/admin/minting/mintbatch/?created_at__gte={today}&created_at__lt={today + timedelta(days=1)}"
        ),
        "admin batch by signature": lambda: site.get(f"/admin/minting/mintbatch/?q={batch.signature}"),
        "admin batch by id": lambda: site.get(f"/admin/minting/mintbatch/?q={batch.id}"),
        "admin token mints": lambda: site.get("/admin/minting/tokenmint/"),
        "admin issuances": lambda: site.get("/admin/certificates/issuance/"),
        "admin issuances held": lambda: site.get("/admin/certificates/issuance/?status__exact=held"),
        "admin issuance by id": lambda: site.get(f"/admin/certificates/issuance/?q={issuance.id}"),
        "admin issuances by serial": lambda: site.get(f"/admin/certificates/issuance/?q={devices[1].meter.serial}"),
        "admin bundles": lambda: site.get("/admin/certificates/certificatebundle/"),
        "admin bundles by status": lambda: site.get("/admin/certificates/certificatebundle/?status__exact=claimed"),
        "admin bundles by issuance": lambda: site.get(f"/admin/certificates/certificatebundle/?q={issuance.id}"),
        "admin operations": lambda: site.get("/admin/certificates/chainoperation/"),
        "admin operations by status": lambda: site.get("/admin/certificates/chainoperation/?status__exact=failed"),
        "admin operations by kind": lambda: site.get("/admin/certificates/chainoperation/?kind__exact=burn"),
        "admin operation by issuance": lambda: site.get(
            f"/admin/certificates/chainoperation/?q={operation.issuance_id}"
        ),
        "admin certificate mints": lambda: site.get("/admin/certificates/certificatemint/"),
        "admin dead letters": lambda: site.get("/admin/meters/deadletter/"),
        "admin dead letters by door": lambda: site.get("/admin/meters/deadletter/?door__exact=mqtt"),
        "admin dead letters by status": lambda: site.get("/admin/meters/deadletter/?status__exact=pending"),
    }


def watched_queries(request) -> list[str]:
    """The queries ``request()`` sends that read a watched table (not a 500; /ready answers 503 without a chain)."""
    with CaptureQueriesContext(connection) as captured:
        response = request()
    assert response.status_code != 500, response.content[:500]
    sqls = [q["sql"] for q in captured.captured_queries if q["sql"].lstrip().upper().startswith(("SELECT", "WITH"))]
    return [sql for sql in sqls if any(table in sql for table in WATCHED)]


def table_indexes(table: str) -> tuple[str, ...]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
        return tuple(row[0] for row in cursor.fetchall())


SURFACES = (
    "metrics",
    "ready",
    "dashboard (operator)",
    "dashboard stats.json (operator)",
    "dashboard fleet.json (operator)",
    "dashboard energy.json (producer)",
    "status API",
    "unminted API",
    "dead letters API",
    "dead letters API by door",
    "held certificates API",
    "certificate bundles API",
    "certificate devices API",
    "admin batches",
    "admin batches by status",
    "admin batches today",
    "admin batch by signature",
    "admin batch by id",
    "admin token mints",
    "admin issuances",
    "admin issuances held",
    "admin issuance by id",
    "admin issuances by serial",
    "admin bundles",
    "admin bundles by status",
    "admin bundles by issuance",
    "admin operations",
    "admin operations by status",
    "admin operations by kind",
    "admin operation by issuance",
    "admin certificate mints",
    "admin dead letters",
    "admin dead letters by door",
    "admin dead letters by status",
)


@pytest.mark.parametrize("surface", SURFACES)
def test_every_query_of_a_surface_reads_the_growing_tables_by_index(history, surface, monkeypatch):
    # More than one admin page, as in production: a list that fits one page is fetched without a LIMIT.
    for model in (MintBatch, Issuance, CertificateBundle, ChainOperation, DeadLetter):
        monkeypatch.setattr(admin.site._registry[model], "list_per_page", 5)
    queries = watched_queries(surfaces(history)[surface])

    found = {}
    for sql in queries:
        plan = explained(sql)
        for table, backlog in WATCHED.items():
            reads = full_reads(plan, table=table, indexes=table_indexes(table), backlog=backlog)
            if reads:
                found.setdefault(sql, []).extend(reads)

    assert found == {}, "\n".join(f"{reads} <- {sql}" for sql, reads in found.items())


def nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", []) for node in nodes(child))]


def test_the_energy_chart_reads_the_hour_rollup_by_meter_not_by_hour_across_every_meter(history):
    """An hour range alone is an index condition too (on the index's second column), yet it reads every
    meter's entries: the energy chart's must start with its meters."""
    owner = history[0].meter.owner
    queries = watched_queries(lambda: logged_in(owner).get("/dashboard/energy.json?span=30d"))
    hour_reads = [
        node
        for sql in queries
        for node in nodes(explained(sql))
        if node.get("Relation Name") == MeterHourRollup._meta.db_table
    ]

    assert hour_reads and all("meter_id = ANY" in node.get("Index Cond", "") for node in hour_reads), hour_reads


def test_the_admin_finds_a_dead_letter_by_serial_request_id_or_fingerprint_through_indexes(db):
    """The dead letters' admin search: every arm of its OR has an index (on a table of thousands of letters; on a
    few dozen the planner rightly walks the primary key)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {DeadLetter._meta.db_table} (fingerprint, door, topic, meter_serial, payload, caller, "
            "error_type, error_message, error_traceback, request_id, first_seen, last_seen, deliveries, status) "
            "SELECT md5(i::text), 'mqtt', 't', 'M-' || i, '', '{}', 'KeyError', '', '', 'req-' || i, now(), now(), "
            "1, 'pending' FROM generate_series(1, 5000) AS i"
        )
        cursor.execute(f"ANALYZE {DeadLetter._meta.db_table}")
    site = logged_in(UserFactory(is_staff=True, is_superuser=True))
    queries = watched_queries(lambda: site.get("/admin/meters/deadletter/?q=M-7"))

    [search] = [sql for sql in queries if "'M-7'" in sql and "COUNT" not in sql.upper()]
    used = {node.get("Index Name") for node in nodes(explained(search))}
    assert {"deadletter_serial_idx", "deadletter_request_idx"} <= used, used
    table = DeadLetter._meta.db_table
    assert full_reads(explained(search), table=table, indexes=table_indexes(table), backlog=set()) == []
