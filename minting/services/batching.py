"""The mint procedure: claim, build and sign, commit the batch rows, send, confirm, settle.

A mint cycle, for the readings a ``claim`` callable locks:

1. In one transaction: lock the readings (``SELECT ... FOR UPDATE SKIP LOCKED``), compute each one's exact
   ``token_amount``, build and sign the transactions (readings of one wallet merged into one instruction),
   insert one ``MintBatch`` per transaction (signature, raw bytes, last valid block height) and link the
   readings (status ``minting``). Commit. Nothing has been sent yet; a crash before this commit rolls
   everything back and the readings are untouched.
2. Send every transaction (bounded parallel). A crash from here on leaves signed batches that
   reconciliation settles from the chain.
3. Poll the signatures' statuses in bulk until each batch is decided (re-sending the same bytes now and
   then), and settle it: confirmed -> readings minted; failed on chain -> readings retried with back-off;
   expired unlanded -> readings released for a fresh transaction. Undecided batches after the confirm
   timeout are left to reconciliation.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from gridtoken import events, observability
from meters.models import MeterReading
from minting.chain import (
    ChainClient,
    ChainError,
    Generation,
    InvalidWallet,
    MintRequest,
    PermanentChainError,
    SignedMint,
)
from minting.chain.configured import KeptClient, client_from_settings
from minting.faults import crash_point
from minting.models import MintBatch, TokenMint
from minting.services.chain_view import read_outcomes
from minting.services.claiming import ClaimedReading, claim_by_ids, readings_charge, readings_fail_now, readings_link
from minting.services.control import (
    accounts_epoch_get,
    chain_outage_record,
    decisions_blocked_record,
)
from minting.services.costs import batch_costs_record, priority_budget_check
from minting.services.pricing import readings_price
from minting.services.settlement import INSTRUCTION_REFUSAL, SettleResult, batches_settle

logger = logging.getLogger("minting.batching")

CONFIRM_TIMEOUT_SECS = 20.0
CONFIRM_POLL_SECS = 0.1
RESEND_EVERY_SECS = 2.0
ZERO_AMOUNT_ERROR = "amount below one token base unit: nothing to mint"
# The reason code a reading's last_error starts with when its mint raised an exception nobody expected.
INTERNAL_ERROR = "internal_error"
ZERO = Decimal(0)


def is_systemic(error: Exception) -> bool:
    """Errors about the platform, not the readings: every chain error while building (the RPC unreachable,
    refusing or lagging; the mint, authority, fee payer or keypair wrong) except a wallet the chain layer
    refuses. Readings keep their attempts and automatic minting pauses until it is fixed."""
    return isinstance(error, ChainError) and not isinstance(error, InvalidWallet)


@dataclass
class CycleResult:
    claimed: int = 0
    batches: int = 0
    minted: int = 0
    retried: int = 0
    dead: int = 0
    in_flight: int = 0  # batches left for reconciliation
    platform_failures: int = 0  # batches that failed on chain for the platform's reasons (breaker tripped)
    signatures: list[str] = field(default_factory=list)

    def add(self, other: CycleResult) -> None:
        for name in ("claimed", "batches", "minted", "retried", "dead", "in_flight", "platform_failures"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.signatures += other.signatures

    def add_settled(self, settled: SettleResult) -> None:
        self.minted += settled.minted
        self.retried += settled.retried
        self.dead += settled.dead
        self.platform_failures += settled.platform_failures


@dataclass(frozen=True)
class Prepared:
    batch: MintBatch
    signed: SignedMint

    @classmethod
    def of(
        cls, signed: SignedMint, *, mint_address: str, reading_count: int, total_token_amount: int, kwh: Decimal = ZERO
    ) -> Prepared:
        """The batch row to commit before ``signed`` is sent (every mint strategy's transactions take one)."""
        batch = MintBatch(
            id=uuid.uuid4(),
            signature=signed.signature,
            raw_transaction=signed.raw,
            last_valid_block_height=signed.last_valid_block_height,
            context_slot=signed.context_slot,
            instruction_wallets=list(signed.instruction_wallets),
            mint_address=mint_address,
            reading_count=reading_count,
            total_token_amount=total_token_amount,
            kwh=kwh,
            compute_unit_limit=signed.compute_unit_limit,
            compute_unit_price=signed.compute_unit_price,
            priority_fee_lamports=signed.priority_fee,
        )
        return cls(batch=batch, signed=signed)


_kept_client = KeptClient()


def _client_from_settings() -> ChainClient:
    client = client_from_settings()
    if client.anchor is not None:  # the program's mint: its decimals and authority, checked once
        client.verify_mint()
    return client


def chain_client() -> ChainClient:
    """The process's client for the configured chain and the recorded mint (kept: it pools connections and
    remembers which token accounts exist); rebuilt when the settings or the recorded mint change."""
    mint_row = TokenMint.objects.order_by("-created_at", "-id").values_list("id", flat=True).first()
    return _kept_client.get((settings.CHAIN, settings.TOKENIZATION, mint_row), _client_from_settings)


def _build(client: ChainClient, requests: list[MintRequest], memo: str) -> tuple[list[SignedMint], dict[str, str]]:
    """Build all requests; if building fails for a reason of the requests' own (an invalid wallet, any error
    that is not the platform's), bisect to find the requests it fails for, so they cannot hold up the rest
    of the claim. Returns the signed transactions and, per refused request key, why."""
    try:
        return client.build_mints(requests, memo=memo), {}
    except Exception as exc:
        if is_systemic(exc):
            raise
        if len(requests) == 1:
            logger.warning("a mint request cannot be built", exc_info=not isinstance(exc, InvalidWallet))
            return [], {
                requests[0].key: f"{type(exc).__name__}: {exc}" if not isinstance(exc, ChainError) else str(exc)
            }
    middle = len(requests) // 2
    signed, refused = _build(client, requests[:middle], f"{memo}a")
    more_signed, more_refused = _build(client, requests[middle:], f"{memo}b")
    return signed + more_signed, refused | more_refused


def _requests(by_wallet: dict[str, list[ClaimedReading]], amounts: dict) -> tuple[list, dict[str, list]]:
    """One request per reading worth something, keyed to it (the client merges a wallet's requests into as
    few instructions as u64 allows); a wallet's readings priced at 0 ride along with its first request."""
    requests, members = [], {}
    for readings in by_wallet.values():
        worth = [r for r in readings if amounts[r.id]]
        for reading in worth:
            key = str(reading.id)
            requests.append(
                MintRequest(
                    wallet=reading.wallet_address, amount=amounts[reading.id], key=key, generation=_generation(reading)
                )
            )
            members[key] = [reading]
        if worth:
            members[str(worth[0].id)] += [r for r in readings if not amounts[r.id]]
    return requests, members


def _generation(reading: ClaimedReading) -> Generation | None:
    """A settlement window's mint names its (meter, window): the anchor strategy's mint_generation records it on
    chain (the SPL strategy has no such record and ignores it)."""
    if reading.source != MeterReading.Source.WINDOW:
        return None
    return Generation(meter_id=reading.meter_id.bytes, window_start_ms=int(reading.window_start.timestamp()) * 1000)


def _dead_letter(failures: dict[uuid.UUID, str]) -> None:
    readings_fail_now(failures=failures)
    failed = MeterReading.objects.filter(id__in=list(failures)).select_related("meter")
    events.emit([events.mint_failed(r, meter_serial=r.meter.serial, error=r.last_error, final=True) for r in failed])
    logger.error("readings failed permanently while building", extra={"readings": [str(i) for i in failures]})


def batches_prepare(*, client: ChainClient, claimed: list[ClaimedReading]) -> tuple[list[Prepared], int]:
    """Step 1 after the claim, inside its transaction: build, sign, insert batches, link readings.

    Returns the prepared batches and how many readings were dead-lettered (permanent build errors).
    Amounts are fixed at the first claim (``readings_price``); a wallet whose readings together are worth
    less than one base unit is dead-lettered, not minted as 0.
    """
    client.sync_accounts(accounts_epoch_get())
    prices = readings_price(claimed)
    amounts = {reading_id: price.amount for reading_id, price in prices.items()}
    by_wallet: dict[str, list[ClaimedReading]] = defaultdict(list)
    for reading in claimed:
        by_wallet[reading.wallet_address].append(reading)
    dead = {r.id: ZERO_AMOUNT_ERROR for rs in by_wallet.values() if not sum(amounts[r.id] for r in rs) for r in rs}
    requests, members_of = _requests(by_wallet, amounts)
    signed_list, refused = _build(client, requests, memo=f"gridtoken:{uuid.uuid4().hex[:16]}") if requests else ([], {})
    for key, error in refused.items():
        dead.update({r.id: f"refused by the chain: {error}" for r in members_of[key]})

    address = str(client.mint)
    prepared, links, covered = [], [], Counter()
    for signed in signed_list:
        keys = [request.key for request in signed.requests]
        covered.update(keys)
        members = [r for key in keys for r in members_of[key]]
        total = sum(amounts[r.id] for r in members)
        if total != sum(request.amount for request in signed.requests):
            raise RuntimeError(f"transaction {signed.signature} does not mint exactly its readings' amounts")
        kwh = sum((r.kwh_amount for r in members), ZERO)
        prepared.append(
            Prepared.of(signed, mint_address=address, reading_count=len(members), total_token_amount=total, kwh=kwh)
        )
        batch = prepared[-1].batch
        links += [(r.id, batch.id, amounts[r.id], prices[r.id].ratio, prices[r.id].decimals) for r in members]
    expected = {request.key for request in requests} - set(refused)
    if set(covered) != expected or any(count > 1 for count in covered.values()):
        raise RuntimeError("the built transactions do not cover each request exactly once")

    priority_budget_check(signed_list)
    MintBatch.objects.bulk_create([p.batch for p in prepared])
    readings_link(links=links)
    if dead:
        _dead_letter(dead)
    return prepared, len(dead)


def _names_an_instruction(error: ChainError) -> bool:
    return isinstance(error.err, dict) and "InstructionError" in error.err


def batches_send(client: ChainClient, pairs: list[tuple[MintBatch, SignedMint]]) -> None:
    """Send (or re-send) the committed bytes; record the attempt. A refusal is kept on the batch, but only
    the chain decides the batch's fate (reconciliation), never this answer. A refusal that names one of the
    transaction's instructions is its readings' fault; any other (the provider refusing, a node in trouble)
    is the platform's and pauses automatic minting."""
    if not pairs:
        return
    errors = client.send_many([signed for _, signed in pairs])  # never raises: one outcome per signature
    now = timezone.now()
    ids = [batch.id for batch, _ in pairs]
    platform = next(
        (error for error in errors.values() if error is not None and not _names_an_instruction(error)), None
    )
    with transaction.atomic():
        MintBatch.objects.filter(id__in=ids).update(send_attempts=F("send_attempts") + 1)
        accepted = [batch.id for batch, signed in pairs if errors.get(signed.signature) is None]
        MintBatch.objects.filter(id__in=accepted, sent_at__isnull=True).update(sent_at=now)
        for batch, signed in pairs:
            error = errors.get(signed.signature)
            if isinstance(error, PermanentChainError):
                prefix = INSTRUCTION_REFUSAL if _names_an_instruction(error) else "refused by the node"
                MintBatch.objects.filter(id=batch.id, status=MintBatch.Status.SIGNED).update(
                    error=f"{prefix}: {error}"[:2000]
                )
    failed = {sig: str(err) for sig, err in errors.items() if err is not None}
    if failed:
        logger.warning("send failed; reconciliation will decide", extra={"errors": failed})
    if platform is not None:
        chain_outage_record(platform)


def batches_dispatch(
    *, client: ChainClient, prepared: list[Prepared], confirm_timeout: float = CONFIRM_TIMEOUT_SECS
) -> tuple[SettleResult, list[MintBatch]]:
    """Steps 2 and 3: send, then settle what the chain decides; returns (settled, still in flight)."""
    crash_point("after_batch_commit")
    signed_of = {p.batch.id: p.signed for p in prepared}
    batches_send(client, [(p.batch, p.signed) for p in prepared])
    crash_point("after_send")
    result, in_flight = SettleResult(), [p.batch for p in prepared]
    deadline = time.monotonic() + confirm_timeout
    last_send = time.monotonic()
    blocked = None
    landed: list[uuid.UUID] = []
    while in_flight:
        try:
            settlement, in_flight, blocked = read_outcomes(client, in_flight)
        except ChainError as exc:
            logger.warning("confirmation interrupted; reconciliation will settle", extra={"error": str(exc)})
            break
        if settlement:
            result.add(batches_settle(settlement))
            landed += [*settlement.confirmed, *settlement.failed]
        if not in_flight or time.monotonic() >= deadline:
            break
        if time.monotonic() - last_send >= RESEND_EVERY_SECS:
            batches_send(client, [(batch, signed_of[batch.id]) for batch in in_flight])
            last_send = time.monotonic()
        time.sleep(CONFIRM_POLL_SECS)
    if in_flight and blocked is not None:
        decisions_blocked_record(blocked)
    batch_costs_record(client, [p.batch for p in prepared if p.batch.id in set(landed)])
    return result, in_flight


def readings_mint(
    *, client: ChainClient, claim: Callable[[], list[ClaimedReading]], confirm_timeout: float = CONFIRM_TIMEOUT_SECS
) -> CycleResult:
    """One full mint cycle over what ``claim`` locks (see the module docstring).

    Raises the chain's error when the chain cannot be reached while building: the claim transaction then
    rolls back and the readings stay exactly as they were (no attempt consumed). Any other exception before
    the commit (a bug in pricing, building or linking) rolls the claim back too, with nothing signed into the
    database and so nothing sent; the claimed readings are then minted again in halves (``_isolate``).
    """
    claimed_ids: list[uuid.UUID] = []
    try:
        with transaction.atomic():
            claimed = claim()
            if not claimed:
                return CycleResult()
            claimed_ids = [reading.id for reading in claimed]
            prepared, dead = batches_prepare(client=client, claimed=claimed)
            crash_point("after_build")
    except Exception as exc:
        if is_systemic(exc) or not claimed_ids:
            raise
        return _isolate(client, claimed_ids, exc, confirm_timeout)
    result = CycleResult(
        claimed=len(claimed), batches=len(prepared), dead=dead, signatures=[p.batch.signature for p in prepared]
    )
    if prepared:
        settled, in_flight = batches_dispatch(client=client, prepared=prepared, confirm_timeout=confirm_timeout)
        result.add_settled(settled)
        result.in_flight = len(in_flight)
    return result


def _isolate(
    client: ChainClient, reading_ids: list[uuid.UUID], error: Exception, confirm_timeout: float
) -> CycleResult:
    """A claim of ``reading_ids`` raised ``error``, which nobody expected, before its commit. Mint the halves
    again, each its own cycle, until the error is pinned on single readings: each of those uses an attempt
    (``internal_error``: pending after the back-off, failed after the last attempt), the others mint. A bug
    that hits one reading never retries forever nor holds up the readings claimed with it."""
    if len(reading_ids) > 1:
        logger.warning(
            "a mint claim raised an unexpected error; minting it again in halves",
            extra={"readings": len(reading_ids), "error": f"{type(error).__name__}: {error}"},
        )
        middle, result = len(reading_ids) // 2, CycleResult()
        for half in (reading_ids[:middle], reading_ids[middle:]):
            result.add(readings_mint(client=client, claim=lambda half=half: claim_by_ids(reading_ids=half),
                                     confirm_timeout=confirm_timeout))  # fmt: skip
        return result
    (reading_id,) = reading_ids
    logger.error("a reading's mint raised an unexpected error", exc_info=error, extra={"reading_id": str(reading_id)})
    charged = readings_charge(failures={reading_id: f"{INTERNAL_ERROR}: {type(error).__name__}: {error}"})
    observability.mint_internal_errors(len(charged))
    events.emit(
        [events.mint_failed(r, meter_serial=r.meter.serial, error=r.last_error, final=r.status == "failed")
         for r in charged]
    )  # fmt: skip
    dead = sum(r.status == MeterReading.Status.FAILED for r in charged)
    return CycleResult(claimed=1, retried=len(charged) - dead, dead=dead)
