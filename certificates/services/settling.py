"""Settling certificate operations: ``minting.services.settlement``'s settle hook (registered in ``apps.py``).

``settle_operations`` moves this app's rows in the pipeline's settle transaction: confirmed -> ``confirmed``;
failed on chain -> back to ``pending`` with back-off (an attempt used) or ``failed`` after the last (an operator
retries it, ``operations_retry``); expired -> ``pending`` now.
"""

from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace

from django.db import transaction
from django.utils import timezone

from certificates.models import ChainOperation
from certificates.triggers import operations_soon
from gridtoken import events
from minting.models import MintBatch
from minting.services.policy import is_final_attempt, retry_delay

logger = logging.getLogger("certificates.chain")
audit = logging.getLogger("certificates.audit")
OPERATIONS = ChainOperation._meta.db_table

_ACTIONS = {ChainOperation.Kind.ISSUE: "minted", ChainOperation.Kind.TRANSFER: "transferred",
            ChainOperation.Kind.BURN: "burnt"}  # fmt: skip


def settle_operations(cursor, batch_ids: list[uuid.UUID], status: str, error: str, charge) -> tuple[set, list[dict]]:
    """Settle the operations of batches the pipeline just won the settle of (inside its transaction)."""
    cursor.execute(
        f"SELECT o.id, o.batch_id, o.kind, o.status, o.attempts, o.last_error, o.burn_from, o.mint_to,"  # noqa: S608
        " o.amount_wh, o.issuance_id, o.bundle_id, b.holder_id"
        f" FROM {OPERATIONS} AS o JOIN certificates_certificatebundle AS b ON b.id = o.bundle_id"
        " WHERE o.batch_id = ANY(%s) FOR UPDATE OF o",
        [batch_ids],
    )
    names = [col.name for col in cursor.description]
    ops = [SimpleNamespace(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]
    if not ops:
        return set(), []
    owned = {op.batch_id for op in ops}
    live = [op for op in ops if op.status == ChainOperation.Status.SENDING]
    now = timezone.now()
    emitted: list[dict] = []
    if status == MintBatch.Status.CONFIRMED:
        ChainOperation.objects.filter(id__in=[op.id for op in live]).update(
            status=ChainOperation.Status.CONFIRMED, settled_at=now, last_error=""
        )
        from certificates.models import CertificateBundle

        bundles = CertificateBundle.objects.in_bulk([op.bundle_id for op in live])
        for op in live:
            audit.info(
                "certificate operation confirmed",
                extra={"audit": "certificate_chain_confirmed", "operation_id": str(op.id), "kind": op.kind,
                       "issuance_id": str(op.issuance_id), "amount_wh": op.amount_wh, "burn_from": op.burn_from,
                       "mint_to": op.mint_to},
            )  # fmt: skip
            emitted.append(events.certificate_changed(bundles[op.bundle_id], action=_ACTIONS[op.kind],
                                                      user_id=op.holder_id, chain_operation=op.kind))  # fmt: skip
        return owned, emitted
    released = False
    for op in live:
        # A transaction that failed on chain always costs its operation an attempt, whatever the error (a holder
        # who burnt its own tokens makes the registry's burn fail with "insufficient token funds"; a changed mint
        # authority would fail every retry and pay a fee each time): after the last the operation is ``failed``
        # for an operator, and the pipeline's breaker is never tripped for it (reading minting goes on).
        charged = status == MintBatch.Status.FAILED or any(
            charge(SimpleNamespace(wallet_address=wallet, last_error=op.last_error))
            for wallet in (op.burn_from, op.mint_to)
            if wallet
        )
        fields = {"last_error": (error if charged else f"released, no attempt used: {error}")[:2000]}
        if charged:
            attempts = op.attempts + 1
            final = is_final_attempt(attempts)
            fields.update(attempts=attempts, status="failed" if final else "pending",
                          next_attempt_at=now if final else now + retry_delay(attempts))  # fmt: skip
            released |= not final
        else:
            fields.update(status="pending", next_attempt_at=now)
            released = True
        ChainOperation.objects.filter(id=op.id).update(**fields)
        logger.warning("certificate operation %s", status, extra={"operation_id": str(op.id), "error": error})
    if released:
        transaction.on_commit(operations_soon)
    return owned, emitted
