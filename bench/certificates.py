"""Certificate issuance for a fleet: 1,000 devices over a day of hourly intervals, then their tokens on chain.

    python bench/certificates.py [--devices 1000] [--hours 24] [--processes 1] [--chain] [--chain-limit 100]

Sets up its own world: a database (``--database-url``, default ``gt_certificates_bench``: created, migrated and
emptied), ``--devices`` approved production devices (one meter and owner each, 10 kW), and for each a day of
settled 15-minute readings (status ``minted``, a seeded random export of 0..2.5 kWh each) plus one reading past
the last hour's grace, so every hour is complete in event time.

1. Issuance: ``certificates_issue_due`` in ``--processes`` processes at once (``manage.py issue_certificates``;
   with 1, in this process), timed from start to the last one done. Prints issuances/s and Wh/s, then checks
   exactness: one issuance per (device, hour), contiguous ranges per device, and per device issued Wh + carry
   = its readings' export x 1000, exactly.
2. ``--chain``: a ``manage.py localnet`` on a free port, ``chain_init`` and ``certificates_chain_init``, then
   ``operations_drain`` in this process (the pipeline's batches, one transaction per certificate), timed.
   Prints certificate transactions/s and checks the certificate mint's supply = the registry's active Wh and a
   sample of holders' balances.

Prints figures, never pass/fail on time.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import create_database, free_port, say, start_localnet, stop  # noqa: E402

DAY0 = datetime(2026, 6, 1, tzinfo=UTC)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--processes", type=int, default=1, help="issuers racing (manage.py issue_certificates)")
    parser.add_argument("--chain", action="store_true", help="then mint the certificate tokens on a local chain")
    parser.add_argument("--chain-limit", type=int, default=100, help="operations per pipeline cycle")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/gt_certificates_bench")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/5"))
    return parser.parse_args()


def seed(devices: int, hours: int) -> dict:
    """Devices, meters, owners and their readings; returns meter id -> exact export kWh."""
    from solders.keypair import Keypair

    from certificates.models import ProductionDevice
    from meters.models import Meter, MeterReading, User

    rng = random.Random(12)
    users = User.objects.bulk_create(
        [User(username=f"cert-bench-{i}", wallet_address=str(Keypair().pubkey())) for i in range(devices)]
    )
    meters = Meter.objects.bulk_create(
        [Meter(serial=f"CERT-{i:06d}", owner=u, wallet_address=u.wallet_address, capacity_kw=Decimal(10))
         for i, u in enumerate(users)]
    )  # fmt: skip
    ProductionDevice.objects.bulk_create(
        [
            ProductionDevice(
                meter=m, name=f"bench plant {i}", technology="solar_pv", commissioning_date=date(2025, 1, 1),
                grid_zone="10YDE-VE-------2", country="DE", issuer="bench registry", status="approved",
            )
            for i, m in enumerate(meters)
        ]
    )  # fmt: skip
    exported: dict = defaultdict(Decimal)
    batch = []
    for meter in meters:
        for quarter in range(hours * 4):
            kwh = Decimal(rng.randint(0, 2_500_000_000)) / Decimal(1_000_000_000)
            exported[meter.id] += kwh
            batch.append(
                MeterReading(
                    user_id=meter.owner_id, meter=meter, wallet_address=meter.wallet_address, kwh_amount=kwh,
                    generated_kwh=kwh, consumed_kwh=Decimal(0), mintable_kwh=kwh,
                    status="minted" if kwh else "recorded", reading_timestamp=DAY0 + timedelta(minutes=15 * quarter),
                )
            )  # fmt: skip
        batch.append(
            MeterReading(
                user_id=meter.owner_id, meter=meter, wallet_address=meter.wallet_address, kwh_amount=Decimal(0),
                mintable_kwh=Decimal(0), status="recorded", reading_timestamp=DAY0 + timedelta(hours=hours, minutes=30),
            )
        )  # fmt: skip
        if len(batch) >= 20_000:
            MeterReading.objects.bulk_create(batch)
            batch = []
    MeterReading.objects.bulk_create(batch)
    return exported


def issue(processes: int, env: dict) -> float:
    from certificates.services.issuance import certificates_issue_due

    started = time.monotonic()
    if processes == 1:
        while certificates_issue_due(limit=1_000_000).intervals:
            pass
    else:
        command = [sys.executable, "manage.py", "issue_certificates"]
        running = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for _ in range(processes)]
        for process in running:
            process.wait()
        while certificates_issue_due(limit=1_000_000).intervals:  # what a racer skipped (a locked device)
            pass
    return time.monotonic() - started


def check_issuance(exported: dict, devices: int, hours: int) -> int:
    from certificates.models import Issuance, ProductionDevice

    rows = defaultdict(list)
    for issuance in Issuance.objects.select_related("device").order_by("interval_start"):
        rows[issuance.device.meter_id].append(issuance)
    problems = 0
    wh_total = 0
    for device in ProductionDevice.objects.all():
        issued = rows[device.meter_id]
        starts = [i.interval_start for i in issued]
        ranges = [(i.bundle_id_range_start, i.bundle_id_range_end) for i in issued if i.status == "issued"]
        wh = sum(i.quantity_wh or 0 for i in issued)
        wh_total += wh
        exact = Decimal(wh) + device.carry_wh == exported[device.meter_id] * 1000
        contiguous = all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges)) and ranges[0][0] == 1
        problems += (len(set(starts)) != len(starts)) + (not exact) + (not contiguous)
    count = sum(len(v) for v in rows.values())
    say(f"  exactness: {count} issuances for {devices} devices x {hours} h (hours below 1 Wh issue none), "
        f"{wh_total:,} Wh, problems: {problems}")  # fmt: skip
    return wh_total


def chain_phase(args: argparse.Namespace, workdir: Path) -> None:
    from django.core.management import call_command

    from certificates.models import CertificateBundle, ChainOperation
    from certificates.services.chain import certificate_client, operations_drain

    port = free_port()
    os.environ["SOLANA_RPC_URL"] = f"http://127.0.0.1:{port}"
    localnet = start_localnet(port, workdir)
    try:
        from django.conf import settings

        import config

        settings.CHAIN = config.load().chain
        call_command("chain_init", stdout=open(os.devnull, "w"))  # noqa: SIM115
        call_command("certificates_chain_init", "--new-mint", stdout=open(os.devnull, "w"))  # noqa: SIM115
        pending = ChainOperation.objects.filter(status="pending").count()
        started = time.monotonic()
        while ChainOperation.objects.filter(status__in=["pending", "sending"]).exists():
            operations_drain(limit=args.chain_limit)
            if time.monotonic() - started > 3600:
                break
        elapsed = time.monotonic() - started
        confirmed = ChainOperation.objects.filter(status="confirmed").count()
        say(f"chain: {confirmed}/{pending} certificate transactions confirmed in {elapsed:.1f} s = "
            f"{confirmed / elapsed:,.0f} tx/s (one transaction per issuance, the pipeline's batches)")  # fmt: skip
        client = certificate_client()
        active = sum(b.quantity_wh for b in CertificateBundle.objects.filter(status="active"))
        sample = list(CertificateBundle.objects.filter(status="active").values_list("holder_wallet", flat=True)[:20])
        held = defaultdict(int)
        for bundle in CertificateBundle.objects.filter(status="active", holder_wallet__in=sample):
            held[bundle.holder_wallet] += bundle.quantity_wh
        mismatched = sum(client.token_balance(w) != wh for w, wh in held.items())
        say(f"  supply {client.token_supply():,} Wh vs registry active {active:,} Wh; "
            f"{len(held)} sampled holders, {mismatched} mismatched")  # fmt: skip
    finally:
        stop(localnet)


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gt-cert-bench-"))
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "gridtoken.settings", "DEBUG": "true", "LOG_LEVEL": "WARNING",
        "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url,
        "SOLANA_KEYPAIR_PATH": str(workdir / "authority.json"),
    }  # fmt: skip
    os.environ.update(env)
    create_database(args.database_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("flush", "--no-input", verbosity=0)
    say(f"seeding {args.devices} devices x {args.hours} h x 4 readings ...")
    started = time.monotonic()
    exported = seed(args.devices, args.hours)
    say(f"  seeded in {time.monotonic() - started:.1f} s")
    elapsed = issue(args.processes, env)
    from certificates.models import Issuance

    count = Issuance.objects.count()
    say(f"issuance: {count:,} certificate bundles in {elapsed:.1f} s with {args.processes} process(es) = "
        f"{count / elapsed:,.0f} issuances/s")  # fmt: skip
    wh = check_issuance(exported, args.devices, args.hours)
    say(f"  {wh / elapsed:,.0f} Wh certified/s")
    if args.chain:
        chain_phase(args, workdir)


if __name__ == "__main__":
    main()
