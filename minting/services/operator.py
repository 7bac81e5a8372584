"""Operator actions: mint chosen readings now, trigger a batch, retry dead letters, switch auto-mint.

Manual minting goes through exactly the same claim -> commit -> send -> settle path as automatic minting,
so it is just as exactly-once; it ignores the auto-mint switch, the rollout percentage and the outage
pause (an operator asked), and reports an unreachable chain as a 503 instead of pausing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from gridtoken.exceptions import ApplicationError, Conflict, NotFound, ValidationFailed
from meters.models import MeterReading
from minting.chain import ChainError
from minting.services.batching import CycleResult, chain_client, is_systemic, readings_mint
from minting.services.claiming import READINGS, claim_by_ids, claim_due
from minting.triggers import mint_soon

logger = logging.getLogger("minting.operator")

MAX_READINGS_PER_REQUEST = 1000
Status = MeterReading.Status


@dataclass(frozen=True)
class ReadingMintResult:
    reading_id: uuid.UUID
    success: bool
    status: str | None = None
    transaction_signature: str | None = None
    token_amount: int | None = None
    error: str | None = None


def chain_unavailable(exc: Exception) -> ApplicationError:
    return ApplicationError(
        "chain_unavailable",
        "The chain could not be reached; nothing was minted. Try again later.",
        details={"reason": str(exc), "reason_code": getattr(exc, "code", type(exc).__name__)},
        status=503,
    )


def _run(claim, *, actor: str) -> CycleResult:
    try:
        client = chain_client()
        result = readings_mint(client=client, claim=claim)
    except ChainError as exc:
        if is_systemic(exc):
            raise chain_unavailable(exc) from exc
        raise ApplicationError("chain_error", str(exc), status=502) from exc
    logger.info("operator mint", extra={"actor": actor, "claimed": result.claimed, "minted": result.minted})
    return result


def _outcome(reading: MeterReading | None, reading_id: uuid.UUID, before: str | None) -> ReadingMintResult:
    if reading is None:
        return ReadingMintResult(reading_id, False, error="reading not found")
    if before == Status.MINTED:
        return ReadingMintResult(
            reading_id, False, reading.status, reading.mint_tx_signature, reading.token_amount, "already minted"
        )
    if before == Status.REJECTED:
        return ReadingMintResult(reading_id, False, reading.status, error="rejected readings are never minted")
    if before == Status.MINTING:
        return ReadingMintResult(reading_id, False, reading.status, error="a mint of this reading is in progress")
    if reading.status == Status.MINTED:
        return ReadingMintResult(reading_id, True, reading.status, reading.mint_tx_signature, reading.token_amount)
    if reading.status == Status.MINTING:
        signature = reading.batch.signature if reading.batch_id else None
        return ReadingMintResult(
            reading_id,
            False,
            reading.status,
            signature,
            reading.token_amount,
            "submitted; confirmation pending (reconciliation will settle it)",
        )
    return ReadingMintResult(reading_id, False, reading.status, error=reading.last_error or "not minted")


def readings_mint_now(*, reading_ids: list[uuid.UUID], actor: str = "") -> list[ReadingMintResult]:
    """Mint the given readings now (one claim, merged per wallet); one result per id, in order."""
    ids = list(dict.fromkeys(reading_ids))
    if not ids:
        raise ValidationFailed("empty_reading_ids", "Give at least one reading id.", field="reading_ids")
    if len(ids) > MAX_READINGS_PER_REQUEST:
        raise ValidationFailed(
            "too_many_readings", f"At most {MAX_READINGS_PER_REQUEST} readings per request.", field="reading_ids"
        )
    before = dict(MeterReading.objects.filter(id__in=ids).values_list("id", "status"))
    if any(status in (Status.PENDING, Status.FAILED) for status in before.values()):
        _run(lambda: claim_by_ids(reading_ids=ids), actor=actor)
    after = MeterReading.objects.in_bulk(ids)
    for reading in after.values():
        if reading.status == Status.MINTING and reading.batch_id:
            reading.batch  # noqa: B018 (one query per in-flight reading, only on this rare path)
    return [_outcome(after.get(i), i, before.get(i)) for i in ids]


def reading_mint_now(*, reading_id: uuid.UUID, actor: str = "") -> tuple[MeterReading, bool]:
    """Mint one reading now: (the reading, whether its mint is confirmed). Errors for every other outcome."""
    reading = MeterReading.objects.filter(id=reading_id).first()
    if reading is None:
        raise NotFound("reading_not_found", "No reading with this id.", field="reading_id")
    if reading.status == Status.MINTED:
        raise ValidationFailed("already_minted", "This reading is already minted.", field="reading_id")
    if reading.status == Status.REJECTED:
        raise ValidationFailed("reading_rejected", "Rejected readings are never minted.", field="reading_id")
    if reading.status == Status.MINTING:
        raise Conflict("mint_in_progress", "A mint of this reading is already in progress.", field="reading_id")
    (result,) = readings_mint_now(reading_ids=[reading_id], actor=actor)
    reading.refresh_from_db()
    if result.success:
        return reading, True
    if reading.status == Status.MINTING:
        return reading, False
    raise ApplicationError(
        "mint_failed", result.error or "The mint failed.", details={"status": result.status}, status=502
    )


def batch_trigger(*, actor: str = "") -> CycleResult:
    """Mint one batch of due readings now, whatever the auto-mint switch says."""
    limit = settings.TOKENIZATION.batch_size
    return _run(lambda: claim_due(limit=limit), actor=actor)


def readings_retry(*, reading_ids: list[uuid.UUID] | None = None, actor: str = "") -> int:
    """Re-queue readings: failed ones (all, or the given ones) get a fresh set of attempts; given pending
    ones waiting out a back-off become due now. Minting follows at once through the trigger."""
    condition = "status = 'failed'"
    params: list = [timezone.now()]
    if reading_ids is not None:
        condition = "status IN ('failed', 'pending') AND id = ANY(%s)"
        params.append(list(reading_ids))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {READINGS} SET status = 'pending', next_attempt_at = %s,"  # noqa: S608
            f" attempts = CASE WHEN status = 'failed' THEN 0 ELSE attempts END WHERE {condition}",
            params,
        )
        count = cursor.rowcount
        if count:
            transaction.on_commit(lambda: mint_soon(force=True))
    logger.info("readings re-queued", extra={"actor": actor, "count": count})
    return count
