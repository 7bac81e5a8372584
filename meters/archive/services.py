"""Retention: monthly readings partitions older than ``READINGS_RETENTION_DAYS`` are exported, read back and
verified, and only then detached and dropped (docs/RETENTION.md).

One partition at a time, each in three steps that each stop the partition's run when they fail:

1. ``partition_export``: in one REPEATABLE READ snapshot, refuse the partition while it holds a reading that is
   not final (``OPEN_STATUSES``), else compute its figures and a digest of every row, and write every row to a
   Parquet file in chunks; record the manifest (``ArchivedPartition``), then upload the file and the manifest.
2. ``archive_verify``: read the file back from the destination: its sha256 and size, its rows, meters, kWh
   and base-unit sums must equal the manifest. A difference marks the attempt ``failed``; nothing is dropped.
3. ``partition_drop``: in one transaction, lock the partition against writes, recompute its figures and
   digest, and only when they equal the export's detach and drop it. A late reading or an update since the
   export marks the attempt ``changed``: the next run exports the partition again.

Rollups, mint batches, signatures and certificates are other tables: they are kept. Detaching and dropping
a partition fires no row or statement trigger, so the rollups keep counting the archived readings.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from config.retention import RetentionConfig
from meters.archive.destination import DestinationError, archive_url, file_digest, file_open, file_upload
from meters.archive.files import SCHEMA_VERSION, Figures, parquet_figures, parquet_write, partition_figures
from meters.archive.models import ArchivedPartition
from meters.models import MeterReading
from meters.partitions import LOCK_TIMEOUT, ReadingPartition, readings_partitions

logger = logging.getLogger("meters.archive")
Status = MeterReading.Status
Archived = ArchivedPartition.Status
# Final: nothing will change the reading any more (minted, recorded, rejected). Every other status is work
# that still needs the row: the sweep and the batches (pending, minting), an operator's retry of a failed
# one, a held one's decision, window settlement (awaiting_window).
OPEN_STATUSES = (Status.PENDING, Status.MINTING, Status.FAILED, Status.HELD, Status.AWAITING_WINDOW)
# One run at a time (a session-level lock: it spans the run's many transactions).
RUN_LOCK = 0x4754_4152_4348  # "GTARCH"


@dataclass(frozen=True)
class Outcome:
    partition: str
    action: str  # kept, skipped, would_archive, archived, failed, changed, busy
    reason: str

    @property
    def failed(self) -> bool:
        return self.action == "failed"


def retention_cutoff(config: RetentionConfig, now: datetime) -> datetime | None:
    """Partitions whose upper bound is at or before this moment are expired; None when nothing expires."""
    return None if config.days is None else now - timedelta(days=config.days)


def readings_archive(*, dry_run: bool = False, report: Callable[[str], None] = logger.info) -> list[Outcome]:
    """Archive every expired partition (oldest first); one outcome per partition. ``dry_run`` exports nothing
    and says what would be archived and why not."""
    config: RetentionConfig = settings.RETENTION
    cutoff = retention_cutoff(config, timezone.now())
    if cutoff is None:
        report("READINGS_RETENTION_DAYS is not set: every reading is kept, nothing to archive.")
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RUN_LOCK])
        if not cursor.fetchone()[0]:
            report("Another readings_archive run holds the lock; nothing done.")
            return []
    try:
        return [_archive_one(partition, cutoff, config, dry_run, report) for partition in readings_partitions()]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [RUN_LOCK])


def archive_failing() -> int:
    """Partitions whose newest archive attempt did not verify (the /metrics gauge; the table holds a few rows a
    month, so this reads it whole)."""
    newest = ArchivedPartition.objects.order_by("partition", "-id").distinct("partition").values_list("status")
    return sum(status == Archived.FAILED for (status,) in newest)


def _archive_one(
    partition: ReadingPartition, cutoff: datetime, config, dry_run: bool, report: Callable[[str], None]
) -> Outcome:
    def done(action: str, reason: str) -> Outcome:
        report(f"{partition.name}: {action}: {reason}")
        if action == "failed":  # for the logs' alerting too, whoever called
            logger.error("readings_archive %s failed: %s", partition.name, reason)
        return Outcome(partition.name, action, reason)

    if partition.upper > cutoff:
        return done("kept", f"ends {partition.upper:%Y-%m-%d}, within the retention (expired: before {cutoff:%F})")
    if dry_run:
        opened = _open_readings(partition.name)
        if opened:
            return done("skipped", _open_reason(opened))
        return done("would_archive", f"ends {partition.upper:%Y-%m-%d}, before {cutoff:%F}; every reading final")
    report(f"{partition.name}: exporting (ends {partition.upper:%Y-%m-%d}, before {cutoff:%F})")
    try:
        attempt = partition_export(partition=partition, config=config, report=report)
    except DestinationError as error:
        return done("failed", f"{error}; nothing dropped")
    if isinstance(attempt, str):
        return done("skipped", attempt)
    problem = archive_verify(attempt=attempt)
    if problem:
        return done("failed", f"{attempt.url} {problem}; nothing dropped")
    return done(*partition_drop(attempt=attempt))


def _open_readings(table: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT status, count(*) FROM "{table}" WHERE status = ANY(%s) GROUP BY status ORDER BY status',  # noqa: S608
            [list(OPEN_STATUSES)],
        )
        return dict(cursor.fetchall())


def _open_reason(opened: dict[str, int]) -> str:
    counts = ", ".join(f"{count} {status}" for status, count in opened.items())
    return (
        f"holds readings that are not final ({counts}): settle them first (failed: the admin's 'Retry selected "
        "failed readings'; held: approve or reject); the next run archives it"
    )


def partition_export(
    *, partition: ReadingPartition, config: RetentionConfig, report: Callable[[str], None] = logger.info
) -> ArchivedPartition | str:
    """Export one partition to the destination and record its manifest; the reason it was refused when it
    holds a reading that is not final (a string). The manifest row is written before the upload, so a
    destination that fails leaves a ``failed`` attempt behind (the /metrics gauge), then raises."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gridtoken-archive-") as directory:
        local = Path(directory) / "readings.parquet"
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            opened = _open_readings(partition.name)
            if opened:
                return _open_reason(opened)
            figures, digest = partition_figures(cursor, partition.name)
            with connection.chunked_cursor() as rows:
                written = parquet_write(rows, partition.name, local, progress=report)
        if written != figures.rows:  # one snapshot: the cursor reads exactly the rows it counted
            raise DestinationError(f"wrote {written:,} readings of {figures.rows:,} counted in the same snapshot")
        exported_at = timezone.now()
        name = f"{partition.name}-{exported_at:%Y%m%dT%H%M%S%fZ}.parquet"
        url = archive_url(config, name)
        sha256, size = file_digest(local.as_uri(), config)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "partition": partition.name,
            "lower": partition.lower.isoformat(),
            "upper": partition.upper.isoformat(),
            "file": name,
            "bytes": size,
            "sha256": sha256,
            "rows_digest": digest,
            "exported_at": exported_at.isoformat(),
            **figures.as_json(),
        }
        attempt = ArchivedPartition.objects.create(
            partition=partition.name,
            lower=partition.lower,
            upper=partition.upper,
            url=url,
            bytes=size,
            sha256=sha256,
            schema_version=SCHEMA_VERSION,
            rows=figures.rows,
            meters=figures.meters,
            kwh_sum=figures.kwh_sum,
            mintable_kwh_sum=figures.mintable_kwh_sum,
            token_units_sum=figures.token_units_sum,
            rows_digest=digest,
            manifest=manifest,
            exported_at=exported_at,
        )
        try:
            file_upload(local, url, config)
            file_upload(
                _manifest_file(Path(directory), manifest), f"{url.removesuffix('.parquet')}.manifest.json", config
            )
        except DestinationError as error:
            ArchivedPartition.objects.filter(pk=attempt.pk).update(status=Archived.FAILED, error=str(error))
            raise
    elapsed = time.monotonic() - started
    report(
        f"{partition.name}: exported {figures.rows:,} readings to {url}: {size:,} bytes "
        f"({size / max(figures.rows, 1):.1f} bytes/reading, {figures.rows / max(elapsed, 1e-9):,.0f} readings/s)"
    )
    return attempt


