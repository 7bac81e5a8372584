"""Certificate tokens on chain, through the minting pipeline's machinery (a builder, not a state machine).

The certificate mint is a Token-2022 mint with 0 decimals (1 base unit = 1 Wh), the platform authority as
mint authority and as permanent delegate (so a claim, withdrawal or expiry can burn from the holder's
account, and a transfer can move Wh between holders), and non-transferable (a holder cannot move the tokens
behind the registry's back: the chain balance stays the registry's active Wh).

One cycle (``operations_send``), the same steps as a reading mint (``minting.services.batching``):

1. One transaction: lock due ``ChainOperation`` rows (``FOR UPDATE SKIP LOCKED``; an operation waits while an
   earlier one of the same issuance is not confirmed, so a burn never lands before its mint), build and sign
   one transaction per operation (memo ``gc:<issuance id>:<operation id>:<nonce>``), insert one ``minting.MintBatch``
   per transaction and link the operations (``sending``). Commit (crash point ``after_build`` before it).
2. ``minting.services.batching.batches_dispatch``: send, confirm, settle (crash points ``after_batch_commit``,
   ``after_send``, ``while_settling``); undecided batches are left to the pipeline's reconciler.
3. Settling is ``minting.services.settlement``'s conditional update of the batch; its settle hook
   (``certificates.services.settling``) moves this app's rows in the same transaction.
"""

from __future__ import annotations

import logging
import struct
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account

from certificates.models import CertificateMint, ChainOperation
from certificates.triggers import operations_soon
from gridtoken import observability
from minting.chain import ChainClient, InsufficientFunds, InvalidWallet, NotInitialised, SignedMint
from minting.chain import instructions as ix
from minting.chain.configured import KeptClient, rpc_pool
from minting.chain.setup import authority_hand_over
from minting.chain.signer import authority_signer, sign_transaction
from minting.faults import crash_point
from minting.models import MintBatch
from minting.services.batching import CONFIRM_TIMEOUT_SECS, INTERNAL_ERROR, Prepared, batches_dispatch, is_systemic
from minting.services.policy import after_failed_attempt

logger = logging.getLogger("certificates.chain")
audit = logging.getLogger("certificates.audit")

TOKEN_2022 = ix.TOKEN_2022_PROGRAM_ID
OPERATIONS = ChainOperation._meta.db_table
DECIMALS = 0
# Mint with extensions: the base padded to an account's 165 bytes, the account-type byte, then TLV entries
# NonTransferable (2 + 2 + 0) and PermanentDelegate (2 + 2 + 32).
MINT_SIZE = 165 + 1 + 4 + 36
TOKEN_ACCOUNT_SIZE = 165 + 1 + 4 + 4  # + ImmutableOwner and NonTransferableAccount, which the ATA program adds
_INITIALIZE_MINT2, _BURN_CHECKED, _NON_TRANSFERABLE, _PERMANENT_DELEGATE = 20, 15, 32, 35
NOT_INITIALISED = "no certificate mint is recorded: run python manage.py certificates_chain_init"


# --- the mint --------------------------------------------------------------------------------------------


def certificate_mint_create(*, client: ChainClient) -> CertificateMint:
    """Create and record a new certificate mint (Token-2022, 0 decimals, non-transferable, permanent delegate
    and mint authority the platform's key)."""
    mint = Keypair()
    authority = client.payer
    rent = int(client.rpc.call("getMinimumBalanceForRentExemption", [MINT_SIZE]))
    key = mint.pubkey()
    writable = [AccountMeta(key, is_signer=False, is_writable=True)]
    client.execute(
        [
            create_account(
                CreateAccountParams(
                    from_pubkey=authority, to_pubkey=key, lamports=rent, space=MINT_SIZE, owner=TOKEN_2022
                )
            ),
            Instruction(TOKEN_2022, bytes([_NON_TRANSFERABLE]), writable),
            Instruction(TOKEN_2022, bytes([_PERMANENT_DELEGATE]) + bytes(authority), writable),
            Instruction(TOKEN_2022, bytes([_INITIALIZE_MINT2, DECIMALS]) + bytes(authority) + b"\x00", writable),
        ],
        [mint],
    )
    client.mint, client.token_program, client.decimals = key, TOKEN_2022, DECIMALS
    client.verify_mint()
    return CertificateMint.objects.create(
        address=str(key), token_program=str(TOKEN_2022), authority=str(authority), rpc_url=client.rpc_url
    )


