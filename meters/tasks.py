"""Celery tasks of the meters app: thin wrappers around services (state lives in PostgreSQL)."""

from celery import shared_task

from meters.archive.services import readings_archive
from meters.partitions import partitions_ensure
from meters.services.rollups import fleet_minute_record, rollups_fold_all


@shared_task(ignore_result=True)
def fold_rollups() -> int:
    """Beat: fold the readings' rollup deltas and every registered log's (harmless twice: a second run finds
    the lock taken or nothing), then record this minute's fleet figures for the operator's charts."""
    folded = rollups_fold_all()
    fleet_minute_record()
    return folded


@shared_task(ignore_result=True)
def ensure_partitions() -> list[str]:
    """Beat: create the readings' monthly partitions ahead and move readings waiting in the default partition
    into their months (docs/PARTITIONS.md; idempotent: a second run finds nothing to do)."""
    return partitions_ensure()


# A month's partition can take minutes to export: far past the workers' default time limit.
@shared_task(ignore_result=True, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def archive_readings() -> int:
    """Beat, daily: archive the expired readings partitions (docs/RETENTION.md); the number archived. Harmless
    twice: a second run finds the run lock taken, and an attempt cut short leaves its partition in place."""
    return sum(outcome.action == "archived" for outcome in readings_archive())
