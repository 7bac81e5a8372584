"""Greedy packing of per-wallet instruction groups into transactions that fit Solana's limits.

The size of a transaction is computed from its parts (signatures, header, account keys, blockhash,
instructions, lookups) as the wire format lays them out, so packing never compiles a message just to
measure it; ``build`` checks the compiled size against the computed one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


@dataclass
class Draft:
    """One transaction being filled; ``size()`` is its exact serialised length."""

    payer: Pubkey
    lookup: AddressLookupTableAccount | None
    keys: dict[Pubkey, _Key] = field(default_factory=dict)
    instruction_bytes: int = 0
    instruction_count: int = 0
    units: list[Unit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys[self.payer] = _Key(signer=True, writable=True)
        self._table = set(self.lookup.addresses) if self.lookup is not None else set()

    def add(self, instructions: Sequence[Instruction]) -> None:
        for instruction in instructions:
            self.keys.setdefault(instruction.program_id, _Key()).invoked = True
            for meta in instruction.accounts:
                key = self.keys.setdefault(meta.pubkey, _Key())
                key.signer |= meta.is_signer
                key.writable |= meta.is_writable
            self.instruction_bytes += instruction_size(instruction)
            self.instruction_count += 1

    def _looked_up(self, key: Pubkey, flags: _Key) -> bool:
        return key in self._table and not flags.signer and not flags.invoked

    def size(self) -> int:
        looked_up = sum(1 for key, flags in self.keys.items() if self._looked_up(key, flags))
        static = len(self.keys) - looked_up
        signers = sum(1 for flags in self.keys.values() if flags.signer)
        size = compact_u16_size(signers) + SIGNATURE_SIZE * signers
        size += 3 + compact_u16_size(static) + KEY_SIZE * static + KEY_SIZE
        size += compact_u16_size(self.instruction_count) + self.instruction_bytes
        if self.lookup is not None:
            size += 1  # the version prefix
            if looked_up:
                writable = sum(1 for key, flags in self.keys.items() if self._looked_up(key, flags) and flags.writable)
                readonly = looked_up - writable
                size += compact_u16_size(1) + KEY_SIZE
                size += compact_u16_size(writable) + writable + compact_u16_size(readonly) + readonly
            else:
                size += compact_u16_size(0)
        return size

    @property
    def account_count(self) -> int:
        return len(self.keys)

    def copy(self) -> Draft:
        clone = Draft(self.payer, self.lookup)
        clone.keys = {key: _Key(flags.signer, flags.writable, flags.invoked) for key, flags in self.keys.items()}
        clone.instruction_bytes, clone.instruction_count = self.instruction_bytes, self.instruction_count
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
            candidate = current.copy()
            candidate.add(unit.instructions)
            if _fits(candidate, compute + unit.compute_units, max_bytes, max_accounts, max_compute_units):
                candidate.units.append(unit)
                current, compute = candidate, compute + unit.compute_units
                continue
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
