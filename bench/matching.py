"""Hourly matching at fleet size: 1,000 consumers and 1,000 devices over a month of hours, then the 24/7 report.

    python bench/matching.py [--consumers 1000] [--devices 1000] [--hours 720] [--match-hours N] [--zones 10]

Sets up its own world in bulk SQL (``INSERT ... SELECT`` over ``generate_series``) in its own database
(``--database-url``, default ``gt_matching_bench``: created, migrated and emptied):

- ``--consumers`` consumers spread over ``--zones`` grid zones, one demand meter each, whose hourly rollup rows
  hold a seeded consumption of 0.2..2.2 kWh every hour (settled: recorded);
- ``--devices`` approved production devices spread over the same zones, each with one issued interval and one
  active bundle per hour (a sun from 06:00 to 18:00 UTC, 0..8 kWh), issued through the last hour;
- device i offers 50 % of its hours to consumer i (bilateral, a PPA) and the whole hour to its zone's pool.

Then ``matching_run`` matches every settled zone-hour (the first ``--match-hours`` only, when given; one
transaction each, its claims through the registry's claim service with their chain burns), timed, with a progress
line per zone. Prints zone-hours/s, consumer-hours/s, claims/s and statements per zone-hour; checks that no
Wh is claimed twice (the matches' Wh equal their bundles' Wh and every claimed bundle's Wh) and that no
consumer-hour is matched beyond its demand; times the 24/7 report of one consumer's month. Prints figures,
never pass/fail on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import create_database, say  # noqa: E402

HOUR0 = datetime(2026, 6, 1, 6, tzinfo=UTC)  # sunrise: the first hours matched have supply


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=720, help="hours of data from 2026-06-01 06:00 UTC (720: 30 days)")
    parser.add_argument("--match-hours", type=int, default=None, help="hours to match (default: all of --hours)")
    parser.add_argument("--zones", type=int, default=10)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/gt_matching_bench")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/5"))
    return parser.parse_args()


def literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''").replace("%", "%%") + "'"
    return str(value)  # int, Decimal


def zone_of(number: str) -> str:
    """Zone ``number`` mod --zones, as a code."""
    return f"'10Y-BENCH-' || lpad(({number} %% %(zones)s)::text, 3, '0')"


def insert_select(model, values: dict[str, str], source: str, params: dict) -> int:
    """``INSERT INTO model's table SELECT ... FROM source``: ``values`` maps columns to SQL expressions; every
    other column gets its field's default (or NULL), as the ORM would write it."""
    from django.db import connection
    from django.db.models import NOT_PROVIDED

    columns, expressions = [], []
    for field in model._meta.concrete_fields:
        if field.get_internal_type() in ("AutoField", "BigAutoField") and field.column not in values:
            continue  # the sequence numbers it
        columns.append(field.column)
        if field.column in values:
            expressions.append(values[field.column])
        elif field.default is not NOT_PROVIDED and not callable(field.default):
            expressions.append(literal(field.default))
        elif field.default is not NOT_PROVIDED:  # timezone.now, dict, uuid4 ...
            expressions.append({"dict": "'{}'::jsonb", "now": "now()", "uuid4": "gen_random_uuid()"}[
                field.default.__name__])  # fmt: skip
        else:
            expressions.append("NULL")
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(expressions)} FROM {source}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def build(args: argparse.Namespace) -> None:
    """Users, meters, consumers, devices, allocations, the demand rollups and the issued supply, in bulk SQL."""
    from certificates.models import CertificateBundle, Issuance, ProductionDevice
    from matching.models import Allocation, Consumer, ConsumerMeter, GridZone
    from meters.models import Meter, MeterHourRollup, User

    p = {"consumers": args.consumers, "devices": args.devices, "hours": args.hours, "zones": args.zones,
         "hour0": HOUR0, "end": HOUR0 + timedelta(hours=args.hours)}  # fmt: skip
    step = time.monotonic()

    def done(what: str, rows: int) -> None:
        nonlocal step
        say(f"  {what}: {rows:,} rows in {time.monotonic() - step:.1f} s")
        step = time.monotonic()

    done("grid zones", insert_select(GridZone, {"code": zone_of("z")}, "generate_series(0, %(zones)s - 1) z", p))
    for role, count in (("consumer", "consumers"), ("producer", "devices")):
        done(f"{role} users", insert_select(User, {
            "id": "gen_random_uuid()", "username": f"'bench-{role}-' || i", "password": "'!'",
            "wallet_address": f"'Wallet{role}' || lpad(i::text, 8, '0')", "is_active": "true",
            "date_joined": "now()", "first_name": "''", "last_name": "''", "email": "''",
        }, f"generate_series(1, %({count})s) i", p))  # fmt: skip
        done(f"{role} meters", insert_select(Meter, {
            "serial": f"'BENCH-{role}-' || lpad(substr(u.username, {len(role) + 8})::text, 6, '0')",
            "owner_id": "u.id", "wallet_address": "u.wallet_address",
        }, f"meters_user u WHERE u.username LIKE 'bench-{role}-%%'", p))  # fmt: skip
    number = "substr(m.serial, {})::int"
    done("consumers", insert_select(Consumer, {
        "user_id": "m.owner_id", "name": "'Bench consumer ' || " + number.format(16),
        "grid_zone": zone_of(number.format(16)), "match_from": "%(hour0)s",
        "created_at": f"%(hour0)s - interval '1 day' + {number.format(16)} * interval '1 second'",
    }, "meters_meter m WHERE m.serial LIKE 'BENCH-consumer-%%'", p))  # fmt: skip
    done(
        "demand meters",
        insert_select(
            ConsumerMeter,
            {"consumer_id": "c.id", "meter_id": "m.id"},
            "matching_consumer c JOIN meters_meter m ON m.owner_id = c.user_id",
            p,
        ),
    )
    done("devices", insert_select(ProductionDevice, {
        "meter_id": "m.id", "name": "'bench plant ' || m.serial", "technology": "'solar_pv'",
        "commissioning_date": "'2025-01-01'", "grid_zone": zone_of(number.format(16)),
        "country": "'DE'", "issuer": "'bench registry'", "status": "'approved'", "issued_through": "%(end)s",
    }, "meters_meter m WHERE m.serial LIKE 'BENCH-producer-%%'", p))  # fmt: skip
    device = "substr(d.name, 28)::int"  # 'bench plant BENCH-producer-000123'
    done("bilateral allocations (50 %, device i -> consumer i)", insert_select(Allocation, {
        "kind": "'bilateral'", "device_id": "d.id", "holder_id": "m.owner_id", "consumer_id": "c.id",
        "share": "0.5", "valid_from": "%(hour0)s",
    }, f"certificates_productiondevice d JOIN meters_meter m ON m.id = d.meter_id JOIN matching_consumer c"
       f" ON c.name = 'Bench consumer ' || {device}", p))  # fmt: skip
    done("pool allocations (100 %)", insert_select(Allocation, {
        "kind": "'pool'", "device_id": "d.id", "holder_id": "m.owner_id", "share": "1", "valid_from": "%(hour0)s",
        "created_at": "now() + interval '1 second'",
    }, "certificates_productiondevice d JOIN meters_meter m ON m.id = d.meter_id", p))  # fmt: skip
    # Demand: 0.2..2.2 kWh per hour, seeded by (meter, hour); supply: 0..8 kWh from 06:00 to 18:00 UTC.
    demand = "round((0.2 + 2 * ((hashtext(m.id::text || h::text) & 65535) / 65535.0))::numeric, 9)"
    done("demand hours (meter hour rollups)", insert_select(MeterHourRollup, {
        "meter_id": "m.id", "hour": "%(hour0)s + h * interval '1 hour'", "readings": "4", "recorded": "4",
        "consumed_kwh": demand, "net_kwh": f"-{demand}",
    }, "meters_meter m CROSS JOIN generate_series(0, %(hours)s - 1) h WHERE m.serial LIKE 'BENCH-consumer-%%'",
       p))  # fmt: skip
    supply = ("floor(greatest(0, 6 - abs(extract(hour FROM s.t) - 12)) / 6.0 * 8000"
              " * ((hashtext(d.id::text || s.t::text) & 255) / 255.0))::bigint")  # fmt: skip
    with_supply = (
        f"(SELECT d.id AS device_id, d.meter_id, s.t, {supply} AS wh FROM certificates_productiondevice d"
        " CROSS JOIN generate_series(%(hour0)s::timestamptz, %(end)s::timestamptz - interval '1 hour',"
        " interval '1 hour') s(t)) x"
    )
    done("issued hours", insert_select(Issuance, {
        "id": "gen_random_uuid()", "device_id": "x.device_id", "interval_start": "x.t",
        "interval_end": "x.t + interval '1 hour'", "status": "'issued'", "energy_kwh": "x.wh / 1000.0",
        "quantity_wh": "x.wh", "bundle_id_range_start": "1 + extract(epoch FROM x.t - %(hour0)s)::bigint * 10",
        "bundle_id_range_end": "extract(epoch FROM x.t - %(hour0)s)::bigint * 10 + x.wh", "reading_count": "4",
        "readings_hash": "md5(x.device_id::text)", "wallet_address": "'bench'", "issued_at": "now()",
        "expires_at": "now() + interval '1 year'",
    }, with_supply + " WHERE x.wh > 0", p))  # fmt: skip
    done("active bundles", insert_select(CertificateBundle, {
        "issuance_id": "i.id", "range_start": "i.bundle_id_range_start", "range_end": "i.bundle_id_range_end",
        "holder_id": "m.owner_id", "holder_wallet": "m.wallet_address", "status": "'active'",
    }, "certificates_issuance i JOIN certificates_productiondevice d ON d.id = i.device_id"
       " JOIN meters_meter m ON m.id = d.meter_id", p))  # fmt: skip
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def match(args: argparse.Namespace) -> tuple[float, int]:
    """(seconds, statements) of matching every settled zone-hour."""
    from django.db import connection

    from matching.services.matcher import matching_run

    now = HOUR0 + timedelta(hours=(args.match_hours or args.hours) + 1, seconds=3599)  # the last one just settled
    started = time.monotonic()
    total = statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += len(params) if many else 1
        return execute(sql, params, many, context)

    def progress(zone: str, result) -> None:
        nonlocal total
        total += result.hours
        elapsed = time.monotonic() - started
        say(f"  {zone}: {result.hours} hours, {result.consumer_hours:,} consumer-hours, {result.matched_wh:,} Wh"
            f" | {total:,} zone-hours in {elapsed:.0f} s, {statements:,} statements")  # fmt: skip

    with connection.execute_wrapper(count):
        while matching_run(now=now, limit=1_000_000, progress=progress).hours:
            pass
    return time.monotonic() - started, statements


