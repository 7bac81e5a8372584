"""Reads for operators: unminted readings, batch statistics, the pipeline's status."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from meters.models import MeterReading
from minting.models import MintBatch
from minting.services.control import control_get

RECENT_WINDOW = timedelta(hours=24)


def unminted_reading_list(*, limit: int = 50) -> QuerySet[MeterReading]:
    """Readings not minted yet (pending, in flight or failed), oldest first; rejected ones never mint."""
    return (
        MeterReading.objects.filter(minted=False)
        .exclude(status=MeterReading.Status.REJECTED)
        .select_related("meter")
        .order_by("submitted_at")[:limit]
    )


def unminted_reading_count() -> int:
    return MeterReading.objects.filter(minted=False).exclude(status=MeterReading.Status.REJECTED).count()


def reading_status_counts() -> dict[str, int]:
    rows = (
        MeterReading.objects.filter(status__in=["pending", "minting", "failed"])
        .values("status")
        .annotate(n=Count("id"))
    )
    counts = {"pending": 0, "minting": 0, "failed": 0}
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


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
    return {
        "auto_mint_enabled": control.auto_mint_enabled,
        "auto_mint_percentage": cfg.auto_mint_percentage,
        "polling_interval_secs": cfg.polling_interval_secs,
        "batch_size": cfg.batch_size,
        "unminted_readings_count": unminted_reading_count(),
        "readings_by_status": reading_status_counts(),
        "recent_batch_stats": batch_stats(),
        "chain": {
            "failures": control.chain_failures,
            "paused_until": control.chain_retry_at,
            "last_error": control.chain_error,
        },
        "updated_by": control.updated_by,
    }
