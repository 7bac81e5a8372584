"""Settling signed batches once the chain has decided: confirmed, failed on chain, or expired unlanded.

Every transition is a conditional ``UPDATE ... WHERE status = 'signed'`` on the batch row, so when the
minting task and a reconciler (or two reconcilers) settle the same batch at once, exactly one of them
wins and only the winner touches the readings and emits events. Events and the audit line leave only on
commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

from django.db import connection, transaction
from django.utils import timezone

from gridtoken import events
from meters.models import Meter
from minting.chain import ChainError, InsufficientFunds, InvalidAccount, InvalidMint, SupplyOverflow, WrongAuthority
from minting.faults import crash_point
from minting.models import MintBatch
from minting.services.claiming import READINGS
from minting.services.control import accounts_epoch_bump, chain_outage_record
from minting.services.policy import after_failed_attempt
from minting.triggers import mint_soon

audit = logging.getLogger("minting.audit")
logger = logging.getLogger("minting.settlement")

BATCHES = MintBatch._meta.db_table
METERS = Meter._meta.db_table
EXPIRED_ERROR = "blockhash expired before the transaction landed"
INSTRUCTION_REFUSAL = "instruction refused by the node"
ACCOUNT_GONE = "the token account is gone (closed?); it is created again with the next mint"
# On-chain failures that are the platform's (mint authority changed, fee payer dry, supply at its limit):
# no reading pays an attempt, automatic minting pauses until someone fixes it.
PLATFORM_ERRORS = (WrongAuthority, InvalidMint, InsufficientFunds, SupplyOverflow)
# What the token program says about a destination account that does not exist (any more).
_ABSENT_ACCOUNT = {"IncorrectProgramId", "InvalidAccountData", "UninitializedAccount", "InvalidAccountOwner"}


@dataclass(frozen=True)
class Failure:
    """A batch that landed with an error: the error typed (None if undecodable) and the instruction's wallet."""

    message: str
    error: ChainError | None = None
    wallet: str | None = None
    created_account: bool = False  # the transaction created the wallet's token account before the failure

    @property
    def account_gone(self) -> bool:
        if not isinstance(self.error, InvalidAccount) or self.created_account:
            return False
        detail = self.error.err["InstructionError"][1] if isinstance(self.error.err, dict) else None
        return detail == {"Custom": 9} or (isinstance(detail, str) and detail in _ABSENT_ACCOUNT)


@dataclass
class Settlement:
    confirmed: list[uuid.UUID] = field(default_factory=list)
    failed: dict[uuid.UUID, Failure] = field(default_factory=dict)
    expired: list[uuid.UUID] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.confirmed or self.failed or self.expired)


@dataclass
class SettleResult:
    minted: int = 0
    retried: int = 0  # released for another transaction (pending again)
    dead: int = 0  # failed for good after the last attempt
    batches: int = 0
    # Batches this call won the settle of, by outcome (a batch someone else settled first is not counted).
    confirmed: int = 0
    failed: int = 0
    expired: int = 0
    platform_failures: int = 0  # failed batches whose error was the platform's (breaker tripped)
    hooked: int = 0  # batches a settle hook settled (their subject decides who pays; no breaker for them)

    def add(self, other: SettleResult) -> None:
        for name in ("minted", "retried", "dead", "batches", "confirmed", "failed", "expired", "platform_failures",
                     "hooked"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))


# Other subjects of mint batches (certificates): hook(cursor, batch_ids, status, error, charge) settles the
# batches it owns, in the settle's transaction, and returns (their ids, events). Reading batches own readings.
SettleHook = Callable[..., tuple[set[uuid.UUID], list[dict]]]
_settle_hooks: list[SettleHook] = []


def register_settle_hook(hook: SettleHook) -> None:
    if hook not in _settle_hooks:
        _settle_hooks.append(hook)


def _run_hooks(cursor, batch_ids, status: str, error: str, charge) -> tuple[set[uuid.UUID], list[dict]]:
    owned, emitted = set(), []
    for hook in _settle_hooks:
        ids, evs = hook(cursor, list(batch_ids), status, error, charge)
        owned |= ids
        emitted += evs
    return owned, emitted


