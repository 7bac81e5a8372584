"""Settling signed batches once the chain has decided: confirmed, failed on chain, or expired unlanded.

Every transition is a conditional ``UPDATE ... WHERE status = 'signed'`` on the batch row, so when the
minting task and a reconciler (or two reconcilers) settle the same batch at once, exactly one of them
wins and only the winner touches the readings and emits events. Events and the audit line leave only on
commit.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

from django.db import connection, transaction
from django.utils import timezone

from meters.models import Meter
from minting.models import MintBatch
from minting.services.claiming import READINGS
from minting.services.policy import is_final_attempt, retry_delay
from realtime import events

audit = logging.getLogger("minting.audit")
logger = logging.getLogger("minting.settlement")

BATCHES = MintBatch._meta.db_table
METERS = Meter._meta.db_table
EXPIRED_ERROR = "blockhash expired before the transaction landed"


@dataclass
class Settlement:
    confirmed: list[uuid.UUID] = field(default_factory=list)
    failed: dict[uuid.UUID, str] = field(default_factory=dict)  # batch id -> on-chain error
    expired: list[uuid.UUID] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.confirmed or self.failed or self.expired)


@dataclass
class SettleResult:
    minted: int = 0
    retried: int = 0  # released for another transaction (pending again)
    dead: int = 0  # failed for good after the last attempt
    batches: int = 0

    def add(self, other: SettleResult) -> None:
        self.minted += other.minted
        self.retried += other.retried
        self.dead += other.dead
        self.batches += other.batches


def _rows(cursor) -> list[SimpleNamespace]:
    names = [col.name for col in cursor.description]
    return [SimpleNamespace(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def _claim_batches(cursor, batch_ids, status: str, error: str | None = None) -> list[SimpleNamespace]:
    cursor.execute(
        f"UPDATE {BATCHES} SET status = %s, settled_at = %s, error = COALESCE(%s, error)"  # noqa: S608
        " WHERE id = ANY(%s) AND status = 'signed' RETURNING id, signature, error, reading_count, total_token_amount",
        [status, timezone.now(), error, list(batch_ids)],
    )
    return _rows(cursor)


def _confirm(cursor, batch_ids) -> tuple[SettleResult, list[dict]]:
    won = _claim_batches(cursor, batch_ids, MintBatch.Status.CONFIRMED, "")
    if not won:
        return SettleResult(), []
    cursor.execute(
        f"UPDATE {READINGS} AS r SET status = 'minted', minted = TRUE, mint_tx_signature = b.signature,"  # noqa: S608
        " last_error = ''"
        f" FROM {BATCHES} AS b, {METERS} AS m"
        " WHERE b.id = ANY(%s) AND r.batch_id = b.id AND r.status = 'minting' AND m.id = r.meter_id"
        " RETURNING r.id, r.user_id, r.meter_id, r.wallet_address, r.kwh_amount, r.token_amount,"
        " r.mint_tx_signature, r.batch_id, m.serial AS meter_serial",
        [[b.id for b in won]],
    )
    readings = _rows(cursor)
    by_batch: dict[uuid.UUID, list] = {b.id: [] for b in won}
    for reading in readings:
        by_batch[reading.batch_id].append(reading)
    emitted = [events.tokens_minted(r, meter_serial=r.meter_serial) for r in readings]
    for batch in won:
        members = by_batch[batch.id]
        emitted.append(
            events.batch_completed(
                batch_id=batch.id,
                signature=batch.signature,
                total_readings=len(members),
                successful_mints=len(members),
                failed_mints=0,
            )
        )
        audit.info(
            "mint confirmed",
            extra={
                "audit": "mint_confirmed",
                "batch_id": str(batch.id),
                "signature": batch.signature,
                "readings": [str(r.id) for r in members],
                "amounts": [int(r.token_amount) for r in members],
                "wallets": sorted({r.wallet_address for r in members}),
                "total_token_amount": int(batch.total_token_amount),
            },
        )
    return SettleResult(minted=len(readings), batches=len(won)), emitted


def _release(cursor, batch_ids, *, status: str, error: str, consume_attempt: bool) -> tuple[SettleResult, list[dict]]:
    """Give the batch's readings back: a fresh transaction next (expired) or a retry with back-off (failed)."""
    won = _claim_batches(cursor, batch_ids, status, error)
    if not won:
        return SettleResult(), []
    cursor.execute(
        f"SELECT r.id, r.user_id, r.meter_id, r.wallet_address, r.kwh_amount, r.attempts, r.batch_id,"  # noqa: S608
        f" m.serial AS meter_serial FROM {READINGS} AS r JOIN {METERS} AS m ON m.id = r.meter_id"
        " WHERE r.batch_id = ANY(%s) AND r.status = 'minting' FOR UPDATE OF r",
        [[b.id for b in won]],
    )
    readings = _rows(cursor)
    now = timezone.now()
    result, emitted = SettleResult(batches=len(won)), []
    for reading in readings:
        if consume_attempt:
            reading.attempts += 1
            final = is_final_attempt(reading.attempts)
            reading.status = "failed" if final else "pending"
            reading.next_attempt_at = now if final else now + retry_delay(reading.attempts)
            emitted.append(events.mint_failed(reading, meter_serial=reading.meter_serial, error=error, final=final))
            result.dead += final
            result.retried += not final
        else:
            reading.status, reading.next_attempt_at = "pending", now
            result.retried += 1
    if readings:
        cursor.execute(
            f"UPDATE {READINGS} AS r SET status = v.status, attempts = v.attempts,"  # noqa: S608
            " next_attempt_at = v.next_attempt_at, last_error = %s, token_amount = NULL"
            " FROM unnest(%s::uuid[], %s::text[], %s::int[], %s::timestamptz[])"
            " AS v(id, status, attempts, next_attempt_at)"
            " WHERE r.id = v.id",
            [
                error[:2000],
                [r.id for r in readings],
                [r.status for r in readings],
                [r.attempts for r in readings],
                [r.next_attempt_at for r in readings],
            ],
        )
    counts: dict[uuid.UUID, int] = {b.id: 0 for b in won}
    for reading in readings:
        counts[reading.batch_id] += 1
    for batch in won:
        if consume_attempt:
            emitted.append(
                events.batch_completed(
                    batch_id=batch.id,
                    signature=batch.signature,
                    total_readings=counts[batch.id],
                    successful_mints=0,
                    failed_mints=counts[batch.id],
                )
            )
        logger.warning(
            "mint batch %s",
            status,
            extra={
                "batch_id": str(batch.id),
                "signature": batch.signature,
                "error": error,
                "readings": counts[batch.id],
                "attempt_consumed": consume_attempt,
            },
        )
    return result, emitted


