"""Issuance: one certificate bundle per (device, interval) of verified export energy, exactly once.

``certificates_issue_due`` walks each approved device's intervals in order, from its cursor
(``ProductionDevice.issued_through``), under the device's row lock (``FOR UPDATE SKIP LOCKED``: racing issuers
take different devices; the unique constraint ``issuance_once_per_device_interval`` is the backstop). For each
interval ``[start, start + CERTIFICATES_INTERVAL_SECS)``:

1. Complete in event time: the meter sent a reading at or after the interval's end plus the grace period, or
   (a quiet meter) the wall clock is past it and nothing was heard for a whole interval. Otherwise stop.
2. Settled: no reading in it is ``pending``, ``minting``, ``held`` or ``awaiting_window``. Otherwise stop (the
   device's later intervals wait too, so the carry stays in interval order).
3. Its verified export energy: per reading (not rejected, not a derived window row) ``generated_kwh``, or the
   positive net when the meter sent no direction. Exact ``Decimal``.
4. The capacity check: energy <= capacity_kw x interval hours x CERTIFICATES_CAPACITY_MARGIN, else the
   interval is ``held`` for an operator (no bundle, the carry untouched) and the cursor moves on.
5. Whole Wh: floor(energy x 1000 + carry); the exact rest is the new carry (0 <= carry < 1 Wh). No Wh -> no row,
   only the carry and the cursor move. Otherwise one ``Issuance`` (id = uuid5(device, interval)), one active
   ``CertificateBundle`` holding the device's next contiguous id range, and one ``issue`` ``ChainOperation``
   minting the Wh to the producer's wallet (``certificates.services.chain``).

A reading stored for an interval after the cursor passed it is never certified (as a late window reading is
never minted).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from certificates.models import CertificateBundle, ChainOperation, Issuance, ProductionDevice
from certificates.triggers import operations_soon
from gridtoken import events
from meters.models import MeterReading

logger = logging.getLogger("certificates.issuance")
audit = logging.getLogger("certificates.audit")

ISSUANCE_NAMESPACE = uuid.UUID("7d0c3f5e-5a43-4b7e-9d7e-1c2f3a4b5c6d")
READINGS = MeterReading._meta.db_table
UNSETTLED = ("pending", "minting", "held", "awaiting_window")
WH_PER_KWH = Decimal(1000)

READINGS_FROM_SQL = (
    f"SELECT id, reading_timestamp, status, kwh_amount, generated_kwh FROM {READINGS}"  # noqa: S608
    " WHERE meter_id = %s AND reading_timestamp >= %s AND source <> 'window'"
    " ORDER BY reading_timestamp, id"
)
LATEST_SQL = (
    f"SELECT max(reading_timestamp), max(submitted_at) FROM {READINGS}"  # noqa: S608
    " WHERE meter_id = %s AND source <> 'window'"
)


def issuance_id(device_id: uuid.UUID, interval_start: datetime, interval_secs: int) -> uuid.UUID:
    """The issuance id: the same for the same device and interval, whoever computes it."""
    return uuid.uuid5(ISSUANCE_NAMESPACE, f"{device_id}/{interval_start.isoformat()}/{interval_secs}")


def floor_to_interval(moment: datetime, interval_secs: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % interval_secs, tz=moment.tzinfo)


def export_kwh(kwh_amount: Decimal, generated_kwh: Decimal | None) -> Decimal:
    """A reading's export: its generated direction, or the positive net when the meter sent none."""
    return generated_kwh if generated_kwh is not None else max(kwh_amount, Decimal(0))


def readings_hash(rows) -> str:
    """sha256 over the interval's counted readings, one canonical line each (id, time, status, export kWh)."""
    digest = hashlib.sha256()
    for reading_id, moment, status, kwh, generated in rows:
        line = f"{reading_id}|{moment.isoformat()}|{status}|{format(export_kwh(kwh, generated), 'f')}\n"
        digest.update(line.encode())
    return digest.hexdigest()


