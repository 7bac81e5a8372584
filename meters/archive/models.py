"""The manifest of every archive attempt, kept forever (docs/RETENTION.md). Imported by ``meters.models``."""

from django.db import models
from django.utils import timezone

from meters.columns import KWH_DECIMAL_PLACES, SUM_KWH_DIGITS, SUM_UNITS_DIGITS


class ArchivedPartition(models.Model):
    """One export of one monthly readings partition: the file, its hash and the figures it must show. A row is
    written per attempt and never deleted; ``dropped`` rows name the only copy of their readings."""

    class Status(models.TextChoices):
        EXPORTED = "exported"  # the file and its manifest are written; not verified yet
        VERIFIED = "verified"  # read back from the destination: hash and figures equal the manifest
        DROPPED = "dropped"  # detached and dropped: the file is now the readings' only copy
        FAILED = "failed"  # the file read back differs from its manifest: nothing was dropped
        CHANGED = "changed"  # the partition changed after the export (a late reading): exported again next run

    id = models.BigAutoField(primary_key=True)
    partition = models.CharField(max_length=63, help_text="The partition's table name (meters_meterreading_pYYYYMM)")
    lower = models.DateTimeField(help_text="First reading_timestamp the partition holds")
    upper = models.DateTimeField(help_text="Its upper bound (excluded)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.EXPORTED)
    url = models.CharField(max_length=1024, help_text="The Parquet file; its manifest is beside it (.manifest.json)")
    bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    schema_version = models.PositiveSmallIntegerField()
    rows = models.BigIntegerField()
    meters = models.BigIntegerField(help_text="Distinct meters")
    kwh_sum = models.DecimalField(max_digits=SUM_KWH_DIGITS, decimal_places=KWH_DECIMAL_PLACES)
    mintable_kwh_sum = models.DecimalField(max_digits=SUM_KWH_DIGITS, decimal_places=KWH_DECIMAL_PLACES)
    token_units_sum = models.DecimalField(max_digits=SUM_UNITS_DIGITS, decimal_places=0)
    rows_digest = models.CharField(max_length=40, help_text="PostgreSQL's sum of every row's hash at the export")
    manifest = models.JSONField(help_text="The manifest as written beside the file")
    exported_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    dropped_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-lower", "-id"]
        indexes = [models.Index(fields=["status", "-lower"], name="archived_status_lower_idx")]

    def __str__(self) -> str:
        return f"{self.partition} ({self.status})"
