"""Adjustments: a matched hour's demand that changed afterwards is recorded, never silently changed.

Each matching run, under the zone's lock, compares the zone's consumers' demand in the hours of the last
``MATCHING_ADJUST_HOURS`` before its cursor with what their ``ConsumerHour`` records say, and records every
difference as an ``Adjustment`` (before, after) with the new ``current_demand_wh``. The matched Wh never change.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings

from matching.models import Adjustment, ConsumerHour, GridZone, MatchHour
from matching.services.demand import consumer_hour_id, consumers_demand, floor_hour, match_hour_id

audit = logging.getLogger("matching.audit")


def zone_adjust(*, zone: GridZone, now: datetime) -> int:
    """Record an Adjustment for every matched hour of the zone in the adjustment window whose consumers' demand
    now differs from the recorded one (see docs/MATCHING.md, "Adjustments")."""
    hours = settings.MATCHING.adjust_hours
    if not hours:
        return 0
    start = floor_hour(now - timedelta(hours=hours))
    end = zone.matched_through
    if start >= end:
        return 0
    consumers = list(zone.consumers.all())
    demand, _ = consumers_demand(consumers, start, end)
    rows = ConsumerHour.objects.filter(consumer__in=consumers, hour__gte=start, hour__lt=end)
    recorded = {(r.consumer_id, r.hour): r for r in rows}
    match_hours = None
    adjustments = []
    for consumer in consumers:
        hours_seen = set(demand[consumer.id]) | {h for (c, h) in recorded if c == consumer.id}
        for hour in sorted(hours_seen):
            if hour < consumer.match_from:
                continue
            current = demand[consumer.id].get(hour, Decimal(0))
            record = recorded.get((consumer.id, hour))
            before = record.current_demand_wh if record is not None else Decimal(0)
            if current == before:
                continue
            if record is None:
                if match_hours is None:
                    match_hours = {
                        m.hour: m for m in MatchHour.objects.filter(zone=zone, hour__gte=start, hour__lt=end)
                    }
                if hour not in match_hours:  # a quiet hour passed without a record
                    match_hours[hour] = MatchHour.objects.create(
                        id=match_hour_id(zone.code, hour), zone=zone, hour=hour, consumers=0, demand_wh=0,
                        matched_wh=0, supply_wh=0, created_at=now,
                    )  # fmt: skip
                record = ConsumerHour.objects.create(
                    id=consumer_hour_id(consumer.id, hour), consumer=consumer, match_hour=match_hours[hour], hour=hour,
                    demand_wh=0, current_demand_wh=current, matched_wh=0, bilateral_wh=0, pool_wh=0, unmatched_wh=0,
                    created_at=now,
                )  # fmt: skip
            else:
                record.current_demand_wh = current
                record.save(update_fields=["current_demand_wh"])
            adjustments.append(Adjustment(consumer_hour=record, demand_before_wh=before, demand_after_wh=current,
                                          detected_at=now))  # fmt: skip
    Adjustment.objects.bulk_create(adjustments)
    for adjustment in adjustments:
        audit.info("matched hour adjusted", extra={"audit": "hour_adjusted",
                   "consumer_hour_id": str(adjustment.consumer_hour_id),
                   "before_wh": format(adjustment.demand_before_wh, "f"),
                   "after_wh": format(adjustment.demand_after_wh, "f")})  # fmt: skip
    return len(adjustments)