def check_and_report(args: argparse.Namespace, elapsed: float, statements: int) -> None:

    from django.db import connection

    from certificates.models import ChainOperation
    from matching.models import Consumer, ConsumerHour, Match, MatchHour
    from matching.report import consumer_month_report

    hours, consumer_hours = MatchHour.objects.count(), ConsumerHour.objects.count()
    claims = Match.objects.count()
    say(f"matching: {hours:,} zone-hours, {consumer_hours:,} consumer-hours, {claims:,} claims in {elapsed:.1f} s ="
        f" {hours / elapsed:,.1f} zone-hours/s, {consumer_hours / elapsed:,.0f} consumer-hours/s,"
        f" {claims / elapsed:,.0f} claims/s; {statements:,} statements = {statements / max(hours, 1):,.1f} per"
        f" zone-hour")  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(m.quantity_wh), 0), coalesce(sum(b.range_end - b.range_start + 1), 0),"
            " count(*) FILTER (WHERE b.status <> 'claimed') FROM matching_match m"
            " JOIN certificates_certificatebundle b ON b.id = m.bundle_id"
        )
        count, matched_wh, bundle_wh, unclaimed = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM matching_consumerhour WHERE matched_wh > demand_wh")
        [over] = cursor.fetchone()
        cursor.execute(
            "SELECT coalesce(sum(range_end - range_start + 1), 0) FROM certificates_certificatebundle"
            " WHERE status = 'claimed'"
        )
        [claimed_wh] = cursor.fetchone()
    burns = ChainOperation.objects.filter(kind="burn").count()
    say(f"  exactness: {count:,} matches, matched {matched_wh:,} Wh = their bundles {bundle_wh:,} Wh = every"
        f" claimed bundle {claimed_wh:,} Wh; matched bundles not claimed: {unclaimed}; hours over demand: {over};"
        f" burns {burns:,}")  # fmt: skip
    busiest = Consumer.objects.order_by("name").first()
    started = time.monotonic()
    report = consumer_month_report(consumer=busiest, month=HOUR0.date())
    took = time.monotonic() - started
    say(f"report: {busiest.name}'s month, {len(report.hours)} hours, score {report.period.score:.4f} vs annual"
        f" {report.period.annual_score:.4f}, in {took * 1000:.0f} ms")  # fmt: skip


def main() -> None:
    args = parse_args()
    env = {"DJANGO_SETTINGS_MODULE": "gridtoken.settings", "DEBUG": "true", "LOG_LEVEL": "WARNING",
           "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url, "MATCHING_SETTLE_SECS": "3600"}  # fmt: skip
    os.environ.update(env)
    create_database(args.database_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("flush", "--no-input", verbosity=0)
    say(
        f"building {args.consumers:,} consumers and {args.devices:,} devices in {args.zones} zones x {args.hours} h ..."
    )
    build(args)
    say("matching every settled zone-hour (progress per zone and run) ...")
    elapsed, statements = match(args)
    check_and_report(args, elapsed, statements)


if __name__ == "__main__":
    main()
