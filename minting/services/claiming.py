"""Claiming readings for a mint: row locks with SKIP LOCKED, so concurrent workers never share a reading.

Each function must run inside the transaction that will also insert the batch rows: the locks it takes
are what keeps every other worker away until the readings are linked to a signed batch (or released by
a rollback, untouched).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from meters.models import MeterReading
from minting.services.policy import after_failed_attempt, rollout_bucket_sql

READINGS = MeterReading._meta.db_table
# kwh_amount here is what the reading mints (its mintable_kwh, by the mint basis), not its signed net.
_COLUMNS = (
    "id, user_id, wallet_address, mintable_kwh, attempts, status, token_amount, token_ratio, token_decimals,"
    " last_error, meter_id, source, window_start"
)


@dataclass(frozen=True)
class ClaimedReading:
    id: uuid.UUID
    user_id: uuid.UUID
    wallet_address: str
    kwh_amount: Decimal
    attempts: int
    status: str
    token_amount: int | None = None  # fixed at the first claim, with the conversion it came from
    token_ratio: Decimal | None = None
    token_decimals: int | None = None
    last_error: str = ""
    meter_id: uuid.UUID | None = None
    source: str = "interval"
    window_start: datetime | None = None


def _fetch(sql: str, params: dict) -> list[ClaimedReading]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [ClaimedReading(*row) for row in cursor.fetchall()]


def claim_due(*, limit: int, rollout_percentage: int = 100, now: datetime | None = None) -> list[ClaimedReading]:
    """Lock up to ``limit`` pending readings that are due, oldest due first, skipping rows others hold.

    Served by the partial index ``reading_pending_due_idx``. With ``rollout_percentage`` below 100 only
    users whose stable bucket is below it are claimed (the others wait for a wider rollout or an operator).
    """
    if not connection.in_atomic_block:
        raise RuntimeError("claim_due must run inside the transaction that links the readings to their batch")
    rollout = ""
    if rollout_percentage < 100:
        rollout = f" AND {rollout_bucket_sql('user_id')} < %(percentage)s"
    sql = (
        f"SELECT {_COLUMNS} FROM {READINGS}"  # noqa: S608
        f" WHERE status = 'pending' AND next_attempt_at <= %(now)s{rollout}"
        " ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
    )
    return _fetch(sql, {"now": now or timezone.now(), "limit": limit, "percentage": rollout_percentage})


def claim_by_ids(*, reading_ids: list[uuid.UUID]) -> list[ClaimedReading]:
    """Lock the given readings that an operator may mint now (pending, due or not, and failed ones).

    Rows another worker holds are skipped: they are being minted already.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("claim_by_ids must run inside the transaction that links the readings to their batch")
    sql = (
        f"SELECT {_COLUMNS} FROM {READINGS}"  # noqa: S608
        " WHERE id = ANY(%(ids)s) AND status IN ('pending', 'failed')"
        " ORDER BY submitted_at FOR UPDATE SKIP LOCKED"
    )
    return _fetch(sql, {"ids": list(reading_ids)})


def readings_link(*, links: list[tuple[uuid.UUID, uuid.UUID, int, Decimal, int]]) -> None:
    """(reading id, batch id, token amount, ratio, decimals) -> status minting, linked to its batch, priced."""
    if not links:
        return
    ids, batch_ids, amounts, ratios, decimals = zip(*links, strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {READINGS} AS r SET status = 'minting', batch_id = v.batch_id, token_amount = v.amount,"  # noqa: S608
            " token_ratio = v.ratio, token_decimals = v.decimals"
            " FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::numeric[], %s::smallint[])"
            " AS v(id, batch_id, amount, ratio, decimals) WHERE r.id = v.id",
            [list(ids), list(batch_ids), list(amounts), list(ratios), list(decimals)],
        )


def readings_fail_now(*, failures: dict[uuid.UUID, str]) -> None:
    """Dead-letter readings whose transaction can never be built (a permanent error): failed, one attempt used."""
    if not failures:
        return
    ids, errors = zip(*failures.items(), strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {READINGS} AS r SET status = 'failed', attempts = r.attempts + 1, last_error = v.error"  # noqa: S608
            " FROM unnest(%s::uuid[], %s::text[]) AS v(id, error) WHERE r.id = v.id",
            [list(ids), list(errors)],
        )


def readings_charge(*, failures: dict[uuid.UUID, str]) -> list[MeterReading]:
    """Charge one attempt to readings whose mint failed before anything was signed (nothing can have been sent):
    ``pending`` again after the back-off, or ``failed`` after the last attempt. A row another worker claimed
    meanwhile is left to it. Returns the charged rows."""
    with transaction.atomic():
        rows = list(
            MeterReading.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("meter")
            .filter(id__in=list(failures), status__in=[MeterReading.Status.PENDING, MeterReading.Status.FAILED])
        )
        now = timezone.now()
        for row in rows:
            row.attempts += 1
            row.status, row.next_attempt_at = after_failed_attempt(row.attempts, now)
            row.last_error = failures[row.id][:2000]
        MeterReading.objects.bulk_update(rows, ["attempts", "status", "next_attempt_at", "last_error"])
    return rows
