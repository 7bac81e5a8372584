"""python manage.py reading_find <id>: one reading as JSON, from the live table or from the archive.

A reading whose month was archived (docs/RETENTION.md) is looked for in the archive files the manifests in
PostgreSQL name (``ArchivedPartition``, newest month first; each file's id column is read, row group by row
group); the file that holds it is hashed and must equal its manifest. The reading is printed with its mint
batch (signature, status, slot), which stays in PostgreSQL. Exit code 1 when no reading has that id or the
archive file no longer matches its manifest.
"""

from __future__ import annotations

import json
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from meters.archive.destination import DestinationError
from meters.archive.find import ArchiveCorrupt, reading_find
from minting.models import MintBatch

BATCH_FIELDS = (
    "id",
    "status",
    "signature",
    "mint_address",
    "context_slot",
    "reading_count",
    "created_at",
    "settled_at",
)


class Command(BaseCommand):
    help = "Print a reading (JSON) by id from the live table or the verified archive, with its mint batch."

    def add_arguments(self, parser) -> None:
        parser.add_argument("reading_id", help="the reading's id (a UUID)")

    def handle(self, *args, reading_id: str, **options) -> None:
        try:
            wanted = uuid.UUID(reading_id)
        except ValueError:
            raise CommandError(f"{reading_id!r} is not a reading id: expected a UUID") from None
        try:
            found = reading_find(reading_id=wanted)
        except (ArchiveCorrupt, DestinationError) as error:
            raise CommandError(f"{error}. Restore the file from a copy, then run reading_find again.") from error
        if found is None:
            raise CommandError(f"No reading {wanted} in the readings table or any archive file.")
        batch_id = found.reading.get("batch_id")
        batch = MintBatch.objects.filter(pk=batch_id).values(*BATCH_FIELDS).first() if batch_id else None
        document = {"found_in": found.where, "reading": found.reading, "batch": batch}
        self.stdout.write(json.dumps(document, cls=DjangoJSONEncoder, indent=2))
