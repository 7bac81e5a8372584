"""Meter signatures: the canonical message a meter signs and its Ed25519 verification.

The message is UTF-8 text of four fields joined by ``:``::

    gridtoken:v1:{serial}:{timestamp}:{kwh}

- ``serial``: the meter's serial exactly as registered.
- ``timestamp``: the reading timestamp in UTC as ``YYYY-MM-DDTHH:MM:SSZ``, or ``YYYY-MM-DDTHH:MM:SS.ffffffZ``
  (exactly six fraction digits) when it has a sub-second part.
- ``kwh``: the amount in plain decimal notation with exactly nine decimal places, e.g. ``1.500000000``. A
  register read signs its export register total (its import total when it sends no export register).

Timestamp and kWh have fixed formats and come last, so no two (serial, timestamp, kWh) triples give the
same message even when a serial contains ``:``. The signature is 64 bytes, sent base58 (Solana's usual
text form) or base64.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from decimal import Decimal

from solders.pubkey import Pubkey
from solders.signature import Signature

MESSAGE_PREFIX = "gridtoken:v1"
KWH_QUANTUM = Decimal("0.000000001")


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
