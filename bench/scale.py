"""Every surface at millions of readings against the same surfaces on a small table, in one run (issue 21).

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/gridtoken REDIS_URL=redis://127.0.0.1:6379/5
    python bench/scale.py --readings 2000000               # builds, measures at 50,000 and at 2 M, drops
    python bench/scale.py --readings 20000000 --keep       # the full-size run; rerun with --resume after a stop
    python bench/scale.py --measure-only --surface metrics # a kept database measured again, as it is

1. Its own database (DATABASE_URL's name + ``_scale``), created and migrated (dropped first unless
   ``--resume``), dropped at the end unless ``--keep``.
2. A seed through the real batch path (``readings_submit_batch``): one reading per meter, ``--meters``
   meters, most owned by one aggregator, ``--producers`` owning one each.
3. History in the seed's shape: time-shifted copies 15 minutes apart per meter, going back in time (20 M
   readings of 1,000 meters reach back ~7 months), built with one ``INSERT ... SELECT generate_series`` per
   chunk (``--chunk`` rows) through the readings table's own triggers, so the rollups are built as ingestion
   builds them; minted ones (90 %) belong to confirmed batches of 50, the rest recorded, held, failed, a few
   flagged. The monthly partitions the history will fill are created first (``partitions_ensure(since=)``),
   so no row waits in the default partition. Each chunk is committed and folded, so a stopped run resumes
   where it was (``--resume``). A progress line per chunk.
4. At ``--small`` readings, then at ``--readings`` (after VACUUM ANALYZE), every surface is timed
   ``--samples`` times in-process (Django's test client, no HTTP server): the device's single post, a 100-item
   batch post, the producer's stats and my-readings (page 1, by meter, a deep page, by cursor), the operator's
   dashboard, its stats.json, the charts' JSON (the operator's fleet.json over a day, over two days of minute
   rows; energy.json of the producer over 48 h and of the fleet owner over 30 days), the admin readings list
   (plain and filtered) and mint batches list, Prometheus' /metrics; the rollup deltas are folded before each
   surface, as the beat task does every 5 s. Printed: each p95 at both sizes and their ratio, bytes per
   reading (every partition's heap, TOAST and indexes) and per index, each partition's rows and size, the
   commit and the load average.
5. ``--measure-only``: no build; the kept database (``--keep``) measured once more as it is, every surface
   or those whose name contains ``--surface`` (after a fix, to measure that surface again at full size).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SLOT = timedelta(minutes=15)
BATCH_READINGS = 50


def say(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=2_000_000, help="readings at the large size")
    parser.add_argument("--small", type=int, default=50_000, help="readings at the small size")
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument("--producers", type=int, default=20, help="owners of one meter each (the rest: one fleet)")
    parser.add_argument("--samples", type=int, default=30, help="requests per surface and size")
    parser.add_argument("--chunk", type=int, default=250_000, help="readings per build statement")
    parser.add_argument("--resume", action="store_true", help="keep the database a stopped run left")
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    parser.add_argument("--measure-only", action="store_true", help="measure a kept database once, build nothing")
    parser.add_argument("--surface", default="", help="with --measure-only: only surfaces whose name has this")
    args = parser.parse_args()
    if args.measure_only:
        args.resume = args.keep = True
    return args


def scale_database_url() -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gridtoken")
    return f"{base}_scale"


def admin_connection(url: str):
    import psycopg

    return psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True)


def prepare_database(url: str, *, resume: bool) -> None:
    name = url.rsplit("/", 1)[1]
    with admin_connection(url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not resume:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not exists or not resume:
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    from django.db import connections

    connections.close_all()
    with admin_connection(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


class World:
    """The bench's users, meters and credentials; created once, found again on --resume."""

    FLEET, PRODUCER, OPERATOR = "scale-fleet", "scale-producer-{}", "scale-operator"

    def __init__(self, meters: int, producers: int) -> None:
        from django.db import transaction
        from rest_framework.authtoken.models import Token
        from solders.keypair import Keypair

        from meters.models import Meter, User
        from meters.services.api_keys import api_key_create

        with transaction.atomic():
            if not User.objects.filter(username=self.FLEET).exists():
                fleet = User.objects.create_user(self.FLEET, password="scale-password-1")
                owners = [fleet] * (meters - producers) + [
                    User.objects.create_user(self.PRODUCER.format(i), password="scale-password-1")
                    for i in range(producers)
                ]
                Meter.objects.bulk_create(
                    Meter(serial=f"SCALE-{i:06d}", owner=owner, wallet_address=str(Keypair().pubkey()))
                    for i, owner in enumerate(owners)
                )
                User.objects.create_user(self.OPERATOR, password="scale-password-1", is_staff=True, is_superuser=True)
                # Meters of their own for the timed posts: no history, so every post is new and stored.
                Meter.objects.bulk_create(
                    Meter(serial=f"SCALE-POST-{i:04d}", owner=fleet, wallet_address=str(Keypair().pubkey()))
                    for i in range(200)
                )
        self.fleet = User.objects.get(username=self.FLEET)
        self.producer = User.objects.get(username=self.PRODUCER.format(0))
        self.operator = User.objects.get(username=self.OPERATOR)
        self.history_meters = Meter.objects.exclude(serial__startswith="SCALE-POST-")
        self.post_meters = list(Meter.objects.filter(serial__startswith="SCALE-POST-").order_by("serial"))
        self.fleet_meter = Meter.objects.filter(owner=self.fleet, serial__startswith="SCALE-0").order_by("serial")[0]
        self.tokens = {user.pk: Token.objects.get_or_create(user=user)[0].key for user in (self.fleet, self.producer)}
        self.fleet_key = api_key_create(owner=self.fleet, scope="fleet")[1]
        self.device_keys = {
            m.pk: api_key_create(owner=self.fleet, scope="device", meter=m)[1] for m in self.post_meters
        }


