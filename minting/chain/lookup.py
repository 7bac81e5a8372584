"""Address lookup tables for packing: token accounts of recurring wallets are referenced by a 1-byte index.

A legacy transaction names every account with 32 bytes, so about 19 MintToChecked fit in 1232 bytes; a v0
transaction whose token accounts (and the mint) come from a table carries 56, where the 64-account lock
limit is close. The table is created lazily the first time a batch is big enough to pay for it, then extended with
the token accounts batches use until it holds its 256 addresses; a new address is usable one slot after
it was added, so a batch that adds wallets waits for one slot. Wallets beyond the first 255 are named in
full (the packer mixes both in one v0 transaction). The table lives as long as the client (one per
process and mint): a restarted worker creates a new one, costing a create transaction and its rent.

A table's address derives from the authority and a slot, so two processes with one authority that create
theirs in the same slot sign the same create transaction and end up sharing one table, each appending its
own wallets. A transaction names accounts by their index in the table, so the indexes must come from the
chain, never from what this process believes it added: after every change the table is read back, and
transactions are compiled against that. (Appends never move an existing entry, so a read is never stale
for the entries it holds.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from solders.address_lookup_table_account import AddressLookupTable, AddressLookupTableAccount
from solders.instruction import Instruction
from solders.pubkey import Pubkey

from minting.chain import instructions as ix
from minting.chain.errors import ChainError, PermanentChainError, RpcTimeout
from minting.chain.packing import Unit
from minting.chain.rpc import Rpc

TABLE_CAPACITY = 256
EXTEND_CHUNK = 28  # addresses per extend transaction: 28 x 32 bytes keeps it well under 1232
LEGACY_MINTS_PER_TRANSACTION = 19  # below this a table cannot save a transaction


class TableOwner(Protocol):
    """What the tables need from the ChainClient that owns them (the client builds them, not the reverse)."""

    mint: Pubkey
    payer: Pubkey
    rpc: Rpc

    def account_data(self, address: Pubkey) -> tuple[str, bytes] | None: ...

    def execute(self, instructions: Sequence[Instruction]) -> int: ...


class LookupTables:
    def __init__(self, client: TableOwner, *, min_mints: int = LEGACY_MINTS_PER_TRANSACTION + 1) -> None:
        self.client = client
        self.min_mints = min_mints
        self.address: Pubkey | None = None
        self.addresses: list[Pubkey] = []
        self.ready_slot = 0  # the first slot in which every entry is usable
        self.disabled_because: str | None = None

    def table_for(self, units: Sequence[Unit]) -> AddressLookupTableAccount | None:
        """The table to compile these units against, extended as needed; None where it would not pay."""
        keys = [unit.table_key for unit in units if unit.table_key is not None and len(unit.instructions) == 1]
        if self.disabled_because is not None or len(keys) < self.min_mints:
            return None
        try:
            if self.address is None:
                self._create()
            self._extend([self.client.mint, *keys])
        except ChainError as error:
            if not error.permanent:
                raise
            # A cluster without the lookup table program (or one that refuses it) still gets legacy packing.
            self.disabled_because = str(error)
            return None
        if len(set(keys).intersection(self.addresses)) < self.min_mints:
            return None
        return AddressLookupTableAccount(self.address, list(self.addresses))

    def _extend(self, keys: list[Pubkey]) -> None:
        """1. Add the keys the table lacks, as many as still fit, EXTEND_CHUNK per confirmed transaction.
        2. Read the table back (another process may share it) and wait until the slot after its last
           extension, when every entry is usable."""
        known = set(self.addresses)
        missing = list(dict.fromkeys(key for key in keys if key not in known))
        missing = missing[: TABLE_CAPACITY - len(self.addresses)]
        for start in range(0, len(missing), EXTEND_CHUNK):
            chunk = missing[start : start + EXTEND_CHUNK]
            extend = ix.extend_lookup_table(
                table=self.address, authority=self.client.payer, payer=self.client.payer, addresses=chunk,
            )  # fmt: skip
            self.client.execute([extend])
        if missing:
            self._read()
        self._wait_for_slot(self.ready_slot)

    def _read(self) -> None:
        account = self.client.account_data(self.address)
        if account is None:
            raise PermanentChainError(f"lookup table {self.address} does not exist")
        table = AddressLookupTable.deserialize(account[1])
        self.addresses = list(table.addresses)
        self.ready_slot = max(self.ready_slot, table.meta.last_extended_slot + 1)

    def _create(self) -> None:
        authority = self.client.payer
        recent_slot = int(self.client.rpc.call("getSlot", [{"commitment": "finalized"}]))
        create, address = ix.create_lookup_table(authority=authority, payer=authority, recent_slot=recent_slot)
        self.client.execute([create])
        self.address, self.ready_slot = address, 0
        self._read()

    def _wait_for_slot(self, slot: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while int(self.client.rpc.call("getSlot", [{"commitment": "processed"}])) < slot:
            if time.monotonic() > deadline:
                raise RpcTimeout(f"the chain did not reach slot {slot} within {timeout:g} s")
            time.sleep(0.05)
