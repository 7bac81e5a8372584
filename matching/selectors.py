"""Reads of matching's records for reports (docs/MATCHING.md, "The 24/7 score and the annual figure").

Every read is bounded by an index range: a consumer's hours of one period (``consumer_hour_once``: consumer,
hour), their matches (``consumer_hour`` foreign key), a device's issuances of the period
(``issuance_once_per_device_interval``: device, interval start), a zone's supply hours (``supply_hour_zone_idx``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from certificates.models import Issuance
from matching.models import Allocation, Consumer, ConsumerHour, Match, SupplyHour

HOUR = timedelta(hours=1)


def month_range(month: date) -> tuple[datetime, datetime]:
    """[first hour of ``month``, first hour of the next month), UTC."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    following = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    return start, following


@dataclass(frozen=True)
class HourFigures:
    hour: datetime
    demand_wh: Decimal  # the demand as it is now (after adjustments)
    matched_wh: int
    bilateral_wh: int
    pool_wh: int
    adjusted: bool  # the demand changed after the hour was matched

    @property
    def covered_wh(self) -> Decimal:
        """What counts for the score: matched Wh, never more than the demand."""
        return min(Decimal(self.matched_wh), self.demand_wh)

    @property
    def unmatched_wh(self) -> Decimal:
        return self.demand_wh - self.covered_wh


@dataclass
class PeriodReport:
    consumer: Consumer
    start: datetime
    end: datetime
    matched_through: datetime | None  # hours before this are decided; later ones may still change
    hours: list[HourFigures] = field(default_factory=list)
    demand_wh: Decimal = Decimal(0)
    matched_wh: int = 0
    covered_wh: Decimal = Decimal(0)
    annual_supply_wh: int = 0  # bilateral offers of every hour + pool matched: what annual matching would claim

    @property
    def score(self) -> Decimal | None:
        """The 24/7 score: covered / demand (None without demand)."""
        return self.covered_wh / self.demand_wh if self.demand_wh else None

    @property
    def annual_score(self) -> Decimal | None:
        """The annual-matching figure for comparison: min(1, the same supply without hours / demand)."""
        return min(Decimal(1), Decimal(self.annual_supply_wh) / self.demand_wh) if self.demand_wh else None

    @property
    def unmatched_hours(self) -> list[HourFigures]:
        return [h for h in self.hours if h.unmatched_wh > 0]


def consumer_period(*, consumer: Consumer, start: datetime, end: datetime) -> PeriodReport:
    """Hourly demand against matched supply for [start, end) (hours with demand or a match), the 24/7 score,
    the annual-matching figure and the unmatched hours."""
    report = PeriodReport(consumer=consumer, start=start, end=end, matched_through=consumer.zone.matched_through)
    rows = ConsumerHour.objects.filter(consumer=consumer, hour__gte=start, hour__lt=end).order_by("hour")
    for row in rows.only("hour", "demand_wh", "current_demand_wh", "matched_wh", "bilateral_wh", "pool_wh"):
        figures = HourFigures(
            hour=row.hour, demand_wh=row.current_demand_wh, matched_wh=row.matched_wh,
            bilateral_wh=row.bilateral_wh, pool_wh=row.pool_wh, adjusted=row.current_demand_wh != row.demand_wh,
        )  # fmt: skip
        report.hours.append(figures)
        report.demand_wh += figures.demand_wh
        report.matched_wh += figures.matched_wh
        report.covered_wh += figures.covered_wh
        report.annual_supply_wh += figures.pool_wh
    report.annual_supply_wh += bilateral_offered_wh(consumer=consumer, start=start, end=end)
    return report


def consumer_month(*, consumer: Consumer, month: date) -> PeriodReport:
    start, end = month_range(month)
    return consumer_period(consumer=consumer, start=start, end=end)


def bilateral_offered_wh(*, consumer: Consumer, start: datetime, end: datetime) -> int:
    """Wh the consumer's bilateral allocations offered over [start, end), every hour, whether it had demand
    or not (each hour: floor(share x the device's issued Wh), or min(quantity, issued))."""
    total = 0
    for allocation in Allocation.objects.filter(consumer=consumer, kind=Allocation.Kind.BILATERAL).order_by():
        lower = max(start, allocation.valid_from)
        upper = end if allocation.valid_until is None else min(end, allocation.valid_until)
        if lower >= upper:
            continue
        per_hour: dict[datetime, int] = defaultdict(int)
        issued = Issuance.objects.filter(
            device_id=allocation.device_id, interval_start__gte=lower, interval_start__lt=upper,
            status=Issuance.Status.ISSUED,
        ).values_list("interval_start", "quantity_wh")  # fmt: skip
        for interval_start, quantity in issued:
            per_hour[interval_start.replace(minute=0, second=0, microsecond=0)] += quantity
        for quantity in per_hour.values():
            if allocation.share is not None:
                total += int((allocation.share * quantity).to_integral_value(rounding=ROUND_FLOOR))
            else:
                total += min(quantity, allocation.quantity_wh)
    return total


def hour_bundles(*, consumer: Consumer, start: datetime, end: datetime) -> dict[datetime, list[Match]]:
    """The certificates behind each matched hour of [start, end): its matches with the claimed bundle, its
    issuance and the device, in the order they were claimed."""
    matches = (
        Match.objects.filter(consumer_hour__consumer=consumer, hour__gte=start, hour__lt=end)
        .select_related("bundle", "bundle__issuance", "device", "allocation")
        .order_by("hour", "created_at", "id")
    )
    by_hour: dict[datetime, list[Match]] = defaultdict(list)
    for match in matches:
        by_hour[match.hour].append(match)
    return dict(by_hour)


def zone_supply(*, grid_zone: str, start: datetime, end: datetime) -> dict[datetime, dict]:
    """Per matched hour of [start, end): the zone's devices' certificates issued, matched, and unallocated."""
    hours: dict[datetime, dict] = {}
    rows = SupplyHour.objects.filter(grid_zone=grid_zone, hour__gte=start, hour__lt=end).order_by("hour")
    for row in rows:
        figures = hours.setdefault(row.hour, {"issued_wh": 0, "matched_wh": 0, "unallocated_wh": 0})
        figures["issued_wh"] += row.issued_wh
        figures["matched_wh"] += row.matched_wh
        figures["unallocated_wh"] += row.unallocated_wh
    return hours


def match_of_bundle(*, bundle_id) -> Match | None:
    """The match a claimed bundle backs, if any (for the public verify page)."""
    return Match.objects.select_related("consumer_hour__consumer").filter(bundle_id=bundle_id).first()
