"""Reads behind the dashboard. Nothing here writes, not even the minting control row."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from meters.models import Meter, MeterReading
from minting.models import MintBatch, MintingControl
from minting.selectors import FEE_PAYER_LOW_LAMPORTS, chain_state, control_peek, fee_payer_address
from realtime.events import rfc3339

RECENT_READINGS = 25


def meter_list(*, user) -> list[Meter]:
    meters = Meter.objects.filter(owner=user)
    return list(meters.annotate(reading_count=Count("readings"), last_reading=Max("readings__submitted_at")))


def reading_list_recent(*, user, limit: int = RECENT_READINGS) -> list[MeterReading]:
    return list(MeterReading.objects.filter(user=user).select_related("meter").order_by("-submitted_at")[:limit])


def reading_as_dict(reading: MeterReading) -> dict:
    """The same field names as the events, so the page treats a fetched row and a pushed event alike."""
    return {
        "reading_id": str(reading.id),
        "meter_id": str(reading.meter_id),
        "meter_serial": reading.meter.serial,
        "kwh_amount": format(reading.kwh_amount, "f"),
        "reading_timestamp": rfc3339(reading.reading_timestamp),
        "submitted_at": rfc3339(reading.submitted_at),
        "status": reading.status,
        "tokens_minted": reading.token_amount if reading.status == MeterReading.Status.MINTED else None,
        "transaction_signature": reading.mint_tx_signature,
        "last_error": reading.last_error or None,
    }


def wallet_list(*, user) -> list[str]:
    """The user's wallet first, then any other wallet their meters pay into."""
    wallets = [user.wallet_address] if user.wallet_address else []
    for address in Meter.objects.filter(owner=user).values_list("wallet_address", flat=True).distinct():
        if address and address not in wallets:
            wallets.append(address)
    return wallets


def auto_mint_enabled(control: MintingControl | None) -> bool:
    """The control row wins once it exists; before that the environment's default is what workers will use."""
    return settings.TOKENIZATION.auto_mint_enabled if control is None else control.auto_mint_enabled


def _moment(value: datetime | None) -> str | None:
    return rfc3339(value) if value else None


def chain_banner(*, control: MintingControl | None, now: datetime) -> dict:
    """The chain's state as the page shows it: the breaker's pause, blocked decisions, the fee payer."""
    chain = chain_state(control=control, now=now)
    lamports = chain["fee_payer_lamports"]
    return {
        "paused": chain["paused"],
        "reason_code": chain["reason_code"],
        "message": chain["last_error"] if chain["paused"] else "",
        "paused_until": _moment(chain["paused_until"]) if chain["paused"] else None,
        "failures": chain["failures"],
        "decisions_blocked": chain["decisions_blocked"],
        "decisions_blocked_code": chain["decisions_blocked_code"] if chain["decisions_blocked"] else None,
        "decisions_blocked_reason": chain["decisions_blocked_reason"] if chain["decisions_blocked"] else "",
        "decisions_blocked_at": _moment(chain["decisions_blocked_at"]),
        "fee_payer_address": fee_payer_address(),
        "fee_payer_lamports": chain["fee_payer_lamports"],
        "fee_payer_sol": chain["fee_payer_sol"],
        "fee_payer_low": lamports is not None and lamports < FEE_PAYER_LOW_LAMPORTS,
        "fee_payer_checked_at": _moment(chain["fee_payer_checked_at"]),
    }


def batch_as_dict(batch: MintBatch | None) -> dict | None:
    if batch is None:
        return None
    return {
        "id": str(batch.id),
        "status": batch.status,
        "signature": batch.signature,
        "reading_count": batch.reading_count,
        "total_token_amount": int(batch.total_token_amount),
        "created_at": rfc3339(batch.created_at),
        "settled_at": rfc3339(batch.settled_at) if batch.settled_at else None,
        "error": batch.error or None,
    }


def pipeline_figures(*, now: datetime | None = None) -> dict:
    """What operators watch: the backlog, what is on its way to the chain, throughput and failures."""
    now = now or timezone.now()
    control = control_peek()
    readings = MeterReading.objects.aggregate(
        pending=Count("id", filter=Q(status=MeterReading.Status.PENDING)),
        minting=Count("id", filter=Q(status=MeterReading.Status.MINTING)),
        failed=Count("id", filter=Q(status=MeterReading.Status.FAILED)),
    )
    last_minute = now - timedelta(minutes=1)
    last_hour = now - timedelta(hours=1)
    batches = MintBatch.objects.aggregate(
        in_flight=Count("id", filter=Q(status=MintBatch.Status.SIGNED)),
        minted_last_minute=Sum(
            "reading_count", filter=Q(status=MintBatch.Status.CONFIRMED, settled_at__gte=last_minute)
        ),
        failed_last_hour=Count(
            "id", filter=Q(status__in=[MintBatch.Status.FAILED, MintBatch.Status.EXPIRED], settled_at__gte=last_hour)
        ),
    )
    return {
        "pending": readings["pending"],
        "in_flight_batches": batches["in_flight"],
        "in_flight_readings": readings["minting"],
        "minted_per_minute": batches["minted_last_minute"] or 0,
        "failed_readings": readings["failed"],
        "failed_batches_last_hour": batches["failed_last_hour"],
        "last_batch": batch_as_dict(MintBatch.objects.order_by("-created_at").first()),
        "auto_mint_enabled": auto_mint_enabled(control),
        "chain": chain_banner(control=control, now=now),
        "as_of": rfc3339(now),
    }