def _manifest_file(directory: Path, manifest: dict) -> Path:
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def _expected(attempt: ArchivedPartition) -> Figures:
    return Figures.from_json(attempt.manifest)


def archive_verify(*, attempt: ArchivedPartition) -> str | None:
    """Read the attempt's file back from the destination; the difference from its manifest (the attempt is
    then ``failed``), or None (``verified``)."""
    try:
        problem = _file_problem(attempt, settings.RETENTION)
    except DestinationError as error:
        problem = f"could not be read back: {error}"
    if problem:
        ArchivedPartition.objects.filter(pk=attempt.pk).update(status=Archived.FAILED, error=problem)
        return problem
    ArchivedPartition.objects.filter(pk=attempt.pk).update(status=Archived.VERIFIED, verified_at=timezone.now())
    return None


def _file_problem(attempt: ArchivedPartition, config: RetentionConfig) -> str | None:
    sha256, size = file_digest(attempt.url, config)
    if (sha256, size) != (attempt.sha256, attempt.bytes):
        return f"reads back as sha256 {sha256} ({size:,} bytes); its manifest says {attempt.sha256} ({attempt.bytes:,})"
    try:
        with file_open(attempt.url, config) as handle:
            figures, version = parquet_figures(handle)
    except (pa.ArrowException, OSError) as error:
        return f"cannot be read as Parquet: {error}"
    expected = _expected(attempt)
    if (figures, version) != (expected, attempt.schema_version):
        shown = f"{expected.as_json()} (schema {attempt.schema_version})"
        return f"holds {figures.as_json()} (schema {version}); its manifest says {shown}"
    return None


def partition_drop(*, attempt: ArchivedPartition) -> tuple[str, str]:
    """Detach and drop the verified attempt's partition when it still holds exactly what was exported; the
    outcome's action (archived, changed, busy) and reason."""
    parent = MeterReading._meta.db_table
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            # Writes into the partition wait from here; reads of it and every other partition go on.
            cursor.execute(f'LOCK TABLE "{attempt.partition}" IN EXCLUSIVE MODE')
            figures, digest = partition_figures(cursor, attempt.partition)
            if (figures, digest) != (_expected(attempt), attempt.rows_digest):
                reason = f"changed after the export: now {figures.as_json()}; exported again next run"
                ArchivedPartition.objects.filter(pk=attempt.pk).update(status=Archived.CHANGED, error=reason)
                return "changed", reason
            cursor.execute(f'ALTER TABLE "{parent}" DETACH PARTITION "{attempt.partition}"')
            cursor.execute(f'DROP TABLE "{attempt.partition}"')
            ArchivedPartition.objects.filter(pk=attempt.pk).update(status=Archived.DROPPED, dropped_at=timezone.now())
    except OperationalError as error:  # lock_timeout: a long query held the table; nothing changed
        return "busy", f"the readings table stayed locked for {LOCK_TIMEOUT} ({error}); the next run tries again"
    return "archived", f"{attempt.rows:,} readings in {attempt.url} ({attempt.bytes:,} bytes), verified, dropped"
