"""Reads behind the dashboard. Nothing here writes, not even the minting control row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, Sum
from django.utils import timezone

from gridtoken.events import rfc3339
from meters.models import Meter, MeterReading, MeterRollup, OwnerRollup
from meters.selectors import fleet_totals, rollup_totals
from minting.models import MintBatch, MintingControl
from minting.selectors import FEE_PAYER_LOW_LAMPORTS, chain_costs_by_day, chain_state, control_peek, fee_payer_address

RECENT_READINGS = 25
RECENT_WINDOWS = 24  # settlement windows shown per meter
WINDOW_METERS = 50  # meters shown in the window table
FLAGGED_SINCE = timedelta(hours=24)
READINGS, METERS = MeterReading._meta.db_table, Meter._meta.db_table


def meter_list(*, user) -> list[Meter]:
    """The user's meters with their reading count and last submission, from the meters' rollups."""
    meters = list(Meter.objects.filter(owner=user).order_by("serial"))
    totals = rollup_totals(MeterRollup, group_by="meter_id", meter_id=[meter.id for meter in meters])
    for meter in meters:
        row = totals.get(meter.id)
        meter.reading_count = row["rows"] if row else 0
        meter.last_reading = row["last_submitted_at"] if row else None
    return meters


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


def token_units(raw: int) -> str:
    """Base units as a decimal string with the token's decimals, exactly (no float)."""
    return format(Decimal(int(raw)).scaleb(-settings.TOKENIZATION.decimals), "f")


def batch_as_dict(batch: MintBatch | None) -> dict | None:
    if batch is None:
        return None
    return {
        "id": str(batch.id),
        "status": batch.status,
        "signature": batch.signature,
        "reading_count": batch.reading_count,
        "total_token_amount": int(batch.total_token_amount),
        "total_tokens": token_units(batch.total_token_amount),
        "created_at": rfc3339(batch.created_at),
        "settled_at": rfc3339(batch.settled_at) if batch.settled_at else None,
        "error": batch.error or None,
    }


def chain_cost_today() -> dict:
    """What today's (UTC) landed batches cost, from the daily cost rollup (one row by its key); figures as
    strings (exact Decimals), null before the first landed batch of the day."""
    (today,) = chain_costs_by_day(days=1) or [None]
    if today is None:
        return {"lamports": 0, "lamports_per_kwh": None, "lamports_per_reading": None}
    per_kwh, per_reading = today.lamports_per_kwh, today.lamports_per_reading
    return {
        "lamports": today.lamports,
        "lamports_per_kwh": None if per_kwh is None else str(per_kwh),
        "lamports_per_reading": None if per_reading is None else str(per_reading),
    }


def pipeline_figures(*, now: datetime | None = None) -> dict:
    """What operators watch, fleet-wide: the readings, the backlog, what is on its way to the chain,
    throughput and failures.

    Minted per minute is counted from the batches confirmed in the last minute, in tokens (exact, from their
    base units) and in readings. The status counts come from the fleet rollup.
    """
    now = now or timezone.now()
    control = control_peek()
    readings = fleet_totals()
    last_minute = now - timedelta(minutes=1)
    last_hour = now - timedelta(hours=1)
    # The last hour's settlements through batch_settled_idx, the in-flight ones through batch_status_created_idx.
    batches = MintBatch.objects.filter(settled_at__gte=last_hour).aggregate(
        minted_last_minute=Sum(
            "reading_count", filter=Q(status=MintBatch.Status.CONFIRMED, settled_at__gte=last_minute)
        ),
        tokens_last_minute=Sum(
            "total_token_amount", filter=Q(status=MintBatch.Status.CONFIRMED, settled_at__gte=last_minute)
        ),
        failed_last_hour=Count("id", filter=Q(status__in=[MintBatch.Status.FAILED, MintBatch.Status.EXPIRED])),
    )
    batches["in_flight"] = MintBatch.objects.filter(status=MintBatch.Status.SIGNED).count()
    tokens_last_minute = int(batches["tokens_last_minute"] or 0)
    return {
        "readings_total": readings["rows"],
        "meters_total": Meter.objects.count(),
        "recorded_readings": readings["recorded"],
        "held": readings["held"],
        "pending": readings["pending"],
        "in_flight_batches": batches["in_flight"],
        "in_flight_readings": readings["minting"],
        "minted_readings_per_minute": batches["minted_last_minute"] or 0,
        "minted_tokens_per_minute": token_units(tokens_last_minute),
        "minted_base_units_per_minute": tokens_last_minute,
        "failed_readings": readings["failed"],
        "failed_batches_last_hour": batches["failed_last_hour"],
        "last_batch": batch_as_dict(MintBatch.objects.order_by("-created_at").first()),
        "auto_mint_enabled": auto_mint_enabled(control),
        "chain_cost_today": chain_cost_today(),
        "chain": chain_banner(control=control, now=now),
        "as_of": rfc3339(now),
    }


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One meter's energy in one settlement window; kWh are exact Decimals."""

    meter_id: str
    meter_serial: str
    window_start: datetime
    generated_kwh: Decimal
    consumed_kwh: Decimal
    net_kwh: Decimal
    readings: int
    held: int
    flagged: int
    minted: bool | None  # None unless the mint basis is "window"