def certificate_mint_init(*, new_mint: bool = False) -> tuple[CertificateMint, bool]:
    """The recorded certificate mint if it exists on the configured chain with our authority, else a new one.
    Returns (mint, created). Run after ``chain_init`` (the authority must exist and hold SOL)."""
    chain = settings.CHAIN
    client = ChainClient(
        rpc=rpc_pool(), authority=authority_signer(), mint=Pubkey.default(), decimals=DECIMALS,
        token_program=TOKEN_2022, commitment=chain.commitment, timeout=float(chain.rpc_timeout_secs),
    )  # fmt: skip
    try:
        recorded = CertificateMint.objects.order_by("-created_at", "-id").first()
        if recorded is not None and not new_mint:
            client.mint = Pubkey.from_string(recorded.address)
            if client.account_data(client.mint) is not None:
                client.verify_mint()
                return recorded, False
        return certificate_mint_create(client=client), True
    finally:
        client.close()


def certificate_authority_set(*, new_authority: Pubkey, out=print) -> None:
    """Hand the recorded certificate mint's mint authority and permanent delegate to ``new_authority`` in one
    transaction (``minting.chain.setup.authority_hand_over``), the certificates' part of a key rotation."""
    client = certificate_client()
    authority_hand_over(
        client=client, new_authority=new_authority, kinds=(ix.MINT_TOKENS, ix.PERMANENT_DELEGATE), out=out
    )
    CertificateMint.objects.filter(address=str(client.mint)).update(authority=str(new_authority))


_kept_client = KeptClient()


def certificate_client() -> ChainClient:
    """The process's client for the certificate mint (kept, like ``minting.services.batching.chain_client``)."""
    row = CertificateMint.objects.order_by("-created_at", "-id").first()
    if row is None:
        raise NotInitialised(NOT_INITIALISED)

    def build() -> ChainClient:
        chain = settings.CHAIN
        return ChainClient(
            rpc=rpc_pool(), authority=authority_signer(), mint=row.address,
            decimals=DECIMALS, token_program=row.token_program, commitment=chain.commitment,
            priority_fee_microlamports=chain.priority_fee_microlamports,
            concurrent_batches=chain.concurrent_batches, timeout=float(chain.rpc_timeout_secs),
        )  # fmt: skip

    return _kept_client.get((settings.CHAIN, row.id), build)


def burn_checked(*, account: Pubkey, mint: Pubkey, authority: Pubkey, amount: int) -> Instruction:
    return Instruction(
        TOKEN_2022,
        struct.pack("<BQB", _BURN_CHECKED, amount, DECIMALS),
        [
            AccountMeta(account, is_signer=False, is_writable=True),
            AccountMeta(mint, is_signer=False, is_writable=True),
            AccountMeta(authority, is_signer=True, is_writable=False),
        ],
    )


# --- the builder -----------------------------------------------------------------------------------------


CLAIM_SQL = (
    f"SELECT o.id, o.kind, o.issuance_id, o.amount_wh, o.burn_from, o.mint_to FROM {OPERATIONS} AS o"  # noqa: S608
    " WHERE o.status = 'pending' AND o.next_attempt_at <= %(now)s AND NOT EXISTS ("
    f" SELECT 1 FROM {OPERATIONS} AS p WHERE p.issuance_id = o.issuance_id"
    " AND (p.created_at, p.id) < (o.created_at, o.id) AND p.status <> 'confirmed')"
    " AND (%(ids)s::uuid[] IS NULL OR o.id = ANY(%(ids)s::uuid[]))"
    " ORDER BY o.next_attempt_at LIMIT %(limit)s FOR UPDATE OF o SKIP LOCKED"
)


@dataclass(frozen=True)
class ClaimedOperation:
    id: uuid.UUID
    kind: str
    issuance_id: uuid.UUID
    amount_wh: int
    burn_from: str
    mint_to: str


