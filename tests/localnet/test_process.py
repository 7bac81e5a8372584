"""The localnet command as a real process (``python -m localnet``, the conftest fixtures), driven by solana-py's
own Client."""

import base64
import time

import httpx
import pytest
from solana.rpc.api import Client
from solana.rpc.core import RPCException
from solana.rpc.types import TokenAccountOpts, TxOpts
from solders.address_lookup_table_account import AddressLookupTable, AddressLookupTableAccount
from solders.keypair import Keypair
from solders.rpc.errors import InvalidParamsMessage, SendTransactionPreflightFailureMessage
from solders.transaction_status import TransactionConfirmationStatus, TransactionErrorFieldless
from spl.token.constants import MINT_LEN

from tests.localnet.helpers import (
    SOL,
    create_ata,
    create_mint_instructions,
    lookup_table_instructions,
    mint_to,
    pay,
    signed,
)

SKIP_CONFIRMATION = TxOpts(skip_confirmation=True)


def funded(client: Client, lamports: int = 10 * SOL) -> Keypair:
    payer = Keypair()
    client.confirm_transaction(client.request_airdrop(payer.pubkey(), lamports).value)
    return payer


def new_mint(client: Client, payer: Keypair, decimals: int = 9) -> Keypair:
    mint = Keypair()
    rent = client.get_minimum_balance_for_rent_exemption(MINT_LEN).value
    instructions = create_mint_instructions(payer.pubkey(), mint.pubkey(), rent=rent, decimals=decimals)
    blockhash = client.get_latest_blockhash().value.blockhash
    client.confirm_transaction(client.send_transaction(signed(payer, instructions, blockhash, mint)).value)
    return mint


def preflight_error(excinfo) -> SendTransactionPreflightFailureMessage:
    error = excinfo.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    return error


def test_a_sol_transfer_and_a_token_mint_land_with_exact_balances(localnet):
    client = Client(localnet.url)
    payer, owner = funded(client), Keypair().pubkey()
    blockhash = client.get_latest_blockhash().value.blockhash
    client.confirm_transaction(client.send_transaction(signed(payer, [pay(payer, owner, 1_234_567)], blockhash)).value)
    assert client.get_balance(owner).value == 1_234_567
    assert client.get_balance(payer.pubkey()).value == 10 * SOL - 1_234_567 - 5000

    mint = new_mint(client, payer)
    minting = [
        create_ata(payer.pubkey(), owner, mint.pubkey()),
        mint_to(mint.pubkey(), owner, payer.pubkey(), 2_010_000_000),
    ]
    signature = client.send_transaction(signed(payer, minting, client.get_latest_blockhash().value.blockhash)).value
    status = client.confirm_transaction(signature).value[0]
    assert status.err is None and status.confirmation_status == TransactionConfirmationStatus.Finalized
    accounts = client.get_token_accounts_by_owner_json_parsed(owner, _mint_filter(mint)).value
    assert accounts[0].account.data.parsed["info"]["tokenAmount"]["amount"] == "2010000000"
    assert client.get_token_supply(mint.pubkey()).value.amount == "2010000000"


def _mint_filter(mint: Keypair) -> TokenAccountOpts:
    return TokenAccountOpts(mint=mint.pubkey())


def test_a_failing_transaction_is_refused_by_preflight_with_its_logs(localnet):
    client = Client(localnet.url)
    payer = funded(client, SOL)
    transaction = signed(
        payer, [pay(payer, Keypair().pubkey(), 5 * SOL)], client.get_latest_blockhash().value.blockhash
    )
    with pytest.raises(RPCException) as excinfo:
        client.send_transaction(transaction)
    error = preflight_error(excinfo)
    assert error.message.startswith("Transaction simulation failed: Error processing Instruction 0")
    assert any("insufficient lamports" in line for line in error.data.logs)
    assert client.get_balance(payer.pubkey()).value == SOL
    assert client.get_signature_statuses([transaction.signatures[0]]).value == [None]


