"""The JSON-RPC surface in-process: every answer must parse with solders' own response types, as clients do."""

import base64
import json

import based58
import pytest
from solders.account import Account
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import to_bytes_versioned
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.rpc.responses import (
    GetAccountInfoJsonParsedResp,
    GetAccountInfoResp,
    GetBalanceResp,
    GetBlockHeightResp,
    GetEpochInfoResp,
    GetFeeForMessageResp,
    GetLatestBlockhashResp,
    GetMinimumBalanceForRentExemptionResp,
    GetMultipleAccountsResp,
    GetSignatureStatusesResp,
    GetSlotResp,
    GetTokenAccountBalanceResp,
    GetTokenAccountsByOwnerJsonParsedResp,
    GetTokenAccountsByOwnerResp,
    GetTokenSupplyResp,
    GetTransactionResp,
    GetVersionResp,
    IsBlockhashValidResp,
    RequestAirdropResp,
    SendTransactionResp,
    SimulateTransactionResp,
)
from solders.transaction import VersionedTransaction
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

from localnet.server import build_dispatcher
from localnet.state import LocalChain
from tests.localnet.helpers import SOL, ChainKit, call, pay, signed


@pytest.fixture
def kit():
    return ChainKit(LocalChain())


@pytest.fixture
def rpc(kit):
    dispatcher = build_dispatcher(kit.chain)
    return lambda method, *params: call(dispatcher, method, *params)


def parsed(resp_type, answer: dict):
    return resp_type.from_json(json.dumps(answer))


def b64(transaction: VersionedTransaction) -> str:
    return base64.b64encode(bytes(transaction)).decode()


def test_cluster_methods_answer_in_the_validator_format(kit, rpc):
    kit.chain.advance_slot()
    assert rpc("getHealth") == {"jsonrpc": "2.0", "result": "ok", "id": 7}
    assert parsed(GetSlotResp, rpc("getSlot", {"commitment": "finalized"})).value == kit.chain.slot
    assert parsed(GetBlockHeightResp, rpc("getBlockHeight")).value == kit.chain.block_height
    assert parsed(GetVersionResp, rpc("getVersion")).value.solana_core == "2.1.0"
    assert parsed(GetEpochInfoResp, rpc("getEpochInfo")).value.absolute_slot == kit.chain.slot
    assert rpc("getTransactionCount")["result"] == kit.chain.transaction_count == 2
    latest = parsed(GetLatestBlockhashResp, rpc("getLatestBlockhash", {"commitment": "confirmed"}))
    assert latest.value.blockhash == kit.chain.blockhash
    assert latest.value.last_valid_block_height == kit.chain.block_height + 150
    assert latest.context.slot == kit.chain.slot
    assert parsed(IsBlockhashValidResp, rpc("isBlockhashValid", str(kit.chain.blockhash))).value is True
    assert rpc("isBlockhashValid", "nope")["error"]["code"] == -32602
    rent = parsed(GetMinimumBalanceForRentExemptionResp, rpc("getMinimumBalanceForRentExemption", 165))
    assert rent.value == 2_039_280


def test_min_context_slot_ahead_of_the_chain_is_refused(kit, rpc):
    answer = rpc("getBalance", str(kit.payer.pubkey()), {"minContextSlot": kit.chain.slot + 5})
    assert answer["error"] == {
        "code": -32016,
        "message": "Minimum context slot has not been reached",
        "data": {"contextSlot": kit.chain.slot},
    }
    assert rpc("getSlot", {"minContextSlot": kit.chain.slot})["result"] == kit.chain.slot


def test_fees_are_per_signature_and_null_for_an_unknown_blockhash(kit, rpc):
    message = kit.tx(pay(kit.payer, Keypair().pubkey(), 1), signers=[]).message
    encoded = base64.b64encode(to_bytes_versioned(message)).decode()
    assert parsed(GetFeeForMessageResp, rpc("getFeeForMessage", encoded)).value == 5000
    stale = signed(kit.payer, [pay(kit.payer, Keypair().pubkey(), 1)], Hash.new_unique()).message
    stale_encoded = base64.b64encode(to_bytes_versioned(stale)).decode()
    assert parsed(GetFeeForMessageResp, rpc("getFeeForMessage", stale_encoded)).value is None
    assert rpc("getFeeForMessage", "!!")["error"]["code"] == -32602
    assert rpc("getFeeForMessage", "AAAA")["error"]["code"] == -32602


