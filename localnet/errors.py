"""JSON-RPC errors as a Solana validator reports them, and the text of transaction errors.

The texts follow the validator's ``Display`` of ``TransactionError`` / ``InstructionError`` because clients
show them to people (``Transaction simulation failed: Blockhash not found``); clients decide on the codes
and on the ``err`` value in the error data, never on the text.
"""

from __future__ import annotations

import json
from typing import Any

from solders.rpc.responses import RpcSimulateTransactionResult

# JSON-RPC 2.0 codes and the Solana server's custom codes (solana-rpc-client-api custom_error.rs).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SEND_TRANSACTION_PREFLIGHT_FAILURE = -32002
TRANSACTION_SIGNATURE_VERIFICATION_FAILURE = -32003
TRANSACTION_PRECOMPILE_VERIFICATION_FAILURE = -32006
TRANSACTION_HISTORY_NOT_AVAILABLE = -32011
UNSUPPORTED_TRANSACTION_VERSION = -32015
MIN_CONTEXT_SLOT_NOT_REACHED = -32016


class RpcError(Exception):
    """An error answer: ``code``, ``message`` and optional ``data``, serialised as the validator does."""

    def __init__(self, code: int, message: str, data: Any = None, *, data_json: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        # Preformatted JSON for data that solders serialises (simulation results), so it stays exact.
        self.data_json = data_json

    def to_json(self) -> str:
        body = f'{{"code":{self.code},"message":{json.dumps(self.message)}'
        if self.data_json is not None:
            body += f',"data":{self.data_json}'
        elif self.data is not None:
            body += f',"data":{json.dumps(self.data, separators=(",", ":"))}'
        return body + "}"


def invalid_params(detail: str) -> RpcError:
    return RpcError(INVALID_PARAMS, detail)


def preflight_failure(simulation: RpcSimulateTransactionResult) -> RpcError:
    """-32002 with the simulation result as data, as ``sendTransaction`` answers when preflight fails."""
    return RpcError(
        SEND_TRANSACTION_PREFLIGHT_FAILURE,
        f"Transaction simulation failed: {describe_transaction_error(simulation.err)}",
        data_json=simulation.to_json(),
    )


def history_not_available() -> RpcError:
    return RpcError(TRANSACTION_HISTORY_NOT_AVAILABLE, "Transaction history is not available from this node")


def signature_verification_failure() -> RpcError:
    return RpcError(TRANSACTION_SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure")


def error_to_ui(err: Any) -> Any:
    """A solders ``TransactionErrorType`` as its JSON value (``"BlockhashNotFound"``, ``{"InstructionError": ...}``)."""
    if err is None:
        return None
    return json.loads(RpcSimulateTransactionResult(err=err).to_json())["err"]


def error_from_ui(value: Any) -> Any:
    """The inverse of :func:`error_to_ui` (used when the ledger is read back)."""
    if value is None:
        return None
    return RpcSimulateTransactionResult.from_json(json.dumps({"err": value})).err


TRANSACTION_ERROR_TEXT = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "CallChainTooDeep": "Loader call chain is too deep",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidProgramForExecution": "This program may not be used for executing instructions",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "ClusterMaintenance": "Transactions are currently disabled due to cluster maintenance",
    "AccountBorrowOutstanding": "Transaction processing left an account with an outstanding borrowed reference",
    "WouldExceedMaxBlockCostLimit": "Transaction would exceed max Block Cost Limit",
    "UnsupportedVersion": "Transaction version is unsupported",
    "InvalidWritableAccount": "Transaction loads a writable account that cannot be written",
    "WouldExceedMaxAccountCostLimit": "Transaction would exceed max account limit within the block",
    "WouldExceedAccountDataBlockLimit": "Transaction would exceed account data limit within the block",
    "TooManyAccountLocks": "Transaction locked too many accounts",
    "AddressLookupTableNotFound": "Transaction loads an address table account that doesn't exist",
    "InvalidAddressLookupTableOwner": "Transaction loads an address table account with an invalid owner",
    "InvalidAddressLookupTableData": "Transaction loads an address table account with invalid data",
    "InvalidAddressLookupTableIndex": "Transaction address table lookup uses an invalid index",
    "InvalidRentPayingAccount": "Transaction leaves an account with a lower balance than rent-exempt minimum",
    "WouldExceedMaxVoteCostLimit": "Transaction would exceed max Vote Cost Limit",
    "WouldExceedAccountDataTotalLimit": "Transaction would exceed total account data limit",
    "MaxLoadedAccountsDataSizeExceeded": "Transaction exceeded max loaded accounts data size cap",
    "InvalidLoadedAccountsDataSizeLimit": "LoadedAccountsDataSizeLimit set for transaction must be greater than 0.",
    "UnbalancedTransaction": "Sum of account balances before and after transaction do not match",
    "ProgramCacheHitMaxLimit": "Program cache hit max limit",
}

INSTRUCTION_ERROR_TEXT = {
    "GenericError": "generic instruction error",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "AccountDataTooSmall": "account data too small for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "IncorrectProgramId": "incorrect program id for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "UninitializedAccount": "instruction requires an initialized account",
    "UnbalancedInstruction": "sum of account balances before and after instruction do not match",
    "ModifiedProgramId": "instruction illegally modified the program id of an account",
    "ExternalAccountLamportSpend": "instruction spent from the balance of an account it does not own",
    "ExternalAccountDataModified": "instruction modified data of an account it does not own",
    "ReadonlyLamportChange": "instruction changed the balance of a read-only account",
    "ReadonlyDataModified": "instruction modified data of a read-only account",
    "DuplicateAccountIndex": "instruction contains duplicate accounts",
    "ExecutableModified": "instruction changed executable bit of an account",
    "RentEpochModified": "instruction modified rent epoch of an account",
    "NotEnoughAccountKeys": "insufficient account keys for instruction",
    "AccountDataSizeChanged": "program other than the account's owner changed the size of the account data",
    "AccountNotExecutable": "instruction expected an executable account",
    "AccountBorrowFailed": "instruction tries to borrow reference for an account which is already borrowed",
    "AccountBorrowOutstanding": "instruction left account with an outstanding borrowed reference",
    "DuplicateAccountOutOfSync": "instruction modifications of multiply-passed account differ",
    "InvalidError": "program returned invalid error code",
    "ExecutableDataModified": "instruction changed executable accounts data",
    "ExecutableLamportChange": "instruction changed the balance of an executable account",
    "ExecutableAccountNotRentExempt": "executable accounts must be rent exempt",
    "UnsupportedProgramId": "Unsupported program id",
    "CallDepth": "Cross-program invocation call depth too deep",
    "MissingAccount": "An account required by the instruction is missing",
    "ReentrancyNotAllowed": "Cross-program invocation reentrancy not allowed for this instruction",
    "MaxSeedLengthExceeded": "Length of the seed is too long for address generation",
    "InvalidSeeds": "Provided seeds do not result in a valid address",
    "InvalidRealloc": "Failed to reallocate account data",
    "ComputationalBudgetExceeded": "Computational budget exceeded",
    "PrivilegeEscalation": "Cross-program invocation with unauthorized signer or writable account",
    "ProgramEnvironmentSetupFailure": "Failed to create program execution environment",
    "ProgramFailedToComplete": "Program failed to complete",
    "ProgramFailedToCompile": "Program failed to compile",
    "Immutable": "Account is immutable",
    "IncorrectAuthority": "Incorrect authority provided",
    "AccountNotRentExempt": "An account does not have enough lamports to be rent-exempt",
    "InvalidAccountOwner": "Invalid account owner",
    "ArithmeticOverflow": "Program arithmetic overflowed",
    "UnsupportedSysvar": "Unsupported sysvar",
    "IllegalOwner": "Provided owner is not allowed",
    "MaxAccountsDataAllocationsExceeded": "Accounts data allocations exceeded the maximum allowed per transaction",
    "MaxAccountsExceeded": "Max accounts exceeded",
    "MaxInstructionTraceLengthExceeded": "Max instruction trace length exceeded",
    "BuiltinProgramsMustConsumeComputeUnits": "Builtin programs must consume compute units",
}


def describe_instruction_error(value: Any) -> str:
    if isinstance(value, str):
        return INSTRUCTION_ERROR_TEXT.get(value, value)
    if isinstance(value, dict) and "Custom" in value:
        return f"custom program error: {value['Custom']:#x}"
    if isinstance(value, dict) and "BorshIoError" in value:
        return f"Failed to serialize or deserialize account data: {value['BorshIoError']}"
    return json.dumps(value)


def describe_transaction_error(err: Any) -> str:
    """The validator's text for a transaction error (solders object or its JSON value)."""
    value = err if isinstance(err, str | dict) or err is None else error_to_ui(err)
    if isinstance(value, str):
        return TRANSACTION_ERROR_TEXT.get(value, value)
    if isinstance(value, dict) and "InstructionError" in value:
        index, instruction_error = value["InstructionError"]
        return f"Error processing Instruction {index}: {describe_instruction_error(instruction_error)}"
    if isinstance(value, dict) and "DuplicateInstruction" in value:
        return f"Transaction contains a duplicate instruction ({value['DuplicateInstruction']}) that is not allowed"
    if isinstance(value, dict) and "InsufficientFundsForRent" in value:
        index = value["InsufficientFundsForRent"]["account_index"]
        return f"Transaction results in an account ({index}) with insufficient funds for rent"
    if isinstance(value, dict) and "ProgramExecutionTemporarilyRestricted" in value:
        index = value["ProgramExecutionTemporarilyRestricted"]["account_index"]
        return f"Execution of the program referenced by account at index {index} is temporarily restricted."
    return json.dumps(value)
