"""Operators' decisions on readings a VEE rule held: approve (minted as its basis says) or reject (never minted).

A decision takes the meter's write lock, as every reading write and window settlement does, so an approved
reading of a window basis meter joins its window only while that window is still open; if the window was
settled meanwhile it is recorded and flagged ``late_settled_window``, never minted.
"""

from __future__ import annotations

import uuid

from django.db import connection, transaction

from gridtoken import events
from meters import hooks
from meters.models import MeterReading
from meters.services.readings import LOCK_NAMESPACE

Status = MeterReading.Status


def readings_approve(*, reading_ids: list[uuid.UUID]) -> int:
    """Release held readings; the number released."""
    return _decide(reading_ids, approve=True)


def readings_reject(*, reading_ids: list[uuid.UUID], reason: str = "rejected by an operator") -> int:
    """Refuse held readings for good (status rejected, kept for the record); the number refused."""
    return _decide(reading_ids, approve=False, reason=reason)


def _decide(reading_ids, *, approve: bool, reason: str = "") -> int:
    with transaction.atomic():
        meters = sorted(
            {
                str(m)
                for m in MeterReading.objects.filter(pk__in=reading_ids, status=Status.HELD).values_list(
                    "meter_id", flat=True
                )
            }
        )
        with connection.cursor() as cursor:
            for meter_id in meters:  # sorted: two operators deciding overlapping sets never deadlock
                cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, meter_id])
        held = list(
            MeterReading.objects.select_for_update()
            .select_related("meter")
            .filter(pk__in=reading_ids, status=Status.HELD)
        )
        settled = set(
            MeterReading.objects.filter(
                source=MeterReading.Source.WINDOW,
                meter_id__in=[r.meter_id for r in held],
                window_start__in=[r.window_start for r in held if r.window_start is not None],
            ).values_list("meter_id", "window_start")
        )
        for reading in held:
            if not approve:
                reading.status, reading.last_error = Status.REJECTED, reason[:500]
            elif reading.window_start is not None and (reading.meter_id, reading.window_start) in settled:
                reading.status, reading.window_start = Status.RECORDED, None
                reading.flags = [*reading.flags, "late_settled_window"]
            elif reading.window_start is not None:
                reading.status = Status.AWAITING_WINDOW
            else:
                reading.status = Status.PENDING if reading.mintable_kwh > 0 else Status.RECORDED
        MeterReading.objects.bulk_update(held, ["status", "last_error", "window_start", "flags"])
        events.emit([events.reading_reviewed(reading, approved=approve) for reading in held])
        if approve and held:
            hooks.readings_stored()
    return len(held)
