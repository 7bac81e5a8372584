"""What minting costs on chain: the hourly priority-fee ceiling, each landed batch's fee and rent, the daily report.

- **Hourly ceiling** (``priority_budget_check``): inside the claim's transaction, before the batches are
  committed, the priority fees the new transactions commit to plus those of the batches signed in the last 60
  minutes (not expired: an expired transaction never paid) must stay within
  ``SOLANA_PRIORITY_FEE_MAX_LAMPORTS_PER_HOUR``; otherwise ``PriorityFeeCapped`` (``priority_fee_hourly_cap``):
  the claim rolls back, no reading is charged and minting waits for the window to slide. An advisory lock makes
  the check and the insert one step across workers. The sum reads the last hour's batches by ``created_at``.
- **Landed costs** (``batch_costs_record``): for batches that landed (confirmed or failed), one JSON-RPC batch of
  getTransaction reads the fee (signatures + priority) and the rent of the accounts each created from the
  meta; each batch's row is written once (``fee_lamports IS NULL``) and its day's ``ChainCostDay`` row added
  to in the same transaction. A node without the transaction yet leaves it for reconciliation
  (``batch_costs_backfill``, the partial index ``batch_costs_unread_idx``).
- **Report**: ``minting.selectors.chain_costs_by_day`` reads the rollup (lamports per kWh and per reading).
"""

from __future__ import annotations

import logging
from datetime import UTC, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone
from solders.transaction import VersionedTransaction

from minting.chain import ChainClient, ChainError, SignedMint
from minting.chain.errors import PriorityFeeCapped
from minting.chain.fees import landed_cost
from minting.models import MintBatch

logger = logging.getLogger("minting.costs")

HOURLY_LOCK = 0x6772_6964_6665_6531  # pg_advisory_xact_lock key of the hourly priority-fee check
BACKFILL_LIMIT = 256
BACKFILL_WINDOW = timedelta(days=1)


def priority_budget_check(signed: list[SignedMint]) -> None:
    """PriorityFeeCapped when ``signed`` would take the last hour's priority fees past the hourly ceiling."""
    cap = settings.CHAIN.fees.max_lamports_per_hour
    adding = sum(item.priority_fee for item in signed)
    if not cap or not adding:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [HOURLY_LOCK])
    spent = priority_spent_last_hour()
    if spent + adding > cap:
        raise PriorityFeeCapped(
            f"the last hour's priority fees ({spent} lamports) and this cycle's ({adding}) would pass "
            f"SOLANA_PRIORITY_FEE_MAX_LAMPORTS_PER_HOUR={cap}: minting waits until the hour allows (no reading is "
            "charged); raise the ceiling to pay the market",
            code="priority_fee_hourly_cap",
        )


def priority_spent_last_hour() -> int:
    since = timezone.now() - timedelta(hours=1)
    spent = (
        MintBatch.objects.filter(created_at__gte=since)
        .exclude(status=MintBatch.Status.EXPIRED)
        .aggregate(total=Sum("priority_fee_lamports"))["total"]
    )
    return int(spent or 0)


def batch_costs_record(client: ChainClient, batches: list[MintBatch]) -> int:
    """Read and record the costs of landed ``batches``; returns how many were recorded. Never raises a chain
    error: what cannot be read now is read by reconciliation later."""
    if not batches:
        return 0
    config = {"encoding": "base64", "commitment": client.commitment, "maxSupportedTransactionVersion": 0}
    try:
        answers = client.rpc.call_batch("getTransaction", [([batch.signature, config], None) for batch in batches])
    except ChainError as exc:
        logger.info("landed costs not read; reconciliation reads them", extra={"error": str(exc)})
        return 0
    recorded = 0
    for batch, answer in zip(batches, answers, strict=True):
        if isinstance(answer, ChainError):
            continue
        signatures = len(VersionedTransaction.from_bytes(bytes(batch.raw_transaction)).signatures)
        try:
            cost = landed_cost(answer, signatures)
        except ChainError as exc:
            logger.warning(
                "a landed transaction's meta is unreadable", extra={"batch": str(batch.id), "error": str(exc)}
            )
            continue
        if cost is not None:
            recorded += _record(batch.id, cost)
    return recorded


def _record(batch_id, cost) -> int:
    with transaction.atomic():
        updated = MintBatch.objects.filter(
            id=batch_id, fee_lamports__isnull=True, status__in=[MintBatch.Status.CONFIRMED, MintBatch.Status.FAILED]
        ).update(fee_lamports=cost.fee, rent_lamports=cost.rent, compute_units_consumed=cost.compute_units)
        if not updated:
            return 0
        row = MintBatch.objects.values("status", "settled_at", "reading_count", "kwh").get(id=batch_id)
        minted = row["status"] == MintBatch.Status.CONFIRMED
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO minting_chaincostday AS d
                    (day, batches, readings, kwh, fee_lamports, priority_fee_lamports, rent_lamports)
                VALUES (%s, 1, %s, %s, %s, %s, %s)
                ON CONFLICT (day) DO UPDATE SET
                    batches = d.batches + 1, readings = d.readings + EXCLUDED.readings, kwh = d.kwh + EXCLUDED.kwh,
                    fee_lamports = d.fee_lamports + EXCLUDED.fee_lamports,
                    priority_fee_lamports = d.priority_fee_lamports + EXCLUDED.priority_fee_lamports,
                    rent_lamports = d.rent_lamports + EXCLUDED.rent_lamports
                """,
                [
                    (row["settled_at"] or timezone.now()).astimezone(UTC).date(),
                    row["reading_count"] if minted else 0,
                    row["kwh"] if minted else Decimal(0),
                    cost.fee,
                    cost.priority_fee,
                    cost.rent,
                ],
            )
    return 1


def _unread():
    """Batches that landed in the last BACKFILL_WINDOW without their costs read (``batch_costs_unread_idx``).
    Older ones are left: batches from before costs were recorded, and any whose transaction no node could show
    within a day (a provider keeps that much history at least)."""
    return MintBatch.objects.filter(
        status__in=[MintBatch.Status.CONFIRMED, MintBatch.Status.FAILED],
        fee_lamports__isnull=True,
        settled_at__gte=timezone.now() - BACKFILL_WINDOW,
    )


def costs_unread() -> bool:
    return _unread().exists()


def batch_costs_backfill(client: ChainClient, *, limit: int = BACKFILL_LIMIT) -> int:
    """Record the costs of the unread batches (oldest first)."""
    return batch_costs_record(client, list(_unread().order_by("settled_at")[:limit]))
