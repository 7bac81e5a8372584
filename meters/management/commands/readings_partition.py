"""Partition the readings table by month online, and keep its partitions ahead (docs/PARTITIONS.md).

    python manage.py readings_partition                 # partition it (resumes an interrupted run), then ensure
    python manage.py readings_partition --chunk 50000   # rows per copy transaction (default 20,000)
    python manage.py readings_partition --no-swap       # copy and verify only; `migrate` (0009) swaps
    python manage.py readings_partition --status        # where it stands: copy progress or the partitions
    python manage.py readings_partition --through 2027-12  # once partitioned: create months through Dec 2027
    python manage.py readings_partition --abort         # drop an unfinished copy (the readings stay as they are)

Run it ahead of a deploy that brings migration 0009: writers go on meanwhile, Ctrl-C stops it at the end of a
chunk's transaction and the next run resumes there, and `migrate` then finds the work done.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError, connection

from meters.partitions import (
    DEFAULT_PARTITION,
    LOCK_TIMEOUT,
    TABLE,
    is_partitioned,
    partitions_ensure,
    readings_partitions,
)
from meters.repartition import CHUNK_ROWS, abort, progress, repartition


def month(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as error:
        raise CommandError(f"--through takes a month as YYYY-MM, e.g. 2027-12 (got {text!r})") from error


class Command(BaseCommand):
    help = "Partition the readings table by month online (resumable), and create its partitions ahead."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--chunk", type=int, default=CHUNK_ROWS, help="rows per copy transaction")
        parser.add_argument("--no-swap", action="store_true", help="copy and verify, leave the swap to migrate")
        parser.add_argument("--status", action="store_true", help="show where it stands and change nothing")
        parser.add_argument("--through", type=month, default=None, help="create monthly partitions through YYYY-MM")
        parser.add_argument("--abort", action="store_true", help="drop an unfinished copy, its mirror and progress")

    def handle(self, *args, chunk: int, no_swap: bool, status: bool, through, abort: bool, **options) -> None:
        if status:
            self._status()
        elif abort:
            self._abort()
        elif repartition(chunk_rows=chunk, swap_tables=not no_swap, out=self.stdout.write):
            try:
                created = partitions_ensure(through=through)
            except OperationalError as error:
                if getattr(error.__cause__, "sqlstate", None) != "55P03":
                    raise
                raise CommandError(
                    f"The readings table stayed busy for {LOCK_TIMEOUT} (a long transaction holds it): run this again,"
                    " or leave it to the hourly task."
                ) from error
            self.stdout.write(f"Partitions created: {', '.join(created) if created else 'none needed'}.")
        else:
            self.stdout.write("Copied and verified; `manage.py migrate` (0009) or a run without --no-swap swaps.")

    def _abort(self) -> None:
        with connection.cursor() as cursor:
            if is_partitioned(cursor):
                raise CommandError(f"{TABLE} is partitioned already; there is nothing to abort.")
        abort()
        self.stdout.write("Dropped the unfinished copy; the readings table is as it was.")

    def _status(self) -> None:
        state = progress()
        if state is not None:
            share = state.next_page / state.pages if state.pages else 1
            self.stdout.write(
                f"Copying: {state.rows_copied:,} rows, page {state.next_page:,} of {state.pages:,} ({share:.0%});"
                " run readings_partition to resume."
            )
            return
        with connection.cursor() as cursor:
            if not is_partitioned(cursor):
                self.stdout.write(f"{TABLE} is not partitioned yet; run readings_partition to partition it.")
                return
            cursor.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION}")  # noqa: S608
            waiting = cursor.fetchone()[0]
        partitions = readings_partitions()
        self.stdout.write(f"{len(partitions)} monthly partitions, {waiting} readings in {DEFAULT_PARTITION}:")
        for partition in partitions:
            self.stdout.write(f"  {partition.name}  [{partition.lower:%Y-%m-%d}, {partition.upper:%Y-%m-%d})")
