"""Cluster, account and token methods of the RPC API (transactions live in ``transactions.py``).

Every handler that reads chain state asks ``faults.view(method, config)`` for the tip it answers at: the real
tip, or a lagging replica's (faults.py). Account and token data are always current; only the context slot lags.
"""

from __future__ import annotations

import base64
import binascii
import json

from solders.epoch_info import EpochInfo
from solders.hash import Hash
from solders.message import from_bytes_versioned
from solders.pubkey import Pubkey
from solders.rpc.responses import (
    GetBalanceResp,
    GetBlockHeightResp,
    GetEpochInfoResp,
    GetFeeForMessageResp,
    GetLatestBlockhashResp,
    GetMinimumBalanceForRentExemptionResp,
    GetSlotResp,
    GetTokenAccountBalanceResp,
    GetTokenSupplyResp,
    GetVersionResp,
    IsBlockhashValidResp,
    RpcBlockhash,
    RpcResponseContext,
    RpcVersionInfo,
)

from localnet.encoding import check_account_encoding, encode_account
from localnet.errors import invalid_params
from localnet.faults import Faults
from localnet.fees import compute_budget_of
from localnet.rpc import (
    API_VERSION,
    config_of,
    positional,
    pubkey_of,
    solders_result,
    u64_of,
    with_context,
)
from localnet.state import LAMPORTS_PER_SIGNATURE, LocalChain
from localnet.tokens import TOKEN_PROGRAM_NAMES, parse_mint, parse_token_account, ui_token_amount

FEATURE_SET = 3_294_202_862  # reported by getVersion; clients only display it
MAX_MULTIPLE_ACCOUNTS = 100
MAX_PRIORITIZATION_FEE_ACCOUNTS = 128  # what a validator accepts in getRecentPrioritizationFees
_COMPACT = (",", ":")