def seed(world: World) -> None:
    """One reading per history meter through the real batch path: the shape every copy takes."""
    from django.utils import timezone

    from meters.models import MeterReading
    from meters.selectors import Caller
    from meters.services.batch import readings_submit_batch

    if MeterReading.objects.exists():
        return
    now = timezone.now().replace(second=0, microsecond=0)
    base = now - timedelta(minutes=now.minute % 15)
    meters = list(world.history_meters.select_related("owner"))
    for owner in {meter.owner_id for meter in meters}:
        items = [
            {"meter_serial": m.serial, "kwh": "1.250", "timestamp": base.isoformat()}
            for m in meters
            if m.owner_id == owner
        ]
        caller = Caller(user_id=owner, scope="fleet", key_id=uuid.uuid4())
        for start in range(0, len(items), 1000):
            result = readings_submit_batch(caller=caller, readings=items[start : start + 1000], now=now)
            if result["failed_count"]:
                raise SystemExit(f"the seed was refused: {result['results'][:2]}")


BUILD = """
WITH seed AS (  -- each meter's newest reading (the copies go back in time), by index
    SELECT r.* FROM meters_meter m CROSS JOIN LATERAL (
        SELECT * FROM meters_meterreading x WHERE x.meter_id = m.id AND x.source <> 'window'
        ORDER BY x.reading_timestamp DESC LIMIT 1
    ) r
    WHERE m.serial NOT LIKE 'SCALE-POST-%%'
), copies AS (
    SELECT seed.*, s AS slot, abs(hashtext(seed.meter_id::text || s::text)) %% 1000 AS h,
        (row_number() OVER (ORDER BY s DESC, seed.meter_id)) / %(per_batch)s AS batch,
        seed.reading_timestamp - s * interval '15 minutes' AS moment
    FROM seed CROSS JOIN generate_series(%(first)s, %(last)s) s
), batches AS (
    -- Ids derived from the batch's number, so each reading names its batch without a join.
    INSERT INTO minting_mintbatch (id, status, signature, raw_transaction, last_valid_block_height, context_slot,
        instruction_wallets, mint_address, reading_count, total_token_amount, send_attempts, error, created_at,
        sent_at, settled_at)
    SELECT md5('scale-' || %(first)s || '-' || g)::uuid, 'confirmed', 'scale-' || %(first)s || '-' || g,
        '\\x01'::bytea, 1, %(first)s, '[]', 'ScaleMint1111111111111111111111111111111111', %(per_batch)s,
        %(per_batch)s::bigint * 1250000000, 1, '', %(moment)s::timestamptz - %(first)s * interval '15 minutes',
        NULL, %(moment)s::timestamptz - %(first)s * interval '15 minutes' + interval '2 seconds'
    FROM generate_series(0, %(batches)s) g
)
INSERT INTO meters_meterreading
-- LATERAL: a ``(f(...)).*`` in the select list would call f once per column.
SELECT r.* FROM copies c CROSS JOIN LATERAL json_populate_record(NULL::meters_meterreading, json_build_object(
    'id', gen_random_uuid(), 'user_id', c.user_id, 'meter_id', c.meter_id, 'wallet_address', c.wallet_address,
    'kwh_amount', CASE WHEN c.h BETWEEN 900 AND 959 THEN -0.4 ELSE c.kwh_amount END,
    'reading_timestamp', c.moment, 'source', c.source, 'generated_kwh', c.generated_kwh,
    'consumed_kwh', c.consumed_kwh, 'interval_secs', c.interval_secs,
    'mintable_kwh', CASE WHEN c.h BETWEEN 900 AND 959 THEN 0 ELSE c.kwh_amount END,
    'flags', CASE WHEN c.h BETWEEN 960 AND 964 THEN '["capacity"]'::json
                  WHEN c.h %% 50 = 0 THEN '["gap"]'::json ELSE '[]'::json END,
    'submitted_at', c.moment + interval '7 seconds', 'minted', c.h < 900 OR c.h >= 968,
    'mint_tx_signature', CASE WHEN c.h < 900 OR c.h >= 968 THEN 'scale-' || %(first)s || '-' || c.batch END,
    'status', CASE WHEN c.h < 900 THEN 'minted' WHEN c.h < 960 THEN 'recorded' WHEN c.h < 965 THEN 'held'
                   WHEN c.h < 968 THEN 'failed' ELSE 'minted' END,
    'token_amount', CASE WHEN c.h < 900 OR c.h >= 968 THEN (c.kwh_amount * 1000000000)::bigint END,
    'token_ratio', 1, 'token_decimals', 9, 'attempts', CASE WHEN c.h BETWEEN 965 AND 967 THEN 3 ELSE 0 END,
    'next_attempt_at', c.moment, 'last_error', '', 'telemetry', c.telemetry,
    'batch_id', CASE WHEN c.h < 900 OR c.h >= 968 THEN md5('scale-' || %(first)s || '-' || c.batch)::uuid END
)) r
-- In the order meters report: every meter's reading of one interval, then the next interval. Copied meter by
-- meter, each meter's rows went in newest first, and every (meter, time) index page split in half.
ORDER BY c.moment, c.meter_id
"""