# Sums like window settlement does (meters/services/windows.py): a reading without its directions counts its
# positive net as generated and its negative net as consumed. Rejected readings are refused for good and
# count nowhere; derived window rows are left out of the sums (they repeat their readings) and only say
# whether the window was minted. Meters are chosen first (at most WINDOW_METERS with readings in range) so
# every scan below is an index range scan of one meter: reading_unique_meter_timestamp for the readings,
# reading_one_per_window for the window row.
WINDOW_TABLE_SQL = f"""
WITH chosen AS (
    SELECT m.id, m.serial FROM {METERS} m
    WHERE (%(owner)s::uuid IS NULL OR m.owner_id = %(owner)s::uuid)
      AND EXISTS (
        SELECT 1 FROM {READINGS} r
        WHERE r.meter_id = m.id AND NOT (r.source = 'window')
          AND r.reading_timestamp >= %(since)s AND r.reading_timestamp < %(until)s
      )
    ORDER BY m.serial
    LIMIT %(meters)s
)
SELECT c.id, c.serial, w.window_start, w.generated, w.consumed, w.net, w.readings, w.held, w.flagged,
    CASE WHEN %(window_basis)s THEN EXISTS (
        SELECT 1 FROM {READINGS} x
        WHERE x.meter_id = c.id AND x.source = 'window' AND x.window_start = w.window_start AND x.status = 'minted'
    ) END
FROM chosen c
CROSS JOIN LATERAL (
    SELECT to_timestamp(floor(extract(epoch FROM r.reading_timestamp) / %(secs)s) * %(secs)s) AS window_start,
        coalesce(sum(coalesce(r.generated_kwh, greatest(r.kwh_amount, 0.000000000))), 0.000000000) AS generated,
        coalesce(sum(coalesce(r.consumed_kwh, greatest(-r.kwh_amount, 0.000000000))), 0.000000000) AS consumed,
        sum(r.kwh_amount) AS net,
        count(*) AS readings,
        count(*) FILTER (WHERE r.status = 'held') AS held,
        count(*) FILTER (WHERE r.flags <> '[]'::jsonb) AS flagged
    FROM {READINGS} r
    WHERE r.meter_id = c.id AND NOT (r.source = 'window') AND NOT (r.status = 'rejected')
      AND r.reading_timestamp >= %(since)s AND r.reading_timestamp < %(until)s
    GROUP BY 1
) w
ORDER BY c.serial, w.window_start DESC
"""  # noqa: S608 (table names from the models)


def window_range(*, now: datetime, windows: int = RECENT_WINDOWS) -> tuple[datetime, datetime]:
    """[since, until): the current settlement window and the ``windows - 1`` before it (UTC-aligned)."""
    secs = settings.TOKENIZATION.window_secs
    epoch = int(now.timestamp())
    current = datetime.fromtimestamp(epoch - epoch % secs, tz=UTC)
    return current - timedelta(seconds=secs * (windows - 1)), current + timedelta(seconds=secs)


def window_table(*, user, now: datetime | None = None) -> list[WindowRow]:
    """Generated, consumed and net kWh per meter and settlement window, newest window first, in one query.

    A producer sees their own meters, an operator every meter (at most WINDOW_METERS, by serial).
    """
    since, until = window_range(now=now or timezone.now())
    params = {
        "owner": None if user.is_staff else str(user.pk),
        "since": since,
        "until": until,
        "meters": WINDOW_METERS,
        "secs": settings.TOKENIZATION.window_secs,
        "window_basis": settings.TOKENIZATION.mint_basis == "window",
    }
    with connection.cursor() as cursor:
        cursor.execute(WINDOW_TABLE_SQL, params)
        rows = cursor.fetchall()
    return [WindowRow(str(row[0]), *row[1:]) for row in rows]


def review_counts(*, user, now: datetime | None = None) -> dict:
    """Held readings (all of them, from the rollups) and flagged readings submitted in the last FLAGGED_SINCE,
    per flag (one query; a producer's rows through reading_user_submitted_idx, an operator's through
    reading_flagged_idx)."""
    since = (now or timezone.now()) - FLAGGED_SINCE
    owner = None if user.is_staff else str(user.pk)
    held = fleet_totals()["held"] if owner is None else rollup_totals(OwnerRollup, user_id=user.pk)["held"]
    sql = f"""
        SELECT f.flag, count(*) FROM {READINGS} r CROSS JOIN LATERAL jsonb_array_elements_text(r.flags) AS f(flag)
        WHERE r.submitted_at >= %(since)s AND r.flags <> '[]'::jsonb
          AND (%(owner)s::uuid IS NULL OR r.user_id = %(owner)s::uuid)
        GROUP BY f.flag
    """  # noqa: S608 (table names from the models)
    with connection.cursor() as cursor:
        cursor.execute(sql, {"owner": owner, "since": since})
        rows = cursor.fetchall()
    flags = sorted(rows, key=lambda item: (-item[1], item[0]))
    return {"held": held, "flags": flags, "since": since}
