"""The retention's export, verification and drop of one month, timed on a month of N readings (issue 21).

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/gridtoken REDIS_URL=redis://127.0.0.1:6379/5
    python bench/archive.py --readings 500000          # builds, archives to a temporary directory, drops the db

1. Its own database (DATABASE_URL's name + ``_archive``), created and migrated, dropped at the end.
2. ``--meters`` meters and, in the month that ended about five months ago, ``--readings`` readings 15 minutes
   apart per meter in the shape ingestion stores (90 % minted in confirmed batches of 50 with a signature
   each, the rest recorded; every kWh with three decimals), one ``INSERT ... SELECT generate_series`` per
   chunk through the readings table's triggers; then VACUUM ANALYZE.
3. The month's size in PostgreSQL (its partition with TOAST and indexes) per reading; then each step of
   ``readings_archive`` on it, timed: export (readings/s, Parquet bytes per reading), verification from the
   destination, the drop's re-check and drop; and one ``reading_find`` of a reading in the archived file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import drop_database, prepare_database  # noqa: E402 (bench/ on the path)

BATCH_READINGS = 50


def say(message: str) -> None:
    print(f"[archive {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=500_000)
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument("--chunk", type=int, default=100_000, help="readings per build statement")
    return parser.parse_args()


BUILD = """
WITH meters AS (
    SELECT id, owner_id, wallet_address, row_number() OVER (ORDER BY serial) - 1 AS n FROM meters_meter
), slots AS (
    SELECT m.*, s, (s * %(meters)s + m.n) AS k, %(month)s::timestamptz + s * interval '15 minutes' AS moment
    FROM meters m CROSS JOIN generate_series(%(first)s, %(last)s) s
), batches AS (
    INSERT INTO minting_mintbatch (id, status, signature, raw_transaction, last_valid_block_height, context_slot,
        instruction_wallets, mint_address, reading_count, total_token_amount, send_attempts, error, created_at,
        sent_at, settled_at)
    SELECT md5('batch-' || g)::uuid, 'confirmed', left(md5('sig-' || g) || md5('sig2-' || g) || md5('s3-' || g), 88),
        '\\x01'::bytea, 1, g, '[]', 'BenchMint111111111111111111111111111111111', %(per_batch)s, 0, 1, '',
        %(month)s, NULL, %(month)s
    FROM generate_series(%(first_batch)s, %(last_batch)s) g
    ON CONFLICT DO NOTHING
)
INSERT INTO meters_meterreading (id, user_id, meter_id, wallet_address, kwh_amount, reading_timestamp, source,
    generated_kwh, consumed_kwh, interval_secs, mintable_kwh, flags, submitted_at, minted, mint_tx_signature,
    status, token_amount, token_ratio, token_decimals, attempts, next_attempt_at, last_error, telemetry, batch_id)
SELECT gen_random_uuid(), owner_id, id, wallet_address, kwh, moment, 'interval', NULL, NULL, 900, kwh, '[]',
    moment + interval '7 seconds' + random() * interval '2 seconds', minted,
    CASE WHEN minted THEN left(md5('sig-' || k / %(per_batch)s) || md5('sig2-' || k / %(per_batch)s)
        || md5('s3-' || k / %(per_batch)s), 88) END,
    CASE WHEN minted THEN 'minted' ELSE 'recorded' END, CASE WHEN minted THEN (kwh * 1000000000)::bigint END,
    1, 9, 0, moment, '', '{}', CASE WHEN minted THEN md5('batch-' || k / %(per_batch)s)::uuid END