def _instructions(client: ChainClient, op: ClaimedOperation, missing: set[Pubkey]) -> tuple[list, list]:
    payer, mint = client.payer, client.mint
    instructions, wallets = [], []
    if op.burn_from:
        wallet = ix.parse_wallet(op.burn_from)
        account = client.token_account(wallet)
        instructions.append(burn_checked(account=account, mint=mint, authority=payer, amount=op.amount_wh))
        wallets.append(op.burn_from)
    if op.mint_to:
        wallet = ix.parse_wallet(op.mint_to)
        account = client.token_account(wallet)
        if account in missing:
            instructions.append(
                ix.create_associated_token_account_idempotent(
                    payer=payer, wallet=wallet, mint=mint, token_program=client.token_program, address=account
                )
            )
            wallets.append(op.mint_to)
        instructions.append(
            ix.mint_to_checked(
                mint=mint, destination=account, authority=payer, amount=op.amount_wh, decimals=DECIMALS,
                token_program=client.token_program,
            )
        )  # fmt: skip
        wallets.append(op.mint_to)
    return instructions, wallets


def operations_prepare(*, client: ChainClient, claimed: list[ClaimedOperation]) -> list[Prepared]:
    """Inside the claim's transaction: sign one transaction per operation, insert its batch, link it."""
    targets = [client.token_account(ix.parse_wallet(op.mint_to)) for op in claimed if op.mint_to]
    missing = set()
    unknown = [address for address in dict.fromkeys(targets) if address not in client._known_accounts]
    if unknown:
        existing = client.existing_accounts(unknown)
        client._known_accounts |= existing
        missing = set(unknown) - existing
    fee = 5000 + (
        -(-1_400_000 * client.priority_fee_microlamports // 1_000_000) if client.priority_fee_microlamports else 0
    )
    rent = int(client.rpc.call("getMinimumBalanceForRentExemption", [TOKEN_ACCOUNT_SIZE])) if missing else 0
    needed = fee * len(claimed) + rent * len(missing)
    balance = client.balance(client.payer)
    if balance < needed:
        raise InsufficientFunds(
            f"the fee payer {client.payer} holds {balance} lamports but {len(claimed)} certificate transaction(s) "
            f"need about {needed}: send it SOL"
        )
    recent = client.latest_blockhash()
    prepared = []
    for op in claimed:
        # Every transaction minting to a wallet without an account creates it (idempotent): the transactions of
        # one cycle land in any order, so the first one of a wallet's is not necessarily first on chain.
        instructions, wallets = _instructions(client, op, missing)
        # The nonce keeps a retry's transaction from being byte-identical to the failed one (same blockhash).
        memo = f"gc:{op.issuance_id}:{op.id.hex}:{uuid.uuid4().hex[:8]}"
        instructions.append(ix.memo(memo))
        wallets.append(None)
        message = Message.new_with_blockhash(instructions, client.payer, recent.blockhash)
        tx = sign_transaction(message, [client.authority])
        signed = SignedMint(
            str(tx.signatures[0]), bytes(tx), recent.last_valid_block_height, (), memo,
            context_slot=recent.context_slot, instruction_wallets=tuple(wallets),
        )  # fmt: skip
        prepared.append(
            Prepared.of(signed, mint_address=str(client.mint), reading_count=0, total_token_amount=op.amount_wh)
        )
    MintBatch.objects.bulk_create([p.batch for p in prepared])
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {OPERATIONS} AS o SET status = 'sending', batch_id = v.batch_id, signature = v.signature"  # noqa: S608
            " FROM unnest(%s::uuid[], %s::uuid[], %s::text[]) AS v(id, batch_id, signature) WHERE o.id = v.id",
            [[op.id for op in claimed], [p.batch.id for p in prepared], [p.batch.signature for p in prepared]],
        )
    return prepared


@dataclass
class SendResult:
    claimed: int = 0
    confirmed: int = 0
    retried: int = 0
    failed: int = 0  # failed for good before anything was signed (an operator retries them)
    in_flight: int = 0
    signatures: list[str] = field(default_factory=list)

    def add(self, other: SendResult) -> None:
        for name in ("claimed", "confirmed", "retried", "failed", "in_flight"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.signatures += other.signatures

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "signatures"}


def operations_send(*, limit: int = 100, confirm_timeout: float = CONFIRM_TIMEOUT_SECS) -> SendResult:
    """One cycle over up to ``limit`` due operations (the module docstring). A chain error about the platform
    while building (``is_systemic``: the RPC, the mint, the fee payer) rolls the claim back, operations
    untouched, and is raised; any other error is pinned on the operations it fails for (``_isolate``)."""
    return _send(certificate_client(), ids=None, limit=limit, confirm_timeout=confirm_timeout)


