"""Transaction methods: send, simulate, statuses, getTransaction, airdrop.

Sends consult the fault plan (dropped, seen on a fork); status reads answer as the node the plan puts in
front of them (lagging, pruned, without history) with the finality the plan gives (faults.py).
"""

from __future__ import annotations

import base64
import binascii
import json

import based58
from solders.rpc.responses import GetSignatureStatusesResp, RpcResponseContext, SimulateTransactionResp
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionStatus

from localnet.errors import (
    UNSUPPORTED_TRANSACTION_VERSION,
    RpcError,
    error_to_ui,
    history_not_available,
    invalid_params,
)
from localnet.faults import PROCESSED, Faults
from localnet.fees import compute_budget_of
from localnet.history import TransactionRecord
from localnet.rpc import (
    API_VERSION,
    check_min_context_slot,
    config_of,
    positional,
    pubkey_of,
    signature_of,
    solders_result,
    u64_of,
)
from localnet.state import LocalChain

PACKET_DATA_SIZE = 1232  # the most a transaction may take on the wire
MAX_BASE64_SIZE = 1644  # ceil(1232 / 3) * 4 + slack, as the validator allows
MAX_BASE58_SIZE = 1683
TRANSACTION_TYPE = "solana_transaction::versioned::VersionedTransaction"
MAX_SIGNATURE_STATUSES = 256


def decode_transaction(encoded: object, encoding: str) -> tuple[bytes, VersionedTransaction]:
    """Wire bytes and the transaction, refusing what the validator refuses, with its messages."""
    if not isinstance(encoded, str):
        raise invalid_params("Invalid params: expected an encoded transaction string")
    if encoding == "base64":
        if len(encoded) > MAX_BASE64_SIZE:
            raise invalid_params(
                f"base64 encoded {TRANSACTION_TYPE} too large: {len(encoded)} bytes "
                f"(max: encoded/raw {MAX_BASE64_SIZE}/{PACKET_DATA_SIZE})"
            )
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as error:
            raise invalid_params(f"invalid base64 encoding: {error}") from error
    elif encoding == "base58":
        if len(encoded) > MAX_BASE58_SIZE:
            raise invalid_params(
                f"base58 encoded {TRANSACTION_TYPE} too large: {len(encoded)} bytes "
                f"(max: encoded/raw {MAX_BASE58_SIZE}/{PACKET_DATA_SIZE})"
            )
        try:
            raw = based58.b58decode(encoded.encode())
        except ValueError as error:
            raise invalid_params(f"invalid base58 encoding: {error}") from error
    else:
        raise invalid_params(f"unsupported encoding: {encoding}. Supported encodings: base58, base64")
    if len(raw) > PACKET_DATA_SIZE:
        raise invalid_params(f"decoded {TRANSACTION_TYPE} too large: {len(raw)} bytes (max: {PACKET_DATA_SIZE} bytes)")
    try:
        transaction = VersionedTransaction.from_bytes(raw)
    except ValueError as error:
        raise invalid_params(f"failed to deserialize {TRANSACTION_TYPE}: {error}") from error
    try:
        transaction.sanitize()
    except Exception as error:  # solders raises its own SanitizeError, not a ValueError
        text = "Transaction failed to sanitize accounts offsets correctly"
        raise invalid_params(f"invalid transaction: {text}") from error
    return raw, transaction


