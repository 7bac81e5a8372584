"""Rows for the matching tests: consumers with demand meters, devices with issued hours, allocations."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from certificates.models import ProductionDevice
from certificates.services.issuance import certificates_issue_due
from matching.models import Consumer
from matching.services.consumers import allocation_create, consumer_register
from meters.models import MeterReading
from tests.certificates.helpers import HOUR0, add_readings, make_device
from tests.factories import MeterFactory, UserFactory

ZONE = "10YDE-VE-------2"
_names = itertools.count(1)


def make_consumer(*, meters: int = 1, zone: str = ZONE, **options) -> Consumer:
    user = UserFactory()
    owned = [MeterFactory(owner=user) for _ in range(meters)]
    return consumer_register(user=user, name=f"Consumer {next(_names)} GmbH", grid_zone=zone, meters=owned,
                             match_from=options.pop("match_from", HOUR0), actor="op", **options)  # fmt: skip


def consume(consumer: Consumer, hour: int, kwh: list[str], *, meter: int = 0, status: str = "recorded",
            minute: int = 0) -> list[MeterReading]:  # fmt: skip
    """One consumption reading per 15 minutes from HOUR0 + ``hour`` on the consumer's ``meter``-th meter."""
    link = consumer.demand_meters.order_by("id")[meter]
    m = link.meter
    rows = [
        MeterReading(
            user_id=m.owner_id,
            meter=m,
            wallet_address=m.wallet_address,
            kwh_amount=-Decimal(amount),
            generated_kwh=Decimal(0),
            consumed_kwh=Decimal(amount),
            status=status,
            mintable_kwh=Decimal(0),
            reading_timestamp=HOUR0 + timedelta(hours=hour, minutes=15 * index + minute),
        )
        for index, amount in enumerate(kwh)
    ]
    return MeterReading.objects.bulk_create(rows)


def producing_device(hours: dict[int, str], *, zone: str = ZONE) -> ProductionDevice:
    """An approved device that produced ``kwh`` in each of ``hours`` (one reading at the hour's start), then
    fell quiet: issued through the hour after the last (its zero reading)."""
    device = make_device(capacity_kw="100")
    if zone != device.grid_zone:
        ProductionDevice.objects.filter(id=device.id).update(grid_zone=zone)
        device.refresh_from_db()
    for hour, kwh in sorted(hours.items()):
        add_readings(device, hour, [kwh])
    add_readings(device, max(hours) + 1, ["0"], status="recorded", minute=30)
    certificates_issue_due(now=timezone.now() + timedelta(hours=2))  # past the quiet meter's last interval
    device.refresh_from_db()
    return device


def offer(device: ProductionDevice, *, consumer: Consumer | None = None, share: str | None = None,
          quantity_wh: int | None = None):  # fmt: skip
    return allocation_create(
        device=device, holder=device.meter.owner, kind="bilateral" if consumer else "pool", consumer=consumer,
        share=None if share is None else Decimal(share), quantity_wh=quantity_wh, valid_from=HOUR0, actor="op",
    )  # fmt: skip


def after(hours: float):
    return HOUR0 + timedelta(hours=hours)