def _send(client: ChainClient, *, ids: list[uuid.UUID] | None, limit: int, confirm_timeout: float) -> SendResult:
    claimed: list[ClaimedOperation] = []
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(CLAIM_SQL, {"now": timezone.now(), "limit": limit, "ids": ids})
            claimed = [ClaimedOperation(*row) for row in cursor.fetchall()]
            if not claimed:
                return SendResult()
            prepared = operations_prepare(client=client, claimed=claimed)
            crash_point("after_build")
    except Exception as exc:
        if is_systemic(exc) or not claimed:
            raise
        return _isolate(client, [op.id for op in claimed], exc, confirm_timeout)
    result = SendResult(claimed=len(claimed), signatures=[p.batch.signature for p in prepared])
    settled, in_flight = batches_dispatch(client=client, prepared=prepared, confirm_timeout=confirm_timeout)
    result.confirmed, result.retried, result.in_flight = (
        settled.confirmed,
        settled.failed + settled.expired,
        len(in_flight),
    )
    return result


def _isolate(
    client: ChainClient, operation_ids: list[uuid.UUID], error: Exception, confirm_timeout: float
) -> SendResult:
    """A claim of ``operation_ids`` raised ``error`` before its commit: nothing was signed into the database, so
    nothing was sent. Send the halves again, each its own cycle, until the error is pinned on single operations;
    the others are sent. A pinned operation uses an attempt through the pipeline's rule (``internal_error``:
    pending after the back-off, failed after the last attempt), or fails at once when its wallet is unusable
    (no attempt can succeed), like a reading the chain layer refuses."""
    if len(operation_ids) > 1:
        logger.warning(
            "a certificate claim raised an error; sending it again in halves",
            extra={"operations": len(operation_ids), "error": f"{type(error).__name__}: {error}"},
        )
        middle, result = len(operation_ids) // 2, SendResult()
        for half in (operation_ids[:middle], operation_ids[middle:]):
            result.add(_send(client, ids=half, limit=len(half), confirm_timeout=confirm_timeout))
        return result
    (operation_id,) = operation_ids
    refused = isinstance(error, InvalidWallet)
    if refused:
        logger.warning("a certificate operation cannot be built", extra={"operation_id": str(operation_id),
                                                                          "error": str(error)})  # fmt: skip
        message = f"refused by the chain: {error}"
    else:
        logger.error("a certificate operation raised an unexpected error", exc_info=error,
                     extra={"operation_id": str(operation_id)})  # fmt: skip
        message = f"{INTERNAL_ERROR}: {type(error).__name__}: {error}"
    status = _charge(operation_id, message, final=refused)
    if status is None:  # another worker claimed it meanwhile
        return SendResult()
    if not refused:
        observability.mint_internal_errors(1)
    return SendResult(claimed=1, retried=status == ChainOperation.Status.PENDING,
                      failed=status == ChainOperation.Status.FAILED)  # fmt: skip


def _charge(operation_id: uuid.UUID, error: str, *, final: bool) -> str | None:
    """One attempt used by a pending operation that failed before anything was signed; its new status, or None
    when another worker holds it."""
    with transaction.atomic():
        op = (
            ChainOperation.objects.select_for_update(skip_locked=True)
            .filter(id=operation_id, status=ChainOperation.Status.PENDING)
            .first()
        )
        if op is None:
            return None
        now = timezone.now()
        op.attempts += 1
        op.status, op.next_attempt_at = ("failed", now) if final else after_failed_attempt(op.attempts, now)
        op.last_error = error[:2000]
        op.save(update_fields=["attempts", "status", "next_attempt_at", "last_error"])
    return op.status


def operations_drain(*, limit: int = 100) -> SendResult:
    """Cycles until a claim comes back short (what the task runs)."""
    total = SendResult()
    while True:
        part = operations_send(limit=limit)
        total.add(part)
        if part.claimed < limit:
            return total


def operations_retry(*, operation_ids: list[uuid.UUID], actor: str) -> int:
    """Give failed operations fresh attempts (an operator fixed the cause); the number released."""
    with transaction.atomic():
        count = ChainOperation.objects.filter(id__in=operation_ids, status=ChainOperation.Status.FAILED).update(
            status=ChainOperation.Status.PENDING, attempts=0, next_attempt_at=timezone.now()
        )
        audit.info("certificate operations retried", extra={"audit": "certificate_operations_retried",
                   "operations": [str(i) for i in operation_ids], "released": count, "actor": actor})  # fmt: skip
        if count:
            transaction.on_commit(operations_soon)
    return count
