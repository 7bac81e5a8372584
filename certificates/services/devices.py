"""Production devices: registration by the meter's owner (or an operator), approval by an operator."""

from __future__ import annotations

import logging
import uuid
from datetime import date
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from certificates.models import ProductionDevice
from gridtoken.exceptions import ApplicationError
from meters.models import Meter

audit = logging.getLogger("certificates.audit")


def device_register(
    *,
    meter: Meter,
    name: str,
    technology: str,
    commissioning_date: date,
    grid_zone: str,
    country: str,
    issuer: str,
    capacity_kw: Decimal | None = None,
    latitude: Decimal | None = None,
    longitude: Decimal | None = None,
    location: str = "",
    is_storage: bool = False,
) -> ProductionDevice:
    """Register ``meter`` as a production device (``pending`` until an operator approves it). A given
    ``capacity_kw`` becomes the meter's rated capacity (the VEE capacity check reads the same figure)."""
    with transaction.atomic():
        meter = Meter.objects.select_for_update().get(id=meter.id)
        if ProductionDevice.objects.filter(meter=meter).exists():
            raise ApplicationError("device_exists", "this meter is registered as a production device already",
                                   status=409)  # fmt: skip
        if capacity_kw is not None:
            meter.capacity_kw = capacity_kw
            meter.save(update_fields=["capacity_kw"])
        device = ProductionDevice.objects.create(
            meter=meter, name=name, technology=technology, commissioning_date=commissioning_date,
            grid_zone=grid_zone, country=country, issuer=issuer, latitude=latitude, longitude=longitude,
            location=location, is_storage=is_storage,
        )  # fmt: skip
        audit.info("production device registered", extra={"audit": "device_registered", "device_id": str(device.id),
                   "meter_id": str(meter.id)})  # fmt: skip
        return device


def device_set_status(*, device_id: uuid.UUID, status: str, actor: str) -> ProductionDevice:
    """Approve or suspend a device. Approval needs a rated capacity (``capacity_required``): the capacity
    check before every issuance has nothing to check against otherwise."""
    with transaction.atomic():
        device = ProductionDevice.objects.select_for_update().select_related("meter").filter(id=device_id).first()
        if device is None:
            raise ApplicationError("device_not_found", "no such production device", status=404)
        if status == ProductionDevice.Status.APPROVED and device.meter.capacity_kw is None:
            raise ApplicationError("capacity_required", "set the meter's rated capacity (capacity_kw) first",
                                   field="capacity_kw", status=409)  # fmt: skip
        device.status = status
        if status == ProductionDevice.Status.APPROVED:
            device.approved_at, device.approved_by = timezone.now(), actor
        device.save(update_fields=["status", "approved_at", "approved_by"])
        audit.info("production device status", extra={"audit": "device_status", "device_id": str(device.id),
                   "status": status, "actor": actor})  # fmt: skip
        return device