def test_accounts_are_served_in_every_encoding(kit, rpc):
    owner = Keypair().pubkey()
    kit.send(kit.create_ata(owner), kit.mint_to(owner, 2_010_000_000))
    ata, mint = str(kit.ata(owner)), str(kit.mint.pubkey())
    info = parsed(GetAccountInfoResp, rpc("getAccountInfo", ata, {"encoding": "base64"})).value
    assert info.owner == TOKEN_PROGRAM_ID and len(info.data) == 165
    raw = rpc("getAccountInfo", ata, {"encoding": "base64"})["result"]["value"]
    assert raw["space"] == 165 and raw["data"][1] == "base64"
    sliced = rpc("getAccountInfo", mint, {"encoding": "base58", "dataSlice": {"offset": 36, "length": 8}})
    assert based58.b58decode(sliced["result"]["value"]["data"][0].encode()) == (2_010_000_000).to_bytes(8, "little")
    legacy = rpc("getAccountInfo", str(kit.payer.pubkey()))["result"]["value"]["data"]
    assert legacy == ""
    too_big = rpc("getAccountInfo", ata, {"encoding": "base58"})
    assert too_big["error"]["code"] == -32600
    token = parsed(GetAccountInfoJsonParsedResp, rpc("getAccountInfo", ata, {"encoding": "jsonParsed"})).value
    assert token.data.parsed["info"]["tokenAmount"]["uiAmountString"] == "2.01"
    assert token.data.parsed["info"]["owner"] == str(owner)
    mint_info = rpc("getAccountInfo", mint, {"encoding": "jsonParsed"})["result"]["value"]["data"]["parsed"]
    assert mint_info == {
        "info": {
            "decimals": 9, "freezeAuthority": None, "isInitialized": True,
            "mintAuthority": str(kit.payer.pubkey()), "supply": "2010000000",
        },
        "type": "mint",
    }  # fmt: skip
    plain = rpc("getAccountInfo", str(kit.payer.pubkey()), {"encoding": "jsonParsed"})["result"]["value"]
    assert plain["data"] == ["", "base64"]
    assert rpc("getAccountInfo", str(Keypair().pubkey()), {"encoding": "base64"})["result"]["value"] is None
    assert rpc("getAccountInfo", ata, {"encoding": "base64+zstd"})["error"]["code"] == -32602
    assert rpc("getAccountInfo", ata, {"encoding": "hex"})["error"]["code"] == -32602
    bad_slice = rpc("getAccountInfo", ata, {"encoding": "base64", "dataSlice": {"offset": -1, "length": 2}})
    assert bad_slice["error"]["code"] == -32602


def test_multiple_accounts_keep_their_order_and_nulls(kit, rpc):
    missing = Keypair().pubkey()
    answer = rpc(
        "getMultipleAccounts", [str(kit.payer.pubkey()), str(missing), str(kit.mint.pubkey())], {"encoding": "base64"}
    )
    accounts = parsed(GetMultipleAccountsResp, answer).value
    assert accounts[1] is None
    assert accounts[0].lamports == kit.chain.get_balance(kit.payer.pubkey())
    assert accounts[2].owner == TOKEN_PROGRAM_ID
    assert rpc("getMultipleAccounts", [str(missing)] * 101)["error"]["message"] == "Too many inputs provided; max 100"
    assert rpc("getMultipleAccounts", "x")["error"]["code"] == -32602


def test_balances_and_token_amounts_are_exact(kit, rpc):
    owner = Keypair().pubkey()
    kit.send(kit.create_ata(owner), kit.mint_to(owner, 123_456_789_012))
    assert parsed(GetBalanceResp, rpc("getBalance", str(owner))).value == 0
    balance = parsed(GetTokenAccountBalanceResp, rpc("getTokenAccountBalance", str(kit.ata(owner)))).value
    assert (balance.amount, balance.decimals, balance.ui_amount_string) == ("123456789012", 9, "123.456789012")
    supply = parsed(GetTokenSupplyResp, rpc("getTokenSupply", str(kit.mint.pubkey()))).value
    assert supply.amount == "123456789012"