class TransactionMethods:
    def __init__(self, chain: LocalChain, faults: Faults) -> None:
        self.chain = chain
        self.faults = faults

    def handlers(self) -> dict:
        return {
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
            "getSignatureStatuses": self.get_signature_statuses,
            "getTransaction": self.get_transaction,
            "requestAirdrop": self.request_airdrop,
        }

    def send_transaction(self, params: list) -> str:
        """Never lagged (replicas forward sends to the leader). A send the fault plan intercepts (dropped, on a
        fork, priced below a congestion spell) still gets preflight from the node that took it, then its
        signature, and never lands."""
        encoded, config = positional(params, 1, 2)
        config = config_of(config)
        check_min_context_slot(config, self.chain.slot)
        raw, transaction = decode_transaction(encoded, config.get("encoding") or "base58")
        preflight = not config.get("skipPreflight", False)
        if self.faults.intercepts_sends():
            if preflight:
                self.chain.preflight(transaction)
            price = compute_budget_of(transaction.message).price
            if self.faults.intercept_send(bytes(transaction.signatures[0]), price):
                return f'"{transaction.signatures[0]}"'
        signature = self.chain.send_transaction(transaction, raw, preflight=preflight)
        return f'"{signature}"'

    def simulate_transaction(self, params: list) -> str:
        encoded, config = positional(params, 1, 2)
        config = config_of(config)
        view = self.faults.view("simulateTransaction", config)
        sig_verify = bool(config.get("sigVerify", False))
        replace_blockhash = bool(config.get("replaceRecentBlockhash", False))
        if sig_verify and replace_blockhash:
            raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
        accounts = config_of(config.get("accounts"))
        addresses = [pubkey_of(address) for address in accounts.get("addresses") or []]
        _, transaction = decode_transaction(encoded, config.get("encoding") or "base58")
        simulation, replacement = self.chain.simulate_transaction(
            transaction, sig_verify=sig_verify, replace_blockhash=replace_blockhash, addresses=addresses
        )
        result = solders_result(SimulateTransactionResp(simulation, RpcResponseContext(view.slot, API_VERSION)))
        if replacement is not None:
            replaced = json.dumps(replacement, separators=(",", ":"))
            result = result.replace('"replacementBlockhash":null', f'"replacementBlockhash":{replaced}', 1)
        return result

    def get_signature_statuses(self, params: list) -> str:
        signatures, config = positional(params, 1, 2)
        config = config_of(config)
        if not isinstance(signatures, list):
            raise invalid_params("Invalid params: expected an array of signatures")
        if len(signatures) > MAX_SIGNATURE_STATUSES:
            raise invalid_params(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
        keys = [signature_of(signature) for signature in signatures]
        search_history = bool(config.get("searchTransactionHistory"))
        if search_history and self.faults.history_unavailable():
            raise history_not_available()
        view = self.faults.view("getSignatureStatuses")
        found = self.chain.signature_statuses(
            keys, search_history=search_history, at_slot=view.slot,
            first_slot=self.faults.first_available_slot(view.slot),
        )  # fmt: skip
        statuses = [self._status(key, status, view.slot) for key, status in zip(keys, found, strict=True)]
        return solders_result(GetSignatureStatusesResp(statuses, RpcResponseContext(view.slot, API_VERSION)))

    def _status(self, signature: bytes, landed: tuple | None, at_slot: int) -> TransactionStatus | None:
        if landed is None:
            seen = self.faults.fork_slot(signature, at_slot)
            return None if seen is None else TransactionStatus(seen, 0, None, None, PROCESSED)
        slot, err = landed
        confirmations, level = self.faults.confirmation(at_slot - slot)
        return TransactionStatus(slot, confirmations, err, err, level)

    def get_transaction(self, params: list) -> str:
        signature, config = positional(params, 1, 2)
        config = config_of(config)
        if self.faults.history_unavailable():
            raise history_not_available()
        view = self.faults.view("getTransaction", config)
        encoding = config.get("encoding") or "json"
        if encoding not in ("json", "jsonParsed", "base64", "base58"):
            raise invalid_params(f"Invalid params: unknown variant `{encoding}`")
        record = self.chain.transaction(signature_of(signature))
        if (
            record is None
            or not self.faults.first_available_slot(view.slot) <= record.slot <= view.slot
            or not self.faults.reached(view.slot - record.slot, config.get("commitment"))
        ):
            return "null"
        max_version = config.get("maxSupportedTransactionVersion")
        transaction = VersionedTransaction.from_bytes(record.raw)
        version = transaction.version()
        is_legacy = not isinstance(version, int)
        if max_version is None and not is_legacy:
            raise RpcError(
                UNSUPPORTED_TRANSACTION_VERSION,
                f"Transaction version ({version}) is not supported by the requesting client. Please try the "
                'request again with the following configuration parameter: "maxSupportedTransactionVersion": 0',
            )
        if max_version is not None:  # v0 is the newest version there is, so any number admits every transaction
            u64_of(max_version, "maxSupportedTransactionVersion")
        result = {
            "slot": record.slot,
            "transaction": encode_transaction(transaction, record.raw, encoding),
            "meta": transaction_meta(record),
            "blockTime": record.block_time,
        }
        if max_version is not None:
            result["version"] = "legacy" if is_legacy else version
        return json.dumps(result, separators=(",", ":"))

    def request_airdrop(self, params: list) -> str:
        address, lamports, config = positional(params, 2, 3)
        pubkey = pubkey_of(address)
        check_min_context_slot(config_of(config), self.chain.slot)
        amount = u64_of(lamports, "lamports")
        return f'"{self.chain.request_airdrop(pubkey, amount)}"'


def encode_transaction(transaction: VersionedTransaction, raw: bytes, encoding: str) -> object:
    if encoding == "base64":
        return [base64.b64encode(raw).decode(), "base64"]
    if encoding == "base58":
        return [based58.b58encode(raw).decode(), "base58"]
    message = transaction.message
    header = message.header
    ui_message: dict = {
        "header": {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        },
        "accountKeys": [str(key) for key in message.account_keys],
        "recentBlockhash": str(message.recent_blockhash),
        "instructions": [
            {
                "programIdIndex": instruction.program_id_index,
                "accounts": list(instruction.accounts),
                "data": based58.b58encode(bytes(instruction.data)).decode(),
                "stackHeight": None,
            }
            for instruction in message.instructions
        ],
    }
    if isinstance(transaction.version(), int):
        ui_message["addressTableLookups"] = [
            {
                "accountKey": str(lookup.account_key),
                "writableIndexes": list(lookup.writable_indexes),
                "readonlyIndexes": list(lookup.readonly_indexes),
            }
            for lookup in message.address_table_lookups
        ]
    return {"signatures": [str(signature) for signature in transaction.signatures], "message": ui_message}


def transaction_meta(record: TransactionRecord) -> dict:
    """``UiTransactionStatusMeta``; token balances and inner instructions are not recorded, so omitted."""
    err = error_to_ui(record.err)
    meta = {
        "err": err,
        "status": {"Ok": None} if err is None else {"Err": err},
        "fee": record.fee,
        "preBalances": record.pre_balances,
        "postBalances": record.post_balances,
        "logMessages": record.logs,
        "rewards": [],
        "loadedAddresses": {"writable": record.loaded_writable, "readonly": record.loaded_readonly},
        "computeUnitsConsumed": record.units_consumed,
    }
    if record.return_data is not None:
        program_id, data = record.return_data
        meta["returnData"] = {"programId": program_id, "data": [base64.b64encode(data).decode(), "base64"]}
    return meta
