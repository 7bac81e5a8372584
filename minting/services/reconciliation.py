"""Reconciliation: settle every signed batch from what the chain says, never by guessing.

Runs on beat (every ``RECONCILE_INTERVAL_SECS``) and on demand. For each batch still ``signed``:
landed without error -> readings minted; landed with an error -> readings retried with back-off; not
landed and the chain's block height still within ``last_valid_block_height`` -> the same raw bytes are
sent again (the signature cannot change, so this can never mint twice); not landed and the height is past
it -> expired, readings released for a fresh transaction. A batch orphaned by a killed worker is therefore
settled by the first reconcile after its blockhash expires (about a minute), or minted by the resend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from minting.chain import ChainError
from minting.models import MintBatch
from minting.services.batching import batches_send, chain_client
from minting.services.chain_view import STATUS_CHUNK, as_signed, read_outcomes
from minting.services.control import decisions_blocked_record
from minting.services.costs import batch_costs_backfill, costs_unread
from minting.services.settlement import SettleResult, batches_settle

logger = logging.getLogger("minting.reconciliation")

RECONCILE_INTERVAL_SECS = 10
# Younger batches belong to a worker that is still confirming them.
RECONCILE_MIN_AGE_SECS = 5.0
RECONCILE_MAX_BATCHES = 5000


@dataclass
class ReconcileResult:
    examined: int = 0
    confirmed: int = 0
    failed: int = 0
    expired: int = 0
    resent: int = 0
    minted: int = 0
    error: str = ""

    def as_dict(self) -> dict:
        return dict(vars(self))


def batches_reconcile(
    *, min_age_secs: float = RECONCILE_MIN_AGE_SECS, limit: int = RECONCILE_MAX_BATCHES
) -> ReconcileResult:
    result = ReconcileResult()
    cutoff = timezone.now() - timedelta(seconds=min_age_secs)
    batches = list(
        MintBatch.objects.filter(status=MintBatch.Status.SIGNED, created_at__lte=cutoff).order_by("created_at")[:limit]
    )
    if not batches:
        _costs_backfill()
        return result
    settled = SettleResult()
    try:
        client = chain_client()
        for start in range(0, len(batches), STATUS_CHUNK):
            chunk = batches[start : start + STATUS_CHUNK]
            result.examined += len(chunk)
            settlement, undecided, blocked = read_outcomes(client, chunk)
            if settlement:
                settled.add(batches_settle(settlement))
            if blocked is not None:
                result.error = str(blocked)
                decisions_blocked_record(blocked)
            # Resending is harmless either way: the same bytes, the same signature.
            batches_send(client, [(batch, as_signed(batch)) for batch in undecided])
            result.resent += len(undecided)
    except ChainError as exc:
        result.error = str(exc)
        logger.warning("reconciliation could not reach the chain; next run retries", extra={"error": str(exc)})
    # Only the settles this run won: a worker or another reconciler may have settled some batches first.
    result.confirmed, result.failed, result.expired = settled.confirmed, settled.failed, settled.expired
    result.minted = settled.minted
    if result.examined:
        logger.info("reconciled in-flight batches", extra=result.as_dict())
    _costs_backfill()
    return result


def _costs_backfill() -> None:
    """Read the costs a worker could not read right after its batches landed (costs.py); never fails a run."""
    if not costs_unread():
        return
    try:
        batch_costs_backfill(chain_client())
    except ChainError as exc:
        logger.info("landed costs not read; next run retries", extra={"error": str(exc)})
