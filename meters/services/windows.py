"""Settlement windows (``TOKENIZATION_MINT_BASIS=window``): one mint per (meter, window) of its net surplus.

Readings stored under the window basis wait (``awaiting_window``) in the window their timestamp falls in
(start-stamped: [start, start + TOKENIZATION_WINDOW_SECS)). A window is complete in **event time** once the
meter has sent a reading at or after its end plus ``TOKENIZATION_WINDOW_GRACE_SECS``. A meter that went quiet
(nothing received for a whole window's length) has its past windows completed by the wall clock.
``windows_settle`` then, under the meter's write lock (the same lock every reading write takes, so no reading
can slip into a window being settled):

1. skips the window while any reading in it is held for an operator;
2. sums the waiting readings' net (and generated and consumed) kWh;
3. inserts one derived reading (``source = window``, ``window_start``): ``pending`` with the positive net as its
   mintable amount, or ``recorded`` when the window was a net import. The partial unique index
   ``reading_one_per_window`` makes a second row for the same window impossible, whatever races or crashes;
4. marks the window's readings ``recorded``.

The derived reading goes through the ordinary exactly-once pipeline. A reading arriving later for a settled
window is stored ``recorded`` with the flag ``late_settled_window`` and never minted.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from meters.models import Meter, MeterReading
from meters.selectors import MeterRow
from meters.services.announce import announce_stored
from meters.services.readings import LOCK_NAMESPACE, TABLE, StoredReading

logger = logging.getLogger("meters.windows")
Status = MeterReading.Status
SETTLE_LIMIT = 500

COMPLETE_SQL = (
    "SELECT w.meter_id, w.window_start FROM ("  # noqa: S608
    f" SELECT DISTINCT meter_id, window_start FROM {TABLE} WHERE status = 'awaiting_window') AS w"
    " CROSS JOIN LATERAL ("
    f" SELECT max(reading_timestamp) AS latest, max(submitted_at) AS heard FROM {TABLE}"
    " WHERE meter_id = w.meter_id AND NOT (source = 'window')) AS l"
    " WHERE l.latest >= w.window_start + %(complete)s"
    " OR (%(now)s >= w.window_start + %(complete)s AND l.heard <= %(now)s - %(quiet)s)"
    " ORDER BY w.window_start LIMIT %(limit)s"
)
WINDOW_READINGS_SQL = (
    f"SELECT id, status, kwh_amount, generated_kwh, consumed_kwh FROM {TABLE}"  # noqa: S608
    " WHERE meter_id = %s AND window_start = %s AND NOT (source = 'window') AND status IN ('awaiting_window', 'held')"
    " FOR UPDATE"
)


def windows_settle(*, now: datetime | None = None, limit: int = SETTLE_LIMIT) -> int:
    """Settle every complete window that still has waiting readings; the number of windows settled."""
    cfg = settings.TOKENIZATION
    now = now or timezone.now()
    window = timedelta(seconds=cfg.window_secs)
    with connection.cursor() as cursor:
        cursor.execute(
            COMPLETE_SQL,
            {
                "complete": window + timedelta(seconds=cfg.window_grace_secs),
                "quiet": window,
                "now": now,
                "limit": limit,
            },
        )
        complete = cursor.fetchall()
    settled = sum(_settle(meter_id, start, now=now) for meter_id, start in complete)
    if settled:
        logger.info("settlement windows settled", extra={"windows": settled})
    return settled


def _settle(meter_id, start: datetime, *, now: datetime) -> bool:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s::text))", [LOCK_NAMESPACE, meter_id])
        meter = Meter.objects.select_for_update(of=("self",)).get(pk=meter_id)
        cursor.execute(WINDOW_READINGS_SQL, [meter_id, start])
        rows = cursor.fetchall()
        waiting = [row for row in rows if row[1] == Status.AWAITING_WINDOW]
        if not waiting or len(waiting) < len(rows):
            return False  # settled meanwhile, or a held reading keeps the window open until an operator decides
        net = sum((row[2] for row in waiting), Decimal(0))
        generated = sum((row[3] if row[3] is not None else max(row[2], Decimal(0)) for row in waiting), Decimal(0))
        consumed = sum((row[4] if row[4] is not None else max(-row[2], Decimal(0)) for row in waiting), Decimal(0))
        mintable = max(net, Decimal(0))
        window = MeterReading(
            user_id=meter.owner_id,
            meter=meter,
            wallet_address=meter.wallet_address,
            kwh_amount=net,
            reading_timestamp=start,
            source=MeterReading.Source.WINDOW,
            window_start=start,
            generated_kwh=generated,
            consumed_kwh=consumed,
            interval_secs=settings.TOKENIZATION.window_secs,
            mintable_kwh=mintable,
            status=Status.PENDING if mintable > 0 else Status.RECORDED,
            submitted_at=now,
            next_attempt_at=now,
            telemetry={"readings": len(waiting)},
        )
        created = MeterReading.objects.bulk_create([window], ignore_conflicts=True)  # reading_one_per_window
        if not MeterReading.objects.filter(pk=created[0].pk).exists():
            return False
        MeterReading.objects.filter(pk__in=[row[0] for row in waiting]).update(status=Status.RECORDED)
        row = MeterRow(meter.id, meter.serial, meter.owner_id, meter.wallet_address, meter.public_key, meter.status)
        announce_stored(
            [
                StoredReading(
                    window.id, window.user_id, row, window.wallet_address, net, start, now,
                    source=window.source, generated_kwh=generated, consumed_kwh=consumed,
                    interval_secs=window.interval_secs, mintable_kwh=mintable, window_start=start, status=window.status,
                )
            ]
        )  # fmt: skip
    return True
