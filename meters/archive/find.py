"""A reading by id: in the live table or, failing that, in the archive files whose partitions were dropped
(the manifests in PostgreSQL name them, newest month first). A file is searched by reading its id column row
group by row group; the file that holds the reading is then hashed and must equal its manifest."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pyarrow
from django.conf import settings
from django.db import connection

from meters.archive.destination import file_digest, file_open
from meters.archive.files import parquet_find, reading_document, select_sql
from meters.archive.models import ArchivedPartition
from meters.models import MeterReading


class ArchiveCorrupt(Exception):
    """The archive file that holds the reading no longer matches its manifest."""


@dataclass(frozen=True)
class FoundReading:
    reading: dict  # every column, JSON columns parsed
    where: dict  # {"table": ...} or the archive file, its manifest id, hash and "verified": True
    searched: int  # archive files read to find it


def reading_find(*, reading_id: uuid.UUID) -> FoundReading | None:
    with connection.cursor() as cursor:
        cursor.execute(f"{select_sql(MeterReading._meta.db_table)} WHERE id = %s", [reading_id])
        row = cursor.fetchone()
        if row is not None:
            columns = [column.name for column in cursor.description]
            return FoundReading(reading_document(dict(zip(columns, row, strict=True))), {"table": "live"}, 0)
    config = settings.RETENTION
    archives = ArchivedPartition.objects.filter(status=ArchivedPartition.Status.DROPPED).order_by("-lower", "-id")
    for searched, attempt in enumerate(archives, start=1):
        try:
            with file_open(attempt.url, config) as handle:
                row = parquet_find(handle, reading_id)
        except (OSError, pyarrow.ArrowException) as error:  # a damaged footer or page: the hash says which
            _check(attempt, config, f"cannot be read as Parquet ({error})")
            raise
        if row is None:
            continue
        sha256 = _check(attempt, config, f"holds reading {reading_id}")
        where = {
            "archive": attempt.url,
            "partition": attempt.partition,
            "manifest_id": attempt.pk,
            "sha256": sha256,
            "verified": True,
        }
        return FoundReading(reading_document(row), where, searched)
    return None


def _check(attempt: ArchivedPartition, config, what: str) -> str:
    """The file's sha256, if it still equals its manifest's; otherwise ``ArchiveCorrupt``."""
    sha256, size = file_digest(attempt.url, config)
    if (sha256, size) != (attempt.sha256, attempt.bytes):
        raise ArchiveCorrupt(
            f"{attempt.url} {what} but reads back as sha256 {sha256} ({size:,} bytes); "
            f"its manifest (ArchivedPartition {attempt.pk}) says {attempt.sha256} ({attempt.bytes:,} bytes)"
        )
    return sha256
