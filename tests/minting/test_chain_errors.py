"""The error taxonomy: which RPC and transaction errors are transient, which permanent, under which code."""

import pytest

from minting.chain import (
    BlockhashExpired,
    HistoryUnavailable,
    InsufficientFunds,
    InvalidAccount,
    InvalidMint,
    NodeBehind,
    PermanentChainError,
    RpcRejected,
    RpcUnavailable,
    SupplyOverflow,
    TransactionFailed,
    TransactionTooLarge,
    TransientChainError,
    WrongAuthority,
    error_from_transaction_err,
)
from minting.chain.errors import error_from_rpc_error
from minting.chain.instructions import ASSOCIATED_TOKEN_PROGRAM_ID, MEMO_PROGRAM_ID, TOKEN_PROGRAM_ID

TOKEN = str(TOKEN_PROGRAM_ID)
PROGRAMS = [str(ASSOCIATED_TOKEN_PROGRAM_ID), TOKEN, str(MEMO_PROGRAM_ID)]


def preflight(err):
    return {"code": -32002, "message": "Transaction simulation failed", "data": {"err": err, "logs": []}}


@pytest.mark.parametrize(
    ("error", "expected", "code"),
    [
        (preflight("BlockhashNotFound"), BlockhashExpired, "blockhash_expired"),
        ({"code": -32005, "message": "Node is behind by 42 slots", "data": {"numSlotsBehind": 42}}, NodeBehind,
         "node_behind"),
        ({"code": -32016, "message": "Minimum context slot has not been reached"}, NodeBehind,
         "min_context_slot_not_reached"),
        ({"code": -32603, "message": "Internal error"}, RpcUnavailable, "rpc_internal_error"),
        ({"code": -32003, "message": "Transaction signature verification failure"}, RpcRejected,
         "signature_verification_failed"),
        ({"code": -32602, "message": "base64 encoded VersionedTransaction too large: 1300 bytes (max 1232)"},
         TransactionTooLarge, "transaction_too_large"),
        ({"code": -32602, "message": "invalid transaction: failed to sanitize"}, RpcRejected, "rpc_invalid_params"),
        ({"code": -32099, "message": "something new"}, RpcUnavailable, "rpc_error"),  # a provider's own
        ({"code": -32011, "message": "Transaction history is not available from this node"}, HistoryUnavailable,
         "history_unavailable"),
        ({"code": -32000, "message": "Blockhash not found"}, BlockhashExpired, "blockhash_expired"),
    ],
)  # fmt: skip
def test_rpc_errors_map_to_typed_errors(error, expected, code):
    mapped = error_from_rpc_error(error)
    assert type(mapped) is expected
    assert mapped.code == code
    assert mapped.permanent == issubclass(expected, PermanentChainError)


@pytest.mark.parametrize(
    ("err", "expected", "code"),
    [
        ({"InstructionError": [1, {"Custom": 4}]}, WrongAuthority, "wrong_authority"),
        ({"InstructionError": [1, {"Custom": 5}]}, WrongAuthority, "wrong_authority"),
        ({"InstructionError": [1, {"Custom": 2}]}, InvalidMint, "invalid_mint"),
        ({"InstructionError": [1, {"Custom": 18}]}, InvalidMint, "invalid_mint"),
        ({"InstructionError": [1, {"Custom": 17}]}, InvalidAccount, "invalid_account"),
        ({"InstructionError": [1, {"Custom": 14}]}, SupplyOverflow, "supply_overflow"),
        ({"InstructionError": [0, {"Custom": 1}]}, InsufficientFunds, "insufficient_funds"),  # ATA: rent
        ({"InstructionError": [0, {"Custom": 4}]}, TransactionFailed, "transaction_failed"),
        ({"InstructionError": [0, "IncorrectProgramId"]}, InvalidAccount, "invalid_account"),
        ({"InstructionError": [1, "InvalidAccountData"]}, InvalidAccount, "invalid_account"),
        ({"InstructionError": [1, "MissingRequiredSignature"]}, WrongAuthority, "wrong_authority"),
        ({"InstructionError": [1, {"BorshIoError": "x"}]}, TransactionFailed, "transaction_failed"),
        ({"InsufficientFundsForRent": {"account_index": 0}}, InsufficientFunds, "insufficient_funds"),
        ("InsufficientFundsForFee", InsufficientFunds, "insufficient_funds"),
        ("AccountNotFound", InsufficientFunds, "insufficient_funds"),
        ("TooManyAccountLocks", TransactionTooLarge, "transaction_too_large"),
        ("BlockhashNotFound", BlockhashExpired, "blockhash_expired"),
        ("AlreadyProcessed", TransactionFailed, "transaction_failed"),
    ],
)
def test_transaction_errors_map_to_typed_errors_naming_the_token_programs_own(err, expected, code):
    mapped = error_from_transaction_err(err, program_ids=PROGRAMS, signature="sig")
    assert type(mapped) is expected
    assert (mapped.code, mapped.err) == (code, err)
    assert "sig" in str(mapped)


def test_custom_errors_without_program_ids_are_plain_transaction_failures():
    mapped = error_from_transaction_err({"InstructionError": [1, {"Custom": 4}]})
    assert type(mapped) is TransactionFailed and mapped.permanent


def test_transient_and_permanent_are_explicit_on_every_error():
    assert not BlockhashExpired("x").permanent and isinstance(BlockhashExpired("x"), TransientChainError)
    assert WrongAuthority("x").permanent and isinstance(TransactionFailed("x"), PermanentChainError)
    error = RpcUnavailable("down", code="rpc_rate_limited")
    assert (str(error), error.code, repr(error)) == (
        "down", "rpc_rate_limited", "RpcUnavailable(code='rpc_rate_limited', message='down')"
    )  # fmt: skip
