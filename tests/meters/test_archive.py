"""Retention (docs/RETENTION.md): an expired month is exported to Parquet, verified from the destination (a
directory, and a real local S3 server: moto's), then detached and dropped; its readings stay findable and
verifiable by id, the rollups keep counting them, and nothing is dropped that was not verified or that
changed after its export."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from pyarrow import fs as pafs

from config import load
from meters.archive import services
from meters.archive.destination import filesystem_for
from meters.archive.find import reading_find
from meters.archive.models import ArchivedPartition
from meters.archive.services import archive_failing
from meters.models import MeterHourRollup, MeterReading, MeterRollup
from meters.partitions import month_start, partition_name, partitions_ensure, readings_partitions
from meters.selectors import fleet_totals, rollup_totals
from meters.tasks import archive_readings
from minting.models import MintBatch
from tests.conftest import database_url
from tests.minting.pipeline_harness import make_meter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]
Status = MeterReading.Status
Archived = ArchivedPartition.Status
BUCKET = "gridtoken-archive-test"


OLD_MONTH = month_start(timezone.now() - timedelta(days=150))  # ends well before a 90-day retention's cutoff
RECENT = timezone.now().replace(microsecond=0) - timedelta(days=1)


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    pafs.S3FileSystem(
        access_key="test", secret_key="test", endpoint_override=endpoint, scheme="http", allow_bucket_creation=True
    ).create_dir(BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(params=["directory", "s3"])
def destination(request, tmp_path) -> dict:
    if request.param == "directory":
        return {"READINGS_ARCHIVE_URL": f"file://{tmp_path}/archive"}
    endpoint = request.getfixturevalue("s3_server")
    return {
        "READINGS_ARCHIVE_URL": f"s3://{BUCKET}/{tmp_path.name}/readings",
        "READINGS_ARCHIVE_S3_ENDPOINT": endpoint,
        "READINGS_ARCHIVE_S3_ACCESS_KEY": "test",
        "READINGS_ARCHIVE_S3_SECRET_KEY": "test",
    }


@pytest.fixture
def retention(settings, tmp_path):
    """Sets the retention as the environment would (through ``config.load``); returns the config."""

    def configure(days: str | None = "90", **variables):
        environment = {"DEBUG": "true", "READINGS_ARCHIVE_URL": f"file://{tmp_path}/archive", **variables}
        if days is not None:
            environment["READINGS_RETENTION_DAYS"] = days
        settings.RETENTION = load(environment).retention
        return settings.RETENTION

    return configure


@pytest.fixture
def history():
    """Minted readings of three meters in an old month (one batch), recorded ones in this month. The old month's
    readings land in the default partition; ``partitions_ensure`` gives them their month, as the hourly task
    does."""
    meters = [make_meter() for _ in range(3)]
    batch = MintBatch.objects.create(
        status=MintBatch.Status.CONFIRMED, signature="ArchivedSig1", raw_transaction=b"tx", last_valid_block_height=1,
        mint_address="Mint1", context_slot=42, reading_count=30,
    )  # fmt: skip
    old = [
        reading(meter, OLD_MONTH + timedelta(minutes=15 * slot), Status.MINTED, batch=batch)
        for slot in range(10)
        for meter in meters
    ]
    recent = [reading(meter, RECENT, Status.RECORDED) for meter in meters]
    old, recent = MeterReading.objects.bulk_create(old), MeterReading.objects.bulk_create(recent)
    partitions_ensure()
    assert partition_name(OLD_MONTH) in [p.name for p in readings_partitions()]
    return old, recent


def reading(meter, moment: datetime, status: str, *, batch=None, kwh: str = "1.250000001") -> MeterReading:
    minted = status == Status.MINTED
    return MeterReading(
        user_id=meter.owner_id, meter=meter, wallet_address=meter.wallet_address, kwh_amount=Decimal(kwh),
        mintable_kwh=Decimal(kwh), reading_timestamp=moment, status=status, minted=minted, batch=batch,
        mint_tx_signature=batch.signature if minted else None, token_amount=1_250_000_001 if minted else None,
        token_ratio=Decimal("1"), token_decimals=9, flags=["gap"] if minted else [], telemetry={"v": "230.1"},
    )  # fmt: skip


def rollups() -> dict:
    """Every rollup a surface reads: the fleet, per meter, per meter-hour (deltas included)."""
    return {
        "fleet": fleet_totals(),
        "meters": rollup_totals(MeterRollup, group_by="meter_id"),
        "hours": rollup_totals(MeterHourRollup, group_by="hour"),
    }


def run(*arguments: str) -> str:
    out = io.StringIO()
    call_command(*arguments, stdout=out)
    return out.getvalue()


def flip_a_byte(url: str, config, *, at: float = 0.5) -> None:
    """Flip the byte at fraction ``at`` of the file (0.5: among the data pages, 0.999: in the footer)."""
    filesystem, path = filesystem_for(url, config)
    with filesystem.open_input_stream(path) as stream:
        data = bytearray(stream.read())
    data[int(len(data) * at)] ^= 0xFF
    with filesystem.open_output_stream(path) as stream:
        stream.write(bytes(data))


def test_without_a_retention_nothing_is_archived(retention, history):
    retention(days=None)
    output = run("readings_archive")

    assert "READINGS_RETENTION_DAYS is not set" in output
    assert partition_name(OLD_MONTH) in [p.name for p in readings_partitions()]
    assert not ArchivedPartition.objects.exists() and MeterReading.objects.count() == 33


def test_an_expired_month_is_archived_verified_and_dropped_and_its_readings_stay_verifiable(
    retention, destination, history
):
    config = retention(**destination)
    old, recent = history
    before = rollups()

    output = run("readings_archive")

    name = partition_name(OLD_MONTH)
    assert f"{name}: archived: 30 readings" in output
    assert name not in [p.name for p in readings_partitions()]  # detached and dropped
    assert set(MeterReading.objects.values_list("pk", flat=True)) == {r.pk for r in recent}
    assert rollups() == before  # a dropped partition fires no trigger: the rollups keep the history
    attempt = ArchivedPartition.objects.get()
    assert (attempt.status, attempt.rows, attempt.meters) == (Archived.DROPPED, 30, 3)
    assert attempt.kwh_sum == Decimal("37.500000030") and attempt.token_units_sum == 30 * 1_250_000_001
    filesystem, path = filesystem_for(attempt.url, config)
    with filesystem.open_input_stream(path.removesuffix(".parquet") + ".manifest.json") as stream:
        assert json.loads(stream.read()) == attempt.manifest  # the manifest beside the file is the same
    with filesystem.open_input_file(path) as handle:
        schema = pq.read_schema(handle)
    assert schema.field("kwh_amount").type == pa.decimal128(18, 9)  # exact decimals, never floats
    assert schema.field("token_ratio").type == pa.decimal256(40, 20)
    assert schema.field("reading_timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("id").type == pa.uuid()

    found = json.loads(run("reading_find", str(old[7].pk)))

    assert found["found_in"] == {
        "archive": attempt.url, "partition": name, "manifest_id": attempt.pk, "sha256": attempt.sha256,
        "verified": True,
    }  # fmt: skip
    assert found["reading"]["kwh_amount"] == "1.250000001" and found["reading"]["token_amount"] == 1_250_000_001
    assert found["reading"]["flags"] == ["gap"] and found["reading"]["telemetry"] == {"v": "230.1"}
    assert found["reading"]["reading_timestamp"] == old[7].reading_timestamp.isoformat().replace("+00:00", "Z")
    assert found["batch"]["signature"] == "ArchivedSig1" and found["batch"]["context_slot"] == 42
    assert json.loads(run("reading_find", str(recent[0].pk)))["found_in"] == {"table": "live"}


def test_a_dry_run_says_what_would_be_archived_and_exports_nothing(retention, history):
    retention()
    output = run("readings_archive", "--dry-run")

    assert f"{partition_name(OLD_MONTH)}: would_archive" in output
    assert f"{partition_name(RECENT)}: kept" in output
    assert not ArchivedPartition.objects.exists() and MeterReading.objects.count() == 33


@pytest.mark.parametrize("status", [Status.PENDING, Status.FAILED, Status.HELD])
def test_a_month_holding_a_reading_that_is_not_final_is_skipped_with_the_reason(retention, history, status):
    retention()
    old, _ = history
    MeterReading.objects.filter(pk=old[0].pk).update(status=status, minted=False, mint_tx_signature=None)

    output = run("readings_archive")

    assert f"{partition_name(OLD_MONTH)}: skipped: holds readings that are not final (1 {status})" in output
    assert partition_name(OLD_MONTH) in [p.name for p in readings_partitions()]
    assert not ArchivedPartition.objects.exists() and MeterReading.objects.count() == 33


def test_a_file_corrupted_before_its_verification_is_not_dropped_and_the_command_fails(retention, history, monkeypatch):
    """The destination corrupting a file cannot be provoked on demand: the export is wrapped to flip one byte
    of the file it uploaded, before the verification reads it back."""
    config = retention()
    export = services.partition_export

    def export_then_corrupt(**kwargs):
        attempt = export(**kwargs)
        flip_a_byte(attempt.url, config)
        return attempt

    monkeypatch.setattr(services, "partition_export", export_then_corrupt)
    with pytest.raises(CommandError, match="nothing of it was dropped"):
        run("readings_archive")

    assert partition_name(OLD_MONTH) in [p.name for p in readings_partitions()]
    assert MeterReading.objects.count() == 33
    attempt = ArchivedPartition.objects.get()
    assert attempt.status == Archived.FAILED and "reads back as sha256" in attempt.error

    assert archive_failing() == 1
    monkeypatch.undo()  # the next run exports anew and archives
    assert "archived: 30 readings" in run("readings_archive")
    assert archive_failing() == 0


def test_a_reading_arriving_between_export_and_drop_is_not_lost(retention, history):
    config = retention()
    partition = next(p for p in readings_partitions() if p.name == partition_name(OLD_MONTH))
    attempt = services.partition_export(partition=partition, config=config)
    assert services.archive_verify(attempt=attempt) is None
    late = MeterReading.objects.bulk_create([reading(make_meter(), OLD_MONTH + timedelta(days=3), Status.RECORDED)])[0]

    action, reason = services.partition_drop(attempt=attempt)

    assert action == "changed" and "'rows': 31" in reason
    assert MeterReading.objects.filter(pk=late.pk).exists()
    assert ArchivedPartition.objects.get().status == Archived.CHANGED

    assert "archived: 31 readings" in run("readings_archive")  # the next run exports it again, late one included
    assert reading_find(reading_id=late.pk).where["partition"] == partition.name


def test_an_update_between_export_and_drop_keeps_the_partition(retention, history):
    config = retention()
    old, _ = history
    partition = next(p for p in readings_partitions() if p.name == partition_name(OLD_MONTH))
    attempt = services.partition_export(partition=partition, config=config)
    MeterReading.objects.filter(pk=old[0].pk).update(last_error="touched")  # no figure changes: the digest does

    assert services.partition_drop(attempt=attempt)[0] == "changed"
    assert partition.name in [p.name for p in readings_partitions()]


@pytest.mark.parametrize("at", [0.5, 0.999], ids=["data", "footer"])
def test_reading_find_refuses_an_archive_file_that_no_longer_matches_its_manifest(retention, history, at):
    """A damaged file is named as not matching its manifest, whether it still parses (a data byte) or not (its
    footer: pyarrow cannot read it at all, which once escaped as a bare OSError)."""
    config = retention()
    old, _ = history
    run("readings_archive")
    flip_a_byte(ArchivedPartition.objects.get().url, config, at=at)

    with pytest.raises(CommandError, match="reads back as sha256"):
        run("reading_find", str(old[0].pk))


def test_reading_find_of_an_unknown_id_says_so(retention, history):
    retention()
    with pytest.raises(CommandError, match="No reading 00000000-0000-0000-0000-000000000001"):
        run("reading_find", "00000000-0000-0000-0000-000000000001")
    with pytest.raises(CommandError, match="not a reading id"):
        run("reading_find", "42")


def test_the_parquet_file_holds_every_column_exactly(retention, history):
    config = retention()
    old, _ = history
    partition = next(p for p in readings_partitions() if p.name == partition_name(OLD_MONTH))
    attempt = services.partition_export(partition=partition, config=config)

    table = pq.read_table(Path(filesystem_for(attempt.url, config)[1]))
    rows = {row["id"]: row for row in table.to_pylist()}
    stored = MeterReading.objects.get(pk=old[3].pk)
    row = rows[stored.pk]
    for field in MeterReading._meta.concrete_fields:
        archived = row[field.column]
        archived = json.loads(archived) if field.get_internal_type() == "JSONField" else archived
        assert archived == getattr(stored, field.attname), field.column


def test_a_late_reading_for_an_archived_month_is_kept_and_archived_again(retention, history):
    """After the drop, a reading of that month lands in the default partition; partitions_ensure gives the
    month a partition again, and the next run archives it in a file of its own: both files stay findable."""
    retention()
    old, _ = history
    run("readings_archive")
    late = MeterReading.objects.bulk_create([reading(make_meter(), OLD_MONTH + timedelta(days=9), Status.RECORDED)])[0]
    partitions_ensure()

    assert "archived: 1 readings" in run("readings_archive")
    first, second = ArchivedPartition.objects.order_by("id")
    assert (first.partition, first.status, second.status) == (second.partition, Archived.DROPPED, Archived.DROPPED)
    assert reading_find(reading_id=late.pk).where["manifest_id"] == second.pk
    assert reading_find(reading_id=old[0].pk).where["manifest_id"] == first.pk


def test_a_second_run_finds_the_lock_taken_and_does_nothing_then_the_beat_task_archives(retention, history):
    retention()
    with psycopg.connect(database_url(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [services.RUN_LOCK])
        assert "Another readings_archive run holds the lock; nothing done." in run("readings_archive")
        assert partition_name(OLD_MONTH) in [p.name for p in readings_partitions()]
        other.execute("SELECT pg_advisory_unlock(%s)", [services.RUN_LOCK])  # a closing backend frees it later

    assert archive_readings() == 1  # the daily beat task, once the other run is over
    assert ArchivedPartition.objects.get().status == Archived.DROPPED


def test_an_unwritable_destination_fails_the_run_keeps_the_month_and_raises_the_gauge(retention, history):
    retention(READINGS_ARCHIVE_URL="file:///proc/gridtoken-archive")  # no directory can be made there

    with pytest.raises(CommandError, match="nothing of it was dropped"):
        run("readings_archive")

    assert partition_name(OLD_MONTH) in [p.name for p in readings_partitions()]
    attempt = ArchivedPartition.objects.get()
    assert attempt.status == Archived.FAILED and "could not write file:///proc/gridtoken-archive" in attempt.error
    assert archive_failing() == 1


def test_a_long_query_on_the_readings_table_leaves_the_month_for_the_next_run(retention, history):
    config = retention()
    partition = next(p for p in readings_partitions() if p.name == partition_name(OLD_MONTH))
    attempt = services.partition_export(partition=partition, config=config)
    assert services.archive_verify(attempt=attempt) is None
    with psycopg.connect(database_url()) as reader:  # a transaction still open: it holds the table's lock
        reader.execute("SELECT count(*) FROM meters_meterreading")

        action, reason = services.partition_drop(attempt=attempt)

        assert action == "busy" and "next run tries again" in reason
        assert partition.name in [p.name for p in readings_partitions()]
        reader.rollback()
    assert "archived: 30 readings" in run("readings_archive")
