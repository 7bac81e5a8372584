"""One database of the scale bench (``bench/scale.py``): its users and meters, the seed, the history build,
the surfaces it times, its sizes, and the process that serves the bench's measurements of it.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import uuid
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gridtoken.ids import uuid7_sql  # noqa: E402 (the repository on the path first)

SLOT = timedelta(minutes=15)
BATCH_READINGS = 50
# Posts go back from now: up to ~40 days over reruns (bench/scale.py's phases); their months get partitions.
POSTS_REACH = timedelta(days=45)


def say(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", flush=True)


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


BUILD = f"""
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
    -- Time-ordered ids of when each row is stored, as ingestion makes them (gridtoken/ids.py).
    'id', {uuid7_sql("floor(extract(epoch FROM clock_timestamp()) * 1000)")},
    'user_id', c.user_id, 'meter_id', c.meter_id, 'wallet_address', c.wallet_address,
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


def surfaces(world: World, *, phase: int, samples: int, now: datetime):
    """(name, request(i)) for every surface, i from 0 to ``samples``; posts of each phase use moments of their
    own, 15 minutes apart: single posts on 100 meters, batches on 100 others."""
    from django.test import Client

    producer = Client(HTTP_AUTHORIZATION=f"Bearer {world.tokens[world.producer.pk]}")
    fleet = Client(HTTP_AUTHORIZATION=f"Bearer {world.tokens[world.fleet.pk]}")
    operator = Client()
    operator.force_login(world.operator)
    producer_site, fleet_site = Client(), Client()  # the dashboard's JSON reads need a session
    producer_site.force_login(world.producer)
    fleet_site.force_login(world.fleet)
    prometheus = Client()
    cursor = fleet.get("/api/meters/my-readings?page_size=20").json()["pagination"]["next_cursor"]

    singles, batched = world.post_meters[:100], world.post_meters[100:]

    def single_post(i: int):
        k = phase * (samples + 1) + i
        meter = singles[k % len(singles)]
        moment = now - timedelta(hours=2) - SLOT * (k // len(singles))
        return Client(HTTP_X_API_KEY=world.device_keys[meter.pk]).post(
            f"/api/v1/meters/{meter.serial}/readings",
            {"kwh": "0.875", "timestamp": moment.isoformat()},
            content_type="application/json",
        )

    def batch_post(i: int):
        moment = now - timedelta(hours=6) - SLOT * (phase * (samples + 1) + i)
        items = [{"meter_serial": m.serial, "kwh": "0.5", "timestamp": moment.isoformat()} for m in batched]
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


def serve(url: str, options: dict, conn) -> None:
    """A process for one database: Django on ``url``; the seed and history up to ``options["target"]``
    readings (0: build nothing); then the parent's commands over ``conn``, one answer each:
    ("warm", surface) folds the rollup deltas (as the beat task does every 5 s) and sends one untimed request,
    ("time", surface, i) answers sample i's seconds, ("sizes",) answers (readings, storage, partitions),
    ("stop",) ends. Every answer is ("ok", value) or ("failed", traceback)."""
    try:
        os.environ.update(
            DATABASE_URL=url,
            DEBUG="true",
            ALLOWED_HOSTS="testserver,localhost",
            LOG_LEVEL="ERROR",
            TOKENIZATION_AUTO_MINT_ENABLED="false",
            RATE_LIMIT_KEY_PER_MIN="0",
            RATE_LIMIT_USER_PER_MIN="0",
            TOKENIZATION_READING_MAX_AGE_DAYS="3650",
            DJANGO_SETTINGS_MODULE="gridtoken.settings",
        )
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections
        from django.utils import timezone

        from meters.partitions import partitions_ensure
        from meters.selectors import fleet_totals
        from meters.services.rollups import rollups_fold_all

        call_command("migrate", verbosity=0)
        world = World(options["meters"], options["producers"])
        if options["target"]:
            seed(world)
            build(world, target=options["target"], chunk=options["chunk"])
        partitions_ensure(since=timezone.now() - POSTS_REACH)
        fleet_minutes_of_two_days()
        vacuum()
        requests = (
            {}
            if options["build_only"]
            else dict(surfaces(world, **{key: options[key] for key in ("phase", "samples", "now")}))
        )
        conn.send(("ok", (fleet_totals()["rows"], list(requests))))
    except Exception:
        conn.send(("failed", traceback.format_exc()))
        return
    while True:
        command, *rest = conn.recv()
        try:
            if command == "stop":
                connections.close_all()
                conn.send(("ok", None))
                return
            if command == "sizes":
                conn.send(("ok", (*storage(), partition_sizes())))
                continue
            if command == "warm":
                rollups_fold_all()
            i = options["samples"] if command == "warm" else rest[1]  # warm: a post of its own, after the timed
            began = time.perf_counter()
            response = requests[rest[0]](i)
            elapsed = time.perf_counter() - began
            if response.status_code not in (200, 201):
                raise RuntimeError(f"{rest[0]}: {response.status_code}: {response.content[:300]!r}")
            conn.send(("ok", elapsed))
        except Exception:
            conn.send(("failed", traceback.format_exc()))
