"""The 24/7 report of one consumer and one month (docs/MATCHING.md, "The report"), as the API, the CSV, the
printable page and the dashboard show it: ``matching.selectors``' figures of the month's decided hours (from the
consumer's first matched hour to its zone's cursor), every such hour a line (zeros without demand), and the
certificates behind each hour.

A month is at most 744 hours and every read is bounded by an index range of the consumer or its few allocations
(``matching.selectors`` names them); ``tests/matching/test_report.py`` asserts the plans.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from gridtoken.events import rfc3339
from matching.models import Consumer
from matching.selectors import HourFigures, PeriodReport, consumer_period, hour_bundles, match_of_bundle, month_range

HOUR = timedelta(hours=1)
SCORE_PLACES = Decimal("0.000001")
CSV_COLUMNS = ("hour_start", "hour_end", "demand_wh", "matched_wh", "bilateral_wh", "pool_wh", "unmatched_wh",
               "adjusted", "certificates")  # fmt: skip


@dataclass(frozen=True)
class Certificate:
    """A claimed bundle behind an hour: verifiable at ``/api/certificates/verify/<bundle_id>``."""

    bundle_id: str
    device_id: str
    kind: str  # bilateral or pool
    quantity_wh: int


@dataclass(frozen=True)
class MonthReport:
    month: date
    start: datetime
    end: datetime
    decided_through: datetime  # hours from the first matched one up to here are reported; later ones are not
    period: PeriodReport  # the decided hours' totals, score, annual figure, unmatched hours
    hours: list[HourFigures]  # every decided hour, in order
    certificates: dict[datetime, list[Certificate]]


def consumer_list(*, user) -> list[Consumer]:
    """The user's consumers, oldest first (a user has a handful; the dashboard shows a report of each)."""
    return list(Consumer.objects.filter(user=user).select_related("zone").order_by("created_at", "id")[:100])


def consumer_month_report(*, consumer: Consumer, month: date) -> MonthReport:
    start, end = month_range(month)
    first = max(start, consumer.match_from)
    through = max(first, min(end, consumer.zone.matched_through or first))
    period = consumer_period(consumer=consumer, start=first, end=through)
    recorded = {line.hour: line for line in period.hours}
    hours = []
    hour = first
    while hour < through:
        hours.append(recorded.get(hour) or HourFigures(hour, Decimal(0), 0, 0, 0, False))
        hour += HOUR
    certificates = {
        # Bilateral before pool, as they were claimed ("bilateral" < "pool"); one claim time is shared by both.
        hour: [Certificate(str(m.bundle_id), str(m.device_id), m.kind, m.quantity_wh)
               for m in sorted(matches, key=lambda m: (m.kind, m.created_at, str(m.id)))]
        for hour, matches in hour_bundles(consumer=consumer, start=first, end=through).items()
    }  # fmt: skip
    return MonthReport(month, start, end, through, period, hours, certificates)


def wh_text(amount: Decimal) -> str:
    """An exact Wh amount as a decimal string: up to its six places, none when it is whole."""
    amount = amount.quantize(SCORE_PLACES)
    return format(amount.to_integral_value() if amount == amount.to_integral_value() else amount.normalize(), "f")


def ratio_text(ratio: Decimal | None) -> str | None:
    return None if ratio is None else format(ratio.quantize(SCORE_PLACES, rounding=ROUND_HALF_EVEN), "f")


def verify_path(bundle_id: str) -> str:
    return f"/api/certificates/verify/{bundle_id}"


def report_payload(report: MonthReport) -> dict:
    """The report as the API answers it: Wh as exact decimal strings (demand) and integers (certificates)."""
    consumer, period = report.period.consumer, report.period
    return {
        "consumer": {"id": str(consumer.id), "name": consumer.name, "grid_zone": consumer.zone_id},
        "month": report.month.strftime("%Y-%m"),
        "period_start": rfc3339(report.start),
        "period_end": rfc3339(report.end),
        "decided_through": rfc3339(report.decided_through),
        "demand_wh": wh_text(period.demand_wh),
        "matched_wh": period.matched_wh,
        "covered_wh": wh_text(period.covered_wh),
        "score": ratio_text(period.score),
        "annual": {"supply_wh": period.annual_supply_wh, "score": ratio_text(period.annual_score)},
        "unmatched_hours": len(period.unmatched_hours),
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
                    for c in report.certificates.get(line.hour, [])
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
            " ".join(c.bundle_id for c in report.certificates.get(line.hour, [])),
        ))  # fmt: skip
    return out.getvalue()


def bundle_match(bundle) -> dict:
    """What a bundle's public verification adds: the match it backs, if any (``Match.bundle`` is unique)."""
    match = match_of_bundle(bundle_id=bundle.id)
    if match is None:
        return {"match": None}
    consumer = match.consumer_hour.consumer
    return {
        "match": {
            "beneficiary": consumer.name,
            "grid_zone": consumer.zone_id,
            "hour_start": rfc3339(match.hour),
            "hour_end": rfc3339(match.hour + HOUR),
            "kind": match.kind,
            "quantity_wh": match.quantity_wh,
            "consumer_hour_id": str(match.consumer_hour_id),
            "allocation_id": str(match.allocation_id),
        }
    }
