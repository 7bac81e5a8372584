"""The 24/7 report of one consumer and one month (docs/MATCHING.md, "The report"): every decided hour's demand
against the supply matched to it, the 24/7 score, the annual-matching figure for comparison, the unmatched
hours and the certificates behind each hour.

A month is at most 744 hours, and every read is bounded by an index range of the consumer or its few
allocations, never by history: its hours through ``consumer_hour_once`` (consumer, hour), their matches through
the matches' consumer-hour foreign key, each bilateral allocation's device's issued hours through
``issuance_once_per_device_interval`` (device, interval start). ``tests/matching/test_report.py`` asserts the
plans.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from django.db import connection

from certificates.models import Issuance
from gridtoken.events import rfc3339
from matching.models import Allocation, Consumer, ConsumerHour, Match

HOUR = timedelta(hours=1)
SCORE_PLACES = Decimal("0.000001")
CSV_COLUMNS = ("hour_start", "hour_end", "demand_wh", "matched_wh", "bilateral_wh", "pool_wh", "unmatched_wh",
               "adjusted", "certificates")  # fmt: skip

# Each bilateral allocation's device's issued Wh per hour of the range (intervals are at most an hour, aligned).
OFFERED_SQL = f"""
SELECT date_trunc('hour', interval_start) AS hour, sum(quantity_wh) FROM {Issuance._meta.db_table}
WHERE device_id = %(device)s AND interval_start >= %(start)s AND interval_start < %(end)s AND status = 'issued'
GROUP BY 1
"""  # noqa: S608 (the table name comes from the model)


def consumer_list(*, user) -> list[Consumer]:
    """The user's consumers, oldest first (a user has a handful; the dashboard shows a report of each)."""
    return list(Consumer.objects.filter(user=user).select_related("zone").order_by("created_at", "id")[:100])


def month_range(month: date) -> tuple[datetime, datetime]:
    """[the month's first hour, the next month's first hour), UTC."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    return start, datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Certificate:
    """A claimed bundle behind an hour: verifiable at ``/api/certificates/verify/<bundle_id>``."""

    bundle_id: str
    device_id: str
    kind: str  # bilateral or pool
    quantity_wh: int


@dataclass
class HourLine:
    hour: datetime
    demand_wh: Decimal = Decimal(0)  # as the readings are now (after adjustments)
    matched_wh: int = 0
    bilateral_wh: int = 0
    pool_wh: int = 0
    adjusted: bool = False  # the demand changed after the hour was matched
    certificates: list[Certificate] = field(default_factory=list)

    @property
    def covered_wh(self) -> Decimal:
        """What counts for the score: the matched Wh, never more than the demand as it is now."""
        return min(Decimal(self.matched_wh), self.demand_wh)

    @property
    def unmatched_wh(self) -> Decimal:
        return self.demand_wh - self.covered_wh


@dataclass
class MonthReport:
    consumer: Consumer
    month: date
    start: datetime
    end: datetime
    decided_through: datetime  # hours from ``start`` up to here are matched; later ones are not reported yet
    hours: list[HourLine]
    annual_supply_wh: int  # bilateral offers of every decided hour + pool Wh matched

    @property
    def demand_wh(self) -> Decimal:
        return sum((h.demand_wh for h in self.hours), Decimal(0))

    @property
    def matched_wh(self) -> int:
        return sum(h.matched_wh for h in self.hours)

    @property
    def covered_wh(self) -> Decimal:
        return sum((h.covered_wh for h in self.hours), Decimal(0))

    @property
    def score(self) -> Decimal | None:
        """The 24/7 score, covered Wh / demand Wh (None without demand)."""
        return self.covered_wh / self.demand_wh if self.demand_wh else None

    @property
    def annual_score(self) -> Decimal | None:
        """What annual matching would claim with the same supply: min(1, supply Wh / demand Wh)."""
        return min(Decimal(1), Decimal(self.annual_supply_wh) / self.demand_wh) if self.demand_wh else None

    @property
    def unmatched_hours(self) -> list[HourLine]:
        return [h for h in self.hours if h.unmatched_wh > 0]


def consumer_month_report(*, consumer: Consumer, month: date) -> MonthReport:
    """One line per decided hour of ``month`` (from the consumer's first matched hour to its zone's cursor; an
    hour with no demand is a line of zeros), the certificates behind each, and the annual figure's supply."""
    start, end = month_range(month)
    first = max(start, consumer.match_from)
    through = min(end, consumer.zone.matched_through or first)
    lines: dict[datetime, HourLine] = {}
    hour = first
    while hour < through:
        lines[hour] = HourLine(hour=hour)
        hour += HOUR
    if not lines:
        return MonthReport(consumer, month, start, end, max(first, through), [], 0)

    rows = ConsumerHour.objects.filter(consumer=consumer, hour__gte=first, hour__lt=through).values_list(
        "id", "hour", "demand_wh", "current_demand_wh", "matched_wh", "bilateral_wh", "pool_wh"
    )
    hour_of = {}
    for row_id, hour, demand, current, matched, bilateral, pool in rows:
        line = lines[hour]
        line.demand_wh, line.matched_wh, line.bilateral_wh, line.pool_wh = current, matched, bilateral, pool
        line.adjusted = current != demand
        hour_of[row_id] = hour
    matches = (
        Match.objects.filter(consumer_hour_id__in=[i for i, h in hour_of.items() if lines[h].matched_wh])
        .order_by("kind", "id")  # bilateral before pool, as they were claimed ("bilateral" < "pool")
        .values_list("consumer_hour_id", "bundle_id", "device_id", "kind", "quantity_wh")
    )
    for consumer_hour_id, bundle_id, device_id, kind, quantity in matches:
        lines[hour_of[consumer_hour_id]].certificates.append(
            Certificate(str(bundle_id), str(device_id), kind, quantity)
        )
    pool_wh = sum(line.pool_wh for line in lines.values())
    offered = bilateral_offered_wh(consumer=consumer, start=first, end=through)
    return MonthReport(consumer, month, start, end, through, list(lines.values()), offered + pool_wh)


