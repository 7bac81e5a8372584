"""Ingestion's announce stage: what leaves once readings are stored or refused.

Stored readings: a ``meter_reading_received`` event each and the stored-readings hooks (``meters.hooks``, where
minting registers its trigger). A refused reading of a known meter: a ``meter_reading_validation_failed`` event.
Both leave when the transaction commits (``gridtoken.events`` and the hooks use ``transaction.on_commit``).
"""

from __future__ import annotations

from decimal import Decimal

from gridtoken import events
from gridtoken.exceptions import ApplicationError
from meters import hooks
from meters.selectors import MeterRow
from meters.services.readings import StoredReading
from meters.validation import ReadingInput


def announce_stored(readings: list[StoredReading]) -> None:
    """Once the readings' transaction commits: their events, and the stored-readings hooks (minting's trigger)."""
    if readings:
        at = events.rfc3339()
        events.emit([events.reading_received(reading, timestamp=at) for reading in readings])
        hooks.readings_stored()


def announce_rejections(rejected: list[tuple[MeterRow, ReadingInput, ApplicationError]]) -> None:
    """A ``meter_reading_validation_failed`` event for each rejected reading of a known meter."""
    events.emit(
        [
            events.validation_failed(
                user_id=meter.owner_id,
                meter_serial=meter.serial,
                error_reason=f"{error.code}: {error.message}",
                kwh_amount=_short(item.raw_kwh),
                reading_timestamp=_short(item.raw_timestamp),
            )
            for meter, item, error in rejected
        ]
    )


def _short(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        return None
    return str(value)[:64]
