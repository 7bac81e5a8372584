"""ChainClient: builds signed, packed mint transactions without sending them; sends, queries and confirms them."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from config.fees import FeeConfig
from config.providers import RpcEndpoint
from minting.chain import instructions as ix
from minting.chain.anchor import EnergyTokenProgram
from minting.chain.decoding import (
    MintInfo,
    parse_mint,
    rpc_value,
    sent_outcome,
    status_from_json,
    token_amount,
)
from minting.chain.errors import (
    BlockhashExpired,
    ChainError,
    HistoryUnavailable,
    InsufficientFunds,
    InvalidMint,
    NodeBehind,
    PermanentChainError,
    RpcBadResponse,
    RpcTimeout,
    TransactionTooLarge,
    WrongAuthority,
)
from minting.chain.fees import (
    COMPUTE_ANCHOR_GENERATION,
    COMPUTE_ANCHOR_MINT,
    COMPUTE_MINT,
    LAMPORTS_PER_SIGNATURE,
    FeeMarket,
    compute_limit,
    create_account_units,
)
from minting.chain.lookup import LookupTables
from minting.chain.packing import PACKET_DATA_SIZE, Draft, Unit, pack
from minting.chain.providers import ProviderPool
from minting.chain.records import U64_MAX, Blockhash, MintRequest, SignatureStatus, SignedMint
from minting.chain.signer import Signer, sign_transaction

MAX_MEMO_BYTES = 120
STATUS_CHUNK = 256  # getSignatureStatuses takes at most 256 signatures
ACCOUNTS_CHUNK = 100  # getMultipleAccounts takes at most 100 keys
TOKEN_ACCOUNT_SIZE = 170  # bytes of an associated token account (165 for spl-token; Token-2022 adds a little)


@dataclass
class Outcomes:
    """What the chain has decided about some transactions, from reads that have seen enough of it.

    ``landed``: signature -> status at the commitment (with ``err`` when it failed on chain); ``expired``:
    signatures proven never to land; ``undecided``: the rest. ``blocked`` is the transient error that kept
    undecided ones from being decided (a lagging node, a node without history), if any.
    """

    landed: dict[str, SignatureStatus] = field(default_factory=dict)
    expired: set[str] = field(default_factory=set)
    undecided: list[str] = field(default_factory=list)
    blocked: ChainError | None = None


class ChainClient:
    def __init__(
        self,
        *,
        rpc_url: str | None = None,
        authority: Signer,
        mint: Pubkey | str,
        decimals: int,
        token_program: Pubkey | str = ix.TOKEN_PROGRAM_ID,
        commitment: str = "confirmed",
        priority_fee_microlamports: int = 0,
        concurrent_batches: int = 8,
        timeout: float = 10.0,
        anchor: EnergyTokenProgram | None = None,
        rec_validator: Signer | None = None,
        lookup_tables: bool = False,
        send_batch_size: int = 16,
        fees: FeeConfig | None = None,
        rpc: ProviderPool | None = None,  # several providers (configured.rpc_pool); else rpc_url alone
    ) -> None:
        self.authority = authority
        self.mint = Pubkey.from_string(mint) if isinstance(mint, str) else mint
        self.decimals = decimals
        self.token_program = Pubkey.from_string(token_program) if isinstance(token_program, str) else token_program
        self.commitment = commitment
        self.priority_fee_microlamports = priority_fee_microlamports
        self.concurrent_batches = concurrent_batches
        self.send_batch_size = send_batch_size
        self.anchor = anchor
        if anchor is not None:
            self.mint, self.token_program = anchor.mint, anchor.token_program
        self.signers = [authority] if rec_validator is None else [authority, rec_validator]
        if rpc is None:
            if rpc_url is None:
                raise ValueError("a ChainClient needs rpc_url or rpc")
            rpc = ProviderPool([RpcEndpoint(url=rpc_url)], timeout=timeout, max_connections=concurrent_batches + 4)
        self.rpc = rpc
        self.rpc_url = rpc.url
        # Without a fee configuration (set-up commands, the certificates' client): the fixed price given.
        fees = fees or FeeConfig(mode="fixed", floor_microlamports=priority_fee_microlamports)
        self.fee_market = FeeMarket(fees, self.rpc.call)
        self._known_accounts: set[Pubkey] = set()
        self._accounts_epoch: int | None = None
        # The highest slot any answer showed: later reads must come from nodes at least that far (a lagging
        # replica's blockhash may have expired already, its "no such account" may predate the account).
        self.seen_slot = 0
        self._token_accounts: dict[tuple[Pubkey, Pubkey], Pubkey] = {}
        self._rent_per_account: int | None = None
        self.payer_lamports: int | None = None  # the fee payer's balance at the last build
        self.lookup_tables = LookupTables(self) if lookup_tables else None

    @cached_property
    def payer(self) -> Pubkey:
        """The authority's address, read once (a keypair derives it from its secret, ~25 us): at the first build,
        not at construction, so a client whose key sits in a token that is away still reads the chain."""
        return self.authority.pubkey()

    def close(self) -> None:
        self.rpc.close()

    # --- building ------------------------------------------------------------------------------------

    def build_mints(
        self, requests: Sequence[MintRequest], *, memo: str, recent_blockhash: tuple[Hash, int] | None = None
    ) -> list[SignedMint]:
        """Signed transactions minting ``requests``; nothing is sent.

        1. Requests to the same wallet are merged into one instruction (amounts summed), or as few as u64
           allows; on an anchor client a request with a ``generation`` is its own mint_generation instruction.
        2. One getMultipleAccounts (per 100 wallets) finds the token accounts still missing; only those get a
           create-ATA-idempotent instruction, in the same transaction as their mint.
        3. Instructions are packed into as few transactions as fit 1232 bytes and 64 accounts (v0 messages over
           the client's address lookup tables when those are enabled and hold the accounts).
        4. The fee payer's balance must cover the fees and the new accounts' rent (sends skip preflight, so a
           dry payer's transactions would vanish without a word): InsufficientFunds otherwise.
        5. Every transaction gets the memo ``f"{memo}:{i}"``, so identical batches never share a signature,
           the optional priority fee, and one recent blockhash (``recent_blockhash``, from latest_blockhash(),
           lets many calls share one fetch), whose last valid block height is returned.
        """
        memo_bytes = len(f"{memo}:{len(requests)}".encode())
        if not memo or memo_bytes > MAX_MEMO_BYTES:
            raise ValueError(f"memo must be 1..{MAX_MEMO_BYTES - 6} bytes, got {memo!r}")
        groups = self._merge(requests)
        if not groups:
            return []
        token_accounts = {wallet: self.token_account(wallet) for wallet, _ in groups}
        missing = self._missing_accounts(list(token_accounts.values()))
        created: set[Pubkey] = set()
        units = []
        for wallet, grouped in groups:
            # Each generation unit of a new wallet creates its account (idempotent): its transaction may land
            # before the one of the wallet's first unit.
            create = token_accounts[wallet] in missing and (wallet not in created or self._alone(grouped[0]))
            if create:
                created.add(wallet)
            units.append(self._unit(wallet, create, grouped))
        lookup = self.lookup_tables.table_for(units) if self.lookup_tables is not None else None
        recent = recent_blockhash or self.latest_blockhash()
        # One read per build at most (kept briefly), before anything is signed: the accounts every transaction
        # write-locks (token accounts are written by our mints alone).
        price = self.fee_market.price([str(self.mint), str(self.payer)])
        budget = (0, price)
        drafts = pack(units, payer=self.payer, fixed=lambda i: self._fixed(memo, i, budget), lookup=lookup)
        limits = [self._limit(draft, memo, i) for i, draft in enumerate(drafts)]
        priority = [self.fee_market.check(limit, price) if price else 0 for limit in limits]
        # A generation's record is a new account too unless a replay finds it (counted at the larger ATA rent).
        records = sum(1 for _, grouped in groups if self._alone(grouped[0]))
        self._check_payer(transactions=len(drafts), new_accounts=len(created) + records, priority=sum(priority))
        return [
            self._sign(draft, memo, i, Blockhash(*recent), (limit, price), fee)
            for i, (draft, limit, fee) in enumerate(zip(drafts, limits, priority, strict=True))
        ]

    def _limit(self, draft: Draft, memo: str, index: int) -> int:
        """The compute units the transaction asks for: the measured cost of what it holds, plus the margin."""
        units = sum(unit.compute_units for unit in draft.units)
        return compute_limit(units, len(f"{memo}:{index}".encode()), self.fee_market.config.compute_margin_percent)

    def _check_payer(self, *, transactions: int, new_accounts: int, priority: int = 0) -> None:
        """Refuse to sign what the fee payer cannot pay for (a platform fault: fund it)."""
        if self._rent_per_account is None and new_accounts:
            rent = self.rpc.call("getMinimumBalanceForRentExemption", [TOKEN_ACCOUNT_SIZE])
            self._rent_per_account = int(rent)
        fee = LAMPORTS_PER_SIGNATURE * len(self.signers)
        needed = transactions * fee + priority + new_accounts * (self._rent_per_account or 0)
        balance = self.balance(self.payer)
        self.payer_lamports = balance
        if balance < needed:
            raise InsufficientFunds(
                f"the fee payer {self.payer} holds {balance} lamports but {transactions} transaction(s) and "
                f"{new_accounts} new token account(s) need about {needed}: send it SOL, then minting resumes"
            )

    def balance(self, address: Pubkey) -> int:
        result = self.rpc.call("getBalance", [str(address), {"commitment": self.commitment}])
        return int(rpc_value(result, "getBalance"))

    def token_account(self, wallet: Pubkey) -> Pubkey:
        """The wallet's associated token account for the mint (derived once per wallet and mint)."""
        cached = self._token_accounts.get((wallet, self.mint))
        if cached is None:
            cached = ix.associated_token_address(wallet, self.mint, self.token_program)
            self._token_accounts[(wallet, self.mint)] = cached
        return cached

    def _merge(self, requests: Sequence[MintRequest]) -> list[tuple[Pubkey, list[MintRequest]]]:
        """Requests grouped per wallet, a wallet's split into several groups where one u64 cannot hold them.

        On an anchor client a request with a generation is a group of its own (one mint_generation each)."""
        by_wallet: dict[Pubkey, list[list[MintRequest]]] = {}
        alone: list[tuple[Pubkey, list[MintRequest]]] = []
        for request in requests:
            if self._alone(request):
                alone.append((ix.parse_wallet(request.wallet), [request]))
                continue
            groups = by_wallet.setdefault(ix.parse_wallet(request.wallet), [[]])
            if sum(r.amount for r in groups[-1]) + request.amount > U64_MAX:
                groups.append([])
            groups[-1].append(request)
        return [(wallet, group) for wallet, groups in by_wallet.items() for group in groups] + alone

    def _alone(self, request: MintRequest) -> bool:
        return request.generation is not None and self.anchor is not None

    def _unit(self, wallet: Pubkey, create: bool, requests: list[MintRequest]) -> Unit:
        amount = sum(request.amount for request in requests)
        payer, token_account = self.payer, self.token_account(wallet)
        instructions: list[Instruction] = []
        compute = 0
        if create:
            instructions.append(
                ix.create_associated_token_account_idempotent(
                    payer=payer, wallet=wallet, mint=self.mint, token_program=self.token_program, address=token_account
                )
            )
            _, bump = ix.associated_token_address_and_bump(wallet, self.mint, self.token_program)
            compute += create_account_units(bump)
        if self._alone(requests[0]):
            meter_id, window_start_ms = requests[0].generation.meter_id, requests[0].generation.window_start_ms
            instructions.append(
                self.anchor.mint_generation(
                    wallet=wallet, authority=payer, meter_id=meter_id, window_start_ms=window_start_ms, amount=amount
                )
            )
            compute += COMPUTE_ANCHOR_GENERATION
        elif self.anchor is not None:
            instructions.append(self.anchor.mint_tokens_direct(wallet=wallet, authority=payer, amount=amount))
            compute += COMPUTE_ANCHOR_MINT
        else:
            instructions.append(
                ix.mint_to_checked(
                    mint=self.mint,
                    destination=self.token_account(wallet),
                    authority=payer,
                    amount=amount,
                    decimals=self.decimals,
                    token_program=self.token_program,
                )
            )
            compute += COMPUTE_MINT
        return Unit(tuple(instructions), tuple(requests), compute, table_key=token_account)

    def _fixed(self, memo: str, index: int, budget: tuple[int, int]) -> list[Instruction]:
        """The memo, after the compute budget (limit, price) when there is a price to pay (with none, the
        limit changes nothing a fee payer pays, and the two instructions would take room from mints)."""
        limit, price = budget
        fixed = ix.compute_budget(unit_limit=limit, microlamports_per_unit=price) if price else []
        return [*fixed, ix.memo(f"{memo}:{index}")]

    def _sign(
        self, draft: Draft, memo: str, index: int, recent: Blockhash, budget: tuple[int, int], priority_fee: int
    ) -> SignedMint:
        *budget_instructions, memo_instruction = self._fixed(memo, index, budget)
        instructions = [*budget_instructions, *(i for unit in draft.units for i in unit.instructions), memo_instruction]
        wallets = [None] * len(budget_instructions)
        wallets += [unit.requests[0].wallet for unit in draft.units for _ in unit.instructions]
        payer = self.payer
        if draft.lookup is not None:
            message = MessageV0.try_compile(payer, instructions, [draft.lookup], recent.blockhash)
        else:
            message = Message.new_with_blockhash(instructions, payer, recent.blockhash)
        transaction = sign_transaction(message, self.signers)
        raw = bytes(transaction)
        if len(raw) > PACKET_DATA_SIZE:  # the packer's arithmetic is exact; this guards against a bug in it
            raise TransactionTooLarge(f"a packed transaction is {len(raw)} bytes (limit {PACKET_DATA_SIZE})")
        requests = tuple(request for unit in draft.units for request in unit.requests)
        return SignedMint(
            str(transaction.signatures[0]), raw, recent.last_valid_block_height, requests,
            memo_instruction.data.decode(), context_slot=recent.context_slot, instruction_wallets=(*wallets, None),
            compute_unit_limit=budget[0] if budget[1] else 0, compute_unit_price=budget[1], priority_fee=priority_fee,
        )  # fmt: skip

    # --- accounts ------------------------------------------------------------------------------------

    def _missing_accounts(self, addresses: list[Pubkey]) -> set[Pubkey]:
        unknown = [address for address in addresses if address not in self._known_accounts]
        existing = self.existing_accounts(unknown)
        self._known_accounts |= existing
        return set(unknown) - existing

    def existing_accounts(self, addresses: Sequence[Pubkey]) -> set[Pubkey]:
        """Which of ``addresses`` exist on chain (getMultipleAccounts, 100 per call, no data transferred)."""
        existing = set()
        config = {"encoding": "base64", "commitment": self.commitment, "dataSlice": {"offset": 0, "length": 0}}
        for start in range(0, len(addresses), ACCOUNTS_CHUNK):
            chunk = addresses[start : start + ACCOUNTS_CHUNK]
            result = self._fresh("getMultipleAccounts", [[str(a) for a in chunk]], config)
            values = rpc_value(result, "getMultipleAccounts")
            existing |= {address for address, account in zip(chunk, values, strict=True) if account is not None}
        return existing

    def forget_accounts(self) -> None:
        """Drop the cache of known token accounts (a failed mint may mean one was closed)."""
        self._known_accounts.clear()

    def sync_accounts(self, epoch: int) -> None:
        """Forget the known token accounts when ``epoch`` moved: some process saw one of them vanish."""
        if epoch != self._accounts_epoch:
            self.forget_accounts()
            self._accounts_epoch = epoch

    def account_data(self, address: Pubkey) -> tuple[str, bytes] | None:
        """(owner program, data) of an account, or None when it does not exist."""
        config = {"encoding": "base64", "commitment": self.commitment}
        account = rpc_value(self.rpc.call("getAccountInfo", [str(address), config]), "getAccountInfo")
        if account is None:
            return None
        return account["owner"], base64.b64decode(account["data"][0])

    def token_balance(self, wallet: str) -> int:
        """Base units held by ``wallet``'s token account for the mint (0 if it does not exist)."""
        account = self.account_data(self.token_account(ix.parse_wallet(wallet)))
        if account is None:
            return 0
        return token_amount(account[1])

    def token_supply(self) -> int:
        result = self.rpc.call("getTokenSupply", [str(self.mint), {"commitment": self.commitment}])
        return int(rpc_value(result, "getTokenSupply")["amount"])

    def mint_info(self) -> MintInfo:
        """The mint as the chain has it; InvalidMint when it is missing or not a mint."""
        account = self.account_data(self.mint)
        if account is None:
            raise InvalidMint(f"the mint {self.mint} does not exist on {self.rpc.where}")
        return parse_mint(f"{self.mint} on {self.rpc.where}", str(self.mint), *account)

    def verify_mint(self) -> MintInfo:
        """The mint, checked: it exists, has our decimals and our key (or the program's PDA) as mint authority."""
        info = self.mint_info()
        if info.decimals != self.decimals:
            raise InvalidMint(f"the mint {self.mint} has {info.decimals} decimals, not {self.decimals}")
        expected = self.anchor.token_info if self.anchor is not None else self.payer
        if info.mint_authority != str(expected):
            raise WrongAuthority(
                f"the mint authority of {self.mint} is {info.mint_authority}, not {expected} (our key)"
            )
        return info

    # --- sending and confirming ----------------------------------------------------------------------

    def latest_blockhash(self) -> Blockhash:
        result = self._fresh("getLatestBlockhash", [], {"commitment": self.commitment})
        value = rpc_value(result, "getLatestBlockhash")
        return Blockhash(
            Hash.from_string(value["blockhash"]), int(value["lastValidBlockHeight"]), _context_slot(result)
        )

    def _fresh(self, method: str, params: list, config: dict) -> dict:
        """A read from a node that has seen at least ``seen_slot`` (see ``_until_fresh``)."""

        def read() -> dict:
            minimum = self.seen_slot
            result = self.rpc.call(method, [*params, {**config, "minContextSlot": minimum} if minimum else config])
            self._observe(method, _context_slot(result), minimum)  # also catches a node ignoring minContextSlot
            return result

        return _until_fresh(read)

    def get_block_height(self) -> int:
        return self.get_epoch_info()[0]

    def get_epoch_info(self, *, min_context_slot: int = 0) -> tuple[int, int]:
        """(block height, slot) at the commitment, read together from a node that has reached ``min_context_slot``
        (NodeBehind otherwise: a node that has not seen that slot cannot say how high the chain is)."""
        config: dict = {"commitment": self.commitment}
        if min_context_slot:
            config["minContextSlot"] = min_context_slot
        info = self.rpc.call("getEpochInfo", [config])
        try:
            height, slot = int(info["blockHeight"]), int(info["absoluteSlot"])
        except (TypeError, KeyError, ValueError) as exc:
            raise RpcBadResponse(f"getEpochInfo returned {info!r}") from exc
        self._observe("getEpochInfo", slot, min_context_slot)
        return height, slot

    def _observe(self, method: str, slot: int, minimum: int) -> None:
        """Remember the highest slot any answer showed; NodeBehind when this one is below ``minimum``."""
        self.seen_slot = max(self.seen_slot, slot)
        if slot < minimum:
            raise NodeBehind(f"{method} answered at slot {slot}, behind slot {minimum}")

    def minimum_ledger_slot(self) -> int:
        return int(self.rpc.call("minimumLedgerSlot", []))

    def send_raw(self, raw: bytes, *, skip_preflight: bool = True) -> str:
        """Send signed bytes; returns the signature. Already processed is success: re-sending is recovery."""
        signature, params, program_ids = self._send_params(raw, skip_preflight)
        try:
            result = self.rpc.call("sendTransaction", params, program_ids=program_ids)
        except ChainError as error:
            result = error
        outcome = sent_outcome(signature, result)
        if outcome is not None:
            raise outcome
        return signature

    def _send_params(self, raw: bytes, skip_preflight: bool) -> tuple[str, list, list[str]]:
        try:
            transaction = VersionedTransaction.from_bytes(raw)
        except ValueError as exc:
            raise PermanentChainError(f"not a signed transaction: {exc}", code="invalid_transaction") from None
        config = {"encoding": "base64", "skipPreflight": skip_preflight, "preflightCommitment": self.commitment}
        message = transaction.message
        program_ids = [str(message.account_keys[i.program_id_index]) for i in message.instructions]
        return str(transaction.signatures[0]), [base64.b64encode(raw).decode(), config], program_ids

    def execute(self, instructions: Sequence[Instruction], extra_signers: Sequence[Signer] = ()) -> int:
        """Send a set-up transaction (with preflight) paid by the authority, wait for it, return its slot.

        Raises the typed error when it fails on chain.
        """
        recent = self.latest_blockhash()
        message = Message.new_with_blockhash(list(instructions), self.payer, recent.blockhash)
        transaction = sign_transaction(message, [self.authority, *extra_signers])
        signed = SignedMint(
            str(transaction.signatures[0]), bytes(transaction), recent.last_valid_block_height, (), "",
            context_slot=recent.context_slot,
        )  # fmt: skip
        self.send_raw(signed.raw, skip_preflight=False)
        status = self.confirm(signed)
        if status.err is not None:
            raise signed.failure(status.err)
        return status.slot

    def send_many(self, signed: Sequence[SignedMint]) -> dict[str, ChainError | None]:
        """Send every transaction without preflight; the outcome per signature (None = accepted), never raising.

        Transactions go out as JSON-RPC batches of ``send_batch_size``, ``concurrent_batches`` batches at a time:
        one HTTP round trip per batch instead of per transaction. A batch that fails as a whole (the RPC is
        down) gives every transaction in it that error; the chain decides later which of them landed.
        """
        chunks = [signed[i : i + self.send_batch_size] for i in range(0, len(signed), self.send_batch_size)]

        def send(chunk: Sequence[SignedMint]) -> list[ChainError | None]:
            outcomes: list[ChainError | None] = [None] * len(chunk)
            calls, positions = [], []
            for position, item in enumerate(chunk):
                try:
                    _, params, program_ids = self._send_params(item.raw, True)
                except ChainError as error:
                    outcomes[position] = error
                    continue
                calls.append((params, program_ids))
                positions.append(position)
            try:
                results = self.rpc.call_batch("sendTransaction", calls) if calls else []
            except ChainError as error:
                results = [error] * len(calls)
            for position, result in zip(positions, results, strict=True):
                outcomes[position] = sent_outcome(chunk[position].signature, result)
            return outcomes

        with ThreadPoolExecutor(max_workers=self.concurrent_batches) as pool:
            outcomes = [outcome for chunk_outcomes in pool.map(send, chunks) for outcome in chunk_outcomes]
        return {item.signature: outcome for item, outcome in zip(signed, outcomes, strict=True)}

    def get_signature_statuses(
        self, signatures: Sequence[str], *, search_history: bool = True, min_context_slot: int = 0
    ) -> dict[str, SignatureStatus | None]:
        """Statuses per signature. A null proves nothing by itself: the answer counts only from a node whose
        context reached ``min_context_slot`` (NodeBehind otherwise), and only with ``search_history`` for
        transactions older than the node's status cache (about 300 slots)."""
        statuses: dict[str, SignatureStatus | None] = {}
        for start in range(0, len(signatures), STATUS_CHUNK):
            chunk = list(signatures[start : start + STATUS_CHUNK])
            params = [chunk, {"searchTransactionHistory": search_history}]
            result = self.rpc.call("getSignatureStatuses", params, min_context_slot=min_context_slot)
            self._observe("getSignatureStatuses", _context_slot(result), min_context_slot)
            for signature, status in zip(chunk, rpc_value(result, "getSignatureStatuses"), strict=True):
                statuses[signature] = None if status is None else status_from_json(signature, status)
        if any(status is not None and status.err is not None for status in statuses.values()):
            self.forget_accounts()
        return statuses

    def outcomes(self, signed: Sequence[SignedMint]) -> Outcomes:
        """Decide what the chain can prove about ``signed`` (see docs/PIPELINE.md, "Deciding from the chain").

        1. Statuses from the node's status cache: a status at the commitment is a fact whichever node says it.
        2. For the rest: block height and slot together (getEpochInfo), from a node that has reached every
           slot these transactions' blockhashes were read at. Those whose last valid block height is passed
           are asked again, with history, from a node whose context is at or past that slot, and whose ledger
           reaches back to their blockhash: nothing there proves the transaction never landed and never will.
           Any read that cannot prove it saw enough leaves the transaction undecided (``blocked`` says why).
        """
        result = Outcomes()
        try:
            first = _until_fresh(
                lambda: self.get_signature_statuses(
                    [s.signature for s in signed],
                    search_history=False,
                    min_context_slot=max(item.context_slot for item in signed),
                )
            )
        except NodeBehind as exc:
            result.undecided, result.blocked = [item.signature for item in signed], exc
            return result
        rest = []
        for item in signed:
            status = first.get(item.signature)
            if status is not None and status.reached(self.commitment):
                result.landed[item.signature] = status
            else:
                rest.append(item)
        if not rest:
            return result
        try:
            height, slot = _until_fresh(
                lambda: self.get_epoch_info(min_context_slot=max(item.context_slot for item in rest))
            )
            past = [item for item in rest if height > item.last_valid_block_height]
            result.undecided = [item.signature for item in rest if height <= item.last_valid_block_height]
            if past:
                with self.rpc.one_provider():  # null statuses and the ledger start that proves them: from one node
                    second = _until_fresh(
                        lambda: self.get_signature_statuses([item.signature for item in past], min_context_slot=slot)
                    )
                    unseen = [item for item in past if second.get(item.signature) is None]
                    ledger_start = self.minimum_ledger_slot() if unseen else 0
                for item in past:
                    status = second.get(item.signature)
                    if status is not None and status.reached(self.commitment):
                        result.landed[item.signature] = status
                    elif status is not None:
                        result.undecided.append(item.signature)
                if unseen:
                    for item in unseen:
                        if ledger_start <= item.context_slot:
                            result.expired.add(item.signature)
                        else:
                            result.undecided.append(item.signature)
                            result.blocked = HistoryUnavailable(
                                f"the node's ledger starts at slot {ledger_start}, after slot {item.context_slot} "
                                f"of {item.signature}: it cannot prove the transaction never landed"
                            )
        except (NodeBehind, HistoryUnavailable) as exc:
            decided = set(result.landed) | result.expired | set(result.undecided)
            result.undecided += [item.signature for item in rest if item.signature not in decided]
            result.blocked = exc
        return result

    def confirm(self, signed: SignedMint, *, timeout: float = 30.0, poll: float = 0.05) -> SignatureStatus:
        """Wait until the transaction lands at the configured commitment (returned, with ``err`` if it failed).

        BlockhashExpired once the chain proves it never will (``outcomes``); RpcTimeout after ``timeout``
        seconds (transient: the caller reconciles later).
        """
        deadline = time.monotonic() + timeout
        interval = poll
        while True:
            outcomes = self.outcomes([signed])
            if signed.signature in outcomes.landed:
                return outcomes.landed[signed.signature]
            if signed.signature in outcomes.expired:
                raise BlockhashExpired(
                    f"{signed.signature} did not land before block height {signed.last_valid_block_height}"
                )
            if time.monotonic() >= deadline:
                raise RpcTimeout(f"{signed.signature} not {self.commitment} after {timeout:g} s")
            time.sleep(min(interval, max(deadline - time.monotonic(), 0)))
            interval = min(interval * 2, 0.5)


def _until_fresh(read, *, tries: int = 8):
    """``read()`` again while it answers NodeBehind: behind a load balancer the next try usually reaches another
    node. After ``tries`` lagging answers NodeBehind is raised (transient: "not yet")."""
    for attempt in range(tries):
        try:
            return read()
        except NodeBehind:
            if attempt == tries - 1:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


def _context_slot(result: object) -> int:
    try:
        return int(result["context"]["slot"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError) as exc:
        raise RpcBadResponse(f"an RPC answer without a context slot: {result!r}"[:300]) from exc
