"""Reads behind the dashboard's charts: a producer's energy and tokens per hour or day, the fleet per minute.

Every series is read from a rollup or an index-bounded range (docs/ROLLUPS.md), never from the readings'
history: energy from the meters' hour rollups plus the deltas not folded yet, certificates from the holder's
bundles of the range's intervals, the fleet from its minute rows (meters/history.py). kWh and token amounts
leave as exact decimal strings; the page parses them for drawing only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from certificates.models import CertificateBundle, Issuance
from gridtoken.events import rfc3339
from meters.history import FleetMinute, minute_of
from meters.models import Meter, MeterHourRollup, MeterRollup, ReadingDelta
from meters.selectors import ZERO_KWH, fleet_totals, rollup_totals
from meters.validation import KWH_QUANTUM

CHART_METERS = 8  # meters drawn one by one; the total adds up the same meters


@dataclass(frozen=True, slots=True)
class Span:
    step: timedelta
    buckets: int


ENERGY_SPANS = {"48h": Span(timedelta(hours=1), 48), "30d": Span(timedelta(days=1), 30)}
FLEET_SPANS = {"1h": Span(timedelta(minutes=1), 60), "24h": Span(timedelta(minutes=1), 1440)}
ENERGY = ("generated", "consumed", "net", "minted")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# The hour rollups of the chosen meters in [since, until) through meterhour_unique (meter_id, hour), plus the
# deltas not folded yet (a few seconds' worth), binned into the span's steps (UTC-aligned). Net is generated
# less consumed, so rejected readings count nowhere, as in the settlement-window table (the rollups' net_kwh
# keeps them).
HOURS, DELTAS = MeterHourRollup._meta.db_table, ReadingDelta._meta.db_table
BUNDLES, ISSUANCES = CertificateBundle._meta.db_table, Issuance._meta.db_table
ENERGY_SQL = f"""
SELECT meter_id, date_bin(%(step)s, hour, %(epoch)s) AS bucket, sum(generated_kwh), sum(consumed_kwh),
    sum(generated_kwh) - sum(consumed_kwh), sum(minted_kwh), sum(minted_units)
FROM (
    SELECT meter_id, hour, generated_kwh, consumed_kwh, minted_kwh, minted_units FROM {HOURS}
    WHERE meter_id = ANY(%(meters)s) AND hour >= %(since)s AND hour < %(until)s
    UNION ALL
    SELECT meter_id, hour, generated_kwh, consumed_kwh, minted_kwh, minted_units FROM {DELTAS}
    WHERE meter_id = ANY(%(meters)s) AND hour >= %(since)s AND hour < %(until)s
) t
GROUP BY 1, 2
"""  # noqa: S608 (table names from the models)

# The holder's held and claimed Wh by the interval their certificates were issued for: the holder's bundles
# (their foreign key's index) of the issuances in range.
CERTIFICATES_SQL = f"""
SELECT date_bin(%(step)s, i.interval_start, %(epoch)s), b.status, sum(b.range_end - b.range_start + 1)
FROM {BUNDLES} b JOIN {ISSUANCES} i ON i.id = b.issuance_id
WHERE b.holder_id = %(holder)s AND b.status = ANY(%(statuses)s)
  AND i.interval_start >= %(since)s AND i.interval_start < %(until)s
GROUP BY 1, 2
"""  # noqa: S608 (table names from the models)


def span_range(span: Span, now: datetime) -> list[datetime]:
    """The starts of the span's buckets, oldest first; the last one holds ``now``."""
    steps = int((now - EPOCH) / span.step)
    current = EPOCH + span.step * steps
    return [current - span.step * (span.buckets - 1 - i) for i in range(span.buckets)]


def kwh_text(amount: Decimal) -> str:
    return format(amount.quantize(KWH_QUANTUM), "f")


