"""What minting cost on chain per day: fees, rent, lamports per kWh and per reading (docs/CHAIN.md)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from minting.selectors import chain_costs_by_day

LAMPORTS_PER_SOL = 10**9


class Command(BaseCommand):
    help = (
        "Chain costs of the last N UTC days (by the batches' settle time), from the daily cost rollup: "
        "transaction fees (signatures + priority), rent of new accounts, lamports per kWh and per reading."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=30, help="how many days back, today included (1..3660)")

    def handle(self, *args, days: int, **options):
        if not 1 <= days <= 3660:
            raise CommandError(f"--days must be 1..3660 (got {days})")
        rows = chain_costs_by_day(days=days)
        if not rows:
            self.stdout.write(f"no landed batch in the last {days} day(s): nothing cost anything yet")
            return
        header = ("day", "batches", "readings", "kWh", "fee", "priority", "rent", "lamports/kWh", "lamports/reading")
        self.stdout.write("{:<10} {:>8} {:>9} {:>16} {:>12} {:>12} {:>12} {:>13} {:>16}".format(*header))
        total = dict.fromkeys(("batches", "readings", "fee", "priority", "rent"), 0)
        kwh = 0
        for row in rows:
            self.stdout.write(
                f"{row.day.isoformat():<10} {row.batches:>8} {row.readings:>9} {row.kwh:>16.3f} {row.fee_lamports:>12} "
                f"{row.priority_fee_lamports:>12} {row.rent_lamports:>12} {_figure(row.lamports_per_kwh):>13} "
                f"{_figure(row.lamports_per_reading):>16}"
            )
            total["batches"] += row.batches
            total["readings"] += row.readings
            total["fee"] += row.fee_lamports
            total["priority"] += row.priority_fee_lamports
            total["rent"] += row.rent_lamports
            kwh += row.kwh
        lamports = total["fee"] + total["rent"]
        per_kwh = f"{lamports / kwh:.2f}" if kwh else "-"
        per_reading = f"{lamports / total['readings']:.2f}" if total["readings"] else "-"
        self.stdout.write(
            f"{'total':<10} {total['batches']:>8} {total['readings']:>9} {kwh:>16.3f} {total['fee']:>12} "
            f"{total['priority']:>12} {total['rent']:>12} {per_kwh:>13} {per_reading:>16}"
        )
        self.stdout.write(f"{lamports} lamports = {lamports / LAMPORTS_PER_SOL:.9f} SOL over {len(rows)} day(s)")


def _figure(value) -> str:
    return "-" if value is None else f"{value}"