@pytest.mark.parametrize(
    ("method", "target", "message"),
    [
        ("getTokenAccountBalance", "missing", "Invalid param: could not find account"),
        ("getTokenAccountBalance", "payer", "Invalid param: not a Token account"),
        ("getTokenSupply", "missing", "Invalid param: could not find mint"),
        ("getTokenSupply", "payer", "Invalid param: not a Token mint"),
        ("getBalance", "garbage", "Invalid param: Invalid"),
        ("getBalance", "short", "Invalid param: WrongSize"),
    ],
)
def test_token_methods_refuse_what_is_not_a_token_account(kit, rpc, method, target, message):
    address = {
        "missing": str(Keypair().pubkey()), "payer": str(kit.payer.pubkey()),
        "garbage": "0OIl" * 11, "short": "abc",
    }[target]  # fmt: skip
    assert rpc(method, address)["error"] == {"code": -32602, "message": message}


def test_token_accounts_are_found_by_owner_with_a_mint_or_program_filter(kit, rpc):
    owner, other = Keypair().pubkey(), Keypair().pubkey()
    kit.send(kit.create_ata(owner), kit.create_ata(other), kit.mint_to(owner, 5), kit.mint_to(other, 6))
    by_mint = rpc("getTokenAccountsByOwner", str(owner), {"mint": str(kit.mint.pubkey())}, {"encoding": "base64"})
    accounts = parsed(GetTokenAccountsByOwnerResp, by_mint).value
    assert [a.pubkey for a in accounts] == [kit.ata(owner)]
    by_program = rpc(
        "getTokenAccountsByOwner", str(owner), {"programId": str(TOKEN_PROGRAM_ID)}, {"encoding": "jsonParsed"}
    )
    parsed_accounts = parsed(GetTokenAccountsByOwnerJsonParsedResp, by_program).value
    assert parsed_accounts[0].account.data.parsed["info"]["tokenAmount"]["amount"] == "5"
    none = rpc("getTokenAccountsByOwner", str(owner), {"programId": str(TOKEN_2022_PROGRAM_ID)})
    assert none["result"]["value"] == []
    errors = [
        rpc("getTokenAccountsByOwner", str(owner), {"programId": str(kit.payer.pubkey())}),
        rpc("getTokenAccountsByOwner", str(owner), {"mint": str(Keypair().pubkey())}),
        rpc("getTokenAccountsByOwner", str(owner), {"owner": "x"}),
        rpc("getTokenAccountsByOwner", str(owner), "x"),
    ]
    assert [e["error"]["code"] for e in errors] == [-32602] * 4


def test_sending_accepts_base64_and_base58_and_answers_the_signature(kit, rpc):
    recipient = Keypair().pubkey()
    first = kit.tx(pay(kit.payer, recipient, 10))
    answer = rpc("sendTransaction", b64(first), {"encoding": "base64", "preflightCommitment": "confirmed"})
    assert parsed(SendTransactionResp, answer).value == first.signatures[0]
    second = kit.tx(pay(kit.payer, recipient, 20))
    answer = rpc("sendTransaction", based58.b58encode(bytes(second)).decode())
    assert answer["result"] == str(second.signatures[0])
    assert kit.chain.get_balance(recipient) == 30


def test_a_preflight_failure_is_32002_with_the_simulation_as_data(kit, rpc):
    before = kit.chain.get_balance(kit.payer.pubkey())
    answer = rpc(
        "sendTransaction", b64(kit.tx(pay(kit.payer, Keypair().pubkey(), 1_000 * SOL))), {"encoding": "base64"}
    )
    error = parsed(SendTransactionResp, answer)
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert answer["error"]["code"] == -32002
    assert error.data.err is not None and error.data.units_consumed == 150
    assert any("insufficient lamports" in line for line in error.data.logs)
    assert set(answer["error"]["data"]) >= {"err", "logs", "accounts", "unitsConsumed", "returnData"}
    assert kit.chain.get_balance(kit.payer.pubkey()) == before


def test_a_forged_signature_is_32003(kit, rpc):
    genuine = kit.tx(pay(kit.payer, Keypair().pubkey(), 1))
    forged = VersionedTransaction.populate(genuine.message, [Keypair().sign_message(b"other")])
    answer = rpc("sendTransaction", b64(forged), {"encoding": "base64"})
    assert answer["error"] == {"code": -32003, "message": "Transaction signature verification failure"}


