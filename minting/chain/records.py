"""The values the chain client takes and returns: plain, frozen, safe to store and pass between processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from solders.hash import Hash
from solders.transaction import VersionedTransaction

from minting.chain.errors import ChainError, error_from_transaction_err

U64_MAX = 2**64 - 1
COMMITMENT_ORDER = ("processed", "confirmed", "finalized")


@dataclass(frozen=True)
class MintRequest:
    """Mint ``amount`` base units to ``wallet``'s associated token account.

    ``key`` is the caller's name for the request (the pipeline's: which readings it carries); requests to one
    wallet are merged into as few instructions as u64 allows, and each keeps its key on the SignedMint.
    """

    wallet: str
    amount: int
    key: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError(f"amount must be an int number of base units, not {type(self.amount).__name__}")
        if not 0 < self.amount <= U64_MAX:
            raise ValueError(f"amount must be in 1..2^64-1 base units, got {self.amount}")
        if not isinstance(self.wallet, str):
            raise TypeError(f"wallet must be a base58 str, not {type(self.wallet).__name__}")


class Blockhash(NamedTuple):
    """A recent blockhash, the last block height it is valid at, and the slot of the node that issued it."""

    blockhash: Hash
    last_valid_block_height: int
    context_slot: int = 0


@dataclass(frozen=True)
class SignedMint:
    """One signed mint transaction, ready to be stored and then sent (and re-sent) as ``raw``.

    ``context_slot`` is the slot at which its blockhash was read: it cannot land before that slot, so a read
    that decides its fate must have seen at least that much of the chain. ``instruction_wallets`` names, per
    instruction index, the wallet it mints to (None for compute budget and memo), so an on-chain
    ``InstructionError`` can be pinned on one wallet's readings.
    """

    signature: str
    raw: bytes
    last_valid_block_height: int
    requests: tuple[MintRequest, ...]
    memo: str
    context_slot: int = 0
    instruction_wallets: tuple[str | None, ...] = ()

    @property
    def total_amount(self) -> int:
        return sum(request.amount for request in self.requests)

    def program_ids(self) -> list[str]:
        """The program each instruction calls, in order (program ids are never loaded from lookup tables)."""
        message = VersionedTransaction.from_bytes(self.raw).message
        keys = message.account_keys
        return [str(keys[instruction.program_id_index]) for instruction in message.instructions]

    def failure(self, err: object) -> ChainError:
        """The typed error for this transaction's on-chain ``err`` (token program errors named)."""
        return error_from_transaction_err(err, program_ids=self.program_ids(), signature=self.signature)


@dataclass(frozen=True)
class SignatureStatus:
    """Where a signature stands: ``err`` is None when it landed successfully, else the RPC's error payload."""

    signature: str
    slot: int
    err: object | None
    confirmation_status: str | None
    confirmations: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.err is None

    @property
    def level(self) -> str:
        """processed, confirmed or finalized. Without ``confirmationStatus`` (older nodes) only a null
        ``confirmations`` proves the block is rooted; a count of confirmations proves nothing beyond processed."""
        if self.confirmation_status in COMMITMENT_ORDER:
            return self.confirmation_status
        return "finalized" if self.confirmation_status is None and self.confirmations is None else "processed"

    def reached(self, commitment: str) -> bool:
        """Whether the status is at least ``commitment`` (processed < confirmed < finalized)."""
        return COMMITMENT_ORDER.index(self.level) >= COMMITMENT_ORDER.index(commitment)
