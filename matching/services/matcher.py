"""Matching, exactly once: each settled (zone, hour) in order, under the zone's row lock. docs/MATCHING.md.

``matching_run`` takes each zone with active consumers (``FOR UPDATE SKIP LOCKED``: racing matchers take
different zones; ``match_hour_once_per_zone`` is the backstop) and, one transaction per hour from its cursor:

1. Settled? The hour ended ``MATCHING_SETTLE_SECS`` ago, no demand reading in it is still open, and every
   device its allocations draw from has been issued through it. Otherwise stop (later hours wait too).
2. Demand: each consumer's consumed Wh in the hour from the meters' hourly rollup (exact); whole Wh matchable.
3. Bilateral first, then pool, in the documented order: each step takes whole Wh of the allocation holder's
   active bundles of the device's hour for the consumer as beneficiary, for the hour; the hour's claims then go
   through the registry's claim service at once (``bundles_claim``: a constant number of statements).
4. Records: ``MatchHour``, ``ConsumerHour`` per consumer with demand, ``Match`` per claimed bundle,
   ``SupplyHour`` per device with certificates in the hour; the cursor moves. All commit with the claims and
   their chain burns, or nothing does.

Then the zone's adjustments (``matching.services.adjustments``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from certificates.models import CertificateBundle, Issuance, ProductionDevice
from certificates.services.lifecycle import Claim, bundles_claim
from gridtoken import events
from matching.models import (
    Allocation,
    Consumer,
    ConsumerHour,
    ConsumerMeter,
    GridZone,
    Match,
    MatchHour,
    SupplyHour,
)
from matching.services.adjustments import zone_adjust
from matching.services.demand import HOUR, consumer_hour_id, consumers_demand, floor_hour, match_hour_id, whole
from meters.selectors import meter_hours, meters_next_hour
from minting.faults import crash_point

logger = logging.getLogger("matching")
audit = logging.getLogger("matching.audit")


@dataclass
class MatchResult:
    zones: int = 0
    hours: int = 0  # zone-hours decided
    consumer_hours: int = 0  # consumer-hours with demand
    matched_wh: int = 0
    adjustments: int = 0

    def add(self, other: MatchResult) -> None:
        for name in ("zones", "hours", "consumer_hours", "matched_wh", "adjustments"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        return dict(vars(self))


def matching_run(*, now: datetime | None = None, limit: int | None = None, progress=None) -> MatchResult:
    """Match every settled hour of every zone with active consumers, then record adjustments.
    ``progress(zone, result)`` is called after each zone (the management command prints it)."""
    now = now or timezone.now()
    limit = limit or settings.MATCHING.limit
    result = MatchResult()
    zones = list(
        GridZone.objects.filter(consumers__status=Consumer.Status.ACTIVE)
        .distinct()
        .order_by("matched_through", "code")
        .values_list("code", flat=True)
    )
    for code in zones:
        if result.hours >= limit:
            break
        zone_result = zone_match_due(zone_code=code, now=now, limit=limit - result.hours)
        result.add(zone_result)
        if progress is not None:
            progress(code, zone_result)
    if result.hours or result.adjustments:
        logger.info("hours matched", extra=result.as_dict())
    return result


def zone_match_due(*, zone_code: str, now: datetime, limit: int) -> MatchResult:
    """The settled hours of one zone from its cursor, one transaction each, then its adjustments."""
    result = MatchResult()
    settle = timedelta(seconds=settings.MATCHING.settle_secs)
    while result.hours < limit:
        with transaction.atomic():
            zone = GridZone.objects.select_for_update(skip_locked=True).filter(code=zone_code).first()
            if zone is None:
                return result  # another matcher has the zone
            consumers = list(zone.consumers.filter(status=Consumer.Status.ACTIVE).order_by("created_at", "id"))
            if not consumers:
                break
            hour = zone.matched_through or min(c.match_from for c in consumers)
            if hour + HOUR + settle > now:
                break
            quiet_until = _quiet_until(zone, hour, consumers, first_unsettled=floor_hour(now - settle))
            if quiet_until is not None:  # nothing to match or record before it: pass those hours at once
                zone.matched_through = quiet_until
                zone.save(update_fields=["matched_through"])
                continue
            outcome = _match_hour(zone, hour, [c for c in consumers if c.match_from <= hour], now)
            if outcome is None:
                break
            zone.matched_through = hour + HOUR
            zone.save(update_fields=["matched_through"])
            result.add(outcome)
    result.zones = 1
    with transaction.atomic():
        zone = GridZone.objects.select_for_update(skip_locked=True).filter(code=zone_code).first()
        if zone is not None and zone.matched_through is not None:
            result.adjustments = zone_adjust(zone=zone, now=now)
    return result


def _quiet_until(zone: GridZone, hour: datetime, consumers: list[Consumer], *, first_unsettled: datetime):
    """When neither the consumers' meters nor the zone's devices have anything from ``hour`` on until a later
    hour, that hour (at most the first unsettled one); None when ``hour`` itself has something."""
    meter_ids = list(ConsumerMeter.objects.filter(consumer__in=consumers).values_list("meter_id", flat=True))
    demand = meters_next_hour(meter_ids=meter_ids, start=hour)
    supply = (
        Issuance.objects.filter(device__grid_zone=zone.code, interval_start__gte=hour)
        .order_by("interval_start")
        .values_list("interval_start", flat=True)
        .first()
    )
    found = [floor_hour(moment) for moment in (demand, supply) if moment is not None]
    following = min([*found, first_unsettled])
    return following if following > hour else None


def _allocations(zone: GridZone, hour: datetime, consumers: list[Consumer]) -> list[Allocation]:
    valid = Q(valid_from__lte=hour) & (Q(valid_until__isnull=True) | Q(valid_until__gt=hour))
    drawn = Q(kind=Allocation.Kind.BILATERAL, consumer__in=consumers) | Q(
        kind=Allocation.Kind.POOL, device__grid_zone=zone.code
    )
    if any(c.cross_zone for c in consumers):
        drawn |= Q(kind=Allocation.Kind.POOL)
    return list(
        Allocation.objects.filter(valid & drawn).select_related("device", "holder").order_by("created_at", "id")
    )


def _supply_issued(devices: list[ProductionDevice], hour: datetime) -> bool:
    """Has every approved device with readings in the hour been issued through its end?"""
    behind = [
        d for d in devices if d.status == "approved" and (d.issued_through is None or d.issued_through < hour + HOUR)
    ]
    if not behind:
        return True
    with_readings = {meter_id for meter_id, _ in meter_hours(meter_ids=[d.meter_id for d in behind], start=hour,
                                                             end=hour + HOUR)}  # fmt: skip
    return not any(d.meter_id in with_readings for d in behind)


def _match_hour(zone: GridZone, hour: datetime, consumers: list[Consumer], now: datetime) -> MatchResult | None:
    end = hour + HOUR
    demand, unsettled = consumers_demand(consumers, hour, end)
    if unsettled[hour]:
        return None
    allocations = _allocations(zone, hour, consumers)
    drawn_devices = {a.device_id: a.device for a in allocations}
    if not _supply_issued(list(drawn_devices.values()), hour):
        return None
    # Issued Wh per device in the hour: the zone's devices (its supply, allocated or not) and every drawn one.
    issued: dict = defaultdict(int)
    zones_of: dict = {}
    for device_id, grid_zone, quantity in Issuance.objects.filter(
        Q(device__grid_zone=zone.code) | Q(device_id__in=list(drawn_devices)),
        status=Issuance.Status.ISSUED, interval_start__gte=hour, interval_start__lt=end,
    ).values_list("device_id", "device__grid_zone", "quantity_wh"):  # fmt: skip
        issued[device_id] += quantity
        zones_of[device_id] = grid_zone
    # Lock every active bundle the hour may claim, in one statement in id order (racing zones lock in one order).
    bundles = list(
        CertificateBundle.objects.select_for_update(of=("self",))
        .filter(status=CertificateBundle.Status.ACTIVE, issuance__device_id__in=list(drawn_devices),
                issuance__interval_start__gte=hour, issuance__interval_start__lt=end, issuance__expires_at__gt=now)
        .select_related("issuance")
        .order_by("id")
    )  # fmt: skip
    queues: dict = defaultdict(list)  # (device, holder) -> [bundle, Wh left] in (interval start, first id) order
    for bundle in sorted(bundles, key=lambda b: (b.issuance.interval_start, b.range_start)):
        queues[(bundle.issuance.device_id, bundle.holder_id)].append([bundle, bundle.quantity_wh])
    given: dict = defaultdict(int, Match.objects.filter(allocation__in=allocations, hour=hour)
                              .order_by().values("allocation_id").annotate(wh=Sum("quantity_wh"))
                              .values_list("allocation_id", "wh"))  # fmt: skip

    need = {c.id: whole(demand[c.id][hour]) for c in consumers}
    records = {
        c.id: ConsumerHour(
            id=consumer_hour_id(c.id, hour),
            consumer=c,
            hour=hour,
            demand_wh=demand[c.id][hour],
            current_demand_wh=demand[c.id][hour],
            matched_wh=0,
            bilateral_wh=0,
            pool_wh=0,
            created_at=now,
        )
        for c in consumers
        if demand[c.id][hour] > 0
    }
    matches: list[Match] = []  # the claims' matches, in their order (each gets its claimed bundle below)
    claims: list[Claim] = []
    supply_matched: dict = defaultdict(int)

    def offer(allocation: Allocation) -> int:
        cap = issued.get(allocation.device_id, 0)
        if allocation.share is not None:
            cap = whole(allocation.share * cap)
        elif allocation.quantity_wh is not None:
            cap = min(cap, allocation.quantity_wh)
        return max(cap - given[allocation.id], 0)

    def take(consumer: Consumer, allocation: Allocation) -> None:
        wanted = min(need[consumer.id], offer(allocation))
        queue = queues[(allocation.device_id, allocation.holder_id)]
        while wanted > 0 and queue:
            bundle, left = queue[0]
            quantity = min(wanted, left)
            if quantity == left:
                queue.pop(0)
            else:
                queue[0][1] -= quantity
            claims.append(Claim(bundle.id, allocation.holder, consumer.name, hour, end, quantity))
            matches.append(Match(consumer_hour=records[consumer.id], allocation=allocation, kind=allocation.kind,
                                 device_id=allocation.device_id, quantity_wh=quantity, hour=hour,
                                 created_at=now))  # fmt: skip
            record = records[consumer.id]
            record.matched_wh += quantity
            if allocation.kind == Allocation.Kind.BILATERAL:
                record.bilateral_wh += quantity
            else:
                record.pool_wh += quantity
            need[consumer.id] -= quantity
            given[allocation.id] += quantity
            supply_matched[allocation.device_id] += quantity
            wanted -= quantity

    bilateral = [a for a in allocations if a.kind == Allocation.Kind.BILATERAL]
    pool = [a for a in allocations if a.kind == Allocation.Kind.POOL]
    for consumer in consumers:
        for allocation in bilateral:
            if allocation.consumer_id == consumer.id and (
                consumer.cross_zone or allocation.device.grid_zone == zone.code
            ):
                take(consumer, allocation)
    for consumer in consumers:
        own = [a for a in pool if a.device.grid_zone == zone.code]
        other = sorted((a for a in pool if a.device.grid_zone != zone.code and consumer.cross_zone),
                       key=lambda a: (a.device.grid_zone, a.created_at, a.id))  # fmt: skip
        for allocation in (*own, *other):
            take(consumer, allocation)

    for match, outcome in zip(matches, bundles_claim(claims), strict=True):
        match.bundle = outcome.moved
    match_hour = MatchHour.objects.create(
        id=match_hour_id(zone.code, hour), zone=zone, hour=hour, consumers=len(records),
        demand_wh=sum((r.demand_wh for r in records.values()), Decimal(0)),
        matched_wh=sum(r.matched_wh for r in records.values()),
        supply_wh=sum(q for d, q in issued.items() if zones_of[d] == zone.code), created_at=now,
    )  # fmt: skip
    for record in records.values():
        record.match_hour = match_hour
        record.unmatched_wh = record.demand_wh - record.matched_wh
    ConsumerHour.objects.bulk_create(records.values())
    Match.objects.bulk_create(matches)
    _supply_record(issued, zones_of, supply_matched, hour)
    crash_point("matching_before_commit")  # every claim, burn and record made, none committed
    events.emit([events.hour_matched(record) for record in records.values()])
    if records:
        audit.info("hour matched", extra={"audit": "hour_matched", "grid_zone": zone.code, "hour": hour.isoformat(),
                   "demand_wh": format(match_hour.demand_wh, "f"), "matched_wh": match_hour.matched_wh})  # fmt: skip
    return MatchResult(hours=1, consumer_hours=len(records), matched_wh=match_hour.matched_wh)


def _supply_record(issued: dict, zones_of: dict, matched: dict, hour: datetime) -> None:
    """Upsert a SupplyHour per device with certificates in the hour: a cross-zone draw may reach a device whose
    zone was matched already (or later), so matched Wh add up; the check constraint keeps matched <= issued."""
    if not issued:
        return
    devices = sorted(issued)  # one lock order
    table = SupplyHour._meta.db_table
    with connection.cursor() as cursor:  # one statement for every device of the hour
        cursor.execute(
            f"INSERT INTO {table} (device_id, grid_zone, hour, issued_wh, matched_wh)"  # noqa: S608
            " SELECT device_id, grid_zone, %s, issued_wh, matched_wh FROM unnest(%s::uuid[], %s::text[], %s::bigint[],"
            " %s::bigint[]) AS t (device_id, grid_zone, issued_wh, matched_wh) ORDER BY device_id"
            " ON CONFLICT (device_id, hour) DO UPDATE SET issued_wh = EXCLUDED.issued_wh,"
            f" matched_wh = {table}.matched_wh + EXCLUDED.matched_wh",
            [hour, devices, [zones_of[d] for d in devices], [issued[d] for d in devices],
             [matched[d] for d in devices]],
        )  # fmt: skip