def batches_settle(settlement: Settlement) -> SettleResult:
    """Apply what the chain decided, in one transaction; batches already settled by someone else are skipped.

    Expired batches that the node had refused outright (their ``error`` records the refusal) count as a
    failed attempt of their readings; plain expiry does not, the readings simply get a fresh transaction.
    """
    result, emitted = SettleResult(), []
    released_pending = False
    with transaction.atomic(), connection.cursor() as cursor:
        if settlement.confirmed:
            part, evs = _confirm(cursor, settlement.confirmed)
            result.add(part)
            emitted += evs
        for batch_id, error in settlement.failed.items():
            part, evs = _release(
                cursor,
                [batch_id],
                status=MintBatch.Status.FAILED,
                error=f"failed on chain: {error}",
                consume_attempt=True,
            )
            result.add(part)
            emitted += evs
        if settlement.expired:
            refused = dict(
                MintBatch.objects.filter(id__in=settlement.expired, status=MintBatch.Status.SIGNED)
                .exclude(error="")
                .values_list("id", "error")
            )
            plain = [b for b in settlement.expired if b not in refused]
            part, evs = _release(
                cursor, plain, status=MintBatch.Status.EXPIRED, error=EXPIRED_ERROR, consume_attempt=False
            )
            result.add(part)
            emitted += evs
            for batch_id, refusal in refused.items():
                part, evs = _release(
                    cursor, [batch_id], status=MintBatch.Status.EXPIRED, error=refusal, consume_attempt=True
                )
                result.add(part)
                emitted += evs
        released_pending = result.retried > 0
        events.emit(emitted)
        if released_pending:
            from minting.triggers import mint_soon

            transaction.on_commit(mint_soon)
    return result
