"""Rows for the certificate tests: approved production devices and their meters' readings."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from certificates.models import ProductionDevice
from certificates.services.devices import device_register, device_set_status
from meters.models import MeterReading
from tests.factories import MeterFactory

HOUR0 = datetime(2026, 3, 1, tzinfo=UTC)
_names = itertools.count(1)
SETTLED_WITHOUT_MINT = ("recorded", "held", "awaiting_window", "rejected")


def make_device(*, capacity_kw: str = "10", approve: bool = True, meter=None) -> ProductionDevice:
    meter = meter or MeterFactory()
    device = device_register(
        meter=meter, name=f"PV plant {next(_names)}", technology="solar_pv", commissioning_date=date(2025, 1, 1),
        grid_zone="10YDE-VE-------2", country="DE", issuer="GridToken test registry",
        capacity_kw=Decimal(capacity_kw), latitude=Decimal("52.520008"), longitude=Decimal("13.404954"),
    )  # fmt: skip
    if approve:
        device = device_set_status(device_id=device.id, status="approved", actor="op")
    return ProductionDevice.objects.select_related("meter", "meter__owner").get(id=device.id)


def add_readings(
    device: ProductionDevice, hour: int, kwh: list[str], *, status: str = "minted", minute: int = 0, **fields
) -> list[MeterReading]:
    """One reading per 15 minutes from HOUR0 + ``hour`` hours, exporting each ``kwh`` (generated direction)."""
    meter = device.meter
    rows = []
    for index, amount in enumerate(kwh):
        moment = HOUR0 + timedelta(hours=hour, minutes=15 * index + minute)
        row_status = status if Decimal(amount) > 0 or status in SETTLED_WITHOUT_MINT else "recorded"
        rows.append(
            MeterReading(
                user_id=meter.owner_id, meter=meter, wallet_address=meter.wallet_address, kwh_amount=Decimal(amount),
                generated_kwh=Decimal(amount), consumed_kwh=Decimal(0), status=row_status,
                mintable_kwh=Decimal(amount) if row_status not in SETTLED_WITHOUT_MINT else Decimal(0),
                reading_timestamp=moment, minted=False, **fields,
            )
        )  # fmt: skip
    return MeterReading.objects.bulk_create(rows)


def close_hour(device: ProductionDevice, hour: int) -> None:
    """A reading well after the hour's end (past the grace period): the hour is complete in event time."""
    add_readings(device, hour + 1, ["0"], status="recorded", minute=30)


def after(hours: int) -> datetime:
    return HOUR0 + timedelta(hours=hours)
