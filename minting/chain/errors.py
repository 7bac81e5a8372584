"""Typed chain errors: every failure says whether retrying can help (``permanent``) and has a stable ``code``.

Transaction errors are kept in the JSON form the RPC returns (``"BlockhashNotFound"``,
``{"InstructionError": [1, {"Custom": 4}]}``) so they can be stored and shown as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from spl.token.constants import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID


class ChainError(Exception):
    """A failure talking to the chain. ``str(error)`` is the message; ``err`` the RPC's error payload, if any."""

    code = "chain_error"
    permanent = False

    def __init__(self, message: str, *, code: str | None = None, err: object = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.err = err

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class TransientChainError(ChainError):
    """Retrying later may succeed: the RPC is down or slow, or the transaction must be rebuilt."""

    permanent = False


class PermanentChainError(ChainError):
    """Retrying the same thing fails the same way until someone changes the configuration or the input."""

    permanent = True


class RpcUnavailable(TransientChainError):
    code = "rpc_unavailable"


class RpcTimeout(TransientChainError):
    code = "rpc_timeout"


class NodeBehind(TransientChainError):
    code = "node_behind"


class BlockhashExpired(TransientChainError):
    """The transaction's blockhash is no longer valid: it never landed and never will; build a new one."""

    code = "blockhash_expired"


class RpcBadResponse(TransientChainError):
    code = "rpc_bad_response"


class HistoryUnavailable(TransientChainError):
    """The node cannot answer for old transactions (no history, pruned ledger): it can prove nothing absent."""

    code = "history_unavailable"


class SignerUnavailable(TransientChainError):
    """The signing key cannot sign now: its token is missing (``signer_token_missing``), refuses the PIN or is
    locked (``signer_locked``), lacks the key (``signer_key_missing``) or refuses to sign (``signer_refused``).
    A platform fault: minting pauses and probes again, and no reading is charged an attempt."""

    code = "signer_refused"


class PriorityFeeCapped(TransientChainError):
    """The compute-unit price the market asks would pass a configured ceiling: per transaction
    (``priority_fee_cap``) or for the hour (``priority_fee_hourly_cap``). A platform fault: nothing is signed,
    no reading is charged, and minting waits until the market or the hour allows."""

    code = "priority_fee_cap"


class NotInitialised(PermanentChainError):
    code = "not_initialised"


class InvalidWallet(PermanentChainError):
    code = "invalid_wallet"


class InvalidMint(PermanentChainError):
    code = "invalid_mint"


class WrongAuthority(PermanentChainError):
    code = "wrong_authority"


class InvalidAccount(PermanentChainError):
    code = "invalid_account"


class InsufficientFunds(PermanentChainError):
    code = "insufficient_funds"


class TransactionTooLarge(PermanentChainError):
    code = "transaction_too_large"


class RpcRejected(PermanentChainError):
    """The RPC refused the request itself (bad params, signature verification, unknown method)."""

    code = "rpc_rejected"


class TransactionFailed(PermanentChainError):
    """The transaction executed (or was simulated) and failed; the same bytes fail the same way again."""

    code = "transaction_failed"


class SupplyOverflow(PermanentChainError):
    """Minting would push the mint's supply past u64: no mint of this token can succeed any more."""

    code = "supply_overflow"


# RPC error codes (solana rpc-client-api custom_error.rs plus JSON-RPC's own) that retrying can cure.
# Codes not listed anywhere here are a provider's own (load balancers, quotas): transient too.
_TRANSIENT_RPC_CODES = {
    -32004: ("block_not_available", RpcUnavailable),
    -32005: ("node_behind", NodeBehind),
    -32007: ("slot_skipped", RpcUnavailable),
    -32014: ("block_status_not_available", RpcUnavailable),
    -32016: ("min_context_slot_not_reached", NodeBehind),
    -32603: ("rpc_internal_error", RpcUnavailable),
    # The node lacks the history asked for: BlockCleanedUp, LongTermStorageSlotSkipped,
    # TransactionHistoryNotAvailable, LongTermStorageUnreachable.
    -32001: ("history_unavailable", HistoryUnavailable),
    -32009: ("history_unavailable", HistoryUnavailable),
    -32011: ("history_unavailable", HistoryUnavailable),
    -32019: ("history_unavailable", HistoryUnavailable),
}
_PERMANENT_RPC_CODES = {
    -32003: "signature_verification_failed",
    -32006: "precompile_verification_failed",
    -32013: "signature_length_mismatch",
    -32015: "unsupported_transaction_version",
    -32600: "rpc_invalid_request",
    -32601: "rpc_method_not_found",
    -32602: "rpc_invalid_params",
    -32700: "rpc_parse_error",
}

# spl-token TokenError numbers (token/program/src/error.rs); Token-2022 keeps the same numbering.
_TOKEN_ERRORS: dict[int, tuple[type[PermanentChainError], str]] = {
    1: (InsufficientFunds, "insufficient token funds"),
    2: (InvalidMint, "invalid mint"),
    3: (InvalidMint, "the account belongs to another mint"),
    4: (WrongAuthority, "the signer is not the mint authority"),
    5: (WrongAuthority, "the mint has a fixed supply (no mint authority)"),
    9: (InvalidAccount, "the token account is not initialised"),
    14: (SupplyOverflow, "the amount overflows the mint's supply"),
    17: (InvalidAccount, "the token account is frozen"),
    18: (InvalidMint, "the mint's decimals differ from the instruction's"),
}
_INSTRUCTION_ERRORS: dict[str, type[PermanentChainError]] = {
    "MissingRequiredSignature": WrongAuthority,
    "InvalidAccountData": InvalidAccount,
    "UninitializedAccount": InvalidAccount,
    "IncorrectProgramId": InvalidAccount,
    "InvalidAccountOwner": InvalidAccount,
    "IllegalOwner": InvalidAccount,
    "AccountNotRentExempt": InvalidAccount,
    "InvalidSeeds": InvalidAccount,
    "NotEnoughAccountKeys": InvalidAccount,
    "InsufficientFunds": InsufficientFunds,
}
_TRANSACTION_ERRORS: dict[str, tuple[type[ChainError], str]] = {
    "BlockhashNotFound": (BlockhashExpired, "the transaction's blockhash is not (or no longer) valid"),
    "InsufficientFundsForFee": (InsufficientFunds, "the fee payer cannot pay the fee"),
    "AccountNotFound": (InsufficientFunds, "the fee payer has no SOL (account not found)"),
    "InvalidAccountForFee": (InsufficientFunds, "the fee payer cannot pay fees"),
    "InsufficientFundsForRent": (InsufficientFunds, "the fee payer cannot pay the rent of a new account"),
    "SignatureFailure": (WrongAuthority, "a signature does not verify"),
    "MissingSignatureForFee": (WrongAuthority, "the fee payer did not sign"),
    "TooManyAccountLocks": (TransactionTooLarge, "the transaction locks too many accounts"),
    "AddressLookupTableNotFound": (InvalidAccount, "the address lookup table does not exist"),
    "InvalidAddressLookupTableIndex": (InvalidAccount, "an address lookup table index is out of range"),
}
_TOKEN_PROGRAMS = {str(TOKEN_PROGRAM_ID), str(TOKEN_2022_PROGRAM_ID)}


def error_from_transaction_err(
    err: object, *, program_ids: Sequence[str] | None = None, signature: str | None = None
) -> ChainError:
    """The typed error for a transaction error payload (from a status or a failed simulation).

    ``program_ids`` (the program of each instruction, in order) lets custom error numbers be read as the
    token program's own; without it a custom number is reported as a plain ``TransactionFailed``.
    """
    where = f" ({signature})" if signature else ""
    if isinstance(err, dict) and len(err) == 1 and "InstructionError" not in err:
        name = next(iter(err))  # {"InsufficientFundsForRent": {"account_index": 2}} and kin
        if name in _TRANSACTION_ERRORS:
            error_type, message = _TRANSACTION_ERRORS[name]
            return error_type(f"{message}{where}", err=err)
    if isinstance(err, str):
        error_type, message = _TRANSACTION_ERRORS.get(err, (TransactionFailed, f"the transaction failed: {err}"))
        return error_type(f"{message}{where}", err=err)
    if isinstance(err, dict) and "InstructionError" in err:
        index, detail = err["InstructionError"]
        program = program_ids[index] if program_ids is not None and 0 <= index < len(program_ids) else None
        prefix = f"instruction {index}{f' ({_program_name(program)})' if program else ''}"
        if isinstance(detail, dict) and "Custom" in detail:
            number = detail["Custom"]
            if program in _TOKEN_PROGRAMS and number in _TOKEN_ERRORS:
                error_type, message = _TOKEN_ERRORS[number]
                return error_type(f"{prefix}: {message}{where}", err=err)
            if program == str(ASSOCIATED_TOKEN_PROGRAM_ID) and number == 1:  # the system program's negative lamports
                return InsufficientFunds(
                    f"{prefix}: the fee payer cannot pay a new token account's rent{where}", err=err
                )
            return TransactionFailed(f"{prefix} failed with custom error {number}{where}", err=err)
        name = detail if isinstance(detail, str) else next(iter(detail), "unknown")
        error_type = _INSTRUCTION_ERRORS.get(name, TransactionFailed)
        return error_type(f"{prefix} failed: {name}{where}", err=err)
    return TransactionFailed(f"the transaction failed: {err}{where}", err=err)


def error_from_rpc_error(error: dict, *, program_ids: Sequence[str] | None = None) -> ChainError:
    """The typed error for a JSON-RPC ``error`` object ``{"code", "message", "data"?}``."""
    code = error.get("code")
    message = str(error.get("message", "unknown RPC error"))
    data = error.get("data")
    if code == -32002 and isinstance(data, dict) and data.get("err") is not None:
        return error_from_transaction_err(data["err"], program_ids=program_ids)
    if code in _TRANSIENT_RPC_CODES:
        name, error_type = _TRANSIENT_RPC_CODES[code]
        return error_type(message, code=name, err=error)
    if code == -32602 and "too large" in message:
        return TransactionTooLarge(message, err=error)
    if "blockhash not found" in message.lower():
        return BlockhashExpired(message, err=error)
    if code in _PERMANENT_RPC_CODES:
        return RpcRejected(message, code=_PERMANENT_RPC_CODES[code], err=error)
    return RpcUnavailable(f"RPC error {code}: {message}", code="rpc_error", err=error)


def _program_name(program_id: str) -> str:
    names = {
        str(TOKEN_PROGRAM_ID): "spl-token",
        str(TOKEN_2022_PROGRAM_ID): "token-2022",
        str(ASSOCIATED_TOKEN_PROGRAM_ID): "associated-token-account",
    }
    return names.get(program_id, program_id)
