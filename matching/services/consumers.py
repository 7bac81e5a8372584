"""Consumers and their demand meters, and the supply offered to them (allocations). docs/MATCHING.md."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from certificates.models import ProductionDevice
from gridtoken.exceptions import ApplicationError
from matching.models import Allocation, Consumer, ConsumerMeter, GridZone
from meters.models import Meter

audit = logging.getLogger("matching.audit")


def whole_hour(moment: datetime, *, field: str) -> datetime:
    """``moment`` in UTC if it is a whole hour; refused otherwise (hours are the unit of matching)."""
    if moment.tzinfo is None:
        raise ApplicationError("validation_error", "give the time with its offset (UTC: Z)", field=field)
    moment = moment.astimezone(UTC)
    if (moment.minute, moment.second, moment.microsecond) != (0, 0, 0):
        raise ApplicationError("not_whole_hour", "give a whole hour (minutes and seconds zero)", field=field)
    return moment


def _this_hour() -> datetime:
    return timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def consumer_register(
    *, user, name: str, grid_zone: str, meters: list[Meter], match_from: datetime | None = None, actor: str
) -> Consumer:
    """A consumer of ``user`` whose demand is ``meters`` (each in one consumer's demand at most), matched in
    ``grid_zone`` from ``match_from`` (a whole hour; default: the current hour)."""
    name, grid_zone = name.strip(), grid_zone.strip()
    if not name:
        raise ApplicationError("validation_error", "name the consumer (the beneficiary of its claims)", field="name")
    if not grid_zone:
        raise ApplicationError("validation_error", "name the grid zone", field="grid_zone")
    if not meters:
        raise ApplicationError("validation_error", "give at least one demand meter", field="meters")
    start = _this_hour() if match_from is None else whole_hour(match_from, field="match_from")
    with transaction.atomic():
        zone, _ = GridZone.objects.get_or_create(code=grid_zone)
        consumer = Consumer.objects.create(user=user, name=name, zone=zone, match_from=start, created_by=actor)
        for meter in meters:
            consumer_add_meter(consumer=consumer, meter=meter, actor=actor)
        audit.info("consumer registered", extra={"audit": "consumer_registered", "consumer_id": str(consumer.id),
                   "grid_zone": grid_zone, "actor": actor})  # fmt: skip
        return consumer


def consumer_add_meter(*, consumer: Consumer, meter: Meter, actor: str) -> ConsumerMeter:
    """Count ``meter``'s consumption in ``consumer``'s demand (hours not matched yet)."""
    if meter.owner_id != consumer.user_id:
        raise ApplicationError("meter_not_owned", "the meter belongs to another account", field="meters")
    with transaction.atomic():
        if ConsumerMeter.objects.select_for_update().filter(meter=meter).exists():
            raise ApplicationError("meter_in_demand", "this meter is a consumer's demand already", field="meters",
                                   status=409)  # fmt: skip
        link = ConsumerMeter.objects.create(consumer=consumer, meter=meter)
        audit.info("consumer meter added", extra={"audit": "consumer_meter_added", "consumer_id": str(consumer.id),
                   "meter_id": str(meter.id), "actor": actor})  # fmt: skip
        return link


def _consumer_locked(consumer_id: uuid.UUID) -> Consumer:
    """The consumer's row, locked for the caller's transaction; 404 ``consumer_not_found`` when there is none."""
    consumer = Consumer.objects.select_for_update().filter(id=consumer_id).first()
    if consumer is None:
        raise ApplicationError("consumer_not_found", "no such consumer", status=404)
    return consumer


def consumer_set_cross_zone(*, consumer_id: uuid.UUID, allowed: bool, actor: str) -> Consumer:
    """The operator's flag: may the consumer draw other zones' supply (after its own zone's)?"""
    with transaction.atomic():
        consumer = _consumer_locked(consumer_id)
        consumer.cross_zone = allowed
        consumer.save(update_fields=["cross_zone"])
        audit.info("consumer cross-zone", extra={"audit": "consumer_cross_zone", "consumer_id": str(consumer.id),
                   "allowed": allowed, "actor": actor})  # fmt: skip
        return consumer


def consumer_set_status(*, consumer_id: uuid.UUID, status: str, actor: str) -> Consumer:
    """Suspend a consumer (not matched from its zone's next hour on) or make it active again."""
    if status not in Consumer.Status.values:
        raise ApplicationError("validation_error", f"status is one of {', '.join(Consumer.Status.values)}",
                               field="status")  # fmt: skip
    with transaction.atomic():
        consumer = _consumer_locked(consumer_id)
        consumer.status = status
        consumer.save(update_fields=["status"])
        audit.info("consumer status", extra={"audit": "consumer_status", "consumer_id": str(consumer.id),
                   "status": status, "actor": actor})  # fmt: skip
        return consumer


def allocation_create(
    *,
    device: ProductionDevice,
    holder,
    kind: str,
    consumer: Consumer | None = None,
    share: Decimal | None = None,
    quantity_wh: int | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    actor: str,
) -> Allocation:
    """Offer ``device``'s certificates held by ``holder`` for matching, each hour from ``valid_from`` (a whole
    hour; default: the current hour) until ``valid_until``: to ``consumer`` (bilateral) or to the pool.
    ``holder`` is the device's owner; an operator acts on its behalf (``actor`` names who)."""
    if kind not in Allocation.Kind.values:
        raise ApplicationError("validation_error", "kind is bilateral or pool", field="kind")
    if (kind == Allocation.Kind.BILATERAL) != (consumer is not None):
        raise ApplicationError("validation_error", "a bilateral allocation names its consumer, a pool one none",
                               field="consumer")  # fmt: skip
    if (share is None) == (quantity_wh is None):
        raise ApplicationError("validation_error", "give either share or quantity_wh", field="share")
    if share is not None and not Decimal(0) < share <= Decimal(1):
        raise ApplicationError("validation_error", "share is above 0 and at most 1", field="share")
    if share is not None and share != share.quantize(Decimal("0.000001")):
        raise ApplicationError("validation_error", "share has at most six decimal places", field="share")
    if quantity_wh is not None and not 1 <= quantity_wh <= 10**15:
        raise ApplicationError("validation_error", "quantity_wh is a whole Wh from 1", field="quantity_wh")
    if device.meter.owner_id != holder.pk:
        raise ApplicationError("not_device_owner", "only the device's owner offers its certificates",
                               field="device")  # fmt: skip
    if device.status != ProductionDevice.Status.APPROVED:
        raise ApplicationError("device_not_approved", "the device is not approved for certificates", field="device",
                               status=409)  # fmt: skip
    start = _this_hour() if valid_from is None else whole_hour(valid_from, field="valid_from")
    until = None if valid_until is None else whole_hour(valid_until, field="valid_until")
    if until is not None and until <= start:
        raise ApplicationError("validation_error", "valid_until must be after valid_from", field="valid_until")
    allocation = Allocation.objects.create(
        kind=kind, device=device, holder=holder, consumer=consumer, share=share, quantity_wh=quantity_wh,
        valid_from=start, valid_until=until, created_by=actor,
    )  # fmt: skip
    audit.info("allocation created", extra={"audit": "allocation_created", "allocation_id": str(allocation.id),
               "kind": kind, "device_id": str(device.id), "actor": actor})  # fmt: skip
    return allocation


def allocation_end(*, allocation_id: uuid.UUID, actor: str, at: datetime | None = None) -> Allocation:
    """End an allocation from hour ``at`` (default: the next hour); hours matched already keep their matches."""
    until = _this_hour() + timedelta(hours=1) if at is None else whole_hour(at, field="at")
    with transaction.atomic():
        allocation = Allocation.objects.select_for_update().filter(id=allocation_id).first()
        if allocation is None:
            raise ApplicationError("allocation_not_found", "no such allocation", status=404)
        if allocation.status == Allocation.Status.ENDED:
            raise ApplicationError("allocation_ended", "this allocation has ended", status=409)
        if allocation.valid_until is not None:
            until = min(until, allocation.valid_until)
        allocation.status, allocation.ended_at = Allocation.Status.ENDED, timezone.now()
        allocation.valid_until = max(until, allocation.valid_from)  # valid_from itself: it never applied
        allocation.save(update_fields=["status", "ended_at", "valid_until"])
        audit.info("allocation ended", extra={"audit": "allocation_ended", "allocation_id": str(allocation.id),
                   "actor": actor})  # fmt: skip
        return allocation
