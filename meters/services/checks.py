"""Ingestion's check stage: whether a reading may be stored for its meter, decided on the meter row alone.

The stage after parsing (``meters.validation``) and before the energy assessment (``meters.services.energy``):
the meter exists, the caller may write to it, it is active, and the reading's signature verifies with its
public key. Nothing here looks at other readings; that is the store stage's (``meters.services.readings``).
"""

from __future__ import annotations

from django.conf import settings

from gridtoken.exceptions import ApplicationError, Conflict, Forbidden, ValidationFailed
from meters import signatures
from meters.selectors import Caller, MeterRow, meter_access_error, meter_not_found
from meters.validation import ReadingInput

METER_CHANGED = "The meter changed while the readings were stored; retry."


def reading_rejection(*, meter: MeterRow, item: ReadingInput) -> ApplicationError | None:
    """Why this reading of ``meter`` cannot be stored (before looking at other readings), or None."""
    if not meter.is_active:
        return Forbidden("meter_suspended", f"Meter {meter.serial} is suspended.")
    if item.error is not None:
        return item.error
    if meter.public_key or settings.INGEST.signature_required:
        return _signature_rejection(meter, item)
    return None


def _signature_rejection(meter: MeterRow, item: ReadingInput) -> ApplicationError | None:
    if not item.meter_signature:
        return ValidationFailed("signature_required", "This meter's readings must be signed.", field="meter_signature")
    if not meter.public_key:
        return ValidationFailed(
            "invalid_signature", "The meter has no public key to verify signatures with.", field="meter_signature"
        )
    forms = item.signed_messages or signatures.canonical_forms(serial=meter.serial, item=item)
    for form in forms:
        if signatures.verify(public_key=meter.public_key, signature=item.meter_signature, message=form.message):
            item.signature_covers = form.covers  # what the verified form vouches for (energy.assess checks it)
            return None
    hint = "" if item.timestamp_sent else " (a signed reading must carry its timestamp)"
    return ValidationFailed(
        "invalid_signature",
        f"The signature does not verify over {forms[0].message.decode()!r} with the meter's public key{hint}.",
        field="meter_signature",
    )


def reading_allowed(caller: Caller, index: int, item, meter: MeterRow | None, reject, *, meter_id=None) -> bool:
    """Whether ``meter`` takes ``item`` from ``caller``; if not, the item is rejected with the reason."""
    if meter is None:
        reject(index, meter_not_found(item.meter_serial or item.meter_id))
        return False
    denied = meter_access_error(caller=caller, meter=meter, meter_id=meter_id)
    if denied is not None:
        reject(index, denied)
        return False
    rejection = reading_rejection(meter=meter, item=item)
    if rejection is not None:
        reject(index, rejection, meter, item)
        return False
    return True


def readings_recheck(caller: Caller, candidates, locked: dict, reject) -> list:
    """The candidates still allowed by their meter as read under the lock (``locked``, by id), carrying that
    meter row. An unchanged meter is not checked again, so signatures are verified outside the lock."""
    allowed = []
    for index, item, seen in candidates:
        meter = locked.get(seen.id)
        if meter == seen:
            allowed.append((index, item, meter))
        elif meter is not None and item.meter_serial is not None and meter.serial != item.meter_serial:
            reject(index, Conflict("meter_changed", METER_CHANGED), meter, item)
        elif reading_allowed(caller, index, item, meter, reject):
            allowed.append((index, item, meter))
    return allowed
