"""The online partitioning of a populated readings table (migration 0009), timed step by step.

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/gridtoken
    python bench/repartition.py --readings 500000              # uuid4 ids, as stored so far
    python bench/repartition.py --readings 500000 --ids v7     # time-ordered ids (UUIDv7 layout)

1. Its own database (DATABASE_URL's name + ``_repartition``), migrated to meters 0008 (unpartitioned).
2. ``--readings`` readings of ``--meters`` meters every 6 hours going back from now (so they span months),
   inserted slot by slot as ingestion stores them, through the table's rollup triggers; then VACUUM ANALYZE.
3. ``meters.repartition``'s steps one by one (prepare, copy with its progress lines, verify, swap), each
   timed; then bytes per reading before (the plain table) and after (every partition, TOAST and index).
4. The database is dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scale import drop_database, prepare_database  # noqa: E402
from gridtoken.ids import uuid7_sql  # noqa: E402

IDS = {
    "v4": "gen_random_uuid()",
    # UUIDv7 of the reading's time in milliseconds, plus the meter's rank: ids in the order readings are stored.
    "v7": uuid7_sql("(extract(epoch FROM s.at) * 1000)::bigint + g.i"),
}
POPULATE = """
INSERT INTO meters_meterreading (id, wallet_address, kwh_amount, reading_timestamp, submitted_at, minted, status,
    attempts, next_attempt_at, last_error, telemetry, meter_id, user_id, flags, mintable_kwh, source)
SELECT {id}, m.wallet_address, 1.25, s.at, s.at, false, 'recorded', 0, s.at, '', '{{}}', m.id, m.owner_id,
    '[]', 0, 'interval'
FROM (SELECT now() - make_interval(hours => 6 * %(slot)s) AS at) s
CROSS JOIN LATERAL (SELECT row_number() OVER () AS i, * FROM meters_meter) m
CROSS JOIN LATERAL (SELECT m.i::int AS i) g
"""


def say(message: str) -> None:
    print(f"[repartition {time.strftime('%H:%M:%S')}] {message}", flush=True)


def readings_bytes(cursor) -> int:
    """Heap, TOAST and indexes of the readings table, summed over its partitions if it has any."""
    cursor.execute(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), pg_total_relation_size('meters_meterreading'))"
        " FROM pg_partition_tree('meters_meterreading') WHERE isleaf"
    )
    return int(cursor.fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=500_000)
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument("--chunk", type=int, default=20_000, help="rows per copy transaction")
    parser.add_argument("--ids", choices=sorted(IDS), default="v4")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gridtoken") + "_repartition"
    prepare_database(url, resume=False)
    os.environ.update(DATABASE_URL=url, DEBUG="true", LOG_LEVEL="ERROR")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from solders.keypair import Keypair

    from meters import repartition
    from meters.models import Meter, User

    call_command("migrate", "meters", "0008", verbosity=0)
    call_command("migrate", "minting", verbosity=0)
    owner = User.objects.create_user("repartition-owner")
    Meter.objects.bulk_create(
        Meter(serial=f"REP-{i:06d}", owner=owner, wallet_address=str(Keypair().pubkey())) for i in range(args.meters)
    )
    began = time.monotonic()
    for slot in range(args.readings // args.meters):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(POPULATE.format(id=IDS[args.ids]), {"slot": args.readings // args.meters - slot})
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE meters_meterreading")
        cursor.execute("SELECT count(*) FROM meters_meterreading")
        rows = cursor.fetchone()[0]
        before = readings_bytes(cursor)
    say(f"{rows:,} readings ({args.ids} ids) stored in {time.monotonic() - began:.0f} s; partitioning")

    timings = {}
    for step, run in (
        ("prepare", lambda: repartition.prepare(out=say)),
        ("copy", lambda: repartition.copy(chunk_rows=args.chunk, out=say)),
        ("verify", lambda: repartition.verify(out=say)),
        ("swap (with ANALYZE)", lambda: repartition.swap(out=say)),
    ):
        began = time.monotonic()
        run()
        timings[step] = time.monotonic() - began
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE meters_meterreading")
        after = readings_bytes(cursor)

    print("\n| step | seconds | rows/s |\n|---|---|---|")
    for step, seconds in timings.items():
        print(f"| {step} | {seconds:.1f} | {rows / seconds:,.0f} |")
    print(f"\n| bytes per reading ({args.ids} ids) | before (plain) | after (partitioned) |\n|---|---|---|")
    print(f"| heap, TOAST and every index | {before / rows:.0f} | {after / rows:.0f} |")
    drop_database(url)
    say("database dropped")


if __name__ == "__main__":
    main()