def _rows(cursor) -> list[SimpleNamespace]:
    names = [col.name for col in cursor.description]
    return [SimpleNamespace(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def _claim_batches(cursor, batch_ids, status: str, error: str | None = None) -> list[SimpleNamespace]:
    cursor.execute(
        f"UPDATE {BATCHES} SET status = %s, settled_at = %s, error = COALESCE(%s, error)"  # noqa: S608
        " WHERE id = ANY(%s) AND status = 'signed' RETURNING id, signature, error, reading_count, total_token_amount",
        [status, timezone.now(), error, list(batch_ids)],
    )
    return _rows(cursor)


def _confirm(cursor, batch_ids) -> tuple[SettleResult, list[dict]]:
    won = _claim_batches(cursor, batch_ids, MintBatch.Status.CONFIRMED, "")
    if not won:
        return SettleResult(), []
    owned, hooked = _run_hooks(cursor, [b.id for b in won], MintBatch.Status.CONFIRMED, "", _everyone)
    won = [b for b in won if b.id not in owned]
    if not won:
        return SettleResult(batches=len(owned), confirmed=len(owned)), hooked
    cursor.execute(
        f"UPDATE {READINGS} AS r SET status = 'minted', minted = TRUE, mint_tx_signature = b.signature,"  # noqa: S608
        " last_error = ''"
        f" FROM {BATCHES} AS b, {METERS} AS m"
        " WHERE b.id = ANY(%s) AND r.batch_id = b.id AND r.status = 'minting' AND m.id = r.meter_id"
        " RETURNING r.id, r.user_id, r.meter_id, r.wallet_address, r.mintable_kwh AS kwh_amount, r.token_amount,"
        " r.mint_tx_signature, r.batch_id, m.serial AS meter_serial",
        [[b.id for b in won]],
    )
    readings = _rows(cursor)
    by_batch: dict[uuid.UUID, list] = {b.id: [] for b in won}
    for reading in readings:
        by_batch[reading.batch_id].append(reading)
    emitted = hooked + [events.tokens_minted(r, meter_serial=r.meter_serial) for r in readings]
    for batch in won:
        members = by_batch[batch.id]
        emitted.append(
            events.batch_completed(
                batch_id=batch.id,
                signature=batch.signature,
                total_readings=len(members),
                successful_mints=len(members),
                failed_mints=0,
            )
        )
        audit.info(
            "mint confirmed",
            extra={
                "audit": "mint_confirmed",
                "batch_id": str(batch.id),
                "signature": batch.signature,
                "readings": [str(r.id) for r in members],
                "amounts": [int(r.token_amount) for r in members],
                "wallets": sorted({r.wallet_address for r in members}),
                "total_token_amount": int(batch.total_token_amount),
            },
        )
    return SettleResult(minted=len(readings), batches=len(won) + len(owned), confirmed=len(won) + len(owned)), emitted


def _everyone(reading) -> bool:
    return True


def _no_one(reading) -> bool:
    return False


def _release(cursor, batch_ids, *, status: str, error: str, charge=_no_one) -> tuple[SettleResult, list[dict]]:
    """Give the batch's readings back: a fresh transaction next (expired) or a retry with back-off (failed).

    ``charge(reading)`` says whether the reading pays an attempt for this or is released at once without
    one. Amounts stay as priced.
    """
    won = _claim_batches(cursor, batch_ids, status, error)
    if not won:
        return SettleResult(), []
    owned, hooked = _run_hooks(cursor, [b.id for b in won], status, error, charge)
    result = SettleResult(batches=len(owned), hooked=len(owned), **{str(status): len(owned)})
    won = [b for b in won if b.id not in owned]
    if not won:
        return result, hooked
    cursor.execute(
        f"SELECT r.id, r.user_id, r.meter_id, r.wallet_address, r.mintable_kwh AS kwh_amount, r.attempts, r.batch_id,"  # noqa: S608
        f" r.last_error, m.serial AS meter_serial FROM {READINGS} AS r JOIN {METERS} AS m ON m.id = r.meter_id"
        " WHERE r.batch_id = ANY(%s) AND r.status = 'minting' FOR UPDATE OF r",
        [[b.id for b in won]],
    )
    readings = _rows(cursor)
    now = timezone.now()
    result.add(SettleResult(batches=len(won), **{str(status): len(won)}))
    emitted = hooked
    for reading in readings:
        charged = charge(reading)
        reading.error = (
            error if charged or status == MintBatch.Status.EXPIRED else f"released, no attempt used: {error}"
        )
        if charged:
            reading.attempts += 1
            reading.status, reading.next_attempt_at = after_failed_attempt(reading.attempts, now)
            final = reading.status == "failed"
            emitted.append(events.mint_failed(reading, meter_serial=reading.meter_serial, error=error, final=final))
            result.dead += final
            result.retried += not final
        else:
            reading.status, reading.next_attempt_at = "pending", now
            result.retried += 1
    if readings:
        cursor.execute(
            f"UPDATE {READINGS} AS r SET status = v.status, attempts = v.attempts,"  # noqa: S608
            " next_attempt_at = v.next_attempt_at, last_error = v.error"
            " FROM unnest(%s::uuid[], %s::text[], %s::int[], %s::timestamptz[], %s::text[])"
            " AS v(id, status, attempts, next_attempt_at, error)"
            " WHERE r.id = v.id",
            [
                [r.id for r in readings],
                [r.status for r in readings],
                [r.attempts for r in readings],
                [r.next_attempt_at for r in readings],
                [r.error[:2000] for r in readings],
            ],
        )
    counts: dict[uuid.UUID, int] = {b.id: 0 for b in won}
    for reading in readings:
        counts[reading.batch_id] += 1
    for batch in won:
        if status == MintBatch.Status.FAILED:
            emitted.append(
                events.batch_completed(
                    batch_id=batch.id,
                    signature=batch.signature,
                    total_readings=counts[batch.id],
                    successful_mints=0,
                    failed_mints=counts[batch.id],
                )
            )
        logger.warning(
            "mint batch %s",
            status,
            extra={
                "batch_id": str(batch.id),
                "signature": batch.signature,
                "error": error,
                "readings": counts[batch.id],
            },
        )
    return result, emitted


def _settle_failure(cursor, batch_id: uuid.UUID, failure: Failure) -> tuple[SettleResult, list[dict]]:
    """A batch that landed with an error. Who pays an attempt:

    - the platform's error (PLATFORM_ERRORS): no one; automatic minting pauses (the caller trips the breaker);
    - an instruction of one wallet failed: only that wallet's readings, and not even they when their token
      account is gone (closed by its owner): every process forgets its account cache and the next mint
      creates it again (a second such failure in a row does use an attempt);
    - anything else: every reading of the batch.
    """
    error = f"failed on chain: {failure.message}"
    if isinstance(failure.error, PLATFORM_ERRORS):
        part, emitted = _release(cursor, [batch_id], status=MintBatch.Status.FAILED, error=f"{error} (platform fault)")
        part.platform_failures += part.batches - part.hooked
        return part, emitted
    if failure.wallet is None:
        return _release(cursor, [batch_id], status=MintBatch.Status.FAILED, error=error, charge=_everyone)
    if failure.account_gone:
        accounts_epoch_bump()

        def charge(reading) -> bool:  # the same wallet's account gone twice in a row is not a vanished account
            return reading.wallet_address == failure.wallet and ACCOUNT_GONE in reading.last_error

        return _release(cursor, [batch_id], status=MintBatch.Status.FAILED, error=f"{ACCOUNT_GONE}: {failure.message}",
                        charge=charge)  # fmt: skip
    return _release(
        cursor, [batch_id], status=MintBatch.Status.FAILED, error=error,
        charge=lambda reading: reading.wallet_address == failure.wallet,
    )  # fmt: skip


def batches_settle(settlement: Settlement) -> SettleResult:
    """Apply what the chain decided, in one transaction; batches already settled by someone else are skipped.

    Expired batches whose bytes the node refused for one of their instructions count as a failed attempt of
    their readings; plain expiry does not, the readings simply get a fresh transaction. A platform fault
    found on chain trips the outage breaker in the same transaction.
    """
    result, emitted = SettleResult(), []
    released_pending = False
    with transaction.atomic(), connection.cursor() as cursor:
        if settlement.confirmed:
            part, evs = _confirm(cursor, settlement.confirmed)
            result.add(part)
            emitted += evs
        platform_error = None
        for batch_id, failure in settlement.failed.items():
            part, evs = _settle_failure(cursor, batch_id, failure)
            result.add(part)
            emitted += evs
            platform_error = failure.error if part.platform_failures else platform_error
        if settlement.expired:
            refused = dict(
                MintBatch.objects.filter(id__in=settlement.expired, status=MintBatch.Status.SIGNED)
                .filter(error__startswith=INSTRUCTION_REFUSAL)
                .values_list("id", "error")
            )
            plain = [b for b in settlement.expired if b not in refused]
            part, evs = _release(cursor, plain, status=MintBatch.Status.EXPIRED, error=EXPIRED_ERROR)
            result.add(part)
            emitted += evs
            for batch_id, refusal in refused.items():
                part, evs = _release(
                    cursor, [batch_id], status=MintBatch.Status.EXPIRED, error=refusal, charge=_everyone
                )
                result.add(part)
                emitted += evs
        if platform_error is not None:
            chain_outage_record(platform_error)
        crash_point("while_settling")
        released_pending = result.retried > 0 and platform_error is None
        events.emit(emitted)
        if released_pending:
            transaction.on_commit(mint_soon)
    return result
