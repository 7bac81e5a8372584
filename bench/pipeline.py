"""The automatic minting pipeline end to end: submit -> on-submit trigger -> Celery worker -> local chain.

    python bench/pipeline.py [--rate 200] [--duration 60] [--burst 20000] [--meters 2000] [--owners 100]
                             [--batch-size 500] [--concurrency 2] [--debounce-ms 200] [--faults JSON]

Sets up its own world: a database (``--database-url``, default ``gt_pipeline_bench``: created, migrated and
emptied), a ``manage.py localnet`` on a free port, ``chain_init`` with a fresh authority and mint, fleet
owners with meters (one wallet per meter), and ``celery -A gridtoken worker`` (prefork). Readings go in
through the ingestion service (``readings_submit_batch``, as the batch endpoint does), whose commit triggers
the mint (``minting.triggers.mint_soon``).

1. Offered load: ``--rate`` readings/s for ``--duration`` s from all meters. Latency per reading is
   ``batch.settled_at - reading.submitted_at`` (submit to confirmed mint), p50/p95/p99 from PostgreSQL.
2. Burst: ``--burst`` readings submitted with auto-mint off, then switched on; sustained minted readings/s
   is the burst over the time from the switch to the last reading minted.

``--faults`` starts the local chain with a fault plan (docs/LOCALNET.md), e.g. a provider pool that mixes in
a replica 250 slots behind: ``--faults '{"lag": {"slots": 250, "every": 2}}'``.

Ends by checking exactness: every reading minted once, the mint's supply equals the sum of the readings'
``token_amount`` and every wallet's balance equals its readings' sum. Prints figures, never pass/fail on time.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def say(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="offered readings per second (phase 1)")
    parser.add_argument("--duration", type=int, default=60, help="seconds of offered load (0 skips phase 1)")
    parser.add_argument("--burst", type=int, default=20000, help="readings in the burst (0 skips phase 2)")
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--owners", type=int, default=100, help="fleet owners (event groups)")
    parser.add_argument(
        "--warm", action="store_true", help="first mint one reading per meter, untimed, so every token account exists"
    )
    parser.add_argument("--batch-size", type=int, default=500, help="TOKENIZATION_BATCH_SIZE")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (prefork)")
    parser.add_argument("--debounce-ms", type=int, default=200, help="TOKENIZATION_TRIGGER_DEBOUNCE_MS")
    parser.add_argument("--in-flight", type=int, default=8, help="BLOCKCHAIN_CONCURRENT_BATCHES")
    parser.add_argument("--faults", default="", help="the local chain's fault plan (JSON, docs/LOCALNET.md)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/gt_pipeline_bench")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/5"))
    return parser.parse_args()


def prepare_environment(args: argparse.Namespace, workdir: Path, rpc_port: int) -> dict[str, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "gridtoken.settings",
        "DEBUG": "true",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "SOLANA_RPC_URL": f"http://127.0.0.1:{rpc_port}",
        "SOLANA_KEYPAIR_PATH": str(workdir / "authority.json"),
        "TOKENIZATION_BATCH_SIZE": str(args.batch_size),
        "TOKENIZATION_TRIGGER_DEBOUNCE_MS": str(args.debounce_ms),
        "TOKENIZATION_POLLING_INTERVAL_SECS": "5",
        "TOKENIZATION_AUTO_MINT_ENABLED": "true",
        "BLOCKCHAIN_CONCURRENT_BATCHES": str(args.in_flight),
    }
    os.environ.update(env)
    return {**os.environ, **env}


def create_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def start_localnet(port: int, workdir: Path, faults: str = "") -> subprocess.Popen:
    from minting.chain.rpc import Rpc

    command = [sys.executable, "manage.py", "localnet", "--port", str(port), "--ledger", str(workdir / "ledger")]
    command += ["--faults", faults] if faults else []
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    rpc = Rpc(f"http://127.0.0.1:{port}", timeout=1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if rpc.call("getHealth") == "ok":
                return process
        except Exception:
            time.sleep(0.1)
    raise SystemExit("localnet did not start")


def start_worker(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> subprocess.Popen:
    from gridtoken.celery import app

    command = [
        sys.executable, "-m", "celery", "-A", "gridtoken", "worker", "--pool=prefork", "-c", str(args.concurrency),
        "--loglevel=WARNING", "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 (the worker writes to it until the end)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return process
        if process.poll() is not None:
            raise SystemExit(f"worker exited: see {workdir / 'worker.log'}")
    raise SystemExit("worker did not answer a ping within 60 s")


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


class Fleet:
    """Owners with meters; hands out readings 15 minutes apart per meter (the duplicate window is 15 min)."""

    def __init__(self, owners: int, meters: int) -> None:
        from django.utils import timezone
        from solders.keypair import Keypair

        from meters.models import Meter, User
        from meters.selectors import Caller

        users = User.objects.bulk_create(
            [User(username=f"bench-owner-{i}", wallet_address=str(Keypair().pubkey())) for i in range(owners)]
        )
        rows = Meter.objects.bulk_create(
            [
                Meter(serial=f"BENCH-{i:06d}", owner=users[i % owners], wallet_address=str(Keypair().pubkey()))
                for i in range(meters)
            ]
        )
        self.by_owner: dict[uuid.UUID, list] = defaultdict(list)
        for meter in rows:
            self.by_owner[meter.owner_id].append(meter)
        self.callers = {owner: Caller(user_id=owner, scope="fleet", key_id=uuid.uuid4()) for owner in self.by_owner}
        self.owners = list(self.by_owner)
        self.next_slot: dict[uuid.UUID, int] = defaultdict(int)
        self.base = timezone.now()  # each meter's readings go back from here, 15 minutes apart

    def items(self, owner, count: int) -> list[dict]:
        meters = self.by_owner[owner]
        items = []
        for index in range(count):
            meter = meters[index % len(meters)]
            slot = self.next_slot[meter.id] = self.next_slot[meter.id] + 1
            moment = self.base - timedelta(minutes=15 * slot)
            kwh = f"{random.randint(1, 99_999) / 1000:.3f}"
            items.append({"meter_serial": meter.serial, "kwh": kwh, "timestamp": moment.isoformat()})
        return items

    def submit(self, owner, count: int) -> int:
        from django.utils import timezone

        from meters.services.batch import readings_submit_batch

        now = timezone.now()
        result = readings_submit_batch(caller=self.callers[owner], readings=self.items(owner, count), now=now)
        if result["failed_count"]:
            raise SystemExit(f"ingestion rejected readings: {result['results'][:3]}")
        return result["success_count"]


def counts() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT status, count(*) FROM meters_meterreading GROUP BY status")
        return dict(cursor.fetchall())


def offered_load(fleet: Fleet, rate: int, duration: int) -> None:
    tick = 0.1
    per_tick = max(1, round(rate * tick))
    ticks = int(duration / tick)
    say(f"\n== offered load: {per_tick / tick:.0f} readings/s for {duration} s ({per_tick} every {tick:.1f} s)")
    started = time.monotonic()
    submitted = 0
    for index in range(ticks):
        time.sleep(max(0.0, started + index * tick - time.monotonic()))  # falls behind rather than bunching up
        submitted += fleet.submit(fleet.owners[index % len(fleet.owners)], per_tick)
        if index % int(5 / tick) == 0:
            c = counts()
            say(f"  t={time.monotonic() - started:5.1f}s submitted {submitted}, minted {c.get('minted', 0)}")
    elapsed = time.monotonic() - started
    say(f"  offered {submitted} readings in {elapsed:.1f} s ({submitted / elapsed:.0f}/s achieved)")
    wait_all_minted(submitted_total())
    report_latency()


def submitted_total() -> int:
    return sum(counts().values())


def wait_all_minted(total: int, *, timeout: float = 600.0) -> float:
    started = time.monotonic()
    while True:
        c = counts()
        if c.get("minted", 0) + c.get("failed", 0) >= total:
            return time.monotonic()
        if time.monotonic() - started > timeout:
            raise SystemExit(f"not everything minted after {timeout:.0f} s: {c}")
        time.sleep(0.05)


def report_latency() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "WITH l AS (SELECT extract(epoch FROM b.settled_at - r.submitted_at) AS s FROM meters_meterreading r"
            " JOIN minting_mintbatch b ON b.id = r.batch_id WHERE r.status = 'minted')"
            " SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s), max(s) FROM l"
        )
        n, (p50, p95, p99), worst = cursor.fetchone()
        cursor.execute("SELECT count(*), avg(reading_count) FROM minting_mintbatch")
        batches, per_tx = cursor.fetchone()
    say(f"  submit -> confirmed, {n} readings: p50 {p50:.3f} s, p95 {p95:.3f} s, p99 {p99:.3f} s, max {worst:.3f} s")
    say(f"  {batches} transactions, {float(per_tx or 0):.1f} readings per transaction")


def burst(fleet: Fleet, size: int, concurrency: int, *, label: str = "burst") -> None:
    from minting.services.control import auto_mint_set
    from minting.triggers import mint_soon

    say(f"\n== {label}: {size} readings submitted with auto-mint off, then switched on")
    before = counts().get("minted", 0)
    auto_mint_set(enabled=False, actor="bench")
    started = time.monotonic()
    per_owner, remaining, index = max(1, size // len(fleet.owners)), size, 0
    while remaining > 0:
        owner = fleet.owners[index % len(fleet.owners)]
        index += 1
        remaining -= fleet.submit(owner, min(per_owner, remaining, 1000))
    say(f"  ingested {size} readings in {time.monotonic() - started:.1f} s")
    switched = time.monotonic()
    auto_mint_set(enabled=True, actor="bench")
    for _ in range(concurrency - 1):  # one drain per worker process (auto_mint_set already triggered one)
        mint_soon(force=True)
    next_report = switched + 2.0
    total = before + size
    while (minted := counts().get("minted", 0)) < total:
        if time.monotonic() >= next_report:
            rate = (minted - before) / (time.monotonic() - switched)
            say(f"  t={time.monotonic() - switched:5.1f}s minted {minted - before}/{size} ({rate:,.0f}/s)")
            next_report += 2.0
        time.sleep(0.05)
    elapsed = time.monotonic() - switched
    say(f"  minted {size} readings in {elapsed:.2f} s: {size / elapsed:,.0f} readings/s sustained")


def verify_exactly_once() -> None:
    from django.db.models import Sum

    from meters.models import MeterReading
    from minting.services.batching import chain_client

    say("\n== exactly-once check")
    client = chain_client()
    rows = MeterReading.objects.values("wallet_address").annotate(total=Sum("token_amount"))
    not_minted = MeterReading.objects.exclude(status="minted").count()
    expected = {row["wallet_address"]: int(row["total"] or 0) for row in rows}
    wrong = [w for w, total in expected.items() if client.token_balance(w) != total]
    supply, total = client.token_supply(), sum(expected.values())
    say(f"  readings not minted: {not_minted}; wallets checked: {len(expected)}, mismatched: {len(wrong)}")
    say(f"  supply {supply} == sum of token_amount {total}: {supply == total}")


QUEUE_KEYS = ("celery", "unacked", "unacked_index", "gridtoken:minting:soon")


def fresh_world(redis_url: str):
    """Django on the bench database, migrated and emptied, and the Celery queues in Redis emptied; the Redis
    client (a bench that leaves tasks queued between its parts empties ``QUEUE_KEYS`` again with it)."""
    import django

    django.setup()
    import redis
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE meters_meterreading, minting_mintbatch, meters_apikey, meters_meter, minting_tokenmint,"
            " minting_mintingcontrol, authtoken_token, meters_user, meters_deadletter, meters_messageattempt CASCADE"
        )
    broker = redis.Redis.from_url(redis_url)
    broker.delete(*QUEUE_KEYS)
    return broker


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    port = free_port()
    env = prepare_environment(args, workdir, port)
    create_database(args.database_url)

    fresh_world(args.redis_url)
    from django.core.management import call_command

    localnet = worker = None
    try:
        localnet = start_localnet(port, workdir, args.faults)
        call_command("chain_init", stdout=open(os.devnull, "w"))  # noqa: SIM115
        fleet = Fleet(args.owners, args.meters)
        say(f"localnet :{port}, {args.owners} owners, {args.meters} meters/wallets, batch size {args.batch_size}, "
            f"{args.concurrency} worker processes, debounce {args.debounce_ms} ms, {os.cpu_count()} CPUs"
            f"{f', faults {args.faults}' if args.faults else ''}")  # fmt: skip
        worker = start_worker(args, env, workdir)
        if args.duration:
            offered_load(fleet, args.rate, args.duration)
        if args.warm:
            burst(fleet, args.meters, args.concurrency, label="warm-up (creates every token account)")
        if args.burst:
            burst(fleet, args.burst, args.concurrency)
        verify_exactly_once()
    finally:
        stop(worker)
        stop(localnet)


if __name__ == "__main__":
    main()