def chain_hash(issuance: Issuance) -> str:
    """sha256 linking the issuance to the device's previous one and to its readings."""
    parts = [
        issuance.previous_hash,
        str(issuance.id),
        str(issuance.device_id),
        issuance.interval_start.isoformat(),
        issuance.interval_end.isoformat(),
        str(issuance.quantity_wh),
        str(issuance.bundle_id_range_start),
        str(issuance.bundle_id_range_end),
        format(issuance.energy_kwh, "f"),
        issuance.readings_hash,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def device_attributes(device: ProductionDevice) -> dict:
    meter = device.meter
    return {
        "device_id": str(device.id),
        "meter_id": str(meter.id),
        "meter_serial": meter.serial,
        "name": device.name,
        "technology": device.technology,
        "capacity_kw": None if meter.capacity_kw is None else format(meter.capacity_kw, "f"),
        "latitude": None if device.latitude is None else format(device.latitude, "f"),
        "longitude": None if device.longitude is None else format(device.longitude, "f"),
        "location": device.location,
        "commissioning_date": device.commissioning_date.isoformat(),
        "grid_zone": device.grid_zone,
        "country": device.country,
        "issuer": device.issuer,
        "is_storage": device.is_storage,
    }


def capacity_limit_kwh(device: ProductionDevice, interval_secs: int) -> Decimal | None:
    capacity = device.meter.capacity_kw
    if capacity is None:
        return None
    return capacity * Decimal(interval_secs) / Decimal(3600) * settings.CERTIFICATES.capacity_margin


@dataclass
class IssueResult:
    devices: int = 0
    intervals: int = 0  # intervals decided (issued, held or below one Wh)
    issued: int = 0
    held: int = 0
    wh: int = 0

    def add(self, other: IssueResult) -> None:
        for name in ("devices", "intervals", "issued", "held", "wh"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        return dict(vars(self))


def certificates_issue_due(*, now: datetime | None = None, limit: int | None = None) -> IssueResult:
    """Issue every due interval of every approved device (see the module docstring)."""
    now = now or timezone.now()
    limit = limit or settings.CERTIFICATES.issue_limit
    result = IssueResult()
    device_ids = list(
        ProductionDevice.objects.filter(status=ProductionDevice.Status.APPROVED)
        .order_by("issued_through", "id")
        .values_list("id", flat=True)
    )
    for device_id in device_ids:
        if result.intervals >= limit:
            break
        result.add(device_issue_due(device_id=device_id, now=now, limit=limit - result.intervals))
    if result.intervals:
        logger.info("certificates issued", extra=result.as_dict())
    return result


@dataclass
class _Pending:
    """The rows one device's run creates, inserted together at its end (three statements, not three per hour)."""

    issuances: list = field(default_factory=list)
    bundles: list = field(default_factory=list)
    operations: list = field(default_factory=list)

    def insert(self) -> None:
        # Plain inserts: a second issuance of an interval violates issuance_once_per_device_interval and the
        # whole transaction rolls back (the device lock makes that a bug, never a double issue).
        Issuance.objects.bulk_create(self.issuances)
        CertificateBundle.objects.bulk_create(self.bundles)
        ChainOperation.objects.bulk_create(self.operations)


def device_issue_due(*, device_id: uuid.UUID, now: datetime, limit: int) -> IssueResult:
    """The due intervals of one device, in one transaction under its row lock (skipped if another holds it)."""
    result = IssueResult()
    cfg = settings.CERTIFICATES
    step = timedelta(seconds=cfg.interval_secs)
    grace = timedelta(seconds=cfg.grace_secs)
    with transaction.atomic():
        device = (
            ProductionDevice.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("meter", "meter__owner")
            .filter(id=device_id, status=ProductionDevice.Status.APPROVED)
            .first()
        )
        if device is None:
            return result
        result.devices = 1
        with connection.cursor() as cursor:
            cursor.execute(LATEST_SQL, [device.meter_id])
            latest, heard = cursor.fetchone()
            if latest is None:
                return result
            # Every reading from the cursor on, grouped by interval (the first interval: the one of the first
            # reading since commissioning).
            cursor.execute(READINGS_FROM_SQL, [device.meter_id, device.issued_through or _commissioned(device)])
            by_interval: dict[datetime, list] = {}
            for row in cursor.fetchall():
                by_interval.setdefault(floor_to_interval(row[1], cfg.interval_secs), []).append(row)
        starts = sorted(by_interval)
        if not starts:
            return result
        start = device.issued_through or starts[0]
        pending, emitted = _Pending(), []
        quiet = heard is not None and heard <= now - step
        while result.intervals < limit:
            end = start + step
            if not (latest >= end + grace or (now >= end + grace and quiet)):
                break
            rows = by_interval.get(start)
            if rows is None:
                following = next((s for s in starts if s >= end), None)
                if following is None:
                    break  # nothing after the cursor yet: it stays where it is
                start = device.issued_through = following
                continue
            if any(row[2] in UNSETTLED for row in rows):
                break
            counted = [row for row in rows if row[2] != MeterReading.Status.REJECTED]
            issuance = _decide(device, start, end, counted, now=now, pending=pending)
            result.intervals += 1
            if issuance is not None:
                result.issued += issuance.status == Issuance.Status.ISSUED
                result.held += issuance.status == Issuance.Status.HELD
                result.wh += issuance.quantity_wh or 0
                emitted.append(events.certificate_issued(issuance) if issuance.status == "issued" else
                               events.certificate_held(issuance))  # fmt: skip
            start = device.issued_through = end
        pending.insert()
        device.save(update_fields=["issued_through", "carry_wh", "next_bundle_id", "last_hash"])
        events.emit(emitted)
        if result.issued:
            transaction.on_commit(operations_soon)
    return result


def _commissioned(device: ProductionDevice) -> datetime:
    day = device.commissioning_date
    return datetime(day.year, day.month, day.day, tzinfo=timezone.get_current_timezone())


def _decide(device: ProductionDevice, start: datetime, end: datetime, rows, *, now: datetime,
            pending: _Pending) -> Issuance | None:  # fmt: skip
    energy = sum((export_kwh(row[3], row[4]) for row in rows), Decimal(0))
    interval_secs = int((end - start).total_seconds())
    issuance = Issuance(
        id=issuance_id(device.id, start, interval_secs),
        device=device,
        interval_start=start,
        interval_end=end,
        energy_kwh=energy,
        reading_count=len(rows),
        readings_hash=readings_hash(rows),
        device_attributes=device_attributes(device),
        wallet_address=device.meter.wallet_address,
        created_at=now,
    )
    limit = capacity_limit_kwh(device, interval_secs)
    if limit is None or energy > limit:
        issuance.status = Issuance.Status.HELD
        issuance.hold_reason = (
            "the device has no rated capacity (meter capacity_kw)"
            if limit is None
            else f"{format(energy, 'f')} kWh exceeds capacity x interval x margin = {format(limit, 'f')} kWh"
        )
        pending.issuances.append(issuance)
        audit.info("certificate interval held", extra={"audit": "certificate_held", "issuance_id": str(issuance.id),
                                                       "reason": issuance.hold_reason})  # fmt: skip
        return issuance
    return _issue(device, issuance, now=now, pending=pending)


def _issue(device: ProductionDevice, issuance: Issuance, *, now: datetime, pending: _Pending) -> Issuance | None:
    """Whole Wh from the energy plus the carry; the exact rest carries on. Mutates ``device`` (saved by the
    caller, in the same transaction); a new issuance and its bundle and operation go to ``pending``."""
    total = issuance.energy_kwh * WH_PER_KWH + device.carry_wh
    whole = int(total.to_integral_value(rounding=ROUND_FLOOR))
    issuance.carry_in_wh = device.carry_wh
    device.carry_wh = total - whole
    issuance.carry_out_wh = device.carry_wh
    if whole == 0:
        if issuance.status == Issuance.Status.HELD:  # an approved hold worth less than one Wh: decided, carried
            issuance.status = Issuance.Status.REJECTED
            issuance.hold_reason += "; below one Wh once approved (carried)"
            issuance.save()
            return issuance
        return None
    issuance.status = Issuance.Status.ISSUED
    issuance.quantity_wh = whole
    issuance.bundle_id_range_start = device.next_bundle_id
    issuance.bundle_id_range_end = device.next_bundle_id + whole - 1
    device.next_bundle_id += whole
    issuance.previous_hash = device.last_hash
    issuance.hash = chain_hash(issuance)
    device.last_hash = issuance.hash
    issuance.issued_at = now
    issuance.expires_at = issuance.interval_end + timedelta(days=settings.CERTIFICATES.expiry_days)
    if issuance._state.adding:
        pending.issuances.append(issuance)
    else:
        issuance.save()
    bundle = CertificateBundle(
        issuance=issuance,
        range_start=issuance.bundle_id_range_start,
        range_end=issuance.bundle_id_range_end,
        holder=device.meter.owner,
        holder_wallet=issuance.wallet_address,
        created_at=now,
    )
    pending.bundles.append(bundle)
    pending.operations.append(
        ChainOperation(
            kind=ChainOperation.Kind.ISSUE, issuance=issuance, bundle=bundle, amount_wh=whole,
            mint_to=issuance.wallet_address, created_at=now, next_attempt_at=now,
        )
    )  # fmt: skip
    audit.info(
        "certificate issued",
        extra={
            "audit": "certificate_issued",
            "issuance_id": str(issuance.id),
            "device_id": str(device.id),
            "interval_start": issuance.interval_start.isoformat(),
            "quantity_wh": whole,
            "range": [issuance.bundle_id_range_start, issuance.bundle_id_range_end],
            "holder_wallet": issuance.wallet_address,
            "hash": issuance.hash,
        },
    )
    return issuance


def issuance_decide_held(*, issuance_id: uuid.UUID, approve: bool, actor: str) -> Issuance:
    """An operator's decision on a held interval: approve -> issued now (carry and next range at this moment),
    reject -> never issued. Refused unless it is held (``not_held``, 409)."""
    from gridtoken.exceptions import ApplicationError

    with transaction.atomic():
        held = Issuance.objects.select_for_update().filter(id=issuance_id).first()
        if held is None:
            raise ApplicationError("issuance_not_found", "no such issuance", status=404)
        device = (
            ProductionDevice.objects.select_for_update().select_related("meter", "meter__owner").get(id=held.device_id)
        )
        if held.status != Issuance.Status.HELD:
            raise ApplicationError("not_held", f"the issuance is {held.status}, not held", status=409)
        held.decided_by = actor
        now = timezone.now()
        if approve:
            pending = _Pending()
            issued = _issue(device, held, now=now, pending=pending)
            pending.insert()
            device.save(update_fields=["carry_wh", "next_bundle_id", "last_hash"])
            if issued.status == Issuance.Status.ISSUED:
                events.emit([events.certificate_issued(issued)])
                transaction.on_commit(operations_soon)
        else:
            held.status = Issuance.Status.REJECTED
            held.save(update_fields=["status", "decided_by"])
        audit.info("held certificate interval decided", extra={"audit": "certificate_hold_decided",
                   "issuance_id": str(held.id), "approved": approve, "actor": actor})  # fmt: skip
        return held