class ClusterMethods:
    """Handlers that read the chain; each takes the JSON ``params`` list and returns ``result`` JSON text."""

    def __init__(self, chain: LocalChain, faults: Faults) -> None:
        self.chain = chain
        self.faults = faults

    def context(self, method: str, config: dict) -> RpcResponseContext:
        return RpcResponseContext(self.faults.view(method, config).slot, API_VERSION)

    def handlers(self) -> dict:
        return {
            "getHealth": lambda params: '"ok"',
            "getVersion": self.get_version,
            "getSlot": self.get_slot,
            "getBlockHeight": self.get_block_height,
            "getEpochInfo": self.get_epoch_info,
            "getTransactionCount": self.get_transaction_count,
            "getLatestBlockhash": self.get_latest_blockhash,
            "isBlockhashValid": self.is_blockhash_valid,
            "getFeeForMessage": self.get_fee_for_message,
            "getRecentPrioritizationFees": self.get_recent_prioritization_fees,
            "getMinimumBalanceForRentExemption": self.get_minimum_balance_for_rent_exemption,
            "getBalance": self.get_balance,
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getTokenAccountBalance": self.get_token_account_balance,
            "getTokenSupply": self.get_token_supply,
            "getTokenAccountsByOwner": self.get_token_accounts_by_owner,
            "minimumLedgerSlot": self.minimum_ledger_slot,
            "getFirstAvailableBlock": self.get_first_available_block,
        }

    # -- cluster -----------------------------------------------------------------------------------------

    def get_version(self, params: list) -> str:
        positional(params, 0, 0)
        return solders_result(GetVersionResp(RpcVersionInfo(API_VERSION, FEATURE_SET)))

    def get_slot(self, params: list) -> str:
        (config,) = positional(params, 0, 1)
        return solders_result(GetSlotResp(self.faults.view("getSlot", config).slot))

    def get_block_height(self, params: list) -> str:
        (config,) = positional(params, 0, 1)
        return solders_result(GetBlockHeightResp(self.faults.view("getBlockHeight", config).block_height))

    def get_epoch_info(self, params: list) -> str:
        (config,) = positional(params, 0, 1)
        view = self.faults.view("getEpochInfo", config)
        chain = self.chain
        with chain.lock:
            schedule = chain.svm.get_epoch_schedule()
            epoch, slot_index = schedule.get_epoch_and_slot_index(view.slot)
            info = EpochInfo(
                epoch, slot_index, schedule.get_slots_in_epoch(epoch), view.slot, view.block_height,
                chain.transaction_count,
            )  # fmt: skip
        return solders_result(GetEpochInfoResp(info))

    def get_transaction_count(self, params: list) -> str:
        (config,) = positional(params, 0, 1)
        self.faults.view("getTransactionCount", config)
        return str(self.chain.transaction_count)

    def get_latest_blockhash(self, params: list) -> str:
        """The blockhash of the answering node's tip: behind a lagging replica, that slot's blockhash."""
        (config,) = positional(params, 0, 1)
        view = self.faults.view("getLatestBlockhash", config)
        return solders_result(
            GetLatestBlockhashResp(
                RpcBlockhash(view.blockhash, view.last_valid_block_height), RpcResponseContext(view.slot, API_VERSION)
            )
        )

    def is_blockhash_valid(self, params: list) -> str:
        blockhash, config = positional(params, 1, 2)
        view = self.faults.view("isBlockhashValid", config)
        try:
            parsed = Hash.from_string(blockhash)
        except Exception as error:  # solders raises ParseHashError, not a ValueError
            raise invalid_params("Invalid param: Invalid") from error
        valid = self.chain.is_blockhash_valid(parsed, view.block_height)
        return solders_result(IsBlockhashValidResp(valid, RpcResponseContext(view.slot, API_VERSION)))

    def get_fee_for_message(self, params: list) -> str:
        """5000 lamports per signature plus the priority fee (fees.py); null when the blockhash is not valid."""
        encoded, config = positional(params, 1, 2)
        view = self.faults.view("getFeeForMessage", config)
        try:
            message = from_bytes_versioned(base64_bytes(encoded))
        except ValueError as error:
            raise invalid_params(f"invalid message: {error}") from error
        fee = None
        if self.chain.is_blockhash_valid(message.recent_blockhash, view.block_height):
            fee = LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures
            fee += compute_budget_of(message).priority_fee
        return solders_result(GetFeeForMessageResp(fee, RpcResponseContext(view.slot, API_VERSION)))

    def get_recent_prioritization_fees(self, params: list) -> str:
        """``[{"slot", "prioritizationFee"}]`` for the last 150 slots the answering node has seen (faults.py:
        the congestion spell's price while one lasted, 0 otherwise)."""
        (addresses,) = positional(params, 0, 1)
        if addresses is not None:
            if not isinstance(addresses, list):
                raise invalid_params("Invalid params: expected an array of public keys")
            if len(addresses) > MAX_PRIORITIZATION_FEE_ACCOUNTS:
                raise invalid_params(f"Too many inputs provided; max {MAX_PRIORITIZATION_FEE_ACCOUNTS}")
            for address in addresses:
                pubkey_of(address)
        view = self.faults.view("getRecentPrioritizationFees")
        fees = self.faults.recent_prioritization_fees(view.slot)
        return json.dumps([{"slot": slot, "prioritizationFee": fee} for slot, fee in fees], separators=_COMPACT)

    def get_minimum_balance_for_rent_exemption(self, params: list) -> str:
        data_len, config = positional(params, 1, 2)
        self.faults.view("getMinimumBalanceForRentExemption", config)
        size = u64_of(data_len, "data length")
        return solders_result(
            GetMinimumBalanceForRentExemptionResp(self.chain.minimum_balance_for_rent_exemption(size))
        )

    def minimum_ledger_slot(self, params: list) -> str:
        """The oldest slot the node still has: 0, or the start of the history gap fault."""
        positional(params, 0, 0)
        return str(self.faults.first_available_slot(self.faults.view("minimumLedgerSlot").slot))

    def get_first_available_block(self, params: list) -> str:
        positional(params, 0, 0)
        return str(self.faults.first_available_slot(self.faults.view("getFirstAvailableBlock").slot))

    # -- accounts ----------------------------------------------------------------------------------------

    def get_balance(self, params: list) -> str:
        address, config = positional(params, 1, 2)
        pubkey = pubkey_of(address)
        context = self.context("getBalance", config_of(config))
        return solders_result(GetBalanceResp(self.chain.get_balance(pubkey), context))

    def decimals_of(self, mint: Pubkey) -> int | None:
        state = parse_mint(self.chain.get_account(mint))
        return state.decimals if state is not None else None

    def _encoded(self, account, config: dict) -> dict | None:
        encoding = check_account_encoding(config.get("encoding") or "binary")
        return encode_account(account, encoding, config.get("dataSlice"), self.decimals_of)

    def get_account_info(self, params: list) -> str:
        address, config = positional(params, 1, 2)
        pubkey, config = pubkey_of(address), config_of(config)
        context = self.context("getAccountInfo", config)
        value = self._encoded(self.chain.get_account(pubkey), config)
        return with_context(context.slot, json.dumps(value, separators=_COMPACT))

    def get_multiple_accounts(self, params: list) -> str:
        addresses, config = positional(params, 1, 2)
        if not isinstance(addresses, list):
            raise invalid_params("Invalid params: expected an array of public keys")
        if len(addresses) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        pubkeys, config = [pubkey_of(address) for address in addresses], config_of(config)
        context = self.context("getMultipleAccounts", config)
        values = [self._encoded(account, config) for account in self.chain.get_accounts(pubkeys)]
        return with_context(context.slot, json.dumps(values, separators=_COMPACT))

    # -- tokens ------------------------------------------------------------------------------------------

    def get_token_account_balance(self, params: list) -> str:
        address, config = positional(params, 1, 2)
        pubkey = pubkey_of(address)
        context = self.context("getTokenAccountBalance", config_of(config))
        account = self.chain.get_account(pubkey)
        if account is None:
            raise invalid_params("Invalid param: could not find account")
        token = parse_token_account(account)
        if token is None:
            raise invalid_params("Invalid param: not a Token account")
        decimals = self.decimals_of(token.mint)
        if decimals is None:
            raise invalid_params("Invalid param: could not find mint")
        return solders_result(GetTokenAccountBalanceResp(ui_token_amount(token.amount, decimals), context))

    def get_token_supply(self, params: list) -> str:
        address, config = positional(params, 1, 2)
        pubkey = pubkey_of(address)
        context = self.context("getTokenSupply", config_of(config))
        account = self.chain.get_account(pubkey)
        if account is None:
            raise invalid_params("Invalid param: could not find mint")
        mint = parse_mint(account)
        if mint is None:
            raise invalid_params("Invalid param: not a Token mint")
        return solders_result(GetTokenSupplyResp(ui_token_amount(mint.supply, mint.decimals), context))

    def get_token_accounts_by_owner(self, params: list) -> str:
        """Scans the tracked accounts: a local chain holds thousands, not millions."""
        address, token_filter, config = positional(params, 2, 3)
        owner, config = pubkey_of(address), config_of(config)
        if not isinstance(token_filter, dict) or len(token_filter) != 1:
            raise invalid_params("Invalid params: expected a filter object with either mint or programId")
        context = self.context("getTokenAccountsByOwner", config)
        mint = None
        if "mint" in token_filter:
            mint = pubkey_of(token_filter["mint"])
            mint_account = self.chain.get_account(mint)
            if parse_mint(mint_account) is None:
                raise invalid_params("Invalid param: could not find mint")
            program = mint_account.owner
        elif "programId" in token_filter:
            program = pubkey_of(token_filter["programId"])
            if program not in TOKEN_PROGRAM_NAMES:
                raise invalid_params("Invalid param: unrecognized Token program id")
        else:
            raise invalid_params("Invalid params: expected a filter object with either mint or programId")
        check_account_encoding(config.get("encoding") or "binary")
        with self.chain.lock:
            keys = list(self.chain.accounts)
        found = []
        for key, account in zip(keys, self.chain.get_accounts(keys), strict=True):
            if account is None or account.owner != program:
                continue
            token = parse_token_account(account)
            if token is not None and token.owner == owner and (mint is None or token.mint == mint):
                found.append({"pubkey": str(key), "account": self._encoded(account, config)})
        return with_context(context.slot, json.dumps(found, separators=_COMPACT))


def base64_bytes(encoded: object) -> bytes:
    if not isinstance(encoded, str):
        raise invalid_params("Invalid params: expected a base-64 string")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise invalid_params(f"invalid base64 encoding: {error}") from error
