"""Pure units of the localnet: token layouts, exact UI amounts, error texts, the signature history."""

import struct

import pytest
from solders.account import Account
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction_status import (
    InstructionErrorBorshIO,
    InstructionErrorCustom,
    InstructionErrorFieldless,
    TransactionErrorDuplicateInstruction,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
    TransactionErrorProgramExecutionTemporarilyRestricted,
)
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

from localnet.errors import describe_transaction_error, error_from_ui, error_to_ui
from localnet.history import SignatureHistory, TransactionArchive
from localnet.tokens import parse_mint, parse_token_account, parsed_token_json, ui_amount_string

MINT = Keypair().pubkey()
OWNER = Keypair().pubkey()
DELEGATE = Keypair().pubkey()


def some(pubkey: Pubkey | None) -> bytes:
    return struct.pack("<I", 1) + bytes(pubkey) if pubkey else bytes(36)


def token_account_data(*, amount=5, delegate=None, state=1, native=None, delegated=0, close=None) -> bytes:
    native_part = struct.pack("<IQ", 1, native) if native is not None else bytes(12)
    return (
        bytes(MINT) + bytes(OWNER) + struct.pack("<Q", amount) + some(delegate) + bytes([state]) + native_part
        + struct.pack("<Q", delegated) + some(close)
    )  # fmt: skip


def mint_data(*, supply=10, decimals=2, initialized=True, freeze=None) -> bytes:
    return some(OWNER) + struct.pack("<QBB", supply, decimals, int(initialized)) + some(freeze)


def account(data: bytes, owner: Pubkey = TOKEN_PROGRAM_ID) -> Account:
    return Account(1_000_000, data, owner)


@pytest.mark.parametrize(
    ("amount", "decimals", "text"),
    [(2_010_000_000, 9, "2.01"), (0, 9, "0"), (1, 9, "0.000000001"), (1000, 0, "1000"), (10**20, 6, "100000000000000")],
)
def test_ui_amount_strings_are_exact_and_trimmed(amount, decimals, text):
    assert ui_amount_string(amount, decimals) == text


def test_a_token_account_with_every_optional_field_parses_fully():
    data = token_account_data(delegate=DELEGATE, state=2, native=2_039_280, delegated=3, close=DELEGATE)
    parsed = parsed_token_json(account(data), lambda mint: 2 if mint == MINT else None)
    info = parsed["parsed"]["info"]
    assert parsed["program"] == "spl-token" and parsed["space"] == 165
    assert info["state"] == "frozen" and info["isNative"] is True
    assert info["delegate"] == str(DELEGATE) and info["delegatedAmount"]["uiAmountString"] == "0.03"
    assert info["rentExemptReserve"]["amount"] == "2039280"
    assert info["closeAuthority"] == str(DELEGATE)
    assert info["tokenAmount"] == {"amount": "5", "decimals": 2, "uiAmount": 0.05, "uiAmountString": "0.05"}


def test_a_token_account_whose_mint_is_unknown_is_not_parsed():
    assert parsed_token_json(account(token_account_data()), lambda mint: None) is None


def test_uninitialized_and_foreign_accounts_are_not_tokens():
    assert parse_token_account(account(token_account_data(state=0))) is None
    assert parse_token_account(account(token_account_data(), owner=OWNER)) is None
    assert parse_token_account(None) is None
    assert parse_mint(account(mint_data(initialized=False))) is None
    assert parsed_token_json(account(b"", owner=OWNER), lambda mint: 9) is None
    assert parsed_token_json(account(bytes(10)), lambda mint: 9) is None


def test_token_2022_layouts_with_extensions_are_recognised_by_their_account_type():
    with_extension = token_account_data() + bytes([2]) + bytes(4)
    assert parse_token_account(account(with_extension, TOKEN_2022_PROGRAM_ID)).amount == 5
    mint_with_extension = mint_data(freeze=DELEGATE).ljust(165, b"\0") + bytes([1]) + bytes(4)
    state = parse_mint(account(mint_with_extension, TOKEN_2022_PROGRAM_ID))
    assert (state.supply, state.decimals, state.freeze_authority) == (10, 2, DELEGATE)
    parsed = parsed_token_json(account(mint_with_extension, TOKEN_2022_PROGRAM_ID), lambda mint: None)
    assert parsed["program"] == "spl-token-2022" and parsed["parsed"]["info"]["freezeAuthority"] == str(DELEGATE)
    assert parse_token_account(account(mint_with_extension, TOKEN_2022_PROGRAM_ID)) is None


@pytest.mark.parametrize(
    ("err", "text"),
    [
        (TransactionErrorFieldless.BlockhashNotFound, "Blockhash not found"),
        (TransactionErrorInstructionError(2, InstructionErrorCustom(16)),
         "Error processing Instruction 2: custom program error: 0x10"),
        (TransactionErrorInstructionError(0, InstructionErrorFieldless.InvalidAccountData),
         "Error processing Instruction 0: invalid account data for instruction"),
        (TransactionErrorInstructionError(1, InstructionErrorBorshIO("bad")),
         "Error processing Instruction 1: Failed to serialize or deserialize account data: bad"),
        (TransactionErrorDuplicateInstruction(3),
         "Transaction contains a duplicate instruction (3) that is not allowed"),
        (TransactionErrorInsufficientFundsForRent(4),
         "Transaction results in an account (4) with insufficient funds for rent"),
        (TransactionErrorProgramExecutionTemporarilyRestricted(5),
         "Execution of the program referenced by account at index 5 is temporarily restricted."),
    ],
)  # fmt: skip
def test_transaction_errors_read_as_the_validator_writes_them(err, text):
    assert describe_transaction_error(err) == text
    assert error_from_ui(error_to_ui(err)) == err


def test_unknown_error_shapes_are_shown_verbatim():
    assert describe_transaction_error({"Future": 1}) == '{"Future": 1}'
    assert describe_transaction_error({"InstructionError": [0, {"Future": 2}]}) == (
        'Error processing Instruction 0: {"Future": 2}'
    )
    assert error_to_ui(None) is None and error_from_ui(None) is None


def test_the_signature_history_round_trips_through_its_dump():
    history = SignatureHistory()
    failed = TransactionErrorFieldless.AccountInUse
    history.record(b"a" * 64, 5)
    history.record(b"b" * 64, 6, failed)
    restored = SignatureHistory.load(*history.dump())
    assert restored.status(b"a" * 64) == (5, None)
    assert restored.status(b"b" * 64) == (6, failed)
    assert restored.status(b"c" * 64) is None
    assert len(restored) == 2 and b"a" * 64 in restored


def test_an_archive_without_capacity_keeps_nothing():
    archive = TransactionArchive(0)
    archive.add(b"a" * 64, object())
    assert len(archive) == 0 and archive.get(b"a" * 64) is None
