"""Meter signatures: the messages a meter signs, what each covers, and Ed25519 verification.

GridToken's own messages are UTF-8 text joined by ``:``, checked in this order::

    gridtoken:v2:{serial}:{timestamp}:{kwh}:{import}:{export}    covers everything a reading can mint
    gridtoken:v1:{serial}:{timestamp}:{kwh}                      covers the timestamp and one amount

- ``serial``: the meter's serial exactly as registered.
- ``timestamp``: the reading timestamp in UTC as ``YYYY-MM-DDTHH:MM:SSZ``, or ``YYYY-MM-DDTHH:MM:SS.ffffffZ``
  (exactly six fraction digits) when it has a sub-second part.
- amounts in plain decimal notation with exactly nine decimal places (``1.500000000``), ``-`` when absent.
  v2: an interval reading signs its ``kwh``, ``energy_consumed`` and ``energy_generated`` (both cut to nine
  places, as they are stored); a register read signs ``-`` for ``kwh`` and its import and export totals.
  v1: the amount, or a register read's export total (its import total when it sends no export register).

Timestamp and amounts have fixed formats and come last, so no two readings give the same message even when a
serial contains ``:``. The signature is 64 bytes, sent base58 (Solana's usual text form) or base64.

Coverage. Every form a door accepts is a ``SignedForm``: the message and the quantities it covers
(``timestamp``, ``kwh`` the net as stored, ``import``, ``export``). A verified signature vouches only for what
its form covers; ``meters.services.energy`` holds (or refuses) a reading whose minted quantities it does not.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from solders.pubkey import Pubkey
from solders.signature import Signature

MESSAGE_PREFIX = "gridtoken:v1"
FULL_PREFIX = "gridtoken:v2"
KWH_QUANTUM = Decimal("0.000000001")
TIMESTAMP, NET, IMPORT, EXPORT = "timestamp", "kwh", "import", "export"
EVERYTHING = frozenset((TIMESTAMP, NET, IMPORT, EXPORT))


@dataclass(frozen=True, slots=True)
class SignedForm:
    """A message a reading's signature may be over, and the quantities a signature over it vouches for."""

    message: bytes
    covers: frozenset[str]


def canonical_timestamp(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def canonical_kwh(kwh: Decimal) -> str:
    return format(kwh.quantize(KWH_QUANTUM), "f")


def signed_kwh(item) -> Decimal:
    """The kWh a reading's signature covers: its amount, or a register read's export (else import) total."""
    if item.registers is None:
        return item.kwh
    registers = item.registers
    return registers.export_kwh if registers.export_kwh is not None else registers.import_kwh


def canonical_message(*, serial: str, reading_timestamp: datetime, kwh: Decimal) -> bytes:
    return f"{MESSAGE_PREFIX}:{serial}:{canonical_timestamp(reading_timestamp)}:{canonical_kwh(kwh)}".encode()


def _amount(kwh: Decimal | None) -> str:
    return "-" if kwh is None else canonical_kwh(kwh)


def full_message(
    *,
    serial: str,
    reading_timestamp: datetime,
    kwh: Decimal | None,
    import_kwh: Decimal | None,
    export_kwh: Decimal | None,
) -> bytes:
    """The v2 message: timestamp, net and both directions (register reads: ``-`` and both totals)."""
    amounts = ":".join(_amount(amount) for amount in (kwh, import_kwh, export_kwh))
    return f"{FULL_PREFIX}:{serial}:{canonical_timestamp(reading_timestamp)}:{amounts}".encode()


def canonical_forms(*, serial: str, item) -> tuple[SignedForm, SignedForm]:
    """GridToken's own forms for a parsed reading: v2 (covers everything) first, then v1."""
    if item.registers is None:
        full = full_message(
            serial=serial,
            reading_timestamp=item.reading_timestamp,
            kwh=item.kwh,
            import_kwh=item.consumed,
            export_kwh=item.generated,
        )
        single = frozenset((TIMESTAMP, NET))
    else:
        registers = item.registers
        full = full_message(
            serial=serial,
            reading_timestamp=item.reading_timestamp,
            kwh=None,
            import_kwh=registers.import_kwh,
            export_kwh=registers.export_kwh,
        )
        single = frozenset((TIMESTAMP, EXPORT if registers.export_kwh is not None else IMPORT))
    v1 = canonical_message(serial=serial, reading_timestamp=item.reading_timestamp, kwh=signed_kwh(item))
    return SignedForm(full, EVERYTHING), SignedForm(v1, single)


def needs(item, *, basis: str) -> tuple[str, ...]:
    """The quantities a reading's mint depends on under the mint basis (docs/METER_DATA.md, Signatures)."""
    found = [TIMESTAMP]  # another timestamp is another reading: a replay that mints again
    if item.registers is not None:
        if item.registers.import_kwh is not None and basis != "export":
            found.append(IMPORT)
        if item.registers.export_kwh is not None:
            found.append(EXPORT)
    elif basis == "export" and item.generated is not None:
        found.append(EXPORT)
    else:
        found.append(NET)
    return tuple(found)


def uncovered(item, *, basis: str, minting: bool) -> list[str]:
    """What the verified signature leaves uncovered of this reading's mint (None covers: nothing was checked).
    Register reads are always checked (their totals shape the next read's energy); interval readings when they
    mint or count in a window (``minting``)."""
    if item.signature_covers is None or not (item.registers is not None or minting):
        return []
    return [quantity for quantity in needs(item, basis=basis) if quantity not in item.signature_covers]


def decode_signature(text: str) -> Signature | None:
    """The signature in ``text`` (base58 or base64), or None when it is neither."""
    try:
        return Signature.from_string(text)
    except ValueError:
        pass
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return Signature.from_bytes(raw) if len(raw) == 64 else None


def verify(*, public_key: str, signature: str, message: bytes) -> bool:
    decoded = decode_signature(signature)
    if decoded is None:
        return False
    try:
        key = Pubkey.from_string(public_key)
    except ValueError:
        return False
    return decoded.verify(key, message)