FROM (SELECT slots.*, 0.001 + round((random() * 2)::numeric, 3) AS kwh, k %% 10 <> 9 AS minted FROM slots) r
"""


def build(*, readings: int, meters: int, chunk: int, month: datetime) -> None:
    from django.db import connection, transaction

    from meters.models import Meter, User
    from meters.services.rollups import rollups_fold_all

    owner = User.objects.create_user("bench-archive-owner", password="bench-password-1")
    Meter.objects.bulk_create(
        Meter(serial=f"ARCH-{i:06d}", owner=owner, wallet_address=f"{i:044d}") for i in range(meters)
    )
    slots, per_chunk, started = readings // meters, max(1, chunk // meters), time.monotonic()
    for first in range(0, slots, per_chunk):
        last = min(first + per_chunk, slots) - 1
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                BUILD,
                {
                    "meters": meters,
                    "month": month,
                    "first": first,
                    "last": last,
                    "per_batch": BATCH_READINGS,
                    "first_batch": first * meters // BATCH_READINGS,
                    "last_batch": ((last + 1) * meters - 1) // BATCH_READINGS,
                },
            )
        rollups_fold_all()
        say(f"built {(last + 1) * meters:,} readings ({(last + 1) * meters / (time.monotonic() - started):,.0f}/s)")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE meters_meterreading")


def main() -> None:
    args = parse_args()
    url = f"{os.environ.get('DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/gridtoken')}_archive"
    prepare_database(url, resume=False)
    directory = tempfile.mkdtemp(prefix="gridtoken-bench-archive-")
    os.environ.update(
        DATABASE_URL=url,
        DEBUG="true",
        LOG_LEVEL="ERROR",
        READINGS_RETENTION_DAYS="90",
        READINGS_ARCHIVE_URL=f"file://{directory}",
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction

    from meters.archive import services
    from meters.archive.find import reading_find
    from meters.models import MeterReading
    from meters.partitions import TABLE, partition_create, partitions_ensure, readings_partitions

    call_command("migrate", verbosity=0)
    now = datetime.now(UTC)
    month = (now - timedelta(days=150)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    partitions_ensure()  # the months ahead; the old month is built empty, as partitions_ensure would build it
    with transaction.atomic(), connection.cursor() as cursor:
        partition_create(cursor, parent=TABLE, lower=month)
    say(f"database {url.rsplit('/', 1)[1]}: {args.meters:,} meters, {args.readings:,} readings in {month:%Y-%m}")
    build(readings=args.readings, meters=args.meters, chunk=args.chunk, month=month)
    partition = next(p for p in readings_partitions() if p.lower == month)
    sample = MeterReading.objects.filter(reading_timestamp__gte=month, reading_timestamp__lt=partition.upper).first()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s), count(*) FROM " + partition.name, [partition.name])
        pg_bytes, rows = cursor.fetchone()
    with open("/proc/loadavg") as loadavg:
        say(f"load average before the export: {loadavg.read().split()[:3]}")

    started = time.monotonic()
    attempt = services.partition_export(partition=partition, config=settings.RETENTION, report=say)
    exported = time.monotonic() - started
    started = time.monotonic()
    problem = services.archive_verify(attempt=attempt)
    verified = time.monotonic() - started
    started = time.monotonic()
    action, reason = services.partition_drop(attempt=attempt)
    dropped = time.monotonic() - started
    started = time.monotonic()
    found = reading_find(reading_id=sample.pk)
    find = time.monotonic() - started
    with open("/proc/loadavg") as loadavg:
        say(f"load average after: {loadavg.read().split()[:3]}; verification: {problem or 'ok'}; drop: {reason}")

    print(f"\n| {rows:,} readings, {args.meters:,} meters | figure |")
    print("|---|---|")
    print(f"| PostgreSQL: partition with TOAST and indexes | {pg_bytes:,} bytes, {pg_bytes / rows:.0f} bytes/reading |")
    print(f"| Parquet (zstd) | {attempt.bytes:,} bytes, {attempt.bytes / rows:.1f} bytes/reading |")
    print(f"| export (snapshot, figures, write, upload) | {exported:.1f} s, {rows / exported:,.0f} readings/s |")
    print(f"| verification (hash, figures read back) | {verified:.1f} s, {rows / verified:,.0f} readings/s |")
    print(f"| drop (lock, re-check, detach, drop): {action} | {dropped:.1f} s |")
    print(f"| reading_find of an archived reading (found: {found is not None}) | {find:.2f} s |")
    drop_database(url)
    say("database dropped")


if __name__ == "__main__":
    main()
