"""What the chain says about signed batches, turned into a Settlement (no database writes here)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from minting.chain import ChainClient, ChainError, SignedMint
from minting.models import MintBatch
from minting.services.settlement import Failure, Settlement

logger = logging.getLogger("minting.chain_view")

# getSignatureStatuses answers at most 256 signatures per call.
STATUS_CHUNK = 256


def chunks(items: list, size: int = STATUS_CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_signed(batch: MintBatch) -> SignedMint:
    """The committed bytes of a batch, ready to be sent again exactly as first signed."""
    return SignedMint(
        signature=batch.signature,
        raw=bytes(batch.raw_transaction),
        last_valid_block_height=batch.last_valid_block_height,
        requests=(),
        memo="",
        context_slot=batch.context_slot,
        instruction_wallets=tuple(batch.instruction_wallets or ()),
    )


def failure_of(batch: MintBatch, err: object) -> Failure:
    """The on-chain error as the chain layer types it (token program errors by name), and the wallet of the
    instruction it names, if the batch recorded one."""
    signed = as_signed(batch)
    try:
        error: ChainError | None = signed.failure(err)
    except Exception:  # undecodable bytes must not stop settlement; the raw payload still says what happened
        error = None
    wallet, created = None, False
    if isinstance(err, dict) and isinstance(err.get("InstructionError"), list):
        index = err["InstructionError"][0]
        wallets = signed.instruction_wallets
        if isinstance(index, int) and 0 <= index < len(wallets):
            wallet = wallets[index]
            created = index > 0 and wallets[index - 1] == wallet  # create-ATA + mint for the same wallet
    return Failure(message=str(error or err), error=error, wallet=wallet, created_account=created)


def read_outcomes(
    client: ChainClient, batches: list[MintBatch]
) -> tuple[Settlement, list[MintBatch], ChainError | None]:
    """Decide each batch from the chain (``ChainClient.outcomes``): (what to settle, what is still in flight,
    the transient error that kept some undecided, if any)."""
    settlement, undecided, blocked = Settlement(), [], None
    for chunk in chunks(batches):
        outcomes = client.outcomes([as_signed(batch) for batch in chunk])
        blocked = outcomes.blocked or blocked
        for batch in chunk:
            status = outcomes.landed.get(batch.signature)
            if status is not None and status.err is None:
                settlement.confirmed.append(batch.id)
            elif status is not None:
                settlement.failed[batch.id] = failure_of(batch, status.err)
            elif batch.signature in outcomes.expired:
                settlement.expired.append(batch.id)
            else:
                undecided.append(batch)
    if blocked is not None:
        logger.warning("some batches stay undecided: %s", blocked, extra={"code": blocked.code})
    return settlement, undecided, blocked