def bilateral_offered_wh(*, consumer: Consumer, start: datetime, end: datetime) -> int:
    """Wh the consumer's bilateral allocations offered over [start, end), in every hour, with demand or not
    (each hour: floor(share x the device's issued Wh), or min(quantity, issued)), as the matcher offers them."""
    total = 0
    allocations = Allocation.objects.filter(consumer=consumer, kind=Allocation.Kind.BILATERAL).values_list(
        "device_id", "share", "quantity_wh", "valid_from", "valid_until"
    )
    with connection.cursor() as cursor:
        for device_id, share, quantity_wh, valid_from, valid_until in allocations:
            lower, upper = max(start, valid_from), end if valid_until is None else min(end, valid_until)
            if lower >= upper:
                continue
            cursor.execute(OFFERED_SQL, {"device": device_id, "start": lower, "end": upper})
            for _hour, issued in cursor.fetchall():
                if share is not None:
                    total += int((share * issued).to_integral_value(rounding=ROUND_FLOOR))
                else:
                    total += min(int(issued), quantity_wh)
    return total


def wh_text(amount: Decimal) -> str:
    """An exact Wh amount as a decimal string: its six places when it has a fraction, none when it is whole."""
    amount = amount.quantize(Decimal("0.000001"))
    return format(amount.to_integral_value() if amount == amount.to_integral_value() else amount.normalize(), "f")


def ratio_text(ratio: Decimal | None) -> str | None:
    return None if ratio is None else format(ratio.quantize(SCORE_PLACES, rounding=ROUND_HALF_EVEN), "f")


def verify_path(bundle_id: str) -> str:
    return f"/api/certificates/verify/{bundle_id}"


def report_payload(report: MonthReport) -> dict:
    """The report as the API answers it: Wh as exact decimal strings (demand) and integers (certificates)."""
    consumer = report.consumer
    return {
        "consumer": {"id": str(consumer.id), "name": consumer.name, "grid_zone": consumer.zone_id},
        "month": report.month.strftime("%Y-%m"),
        "period_start": rfc3339(report.start),
        "period_end": rfc3339(report.end),
        "decided_through": rfc3339(report.decided_through),
        "demand_wh": wh_text(report.demand_wh),
        "matched_wh": report.matched_wh,
        "covered_wh": wh_text(report.covered_wh),
        "score": ratio_text(report.score),
        "annual": {"supply_wh": report.annual_supply_wh, "score": ratio_text(report.annual_score)},
        "unmatched_hours": len(report.unmatched_hours),
        "hours": [
            {
                "hour": rfc3339(line.hour),
                "demand_wh": wh_text(line.demand_wh),
                "matched_wh": line.matched_wh,
                "bilateral_wh": line.bilateral_wh,
                "pool_wh": line.pool_wh,
                "unmatched_wh": wh_text(line.unmatched_wh),
                "adjusted": line.adjusted,
                "certificates": [
                    {
                        "bundle_id": c.bundle_id,
                        "device_id": c.device_id,
                        "kind": c.kind,
                        "quantity_wh": c.quantity_wh,
                        "verify": verify_path(c.bundle_id),
                    }
                    for c in line.certificates
                ],
            }
            for line in report.hours
        ],
    }


def report_csv(report: MonthReport) -> str:
    """One row per decided hour, exact Wh; the certificates column lists the hour's bundle ids (space apart)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in report.hours:
        writer.writerow((
            rfc3339(line.hour), rfc3339(line.hour + HOUR), wh_text(line.demand_wh), line.matched_wh,
            line.bilateral_wh, line.pool_wh, wh_text(line.unmatched_wh), str(line.adjusted).lower(),
            " ".join(c.bundle_id for c in line.certificates),
        ))  # fmt: skip
    return out.getvalue()


def bundle_match(bundle) -> dict:
    """What a bundle's public verification adds: the match it backs, if any (``Match.bundle`` is unique)."""
    match = (
        Match.objects.filter(bundle_id=bundle.id)
        .values("consumer_hour__consumer__name", "consumer_hour__consumer__zone", "consumer_hour_id", "hour",
                "kind", "quantity_wh", "allocation_id")
        .first()
    )  # fmt: skip
    if match is None:
        return {"match": None}
    return {
        "match": {
            "beneficiary": match["consumer_hour__consumer__name"],
            "grid_zone": match["consumer_hour__consumer__zone"],
            "hour_start": rfc3339(match["hour"]),
            "hour_end": rfc3339(match["hour"] + HOUR),
            "kind": match["kind"],
            "quantity_wh": match["quantity_wh"],
            "consumer_hour_id": str(match["consumer_hour_id"]),
            "allocation_id": str(match["allocation_id"]),
        }
    }