def energy_series(*, user, span: Span, now: datetime | None = None) -> dict:
    """Generated, consumed, net and minted kWh per bucket, for each of the user's first CHART_METERS meters (by
    serial) and their total; the tokens minted per bucket and held at each bucket's end (base units, by
    reading time); the user's certificates held and claimed per bucket of their interval (Wh)."""
    now = now or timezone.now()
    starts = span_range(span, now)
    since, until = starts[0], starts[-1] + span.step
    meters = list(Meter.objects.filter(owner=user).order_by("serial").values_list("id", "serial")[:CHART_METERS])
    ids = [meter_id for meter_id, _serial in meters]
    index = {start: i for i, start in enumerate(starts)}
    per_meter = {meter_id: {name: [ZERO_KWH] * len(starts) for name in ENERGY} for meter_id in ids}
    units = [0] * len(starts)
    params = {"step": span.step, "epoch": EPOCH, "meters": ids, "since": since, "until": until}
    with connection.cursor() as cursor:
        cursor.execute(ENERGY_SQL, params)
        for meter_id, bucket, *sums, minted_units in cursor.fetchall():
            i = index[bucket]
            for name, amount in zip(ENERGY, sums, strict=True):
                per_meter[meter_id][name][i] = amount
            units[i] += int(minted_units)
    held = rollup_totals(MeterRollup, meter_id=ids)["minted_units"] if ids else 0
    held_at = []  # what the meters had minted by each bucket's end: all of it, less what came after
    for minted in reversed(units):
        held_at.append(held)
        held -= minted
    total = {
        name: [sum(series[name][i] for series in per_meter.values()) for i in range(len(starts))] for name in ENERGY
    }
    return {
        "step_seconds": int(span.step.total_seconds()),
        "buckets": [rfc3339(start) for start in starts],
        "meters_total": Meter.objects.filter(owner=user).count(),
        "meters": [
            {"meter_id": str(meter_id), "serial": serial, **_texts(per_meter[meter_id])} for meter_id, serial in meters
        ],
        "total": _texts(total),
        "tokens_minted_base_units": [str(amount) for amount in units],
        "tokens_held_base_units": [str(amount) for amount in reversed(held_at)],
        "certificates_wh": certificate_series(user=user, span=span, starts=starts),
        "as_of": rfc3339(now),
    }


def _texts(series: dict[str, list[Decimal]]) -> dict[str, list[str]]:
    return {name: [kwh_text(amount) for amount in amounts] for name, amounts in series.items()}


def certificate_series(*, user, span: Span, starts: list[datetime]) -> dict[str, list[int]]:
    statuses = [CertificateBundle.Status.ACTIVE, CertificateBundle.Status.CLAIMED]
    found = {status: [0] * len(starts) for status in statuses}
    index = {start: i for i, start in enumerate(starts)}
    params = {
        "step": span.step,
        "epoch": EPOCH,
        "holder": user.pk,
        "statuses": statuses,
        "since": starts[0],
        "until": starts[-1] + span.step,
    }
    with connection.cursor() as cursor:
        cursor.execute(CERTIFICATES_SQL, params)
        for bucket, status, wh in cursor.fetchall():
            found[status][index[bucket]] = int(wh)
    return {"held": found[CertificateBundle.Status.ACTIVE], "claimed": found[CertificateBundle.Status.CLAIMED]}


def fleet_series(*, span: Span, now: datetime | None = None) -> dict:
    """Per minute: readings stored, minted and flagged (differences of the minute rows' counters), and the
    backlog (pending, minting, awaiting their window), held and failed readings as they stood. The current
    minute is read from the fleet rollup now; a minute without its row (no fold ran) and the one after it
    are gaps (``None``), never zeros."""
    now = now or timezone.now()
    starts = span_range(span, minute_of(now))
    recorded = FleetMinute.objects.filter(minute__gte=starts[0] - span.step, minute__lt=starts[-1])  # by its key
    rows = {row.minute: row for row in recorded}
    rows[starts[-1]] = FleetMinute(minute=starts[-1], **{k: v for k, v in fleet_totals().items() if k in FIELDS})
    previous = [rows.get(start - span.step) for start in starts]
    current = [rows.get(start) for start in starts]

    def change(name: str) -> list[int | None]:
        return [
            getattr(c, name) - getattr(p, name) if c and p else None for p, c in zip(previous, current, strict=True)
        ]

    def level(value) -> list[int | None]:
        return [value(c) if c else None for c in current]

    return {
        "step_seconds": int(span.step.total_seconds()),
        "buckets": [rfc3339(start) for start in starts],
        "readings_in": change("readings"),
        "minted": change("minted"),
        "flagged": change("flagged"),
        "backlog": level(lambda row: row.pending + row.minting + row.awaiting_window),
        "held": level(lambda row: row.held),
        "failed": level(lambda row: row.failed),
        "as_of": rfc3339(now),
    }


FIELDS = {field.name for field in FleetMinute._meta.fields} - {"minute"}
