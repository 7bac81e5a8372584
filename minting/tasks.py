"""Celery tasks: thin wrappers. All state is in PostgreSQL, so any task may run twice harmlessly.

No Celery retries: a run that fails leaves every row as it was (or settled), and the beat sweep and the
reconciler run again within seconds.
"""

from celery import shared_task

from minting.services.automatic import readings_mint_due
from minting.services.reconciliation import batches_reconcile


@shared_task(ignore_result=True)
def mint_due_readings() -> dict:
    """The on-submit trigger's task and the beat sweep: mint due readings in full batches."""
    return readings_mint_due().as_dict()


@shared_task(ignore_result=True)
def reconcile_batches() -> dict:
    """Beat: settle signed batches from the chain (confirm, fail, resend the same bytes, or expire)."""
    return batches_reconcile().as_dict()
