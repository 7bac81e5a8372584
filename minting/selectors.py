"""Reads for operators: unminted readings, batch statistics, the pipeline's status, the chain's state."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from meters.models import MeterReading
from meters.selectors import fleet_totals
from minting.models import (
    BATCH_DURATION_BUCKETS,
    BatchDelta,
    BatchRollup,
    ChainCostDay,
    MintBatch,
    MintingControl,
    TokenMint,
)
from minting.services.control import control_get

RECENT_WINDOW = timedelta(hours=24)
# Every blocked settlement re-records decisions_blocked_at (the reconciler runs every 10 s), so a stamp
# older than this means the node has caught up, or no batch is waiting any more.
DECISIONS_BLOCKED_RECENT = timedelta(seconds=120)
# The dashboard's warning; the alert rules use the same figure (docs/alerts/gridtoken-rules.yml).
FEE_PAYER_LOW_LAMPORTS = 50_000_000  # 0.05 SOL: ~10,000 transaction fees, or ~24 new token accounts' rent
# The codes the breaker records (minting/chain/errors.py); docs/OPERATIONS.md has a runbook entry for each.
PAUSE_REASONS = (
    "rpc_unauthorized",
    "rpc_rate_limited",
    "rpc_unavailable",
    "rpc_timeout",
    "rpc_error",
    "rpc_providers_out",
    "insufficient_funds",
    "wrong_authority",
    "supply_overflow",
    "node_behind",
    "min_context_slot_not_reached",
    "history_unavailable",
    "signer_token_missing",
    "signer_locked",
    "signer_key_missing",
    "signer_refused",
    "priority_fee_cap",
    "priority_fee_hourly_cap",
)
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


BATCH_SUMS = (
    "batches",
    *(f"duration_le_{i}" for i in range(len(BATCH_DURATION_BUCKETS))),
    "duration_count",
    "duration_seconds",
)


def batch_totals() -> dict[str, dict]:
    """Per status (every one present), the number of mint batches and the histogram of their
    ``settled_at - created_at`` (``duration_le_<i>``, count, seconds): the batch rollup plus the deltas not
    folded yet, so exact at every moment, and as cheap on day 300 as on day 1 (docs/ROLLUPS.md)."""
    sums = ", ".join(f"sum({column})" for column in BATCH_SUMS)
    columns = ", ".join(("status", *BATCH_SUMS))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT status, {sums} FROM (SELECT {columns} FROM {BatchRollup._meta.db_table} "  # noqa: S608 (model names)
            f"UNION ALL SELECT {columns} FROM {BatchDelta._meta.db_table}) t GROUP BY status"
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    totals = {}
    for status in {*MintBatch.Status.values, *rows}:
        values = dict(zip(BATCH_SUMS, rows.get(status, (0,) * len(BATCH_SUMS)), strict=True))
        totals[status] = {column: Decimal(value) if column == "duration_seconds" else int(value)
                          for column, value in values.items()}  # fmt: skip
    return totals


def unminted_reading_list(*, limit: int = 50) -> QuerySet[MeterReading]:
    """Readings not minted yet (pending, in flight or failed), oldest first; rejected ones never mint."""
    return (
        MeterReading.objects.filter(minted=False)
        .exclude(status=MeterReading.Status.REJECTED)
        .select_related("meter")
        .order_by("submitted_at")[:limit]
    )


def unminted_reading_count(fleet: dict) -> int:
    """Readings not minted and not rejected, from the fleet rollup."""
    return fleet["rows"] - fleet["minted"] - fleet["rejected"]


def reading_status_counts(fleet: dict) -> dict[str, int]:
    return {status: fleet[status] for status in ("pending", "minting", "failed")}


def batch_stats(*, window: timedelta = RECENT_WINDOW) -> dict:
    since = timezone.now() - window
    recent = MintBatch.objects.filter(created_at__gte=since)
    by_status = {status: 0 for status in MintBatch.Status.values}
    by_status.update({row["status"]: row["n"] for row in recent.values("status").annotate(n=Count("id"))})
    confirmed = recent.aggregate(
        readings=Sum("reading_count", filter=Q(status="confirmed")),
        tokens=Sum("total_token_amount", filter=Q(status="confirmed")),
        last=Max("settled_at", filter=Q(status="confirmed")),
    )
    return {
        "window_hours": int(window.total_seconds() // 3600),
        "batches": by_status,
        "readings_minted": confirmed["readings"] or 0,
        "tokens_minted": int(confirmed["tokens"] or 0),
        "last_confirmed_at": confirmed["last"],
        "in_flight_batches": MintBatch.objects.filter(status=MintBatch.Status.SIGNED).count(),
    }


def tokenization_status() -> dict:
    control = control_get()
    cfg = settings.TOKENIZATION
    fleet = fleet_totals()
    return {
        "auto_mint_enabled": control.auto_mint_enabled,
        "auto_mint_percentage": cfg.auto_mint_percentage,
        "polling_interval_secs": cfg.polling_interval_secs,
        "batch_size": cfg.batch_size,
        "unminted_readings_count": unminted_reading_count(fleet),
        "readings_by_status": reading_status_counts(fleet),
        "recent_batch_stats": batch_stats(),
        "chain": {**chain_state(control=control), "fee_payer_address": fee_payer_address()},
        "updated_by": control.updated_by,
    }


def control_peek() -> MintingControl | None:
    """The control row as it is, or ``None`` before first use; unlike ``control_get`` it never writes."""
    return MintingControl.objects.filter(id=1).first()


def reason_code(code: str) -> str:
    """A stored code as a label value: the code when it looks like one, ``other`` otherwise (never free text)."""
    return code if _CODE.fullmatch(code) else "other"


def lamports_as_sol(lamports: int | None) -> str | None:
    """Exact decimal SOL (no float): 12_500_000 -> ``"0.0125"``."""
    if lamports is None:
        return None
    return format(Decimal(lamports).scaleb(-9).normalize(), "f")


def fee_payer_address() -> str | None:
    """The mint authority of the mint in use: it signs and pays for every mint transaction."""
    return TokenMint.objects.order_by("-created_at", "-id").values_list("authority", flat=True).first()


def chain_state(*, control: MintingControl | None, now: datetime | None = None) -> dict:
    """What the workers last learnt about the chain, as operators see it (status API, dashboard, /ready).

    ``paused``: the outage breaker holds automatic minting until ``paused_until``; ``reason_code`` says why
    (and ``last_error`` what to fix). ``decisions_blocked``: in the last ``DECISIONS_BLOCKED_RECENT``,
    settling an in-flight batch had to wait because the RPC lagged or lacked history.
    """
    now = now or timezone.now()
    if control is None:
        control = MintingControl(auto_mint_enabled=settings.TOKENIZATION.auto_mint_enabled)
    paused = control.chain_retry_at is not None and control.chain_retry_at > now
    blocked_at = control.decisions_blocked_at
    return {
        "paused": paused,
        "reason_code": reason_code(control.chain_error_code or "other") if paused else None,
        "failures": control.chain_failures,
        "paused_until": control.chain_retry_at,
        "last_error": control.chain_error,
        "last_error_code": control.chain_error_code or None,
        "fee_payer_lamports": control.fee_payer_lamports,
        "fee_payer_sol": lamports_as_sol(control.fee_payer_lamports),
        "fee_payer_checked_at": control.fee_payer_checked_at,
        "decisions_blocked": blocked_at is not None and now - blocked_at <= DECISIONS_BLOCKED_RECENT,
        "decisions_blocked_at": blocked_at,
        "decisions_blocked_reason": control.decisions_blocked_reason,
        "decisions_blocked_code": decisions_blocked_code(control.decisions_blocked_reason),
    }


def decisions_blocked_code(reason: str) -> str | None:
    """The code prefix of a recorded reason (``"node_behind: ..."`` -> ``node_behind``)."""
    if not reason:
        return None
    return reason_code(reason.split(":", 1)[0].strip())


@dataclass(frozen=True)
class DayCost:
    day: date
    batches: int
    readings: int
    kwh: Decimal
    fee_lamports: int
    priority_fee_lamports: int
    rent_lamports: int

    @property
    def lamports(self) -> int:
        return self.fee_lamports + self.rent_lamports

    @property
    def lamports_per_kwh(self) -> Decimal | None:
        return (Decimal(self.lamports) / self.kwh).quantize(Decimal("0.01")) if self.kwh else None

    @property
    def lamports_per_reading(self) -> Decimal | None:
        return (Decimal(self.lamports) / self.readings).quantize(Decimal("0.01")) if self.readings else None


def chain_costs_by_day(*, days: int) -> list[DayCost]:
    """The last ``days`` UTC days (today included) that have costs, newest first: one primary-key range."""
    since = timezone.now().astimezone(UTC).date() - timedelta(days=days - 1)
    rows = ChainCostDay.objects.filter(day__gte=since).order_by("-day")
    return [
        DayCost(r.day, r.batches, r.readings, r.kwh, r.fee_lamports, r.priority_fee_lamports, r.rent_lamports)
        for r in rows
    ]