def test_an_oversize_transaction_is_refused(localnet):
    client = Client(localnet.url)
    payer = funded(client, SOL)
    blockhash = client.get_latest_blockhash().value.blockhash
    oversize = signed(payer, [pay(payer, Keypair().pubkey(), 1 + i) for i in range(40)], blockhash)
    assert len(bytes(oversize)) > 1232
    with pytest.raises(RPCException) as excinfo:
        client.send_raw_transaction(bytes(oversize))
    error = excinfo.value.args[0]
    assert isinstance(error, InvalidParamsMessage)
    assert "too large" in error.message and "1232" in error.message
    assert client.get_balance(payer.pubkey()).value == SOL


def test_an_unknown_signature_has_no_status(localnet):
    client = Client(localnet.url)
    unknown = Keypair().sign_message(b"never sent")
    assert client.get_signature_statuses([unknown], search_transaction_history=True).value == [None]


def test_json_rpc_errors_and_batches_over_http(localnet):
    assert httpx.post(localnet.url, content=b"{oops").json()["error"]["code"] == -32700
    unknown = httpx.post(localnet.url, json={"jsonrpc": "2.0", "id": 1, "method": "getEverything"}).json()
    assert unknown["error"] == {"code": -32601, "message": "Method not found"}
    batch = httpx.post(
        localnet.url,
        json=[
            {"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
            {"jsonrpc": "2.0", "id": 2, "method": "getBlockHeight"},
        ],
    ).json()
    assert [answer["id"] for answer in batch] == [1, 2]
    assert batch[1]["result"] <= batch[0]["result"] + 1


def test_a_v0_transaction_through_a_lookup_table_mints_exactly(localnet):
    client = Client(localnet.url)
    payer = funded(client)
    mint = new_mint(client, payer)
    owners = [Keypair().pubkey() for _ in range(20)]
    recent_slot = client.get_slot().value
    table, instructions = lookup_table_instructions(payer.pubkey(), recent_slot, [mint.pubkey(), *owners])
    client.confirm_transaction(
        client.send_transaction(signed(payer, instructions, client.get_latest_blockhash().value.blockhash)).value
    )
    creating = [create_ata(payer.pubkey(), owner, mint.pubkey()) for owner in owners]
    for start in range(0, 20, 5):
        blockhash = client.get_latest_blockhash().value.blockhash
        client.confirm_transaction(client.send_transaction(signed(payer, creating[start : start + 5], blockhash)).value)
    while client.get_slot().value <= recent_slot + 1:  # the extension is usable from the next slot on
        time.sleep(0.05)
    lookup = AddressLookupTableAccount(
        table, AddressLookupTable.deserialize(client.get_account_info(table).value.data).addresses
    )
    minting = [mint_to(mint.pubkey(), owner, payer.pubkey(), 1_000_000_001 + i) for i, owner in enumerate(owners)]
    transaction = signed(payer, minting, client.get_latest_blockhash().value.blockhash, lookup_tables=[lookup])
    client.confirm_transaction(client.send_transaction(transaction).value)
    assert client.get_token_supply(mint.pubkey()).value.amount == str(sum(1_000_000_001 + i for i in range(20)))


def test_replays_are_rejected_beyond_litesvm_history_and_after_a_restart(make_localnet):
    chain = make_localnet(slot_ms=400)
    client = Client(chain.url)
    payer, recipient = funded(client), Keypair().pubkey()
    blockhash = client.get_latest_blockhash().value.blockhash
    first = signed(payer, [pay(payer, recipient, 1)], blockhash)
    client.confirm_transaction(client.send_transaction(first).value)
    for lamports in range(2, 452):  # more than LiteSVM would remember by itself
        client.send_raw_transaction(
            bytes(signed(payer, [pay(payer, recipient, lamports)], blockhash)), SKIP_CONFIRMATION
        )
    with pytest.raises(RPCException) as excinfo:
        client.send_transaction(first)
    assert preflight_error(excinfo).data.err == TransactionErrorFieldless.AlreadyProcessed

    chain.restart()

    client = Client(chain.url)
    with pytest.raises(RPCException) as excinfo:
        client.send_raw_transaction(bytes(first))
    assert preflight_error(excinfo).data.err == TransactionErrorFieldless.AlreadyProcessed
    assert client.get_balance(recipient).value == sum(range(1, 452))


def test_an_expired_blockhash_is_rejected(make_localnet):
    chain = make_localnet(slot_ms=10)
    client = Client(chain.url)
    payer = funded(client, SOL)
    latest = client.get_latest_blockhash().value
    transaction = signed(payer, [pay(payer, Keypair().pubkey(), 1)], latest.blockhash)
    deadline = time.monotonic() + 120
    while client.get_block_height().value <= latest.last_valid_block_height and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get_block_height().value > latest.last_valid_block_height
    with pytest.raises(RPCException) as excinfo:
        client.send_transaction(transaction)
    assert preflight_error(excinfo).data.err == TransactionErrorFieldless.BlockhashNotFound
    assert client.get_balance(payer.pubkey()).value == SOL


def test_the_ledger_survives_a_restart(make_localnet):
    chain = make_localnet(slot_ms=50)
    client = Client(chain.url)
    payer, owner = funded(client), Keypair().pubkey()
    mint = new_mint(client, payer, decimals=6)
    minting = [
        create_ata(payer.pubkey(), owner, mint.pubkey()),
        mint_to(mint.pubkey(), owner, payer.pubkey(), 7_000_001, 6),
    ]
    minted = client.send_transaction(signed(payer, minting, client.get_latest_blockhash().value.blockhash)).value
    client.confirm_transaction(minted)
    failing = signed(payer, [pay(payer, owner, 100 * SOL)], client.get_latest_blockhash().value.blockhash)
    failed = client.send_raw_transaction(bytes(failing), TxOpts(skip_preflight=True, skip_confirmation=True)).value
    pending = signed(payer, [pay(payer, owner, 3)], client.get_latest_blockhash().value.blockhash)
    payer_balance, slot = client.get_balance(payer.pubkey()).value, client.get_slot().value

    chain.restart()
    assert chain.process.poll() is None

    client = Client(chain.url)
    assert client.get_slot().value >= slot
    assert client.get_balance(payer.pubkey()).value == payer_balance
    ata = client.get_token_accounts_by_owner(owner, _mint_filter(mint)).value[0].pubkey
    assert client.get_token_account_balance(ata).value.amount == "7000001"
    assert client.get_token_supply(mint.pubkey()).value.ui_amount_string == "7.000001"
    statuses = client.get_signature_statuses([minted, failed], search_transaction_history=True).value
    assert statuses[0].err is None and statuses[1].err is not None
    assert client.get_transaction(minted, max_supported_transaction_version=0).value.slot == statuses[0].slot
    # A transaction signed before the restart on a still-valid blockhash lands after it.
    client.confirm_transaction(client.send_transaction(pending).value)
    assert client.get_balance(owner).value == 3


def test_sigterm_stops_the_process_cleanly_and_saves(make_localnet):
    chain = make_localnet(slot_ms=400)
    client = Client(chain.url)
    recipient = Keypair().pubkey()
    client.confirm_transaction(client.request_airdrop(recipient, 42).value)
    chain.stop()
    assert chain.process.returncode == 0
    assert chain.ledger.exists()
    chain.start()
    assert Client(chain.url).get_balance(recipient).value == 42
    encoded = base64.b64encode(b"\x00").decode()
    answer = httpx.post(
        chain.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "sendTransaction", "params": [encoded, {"encoding": "base64"}]},
    )
    assert answer.json()["error"]["code"] == -32602
