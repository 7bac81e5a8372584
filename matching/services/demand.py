"""What matching counts: consumers' demand in Wh from the meters' hourly rollup, and the records' ids."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from matching.models import Consumer, ConsumerMeter
from meters.selectors import meter_hours

MATCHING_NAMESPACE = uuid.UUID("3b6f1f0e-8d1c-4d38-9a54-2f1e8c7d6b5a")
HOUR = timedelta(hours=1)
WH_PER_KWH = Decimal(1000)
WH_PLACES = Decimal("0.000001")


def match_hour_id(zone: str, hour: datetime) -> uuid.UUID:
    return uuid.uuid5(MATCHING_NAMESPACE, f"zone/{zone}/{hour.astimezone(UTC).isoformat()}")


def consumer_hour_id(consumer_id: uuid.UUID, hour: datetime) -> uuid.UUID:
    return uuid.uuid5(MATCHING_NAMESPACE, f"consumer/{consumer_id}/{hour.astimezone(UTC).isoformat()}")


def wh(kwh: Decimal) -> Decimal:
    return (kwh * WH_PER_KWH).quantize(WH_PLACES)


def whole(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def consumers_demand(consumers: list[Consumer], start: datetime, end: datetime):
    """(per consumer id, per hour: demand Wh; the open readings' count per hour) over [start, end)."""
    meters: dict = defaultdict(list)
    for consumer_id, meter_id in ConsumerMeter.objects.filter(consumer__in=consumers).values_list(
        "consumer_id", "meter_id"
    ):
        meters[meter_id].append(consumer_id)
    demand: dict = defaultdict(lambda: defaultdict(Decimal))
    unsettled: dict = defaultdict(int)
    for (meter_id, hour), totals in meter_hours(meter_ids=list(meters), start=start, end=end).items():
        for consumer_id in meters[meter_id]:
            demand[consumer_id][hour] += wh(totals.consumed_kwh)
        unsettled[hour] += totals.unsettled
    return demand, unsettled
