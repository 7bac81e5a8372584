"""What the chain remembers about transactions: every signature's status for good, recent ones in full."""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

SIGNATURE_RECORD = struct.Struct("<64sQ")


@dataclass(slots=True)
class TransactionRecord:
    """A landed transaction as ``getTransaction`` reports it."""

    slot: int
    block_time: int
    raw: bytes
    err: Any
    fee: int
    pre_balances: list[int]
    post_balances: list[int]
    logs: list[str]
    units_consumed: int
    loaded_writable: list[str]
    loaded_readonly: list[str]
    return_data: tuple[str, bytes] | None


class SignatureHistory:
    """Signature -> slot (and error, for failed ones) of every transaction that ever landed.

    Replay protection depends on this never forgetting, so it is also an append-only byte log of fixed-size
    records: persisting it is one copy, and it costs 72 bytes plus a dict entry per transaction.
    """

    def __init__(self) -> None:
        self._slots: dict[bytes, int] = {}
        self._errors: dict[bytes, Any] = {}
        self._log = bytearray()

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, signature: bytes) -> bool:
        return signature in self._slots

    def record(self, signature: bytes, slot: int, err: Any = None) -> None:
        self._slots[signature] = slot
        self._log += SIGNATURE_RECORD.pack(signature, slot)
        if err is not None:
            self._errors[signature] = err

    def status(self, signature: bytes) -> tuple[int, Any] | None:
        slot = self._slots.get(signature)
        if slot is None:
            return None
        return slot, self._errors.get(signature)

    def dump(self) -> tuple[bytes, dict[bytes, Any]]:
        return bytes(self._log), dict(self._errors)

    @classmethod
    def load(cls, log: bytes, errors: dict[bytes, Any]) -> SignatureHistory:
        history = cls()
        history._log = bytearray(log)
        history._slots = {signature: slot for signature, slot in SIGNATURE_RECORD.iter_unpack(log)}
        history._errors = dict(errors)
        return history


class TransactionArchive:
    """The most recent ``capacity`` transactions in full; older ones keep only their status (as on a
    validator without long-term storage)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: OrderedDict[bytes, TransactionRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, signature: bytes, record: TransactionRecord) -> None:
        if self.capacity <= 0:
            return
        self._records[signature] = record
        if len(self._records) > self.capacity:
            self._records.popitem(last=False)

    def get(self, signature: bytes) -> TransactionRecord | None:
        return self._records.get(signature)

    def items(self) -> list[tuple[bytes, TransactionRecord]]:
        return list(self._records.items())
