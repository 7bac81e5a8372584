"""The values the chain client takes and returns: plain, frozen, safe to store and pass between processes."""

from __future__ import annotations

from dataclasses import dataclass

from solders.transaction import VersionedTransaction

from minting.chain.errors import ChainError, error_from_transaction_err

U64_MAX = 2**64 - 1
COMMITMENT_ORDER = ("processed", "confirmed", "finalized")


@dataclass(frozen=True)
class MintRequest:
    """Mint ``amount`` base units to ``wallet``'s associated token account."""

    wallet: str
    amount: int

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError(f"amount must be an int number of base units, not {type(self.amount).__name__}")
        if not 0 < self.amount <= U64_MAX:
            raise ValueError(f"amount must be in 1..2^64-1 base units, got {self.amount}")
        if not isinstance(self.wallet, str):
            raise TypeError(f"wallet must be a base58 str, not {type(self.wallet).__name__}")


@dataclass(frozen=True)
class SignedMint:
    """One signed mint transaction, ready to be stored and then sent (and re-sent) as ``raw``."""

    signature: str
    raw: bytes
    last_valid_block_height: int
    requests: tuple[MintRequest, ...]
    memo: str

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

    @property
    def succeeded(self) -> bool:
        return self.err is None

    def reached(self, commitment: str) -> bool:
        """Whether the status is at least ``commitment`` (processed < confirmed < finalized)."""
        if self.confirmation_status is None:
            # Nodes report null once a transaction is rooted beyond the status cache: that is finalized.
            return True
        return COMMITMENT_ORDER.index(self.confirmation_status) >= COMMITMENT_ORDER.index(commitment)