def test_oversize_and_malformed_transactions_are_refused_as_invalid_params(kit, rpc):
    huge = "A" * 1648
    assert rpc("sendTransaction", huge, {"encoding": "base64"})["error"] == {
        "code": -32602,
        "message": "base64 encoded solana_transaction::versioned::VersionedTransaction too large: 1648 bytes "
        "(max: encoded/raw 1644/1232)",
    }
    just_over = base64.b64encode(bytes(1233)).decode()
    assert rpc("sendTransaction", just_over, {"encoding": "base64"})["error"]["message"] == (
        "decoded solana_transaction::versioned::VersionedTransaction too large: 1233 bytes (max: 1232 bytes)"
    )
    assert "base58 encoded" in rpc("sendTransaction", "1" * 1700)["error"]["message"]
    assert "invalid base64" in rpc("sendTransaction", "@@@@", {"encoding": "base64"})["error"]["message"]
    assert "invalid base58" in rpc("sendTransaction", "0OIl")["error"]["message"]
    assert "failed to deserialize" in rpc("sendTransaction", "AQID", {"encoding": "base64"})["error"]["message"]
    assert "unsupported encoding" in rpc("sendTransaction", "AQID", {"encoding": "hex"})["error"]["message"]
    assert rpc("sendTransaction", 5)["error"]["code"] == -32602
    unsigned = VersionedTransaction.populate(kit.tx().message, [])
    assert "sanitize" in rpc("sendTransaction", b64(unsigned), {"encoding": "base64"})["error"]["message"]


def test_simulation_answers_with_context_logs_and_accounts(kit, rpc):
    recipient = Keypair().pubkey()
    transaction = kit.tx(pay(kit.payer, recipient, 55))
    config = {
        "encoding": "base64",
        "sigVerify": True,
        "accounts": {"addresses": [str(recipient)], "encoding": "base64"},
    }
    result = parsed(SimulateTransactionResp, rpc("simulateTransaction", b64(transaction), config))
    assert result.value.err is None and result.value.accounts[0].lamports == 55
    assert result.context.slot == kit.chain.slot
    replaced = rpc("simulateTransaction", b64(transaction), {"encoding": "base64", "replaceRecentBlockhash": True})
    assert replaced["result"]["value"]["replacementBlockhash"]["blockhash"] == str(kit.chain.blockhash)
    parsed(SimulateTransactionResp, replaced)
    both = rpc(
        "simulateTransaction",
        b64(transaction),
        {"encoding": "base64", "sigVerify": True, "replaceRecentBlockhash": True},
    )
    assert both["error"]["code"] == -32602
    assert kit.chain.get_balance(recipient) == 0


def test_signature_statuses_report_landed_failed_and_unknown(kit, rpc):
    landed = kit.send(pay(kit.payer, Keypair().pubkey(), 1))
    failed = kit.send(pay(kit.payer, Keypair().pubkey(), 1_000 * SOL), preflight=False)
    unknown = str(Keypair().sign_message(b"never sent"))
    answer = rpc("getSignatureStatuses", [landed, failed, unknown], {"searchTransactionHistory": True})
    statuses = parsed(GetSignatureStatusesResp, answer).value
    assert statuses[0].err is None and statuses[0].slot == kit.chain.slot
    assert statuses[1].err is not None
    assert statuses[2] is None
    first = answer["result"]["value"][0]
    assert first == {"slot": kit.chain.slot, "confirmations": None, "status": {"Ok": None}, "err": None,
                     "confirmationStatus": "finalized"}  # fmt: skip
    assert answer["result"]["value"][1]["status"] == {"Err": {"InstructionError": [0, {"Custom": 1}]}}
    assert rpc("getSignatureStatuses", [unknown] * 257)["error"]["message"] == "Too many inputs provided; max 256"
    assert rpc("getSignatureStatuses", ["abc"])["error"] == {"code": -32602, "message": "Invalid param: Invalid"}
    assert rpc("getSignatureStatuses", "abc")["error"]["code"] == -32602


