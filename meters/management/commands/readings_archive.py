"""Archive the readings partitions older than READINGS_RETENTION_DAYS (docs/RETENTION.md), as the daily beat
task does:

    python manage.py readings_archive --dry-run   # what would be archived, and why not
    python manage.py readings_archive             # export, verify, then detach and drop each expired month

One line per partition and progress lines while a partition is written. Exit code 1 when a month could not
be archived: the destination could not be written or read, or the file read back did not verify (nothing of
that month was dropped); a partition skipped for readings that are not final is not an error.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from meters.archive.services import readings_archive


class Command(BaseCommand):
    help = "Export, verify and drop the readings partitions older than READINGS_RETENTION_DAYS."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="list what would be archived and why not")

    def handle(self, *args, dry_run: bool, **options) -> None:
        outcomes = readings_archive(dry_run=dry_run, report=self.stdout.write)
        archived = sum(outcome.action == "archived" for outcome in outcomes)
        failed = [outcome.partition for outcome in outcomes if outcome.failed]
        self.stdout.write(f"{len(outcomes)} partition(s) looked at, {archived} archived, {len(failed)} failed.")
        if failed:
            raise CommandError(
                f"{', '.join(failed)}: not archived (the lines above say why: the destination could not be written or "
                "read, or the file read back did not verify); nothing of it was dropped. Check the destination "
                "(READINGS_ARCHIVE_URL), then run readings_archive again: it exports those anew."
            )
