"""Fold the rollup deltas now (the readings', the mint batches'), as the beat task does every 5 s.

    python manage.py rollups_fold              # until none waits (after migration 0007's backfill, a restore)
    python manage.py rollups_fold --limit 1000 # one fold of at most 1,000 of the readings' deltas

Safe at any time and while the task runs: one fold holds the lock, a second finds it taken and stops.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from meters.models import ReadingDelta
from meters.services.rollups import FOLD_LIMIT, rollups_fold, rollups_fold_all


class Command(BaseCommand):
    help = "Fold the rollup deltas into the rollup tables (until none waits, or one --limit of the readings')."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help=f"one fold of at most this many (default: all, {FOLD_LIMIT} at a time)",
        )

    def handle(self, *args, limit: int | None, **options) -> None:
        folded = rollups_fold_all() if limit is None else rollups_fold(limit=limit)
        if folded < 0:
            self.stdout.write("Another fold holds the lock; nothing folded.")
            return
        self.stdout.write(f"Folded {folded} deltas; {ReadingDelta.objects.count()} waiting.")
