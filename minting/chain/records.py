"""The values the chain client takes and returns: plain, frozen, safe to store and pass between processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from solders.hash import Hash
from solders.transaction import VersionedTransaction

from minting.chain.errors import ChainError, error_from_transaction_err

U64_MAX = 2**64 - 1
I64_MAX = 2**63 - 1
COMMITMENT_ORDER = ("processed", "confirmed", "finalized")
METER_ID_BYTES = 16
WINDOW_MS = 900_000  # the energy_token program's settlement window: 15 minutes


class InvalidGeneration(ValueError):
    """A (meter, window) the energy_token program's mint_generation would refuse."""


def check_generation(meter_id: bytes, window_start_ms: int) -> None:
    """Refuse what mint_generation fails on chain (a permanent failure, after paying the fee)."""
    if not isinstance(meter_id, bytes) or len(meter_id) != METER_ID_BYTES:
        raise InvalidGeneration(f"meter_id must be {METER_ID_BYTES} bytes (a UUID's .bytes), got {meter_id!r}")
    if isinstance(window_start_ms, bool) or not isinstance(window_start_ms, int):
        raise InvalidGeneration(f"window_start_ms must be an int, not {type(window_start_ms).__name__}")
    # The program requires window_start_ms > 0 (MisalignedWindow), so the epoch itself is refused too.
    if not 0 < window_start_ms <= I64_MAX or window_start_ms % WINDOW_MS:
        raise InvalidGeneration(
            f"window_start_ms must be a positive multiple of {WINDOW_MS} (15 minutes) below 2^63, got {window_start_ms}"
        )


@dataclass(frozen=True)
class Generation:
    """The (meter, 15-minute window) a mint is for: the anchor strategy mints it at most once on chain."""

    meter_id: bytes
    window_start_ms: int

    def __post_init__(self) -> None:
        check_generation(self.meter_id, self.window_start_ms)


@dataclass(frozen=True)
class MintRequest:
    """Mint ``amount`` base units to ``wallet``'s associated token account.

    ``key`` is the caller's name for the request (the pipeline's: which readings it carries); requests to one
    wallet are merged into as few instructions as u64 allows, and each keeps its key on the SignedMint.
    With ``generation``, an anchor client mints the request alone through mint_generation (never merged); the
    SPL strategy has no per-window record and mints it like any other request.
    """

    wallet: str
    amount: int
    key: str = ""
    generation: Generation | None = None

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError(f"amount must be an int number of base units, not {type(self.amount).__name__}")
        if not 0 < self.amount <= U64_MAX:
            raise ValueError(f"amount must be in 1..2^64-1 base units, got {self.amount}")
        if not isinstance(self.wallet, str):
            raise TypeError(f"wallet must be a base58 str, not {type(self.wallet).__name__}")
        if self.generation is not None and not isinstance(self.generation, Generation):
            raise TypeError(f"generation must be a Generation, not {type(self.generation).__name__}")


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
    # The compute budget it was signed with (0 when it sets none) and the priority fee that makes, lamports.
    compute_unit_limit: int = 0
    compute_unit_price: int = 0
    priority_fee: int = 0

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