def test_get_transaction_returns_the_landed_transaction_with_its_meta(kit, rpc):
    owner = Keypair().pubkey()
    signature = kit.send(kit.create_ata(owner), kit.mint_to(owner, 9))
    legacy = kit.tx(pay(kit.payer, owner, 1), legacy=True)
    legacy_signature = kit.chain.send_transaction(legacy, bytes(legacy))
    answer = rpc("getTransaction", signature, {"encoding": "json", "maxSupportedTransactionVersion": 0})
    result = parsed(GetTransactionResp, answer).value
    assert result.slot == kit.chain.slot
    meta = result.transaction.meta
    assert meta.fee == 5000 and meta.err is None and meta.compute_units_consumed > 0
    assert answer["result"]["version"] == 0
    assert answer["result"]["transaction"]["message"]["addressTableLookups"] == []
    binary = rpc("getTransaction", signature, {"encoding": "base64", "maxSupportedTransactionVersion": 0})
    assert base64.b64decode(binary["result"]["transaction"][0]) == bytes(kit.chain.transaction(
        bytes(VersionedTransaction.from_bytes(base64.b64decode(binary["result"]["transaction"][0])).signatures[0])
    ).raw)  # fmt: skip
    assert rpc("getTransaction", signature, {"encoding": "base58", "maxSupportedTransactionVersion": 0})["result"]
    assert rpc("getTransaction", signature)["error"]["code"] == -32015
    assert rpc("getTransaction", signature, {"maxSupportedTransactionVersion": 1})["result"]["version"] == 0
    plain = rpc("getTransaction", legacy_signature)
    assert "version" not in plain["result"] and parsed(GetTransactionResp, plain).value.slot == kit.chain.slot
    assert (
        rpc("getTransaction", legacy_signature, {"maxSupportedTransactionVersion": 0})["result"]["version"] == "legacy"
    )
    assert rpc("getTransaction", str(Keypair().sign_message(b"x")))["result"] is None
    assert rpc("getTransaction", signature, {"encoding": "hex"})["error"]["code"] == -32602


def test_airdrops_land_and_answer_their_signature(kit, rpc):
    recipient = Keypair().pubkey()
    answer = rpc("requestAirdrop", str(recipient), 2 * SOL, {"commitment": "finalized"})
    signature = parsed(RequestAirdropResp, answer).value
    assert kit.chain.get_balance(recipient) == 2 * SOL
    assert rpc("getSignatureStatuses", [str(signature)])["result"]["value"][0]["err"] is None
    assert rpc("requestAirdrop", str(recipient), -1)["error"]["code"] == -32602
    assert rpc("requestAirdrop", str(recipient), True)["error"]["code"] == -32602


def test_parameters_of_the_wrong_type_are_invalid_params(kit, rpc):
    answers = [
        rpc("getBalance", 5),
        rpc("getBalance", str(kit.payer.pubkey()), "finalized"),
        rpc("getSignatureStatuses", [5]),
        rpc("getFeeForMessage", 5),
        rpc("getSlot", {"minContextSlot": -1}),
    ]
    assert [answer["error"]["code"] for answer in answers] == [-32602] * 5


def test_a_token_account_of_a_vanished_mint_has_no_balance(kit, rpc):
    orphan, owner = Keypair().pubkey(), Keypair().pubkey()
    data = bytes(Keypair().pubkey()) + bytes(owner) + (7).to_bytes(8, "little") + bytes(36) + b"\x01" + bytes(56)
    kit.chain.set_account(orphan, Account(2_039_280, data, TOKEN_PROGRAM_ID))
    assert rpc("getTokenAccountBalance", str(orphan))["error"]["message"] == "Invalid param: could not find mint"
    fallback = rpc("getAccountInfo", str(orphan), {"encoding": "jsonParsed"})["result"]["value"]["data"]
    assert fallback[1] == "base64"


def test_return_data_is_reported_by_simulation_and_get_transaction(kit, rpc):
    data_size = Instruction(TOKEN_PROGRAM_ID, bytes([21]), [AccountMeta(kit.mint.pubkey(), False, False)])
    simulated = rpc("simulateTransaction", b64(kit.tx(data_size)), {"encoding": "base64"})["result"]["value"]
    assert simulated["returnData"] == {"programId": str(TOKEN_PROGRAM_ID), "data": ["pQAAAAAAAAA=", "base64"]}
    signature = kit.send(data_size)
    meta = rpc("getTransaction", signature, {"maxSupportedTransactionVersion": 0})["result"]["meta"]
    assert meta["returnData"] == simulated["returnData"]
    assert int.from_bytes(base64.b64decode(meta["returnData"]["data"][0]), "little") == 165