def build(world: World, *, target: int, chunk: int) -> None:
    """Copy the seed back in time, a chunk of slots per statement, until ``target`` readings are stored."""
    from django.db import connection, transaction
    from django.utils import timezone

    from meters.partitions import partitions_ensure
    from meters.selectors import fleet_totals
    from meters.services.rollups import rollups_fold_all

    meters = world.history_meters.count()
    started, stored = time.monotonic(), fleet_totals()["rows"]
    if stored < target:
        oldest = timezone.now() - SLOT * (target // meters) - timedelta(days=2)  # posts shift the slots a little
        created = partitions_ensure(since=oldest)
        say(f"partitions back to {oldest:%Y-%m}: {len(created)} created")
    while stored < target:
        first = stored // meters  # slots already copied (slot 0 is the seed)
        last = first + max(1, min(chunk, target - stored) // meters) - 1
        rows = (last - first + 1) * meters
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                BUILD,
                {
                    "first": first,
                    "last": last,
                    "batches": rows // BATCH_READINGS,
                    "per_batch": BATCH_READINGS,
                    "moment": timezone.now(),
                },
            )
        rollups_fold_all()
        stored = fleet_totals()["rows"]
        rate = stored / max(time.monotonic() - started, 1e-9)
        say(f"built {stored:,} readings (slots {first}-{last}, {rate:,.0f} readings/s this run)")


def timed(samples: int, request) -> list[float]:
    durations = []
    for i in range(samples):
        began = time.perf_counter()
        response = request(i)
        durations.append(time.perf_counter() - began)
        if response.status_code not in (200, 201):
            raise SystemExit(f"{response.status_code}: {response.content[:300]!r}")
    return durations


def p95(durations: list[float]) -> float:
    return statistics.quantiles(durations, n=20, method="inclusive")[18] * 1000


def surfaces(world: World, phase: int):
    """(name, request(i)) for every surface; posts use moments of their own per phase, 15 minutes apart."""
    from django.test import Client
    from django.utils import timezone

    producer = Client(HTTP_AUTHORIZATION=f"Bearer {world.tokens[world.producer.pk]}")
    fleet = Client(HTTP_AUTHORIZATION=f"Bearer {world.tokens[world.fleet.pk]}")
    operator = Client()
    operator.force_login(world.operator)
    producer_site, fleet_site = Client(), Client()  # the dashboard's JSON reads need a session
    producer_site.force_login(world.producer)
    fleet_site.force_login(world.fleet)
    prometheus = Client()
    now = timezone.now()
    cursor = fleet.get("/api/meters/my-readings?page_size=20").json()["pagination"]["next_cursor"]

    def single_post(i: int):
        meter = world.post_meters[i % len(world.post_meters)]
        moment = now - timedelta(hours=2) - SLOT * (phase * 4 + i // len(world.post_meters))
        return Client(HTTP_X_API_KEY=world.device_keys[meter.pk]).post(
            f"/api/v1/meters/{meter.serial}/readings",
            {"kwh": "0.875", "timestamp": moment.isoformat()},
            content_type="application/json",
        )

    def batch_post(i: int):
        moment = now - timedelta(hours=6) - SLOT * (phase * 100 + i)
        items = [
            {"meter_serial": m.serial, "kwh": "0.5", "timestamp": moment.isoformat()} for m in world.post_meters[:100]
        ]
        return Client(HTTP_X_API_KEY=world.fleet_key).post(
            "/api/v1/meters/batch/readings", {"readings": items}, content_type="application/json"
        )

    return [
        ("device: single post (stored)", single_post),
        ("device: batch post, 100 readings", batch_post),
        ("producer: GET /api/meters/stats", lambda i: producer.get("/api/meters/stats")),
        ("fleet: GET /api/meters/stats", lambda i: fleet.get("/api/meters/stats")),
        ("fleet: my-readings page 1", lambda i: fleet.get("/api/meters/my-readings")),
        (
            "fleet: my-readings?meter_serial=",
            lambda i: fleet.get(f"/api/meters/my-readings?meter_serial={world.fleet_meter.serial}"),
        ),
        ("fleet: my-readings page 1,000 (OFFSET)", lambda i: fleet.get("/api/meters/my-readings?page=1000")),
        ("fleet: my-readings next page (cursor)", lambda i: fleet.get(f"/api/meters/my-readings?cursor={cursor}")),
        ("operator: /dashboard/", lambda i: operator.get("/dashboard/")),
        ("operator: /dashboard/stats.json", lambda i: operator.get("/dashboard/stats.json")),
        ("operator: /dashboard/fleet.json?span=24h", lambda i: operator.get("/dashboard/fleet.json?span=24h")),
        ("producer: /dashboard/energy.json (48 h)", lambda i: producer_site.get("/dashboard/energy.json")),
        ("fleet: /dashboard/energy.json?span=30d", lambda i: fleet_site.get("/dashboard/energy.json?span=30d")),
        ("operator: admin readings list", lambda i: operator.get("/admin/meters/meterreading/")),
        ("operator: admin, status failed", lambda i: operator.get("/admin/meters/meterreading/?status__exact=failed")),
        ("operator: admin mint batches", lambda i: operator.get("/admin/minting/mintbatch/")),
        ("prometheus: GET /metrics", lambda i: prometheus.get("/metrics")),
    ]


def fleet_minutes_of_two_days() -> None:
    """The rows the beat's fold would have recorded every minute of the last two days (meters/history.py), all
    with today's figures: fleet.json reads them by key, whatever they hold."""
    from django.utils import timezone

    from meters.history import COUNTERS, GAUGES, KEPT, FleetMinute, minute_of
    from meters.selectors import fleet_totals

    totals, now = fleet_totals(), minute_of(timezone.now())
    figures = {name: totals[name] for name in (*COUNTERS, *GAUGES)}
    minutes = int(KEPT.total_seconds() // 60)
    rows = [FleetMinute(minute=now - timedelta(minutes=ago), **figures) for ago in range(minutes)]
    FleetMinute.objects.bulk_create(rows, ignore_conflicts=True)


def measure(world: World, *, samples: int, phase: int, only: str = "") -> dict[str, float]:
    from meters.selectors import fleet_totals
    from meters.services.rollups import rollups_fold_all

    fleet_minutes_of_two_days()
    results = {}
    for name, request in surfaces(world, phase):
        if only not in name:
            continue
        # As the beat task does every 5 s: without it the posts' deltas pile up (9,000 after the posts) and
        # every rollup read after them adds them all, which no deployment with a beat ever sees.
        rollups_fold_all()
        request(samples + 1000)  # warm (the cache of meters, the plans); not counted
        results[name] = p95(timed(samples, request))
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    say(f"measured at {fleet_totals()['rows']:,} readings (load average {load})")
    return results


def storage() -> tuple[int, list[tuple[str, float]]]:
    """(readings, [(relation, bytes per reading)]): every partition's heap with TOAST and indexes, the heaps,
    then each index of the readings table (its partitions' copies summed)."""
    from django.db import connection

    from meters.selectors import fleet_totals

    rows = fleet_totals()["rows"]
    with connection.cursor() as cursor:
        # The table and each index summed over the monthly partitions (a partitioned parent stores nothing;
        # pg_partition_tree lists no leaves for a plain table, which is measured itself).
        cursor.execute(
            "WITH leaves AS (SELECT relid FROM pg_partition_tree('meters_meterreading') WHERE isleaf)"
            " SELECT 'total (heap, TOAST, indexes)', coalesce((SELECT sum(pg_total_relation_size(relid))"
            "  FROM leaves), pg_total_relation_size('meters_meterreading'))"
            " UNION ALL SELECT 'heap', coalesce((SELECT sum(pg_relation_size(relid)) FROM leaves),"
            "  pg_relation_size('meters_meterreading'))"
            " UNION ALL (SELECT indexrelid::regclass::text, coalesce((SELECT sum(pg_relation_size(relid))"
            "  FROM pg_partition_tree(indexrelid) WHERE isleaf), pg_relation_size(indexrelid)) FROM pg_index"
            "  WHERE indrelid = 'meters_meterreading'::regclass ORDER BY 2 DESC)"
        )
        return rows, [(name, size / max(rows, 1)) for name, size in cursor.fetchall()]


def partition_sizes() -> list[tuple[str, int, int]]:
    """(partition, rows, bytes with TOAST and indexes) for every partition of the readings table that holds
    rows, oldest first (rows from the statistics VACUUM ANALYZE just gathered)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid)"
            " FROM pg_partition_tree('meters_meterreading') t JOIN pg_class c ON c.oid = t.relid"
            " WHERE t.isleaf AND c.reltuples > 0 ORDER BY c.relname"
        )
        return cursor.fetchall()


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("meters_meterreading", "minting_mintbatch", "meters_readingdelta", "minting_batchdelta"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def commit() -> str:
    import subprocess

    run = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return run.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def report(small: tuple[int, dict, list] | None, large: tuple[int, dict, list]) -> None:
    """The tables: p95 per surface (and ratio), bytes per reading, the partitions' sizes."""
    large_rows, large_p95, large_storage = large
    if small is None:
        print(f"\n| surface | p95 at {large_rows:,} |\n|---|---|")
        for name, value in large_p95.items():
            print(f"| {name} | {value:.1f} ms |")
    else:
        small_rows, small_p95, small_storage = small
        print(f"\n| surface | p95 at {small_rows:,} | p95 at {large_rows:,} | ratio |")
        print("|---|---|---|---|")
        for name in small_p95:
            ratio = large_p95[name] / small_p95[name]
            print(f"| {name} | {small_p95[name]:.1f} ms | {large_p95[name]:.1f} ms | {ratio:.2f}x |")
        print(f"\n| bytes per reading | at {small_rows:,} | at {large_rows:,} |")
        print("|---|---|---|")
        sizes = dict(small_storage)
        for name, size in large_storage:
            print(f"| {name} | {sizes.get(name, 0):.0f} | {size:.0f} |")
    print("\n| partition | rows | MB (heap, TOAST, indexes) | bytes per row |\n|---|---|---|---|")
    for name, rows, size in partition_sizes():
        print(f"| {name} | {rows:,} | {size / 2**20:,.0f} | {size / max(rows, 1):.0f} |")


def main() -> None:
    args = parse_args()
    url = scale_database_url()
    prepare_database(url, resume=args.resume)
    os.environ.update(
        DATABASE_URL=url,
        DEBUG="true",
        ALLOWED_HOSTS="testserver,localhost",
        LOG_LEVEL="ERROR",
        TOKENIZATION_AUTO_MINT_ENABLED="false",
        RATE_LIMIT_KEY_PER_MIN="0",
        RATE_LIMIT_USER_PER_MIN="0",
        TOKENIZATION_READING_MAX_AGE_DAYS="3650",
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    say(f"commit {commit()}, {os.cpu_count()} cores, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    world = World(args.meters, args.producers)
    if args.measure_only:
        vacuum()
        rows, sizes = storage()
        # Posts of a rerun need moments of their own (a repeat is a duplicate): a phase per minute, 5 hours round.
        phase = 2 + int(time.time() // 60) % 300
        report(None, (rows, measure(world, samples=args.samples, phase=phase, only=args.surface), sizes))
        return
    say(f"database {url.rsplit('/', 1)[1]}: {args.meters:,} meters, {args.small:,} then {args.readings:,} readings")
    seed(world)
    build(world, target=args.small, chunk=args.chunk)
    vacuum()
    small_rows, small_storage = storage()
    small = measure(world, samples=args.samples, phase=0)
    build(world, target=args.readings, chunk=args.chunk)
    vacuum()
    large_rows, large_storage = storage()
    large = measure(world, samples=args.samples, phase=1)
    report((small_rows, small, small_storage), (large_rows, large, large_storage))
    if not args.keep:
        drop_database(url)
        say("database dropped")


if __name__ == "__main__":
    main()
