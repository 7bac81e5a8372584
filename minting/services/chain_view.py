"""What the chain says about signed batches, turned into a Settlement (no database writes here)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings

from minting.chain import ChainClient, SignedMint
from minting.models import MintBatch
from minting.services.settlement import Settlement

logger = logging.getLogger("minting.chain_view")

# getSignatureStatuses answers at most 256 signatures per call.
STATUS_CHUNK = 256


def chunks(items: list, size: int = STATUS_CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def statuses_of(client: ChainClient, signatures: list[str]) -> dict:
    found: dict = {}
    for part in chunks(signatures):
        found.update(client.get_signature_statuses(part))
    return found


def as_signed(batch: MintBatch) -> SignedMint:
    """The committed bytes of a batch, ready to be sent again exactly as first signed."""
    return SignedMint(
        signature=batch.signature,
        raw=bytes(batch.raw_transaction),
        last_valid_block_height=batch.last_valid_block_height,
        requests=(),
        memo="",
    )


def failure_message(batch: MintBatch, err: object) -> str:
    """The on-chain error named as the chain layer reads it (token program errors by name)."""
    try:
        return str(as_signed(batch).failure(err))
    except Exception:  # undecodable bytes must not stop settlement; the raw payload still says what happened
        return str(err)


def read_outcomes(client: ChainClient, batches: list[MintBatch]) -> tuple[Settlement, list[MintBatch]]:
    """Decide each batch from the chain: (what to settle, what is still in flight).

    1. Ask for the signatures' statuses; a landed transaction at the configured commitment is decided.
    2. For the rest, read the block height FIRST, then ask for their statuses again. A transaction whose
       blockhash is past its last valid block height can never land afterwards, so "height past and still
       unknown after that height was seen" is proof that it never will; the other order could miss a
       transaction that landed between the two calls.
    """
    settlement, undecided = Settlement(), []

    def classify(batch: MintBatch, status) -> bool:
        if status is None or not status.reached(settings.CHAIN.commitment):
            return False
        if status.err is None:
            settlement.confirmed.append(batch.id)
        else:
            settlement.failed[batch.id] = failure_message(batch, status.err)
        return True

    first = statuses_of(client, [b.signature for b in batches])
    pending = [b for b in batches if not classify(b, first.get(b.signature))]
    if not pending:
        return settlement, []
    height = client.get_block_height()
    second = statuses_of(client, [b.signature for b in pending])
    for batch in pending:
        status = second.get(batch.signature)
        if classify(batch, status):
            continue
        if status is None and height > batch.last_valid_block_height:
            settlement.expired.append(batch.id)
        else:
            undecided.append(batch)
    return settlement, undecided
