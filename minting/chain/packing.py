"""Greedy packing of per-wallet instruction groups into transactions that fit Solana's limits.

The size of a transaction is computed from its parts (signatures, header, account keys, blockhash,
instructions, lookups) as the wire format lays them out, so packing never compiles a message just to
measure it; ``build`` checks the compiled size against the computed one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.instruction import Instruction
from solders.pubkey import Pubkey

from minting.chain.errors import TransactionTooLarge
from minting.chain.records import MintRequest

PACKET_DATA_SIZE = 1232  # bytes: an IPv6 MTU minus headers; validators drop anything larger
MAX_ACCOUNT_LOCKS = 64  # accounts (static + looked up) one transaction may reference on mainnet
MAX_COMPUTE_UNITS = 1_400_000
SIGNATURE_SIZE = 64
KEY_SIZE = 32


def compact_u16_size(value: int) -> int:
    """Bytes of Solana's compact-u16 ("shortvec") encoding of ``value``."""
    return 1 if value < 0x80 else 2 if value < 0x4000 else 3


def instruction_size(instruction: Instruction) -> int:
    accounts = len(instruction.accounts)
    data = len(instruction.data)
    return 1 + compact_u16_size(accounts) + accounts + compact_u16_size(data) + data


@dataclass(frozen=True)
class Unit:
    """Instructions that must land together (create-ATA + mint for one wallet) and the requests they carry."""

    instructions: tuple[Instruction, ...]
    requests: tuple[MintRequest, ...]
    compute_units: int
    table_key: Pubkey | None = None  # the account worth a lookup table entry (the wallet's token account)


@dataclass
class _Key:
    signer: bool = False
    writable: bool = False
    invoked: bool = False


class Draft:
    """One transaction being filled; ``size()`` is its exact serialised length, kept up to date incrementally."""

    def __init__(self, payer: Pubkey, lookup: AddressLookupTableAccount | None) -> None:
        self.payer = payer
        self.lookup = lookup
        self._table = frozenset(lookup.addresses) if lookup is not None else frozenset()
        self.keys: dict[Pubkey, _Key] = {}
        self.units: list[Unit] = []
        self.instruction_bytes = 0
        self.instruction_count = 0
        self._signers = self._static = self._looked_up_writable = self._looked_up_readonly = 0
        self._undo: dict[Pubkey, _Key | None] = {}
        self._count(payer, _Key(signer=True, writable=True), +1)
        self.keys[payer] = _Key(signer=True, writable=True)

    def _count(self, key: Pubkey, flags: _Key, sign: int) -> None:
        self._signers += sign * flags.signer
        if key in self._table and not flags.signer and not flags.invoked:
            if flags.writable:
                self._looked_up_writable += sign
            else:
                self._looked_up_readonly += sign
        else:
            self._static += sign

    def _changes(self, instructions: Sequence[Instruction]) -> dict[Pubkey, _Key]:
        """The flags each key named by ``instructions`` would have after adding them."""
        changes: dict[Pubkey, _Key] = {}

        def merge(key: Pubkey, signer: bool, writable: bool, invoked: bool) -> None:
            flags = changes.get(key)
            if flags is None:
                old = self.keys.get(key)
                flags = changes[key] = _Key(old.signer, old.writable, old.invoked) if old else _Key()
            flags.signer |= signer
            flags.writable |= writable
            flags.invoked |= invoked

        for instruction in instructions:
            merge(instruction.program_id, False, False, True)
            for meta in instruction.accounts:
                merge(meta.pubkey, meta.is_signer, meta.is_writable, False)
        return changes

    def add(self, instructions: Sequence[Instruction]) -> None:
        for key, flags in self._changes(instructions).items():
            old = self.keys.get(key)
            self._undo.setdefault(key, old)
            if old is not None:
                self._count(key, old, -1)
            self._count(key, flags, +1)
            self.keys[key] = flags
        self.instruction_bytes += sum(instruction_size(instruction) for instruction in instructions)
        self.instruction_count += len(instructions)

    def size(self) -> int:
        signers, static = self._signers, self._static
        writable, readonly = self._looked_up_writable, self._looked_up_readonly
        size = compact_u16_size(signers) + SIGNATURE_SIZE * signers
        size += 3 + compact_u16_size(static) + KEY_SIZE * static + KEY_SIZE
        size += compact_u16_size(self.instruction_count) + self.instruction_bytes
        if self.lookup is not None:
            size += 1  # the version prefix
            if writable + readonly:
                size += compact_u16_size(1) + KEY_SIZE
                size += compact_u16_size(writable) + writable + compact_u16_size(readonly) + readonly
            else:
                size += compact_u16_size(0)
        return size

    @property
    def account_count(self) -> int:
        return len(self.keys)

    def snapshot(self) -> tuple:
        """What ``restore`` needs to undo the next ``add`` (the keys it will touch are saved lazily by it)."""
        self._undo: dict[Pubkey, _Key | None] = {}
        return (self._signers, self._static, self._looked_up_writable, self._looked_up_readonly,
                self.instruction_bytes, self.instruction_count)  # fmt: skip

    def restore(self, saved: tuple) -> None:
        for key, flags in self._undo.items():
            if flags is None:
                del self.keys[key]
            else:
                self.keys[key] = flags
        (self._signers, self._static, self._looked_up_writable, self._looked_up_readonly,
         self.instruction_bytes, self.instruction_count) = saved  # fmt: skip
        self._undo = {}

    def copy(self) -> Draft:
        clone = Draft.__new__(Draft)
        clone.__dict__.update(self.__dict__)
        clone.keys = {key: _Key(flags.signer, flags.writable, flags.invoked) for key, flags in self.keys.items()}
        clone.units = list(self.units)
        return clone


def pack(
    units: Sequence[Unit],
    *,
    payer: Pubkey,
    fixed: Callable[[int], Sequence[Instruction]],
    lookup: AddressLookupTableAccount | None = None,
    max_bytes: int = PACKET_DATA_SIZE,
    max_accounts: int = MAX_ACCOUNT_LOCKS,
    max_compute_units: int = MAX_COMPUTE_UNITS,
) -> list[Draft]:
    """Units packed greedily, in order, into as few transactions as the limits allow.

    ``fixed(i)`` returns the instructions transaction ``i`` carries besides its units (compute budget,
    memo); their size must not depend on the units. A unit that does not fit even alone is an error.
    """
    drafts: list[Draft] = []
    current: Draft | None = None
    compute = 0
    for unit in units:
        if current is not None:
            undo = current.snapshot()
            current.add(unit.instructions)
            if _fits(current, compute + unit.compute_units, max_bytes, max_accounts, max_compute_units):
                current.units.append(unit)
                compute += unit.compute_units
                continue
            current.restore(undo)
            drafts.append(current)
        current = Draft(payer, lookup)
        current.add(fixed(len(drafts)))
        current.add(unit.instructions)
        current.units.append(unit)
        compute = unit.compute_units
        if not _fits(current, compute, max_bytes, max_accounts, max_compute_units):
            raise TransactionTooLarge(
                f"one wallet's instructions do not fit a transaction alone ({current.size()} bytes, "
                f"{current.account_count} accounts; limits {max_bytes} bytes, {max_accounts} accounts)"
            )
    if current is not None:
        drafts.append(current)
    return drafts


def _fits(draft: Draft, compute: int, max_bytes: int, max_accounts: int, max_compute_units: int) -> bool:
    return draft.size() <= max_bytes and draft.account_count <= max_accounts and compute <= max_compute_units
