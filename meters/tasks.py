"""Celery tasks of the meters app: thin wrappers around services (state lives in PostgreSQL)."""

from celery import shared_task

from meters.partitions import partitions_ensure
from meters.services.rollups import rollups_fold_all


@shared_task(ignore_result=True)
def fold_rollups() -> int:
    """Beat: fold the readings' rollup deltas and every registered log's (harmless twice: a second run finds
    the lock taken or nothing)."""
    return rollups_fold_all()


@shared_task(ignore_result=True)
def ensure_partitions() -> list[str]:
    """Beat: create the readings' monthly partitions ahead and move readings waiting in the default partition
    into their months (docs/PARTITIONS.md; idempotent: a second run finds nothing to do)."""
    return partitions_ensure()
