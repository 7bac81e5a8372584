"""One LiteSVM behaving like a one-node Solana cluster: slots, expiring blockhashes, lasting replay protection.

LiteSVM alone accepts only its latest blockhash and forgets signatures after a short history, so this class
turns both of its checks off and keeps its own: blockhashes with the block height they were issued at (valid
for 150 blocks) and every landed signature forever (``SignatureHistory``). One lock guards the LiteSVM: its
methods release the GIL, and two threads inside it at once would fail its borrow check.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from solders.account import Account
from solders.address_lookup_table_account import ID as LOOKUP_TABLE_PROGRAM_ID
from solders.address_lookup_table_account import AddressLookupTable
from solders.clock import Clock
from solders.compute_budget import set_compute_unit_limit
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import TransactionErrorFieldless

from localnet.errors import (
    TRANSACTION_ERROR_TEXT,
    RpcError,
    error_to_ui,
    invalid_params,
    preflight_failure,
    signature_verification_failure,
)
from localnet.fees import compute_budget_of
from localnet.history import SignatureHistory, TransactionArchive, TransactionRecord

MAX_PROCESSING_AGE = 150  # blocks a blockhash stays valid (solana_sdk::clock::MAX_PROCESSING_AGE)
STATUS_CACHE_SLOTS = 300  # how far back getSignatureStatuses looks without searchTransactionHistory
SLOT_HASHES_MAX = 512
LAMPORTS_PER_SIGNATURE = 5000  # LiteSVM's fee; the prioritization fee is charged by ``_land`` (fees.py)
FAUCET_LAMPORTS = 10**18
DEFAULT_ARCHIVE_CAPACITY = 5_000  # full transactions kept for getTransaction; statuses are kept for good
# Errors a validator raises while sanitising a transaction, before preflight: -32602 "invalid transaction".
SANITIZE_ERRORS = frozenset(
    {
        "SanitizeFailure",
        "AddressLookupTableNotFound",
        "InvalidAddressLookupTableOwner",
        "InvalidAddressLookupTableData",
        "InvalidAddressLookupTableIndex",
        "UnsupportedVersion",
        "AccountLoadedTwice",
        "TooManyAccountLocks",
    }
)
# Never persisted: the runtime provides them again at start.
RUNTIME_OWNERS = frozenset(
    {
        Pubkey.from_string("NativeLoader1111111111111111111111111111111"),
        Pubkey.from_string("Sysvar1111111111111111111111111111111111111"),
        Pubkey.from_string("BPFLoader1111111111111111111111111111111111"),
        Pubkey.from_string("BPFLoader2111111111111111111111111111111111"),
        Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111"),
        Pubkey.from_string("LoaderV411111111111111111111111111111111111"),
    }
)
FAUCET = Keypair.from_seed(hashlib.sha256(b"gridtoken localnet faucet").digest())
FAUCET_PUBKEY = FAUCET.pubkey()


def next_blockhash(previous: Hash, slot: int) -> Hash:
    return Hash(hashlib.sha256(bytes(previous) + slot.to_bytes(8, "little")).digest())


@dataclass(frozen=True, slots=True)
class ChainView:
    """The tip as one node sees it: the real tip, or the tip of a replica some slots behind."""

    slot: int
    block_height: int
    blockhash: Hash

    @property
    def last_valid_block_height(self) -> int:
        return self.block_height + MAX_PROCESSING_AGE


def _simulation_result(
    err: Any, meta: TransactionMetadata | None, accounts: list[Account | None] | None = None
) -> RpcSimulateTransactionResult:
    if meta is None:
        return RpcSimulateTransactionResult(err=err, logs=[], accounts=accounts, units_consumed=0)
    return_data = meta.return_data()
    return RpcSimulateTransactionResult(
        err=err, logs=meta.logs(), accounts=accounts, units_consumed=meta.compute_units_consumed(),
        return_data=return_data if return_data.data else None,
    )  # fmt: skip


class LocalChain:
    """The chain state behind the RPC server. Every public method takes ``self.lock``."""

    def __init__(self, *, archive_capacity: int = DEFAULT_ARCHIVE_CAPACITY, genesis_hash: Hash | None = None) -> None:
        self.lock = threading.RLock()
        self.svm = LiteSVM().with_blockhash_check(False).with_transaction_history(0)
        self.history = SignatureHistory()
        self.archive = TransactionArchive(archive_capacity)
        self.accounts: set[Pubkey] = set()  # every key a landed transaction named: LiteSVM cannot list them
        self.slot = 0
        self.block_height = 0
        self.transaction_count = 0
        self.unix_time = int(time.time())
        self.blockhash = genesis_hash or Hash(hashlib.sha256(os.urandom(32)).digest())
        self.blockhash_heights: dict[Hash, int] = {self.blockhash: 0}
        self.slot_hashes: deque[tuple[int, Hash]] = deque([(0, self.blockhash)], maxlen=SLOT_HASHES_MAX)
        self.dirty = False
        self._lookup_tables: dict[Pubkey, list[Pubkey]] = {}
        self.svm.set_account(FAUCET_PUBKEY, Account(FAUCET_LAMPORTS, b"", SYSTEM_PROGRAM_ID))
        self.accounts.add(FAUCET_PUBKEY)
        self._apply_clock()

    # -- time ------------------------------------------------------------------------------------------

    def advance_slot(self) -> None:
        """One new block: slot and block height +1, a fresh blockhash, Clock and SlotHashes updated."""
        with self.lock:
            self.slot += 1
            self.block_height += 1
            self.unix_time = int(time.time())
            self.blockhash = next_blockhash(self.blockhash, self.slot)
            self.blockhash_heights[self.blockhash] = self.block_height
            self.slot_hashes.appendleft((self.slot, self.blockhash))
            if len(self.blockhash_heights) > 2 * MAX_PROCESSING_AGE:
                oldest = self.block_height - MAX_PROCESSING_AGE
                self.blockhash_heights = {h: height for h, height in self.blockhash_heights.items() if height >= oldest}
            self._apply_clock()

    def _apply_clock(self) -> None:
        schedule = self.svm.get_epoch_schedule()
        epoch = schedule.get_epoch(self.slot)
        leader_epoch = schedule.get_leader_schedule_epoch(self.slot)
        self.svm.set_clock(Clock(self.slot, self.unix_time, epoch, leader_epoch, self.unix_time))
        # Includes the current slot (a validator lists only ancestors) so a lookup table can be created with
        # the slot getSlot just returned.
        self.svm.set_slot_hashes(list(self.slot_hashes))

    def latest_blockhash(self) -> tuple[Hash, int, int]:
        """(blockhash, last valid block height, context slot)."""
        with self.lock:
            return self.blockhash, self.blockhash_heights[self.blockhash] + MAX_PROCESSING_AGE, self.slot

    def view(self, lag: int = 0) -> ChainView:
        """The tip ``lag`` slots back (at most as far back as the slot hashes reach)."""
        with self.lock:
            slot, blockhash = self.slot_hashes[min(lag, len(self.slot_hashes) - 1)]
            return ChainView(slot, self._height_of(slot), blockhash)

    def is_blockhash_valid(self, blockhash: Hash, at_height: int | None = None) -> bool:
        """Valid at the tip, or at ``at_height`` (a lagging replica, which does not know newer blockhashes)."""
        with self.lock:
            height = self.blockhash_heights.get(blockhash)
            if height is None and at_height is not None:  # pruned at the tip, maybe still young for the replica
                height = next((self._height_of(slot) for slot, h in self.slot_hashes if h == blockhash), None)
            at_height = self.block_height if at_height is None else at_height
            return height is not None and height <= at_height <= height + MAX_PROCESSING_AGE

    def _height_of(self, slot: int) -> int:
        return self.block_height - (self.slot - slot)  # every slot is a block here

    # -- transactions ----------------------------------------------------------------------------------

    def _age_error(self, signature: bytes, blockhash: Hash) -> Any:
        if not self.is_blockhash_valid(blockhash):
            return TransactionErrorFieldless.BlockhashNotFound
        if signature in self.history:
            return TransactionErrorFieldless.AlreadyProcessed
        return None

    def _loaded_addresses(self, message: Any) -> tuple[list[Pubkey], list[Pubkey]]:
        """The addresses a v0 message loads from lookup tables (empty when unresolvable: LiteSVM says why)."""
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        if not isinstance(message, MessageV0):
            return writable, readonly
        for lookup in message.address_table_lookups:
            indexes = bytes(lookup.writable_indexes) + bytes(lookup.readonly_indexes)
            addresses = self._lookup_tables.get(lookup.account_key)
            if addresses is None or max(indexes, default=0) >= len(addresses):
                account = self.svm.get_account(lookup.account_key)
                if account is None or account.owner != LOOKUP_TABLE_PROGRAM_ID:
                    return [], []
                # Entries are append-only, so a cached prefix stays right.
                addresses = list(AddressLookupTable.deserialize(account.data).addresses)
                self._lookup_tables[lookup.account_key] = addresses
                if max(indexes, default=0) >= len(addresses):
                    return [], []
            writable.extend(addresses[i] for i in lookup.writable_indexes)
            readonly.extend(addresses[i] for i in lookup.readonly_indexes)
        return writable, readonly

    def send_transaction(self, tx: VersionedTransaction, raw: bytes, *, preflight: bool = True) -> str:
        """Execute and land ``tx`` as a validator would; returns its signature.

        1. Blockhash age and replay: with preflight a -32002 error, without it dropped silently (the validator
           returns the signature and the transaction never lands).
        2. Execute once. Preflight needs no separate simulation: under the lock nothing can change between a
           simulation and the execution, so a failed execution is rolled back instead (it changed only the
           fee payer, which is restored) and reported exactly as the simulation would have been.
        3. Failed before execution (no fee charged): rejected or dropped. Failed in execution: lands with its
           error and fee, as on a validator.
        """
        signature = tx.signatures[0]
        signature_bytes = bytes(signature)
        message = tx.message
        with self.lock:
            age_error = self._age_error(signature_bytes, message.recent_blockhash)
            if age_error is not None:
                if not preflight:
                    return str(signature)
                if not all(tx.verify_with_results()):
                    raise signature_verification_failure()
                raise preflight_failure(_simulation_result(age_error, None))
            writable, readonly = self._loaded_addresses(message)
            keys = [*message.account_keys, *writable, *readonly]
            payer = keys[0]
            payer_before = self.svm.get_account(payer) if preflight else None
            get_balance = self.svm.get_balance
            pre_balances = [get_balance(key) or 0 for key in keys]
            result = self.svm.send_transaction(tx)
            err = None
            if isinstance(result, FailedTransactionMetadata):
                err = result.err()
                if not self._landed_with_error(err, preflight, payer, pre_balances[0]):
                    return str(signature)
                if preflight:
                    self.svm.set_account(payer, payer_before)
                    raise preflight_failure(_simulation_result(err, result.meta()))
                meta = result.meta()
            else:
                meta = result
            self._land(signature_bytes, raw, message, keys, pre_balances, err, meta, writable, readonly)
        return str(signature)

    def _landed_with_error(self, err: Any, preflight: bool, payer: Pubkey, payer_balance_before: int) -> bool:
        """True if the failed transaction landed (fee charged); raises the validator's error for a rejection
        and returns False for a transaction a validator would have dropped without a word."""
        name = error_to_ui(err)
        if isinstance(name, str) and name in SANITIZE_ERRORS:
            raise invalid_params(f"invalid transaction: {TRANSACTION_ERROR_TEXT[name]}")
        if name == "SignatureFailure":
            if preflight:
                raise signature_verification_failure()
            return False
        if (self.svm.get_balance(payer) or 0) == payer_balance_before:  # no fee charged: it never ran
            if preflight:
                raise preflight_failure(_simulation_result(err, None))
            return False
        return True

    def _land(self, signature, raw, message, keys, pre_balances, err, meta, writable, readonly) -> None:
        get_balance = self.svm.get_balance
        return_data = meta.return_data()
        priority_fee = compute_budget_of(message).priority_fee
        if priority_fee:  # LiteSVM took the signatures' fee; a validator takes the priority fee with it
            payer = self.svm.get_account(keys[0])
            self.svm.set_account(
                keys[0], Account(max(payer.lamports - priority_fee, 0), payer.data, payer.owner, payer.executable,
                                 payer.rent_epoch),
            )  # fmt: skip
        record = TransactionRecord(
            slot=self.slot, block_time=self.unix_time, raw=raw, err=err,
            fee=LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures + priority_fee,
            pre_balances=pre_balances, post_balances=[get_balance(key) or 0 for key in keys],
            logs=meta.logs(), units_consumed=meta.compute_units_consumed(),
            loaded_writable=[str(key) for key in writable], loaded_readonly=[str(key) for key in readonly],
            return_data=(str(return_data.program_id), return_data.data) if return_data.data else None,
        )  # fmt: skip
        self.history.record(signature, self.slot, err)
        self.archive.add(signature, record)
        self.accounts.update(keys)
        self.transaction_count += 1
        self.dirty = True

    def simulate_transaction(
        self, tx: VersionedTransaction, *, sig_verify: bool, replace_blockhash: bool, addresses: list[Pubkey]
    ) -> tuple[RpcSimulateTransactionResult, dict | None]:
        """The simulation result and, with ``replace_blockhash``, the blockhash it was simulated against."""
        with self.lock:
            replacement = None
            if replace_blockhash:
                blockhash, last_valid, _ = self.latest_blockhash()
                replacement = {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid}
                replayed = bytes(tx.signatures[0]) in self.history
                age_error = TransactionErrorFieldless.AlreadyProcessed if replayed else None
            else:
                age_error = self._age_error(bytes(tx.signatures[0]), tx.message.recent_blockhash)
            if sig_verify and not all(tx.verify_with_results()):
                raise signature_verification_failure()
            if age_error is not None:
                return _simulation_result(age_error, None), replacement
            self.svm.with_sigverify(False)
            try:
                result = self.svm.simulate_transaction(tx)
            finally:
                self.svm.with_sigverify(True)
            if isinstance(result, FailedTransactionMetadata):
                err, meta, post = result.err(), result.meta(), {}
            else:
                err, meta, post = None, result.meta(), dict(result.post_accounts())
            accounts = [post[key] if key in post else self.svm.get_account(key) for key in addresses]
            return _simulation_result(err, meta, accounts if addresses else None), replacement

    def preflight(self, tx: VersionedTransaction) -> None:
        """Raise what ``send_transaction``'s preflight would, landing nothing (for sends a fault intercepts)."""
        simulation, _ = self.simulate_transaction(tx, sig_verify=True, replace_blockhash=False, addresses=[])
        if simulation.err is not None:
            raise preflight_failure(simulation)

    def request_airdrop(self, recipient: Pubkey, lamports: int) -> str:
        """A faucet transfer landed like any transaction, so it has a signature and a status."""
        with self.lock:
            payment = transfer(TransferParams(from_pubkey=FAUCET_PUBKEY, to_pubkey=recipient, lamports=lamports))
            for attempt in range(1000):
                instructions = [payment]
                if attempt:  # the same request in the same slot must still be a new transaction
                    instructions.append(set_compute_unit_limit(1_400_000 - attempt))
                message = MessageV0.try_compile(FAUCET_PUBKEY, instructions, [], self.blockhash)
                tx = VersionedTransaction(message, [FAUCET])
                if bytes(tx.signatures[0]) not in self.history:
                    break
            try:
                return self.send_transaction(tx, bytes(tx), preflight=True)
            except RpcError as error:
                raise RpcError(-32603, f"airdrop failed: {error.message}") from error

    # -- reads -------------------------------------------------------------------------------------------

    def signature_statuses(
        self, signatures: list[bytes], *, search_history: bool, at_slot: int | None = None, first_slot: int = 0
    ) -> list[tuple[int, Any] | None]:
        """(slot, err) of each landed signature, as a node at ``at_slot`` whose ledger starts at ``first_slot``
        sees it: later landings are not known yet, earlier ones are pruned."""
        with self.lock:
            at_slot = self.slot if at_slot is None else at_slot
            oldest = max(first_slot, at_slot - STATUS_CACHE_SLOTS if not search_history else 0)
            statuses = []
            for signature in signatures:
                status = self.history.status(signature)
                if status is not None and not oldest <= status[0] <= at_slot:
                    status = None
                statuses.append(status)
            return statuses

    def transaction(self, signature: bytes) -> TransactionRecord | None:
        with self.lock:
            return self.archive.get(signature)

    def get_account(self, pubkey: Pubkey) -> Account | None:
        with self.lock:
            account = self.svm.get_account(pubkey)
        return account if account is not None and account.lamports > 0 else None

    def get_accounts(self, pubkeys: list[Pubkey]) -> list[Account | None]:
        with self.lock:
            accounts = [self.svm.get_account(pubkey) for pubkey in pubkeys]
        return [account if account is not None and account.lamports > 0 else None for account in accounts]

    def get_balance(self, pubkey: Pubkey) -> int:
        with self.lock:
            return self.svm.get_balance(pubkey) or 0

    def minimum_balance_for_rent_exemption(self, data_len: int) -> int:
        with self.lock:
            return self.svm.minimum_balance_for_rent_exemption(data_len)

    def persistent_accounts(self) -> list[tuple[Pubkey, Account]]:
        """Every account worth saving: the tracked keys minus programs, sysvars and emptied accounts."""
        with self.lock:
            saved = []
            for pubkey in self.accounts:
                account = self.svm.get_account(pubkey)
                if account is None or account.lamports == 0 or account.executable or account.owner in RUNTIME_OWNERS:
                    continue
                saved.append((pubkey, account))
            return saved

    def set_account(self, pubkey: Pubkey, account: Account) -> None:
        with self.lock:
            self.svm.set_account(pubkey, account)
            self.accounts.add(pubkey)
            self.dirty = True
