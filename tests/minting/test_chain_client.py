"""ChainClient against the real localnet (LiteSVM running the SPL Token program), read back through solana-py."""

import collections

import pytest
from solders.message import MessageV0
from solders.transaction import VersionedTransaction

from minting.chain import MintRequest
from minting.chain import instructions as ix
from minting.chain.packing import PACKET_DATA_SIZE as PACKET_DATA_SIZE_LIMIT
from tests.minting.test_chain_support import balance, land, new_client, supply, wallets

ATA_PROGRAM = ix.ASSOCIATED_TOKEN_PROGRAM_ID
TOKEN_PROGRAM = ix.TOKEN_PROGRAM_ID


def programs_called(signed):
    message = VersionedTransaction.from_bytes(signed.raw).message
    return collections.Counter(message.account_keys[i.program_id_index] for i in message.instructions)


@pytest.fixture
def client(localnet):
    client = new_client(localnet.url)
    yield client
    client.close()


def test_batched_mints_to_new_and_existing_wallets_give_exact_balances_and_supply(client, localnet):
    existing, new = wallets(12), wallets(18)
    land(client, client.build_mints([MintRequest(w, 5) for w in existing], memo="setup"))
    requests = [MintRequest(w, 1_000_000_001) for w in existing + new]
    requests += [MintRequest(w, 2_010_000_000) for w in new[:6] + existing[:3]]  # duplicates: merged

    signed = client.build_mints(requests, memo="batch-1")

    creates = sum(programs_called(s)[ATA_PROGRAM] for s in signed)
    mints = sum(programs_called(s)[TOKEN_PROGRAM] for s in signed)
    assert (creates, mints) == (18, 30)
    assert sorted(r.wallet for s in signed for r in s.requests) == sorted(r.wallet for r in requests)
    land(client, signed)
    expected = {w: 5 + 1_000_000_001 for w in existing} | {w: 1_000_000_001 for w in new}
    for wallet in new[:6] + existing[:3]:
        expected[wallet] += 2_010_000_000
    assert {w: balance(localnet.url, client.mint, w) for w in existing + new} == expected
    assert supply(localnet.url, client.mint) == 12 * 5 + 30 * 1_000_000_001 + 9 * 2_010_000_000
    assert client.token_supply() == supply(localnet.url, client.mint)
    assert client.token_balance(new[0]) == balance(localnet.url, client.mint, new[0])


def test_requests_to_one_wallet_merge_into_one_mint_instruction(client, localnet):
    (wallet,) = wallets(1)
    signed = client.build_mints([MintRequest(wallet, amount) for amount in (1, 2, 3, 4)], memo="merge")
    assert len(signed) == 1
    assert programs_called(signed[0])[TOKEN_PROGRAM] == 1
    assert [r.amount for r in signed[0].requests] == [1, 2, 3, 4]
    land(client, signed)
    assert balance(localnet.url, client.mint, wallet) == 10


def test_legacy_packing_fills_transactions_to_1232_bytes(client, localnet):
    targets = wallets(45)
    land(client, client.build_mints([MintRequest(w, 1) for w in targets], memo="setup"))
    signed = client.build_mints([MintRequest(w, 7) for w in targets], memo="pack")

    assert [len(s.requests) for s in signed] == [20, 20, 5]
    assert all(len(s.raw) <= PACKET_DATA_SIZE_LIMIT for s in signed)
    assert len(signed[0].raw) + 48 > PACKET_DATA_SIZE_LIMIT  # one more mint (16 + a 32-byte key) would not fit
    land(client, signed)
    assert {balance(localnet.url, client.mint, w) for w in targets} == {8}
    assert supply(localnet.url, client.mint) == 45 * 8


def test_create_and_mint_pairs_pack_ten_per_legacy_transaction(client, localnet):
    signed = client.build_mints([MintRequest(w, 3) for w in wallets(25)], memo="pairs")
    assert [len(s.requests) for s in signed] == [10, 10, 5]
    assert all(len(s.raw) <= PACKET_DATA_SIZE_LIMIT for s in signed)
    land(client, signed)
    assert supply(localnet.url, client.mint) == 75


def test_lookup_tables_pack_56_mints_into_each_v0_transaction(localnet):
    client = new_client(localnet.url, lookup_tables=True)
    targets = wallets(120)
    land(client, client.build_mints([MintRequest(w, 1) for w in targets], memo="setup"))

    signed = client.build_mints([MintRequest(w, 2) for w in targets], memo="v0")

    assert [len(s.requests) for s in signed] == [58, 58, 4]
    for item in signed:
        transaction = VersionedTransaction.from_bytes(item.raw)
        assert isinstance(transaction.message, MessageV0)
        assert len(item.raw) <= PACKET_DATA_SIZE_LIMIT
    land(client, signed)
    assert {balance(localnet.url, client.mint, w) for w in targets} == {3}
    assert supply(localnet.url, client.mint) == 360
    again = client.build_mints([MintRequest(w, 1) for w in targets], memo="v0-again")  # the table is reused
    assert (
        client.lookup_tables.address
        == VersionedTransaction.from_bytes(again[0].raw).message.address_table_lookups[0].account_key
    )
    client.close()


def test_identical_request_lists_get_different_signatures_and_both_mint(client, localnet):
    requests = [MintRequest(w, 11) for w in wallets(3)] * 2
    first = client.build_mints(requests, memo="batch-a")
    second = client.build_mints(requests, memo="batch-b")
    assert {s.signature for s in first}.isdisjoint(s.signature for s in second)
    assert [s.memo for s in first] == ["batch-a:0"]
    land(client, first + second)
    assert supply(localnet.url, client.mint) == 6 * 11 * 2


def test_sending_the_same_raw_bytes_twice_mints_once(client, localnet):
    (wallet,) = wallets(1)
    (signed,) = client.build_mints([MintRequest(wallet, 2_010_000_000)], memo="replay")
    assert client.send_raw(signed.raw) == signed.signature
    assert client.confirm(signed).err is None
    assert client.send_raw(signed.raw) == signed.signature  # skip preflight: a validator drops it silently
    assert client.send_raw(signed.raw, skip_preflight=False) == signed.signature  # AlreadyProcessed: not an error
    assert balance(localnet.url, client.mint, wallet) == 2_010_000_000
    assert supply(localnet.url, client.mint) == 2_010_000_000


def test_a_full_lookup_table_is_kept_and_further_wallets_are_named_in_full(localnet):
    client = new_client(localnet.url, lookup_tables=True)
    first, later = wallets(270), wallets(40)
    land(client, client.build_mints([MintRequest(w, 1) for w in first + later], memo="setup"))
    land(client, client.build_mints([MintRequest(w, 1) for w in first], memo="fill"))
    table = client.lookup_tables.address
    assert len(client.lookup_tables.addresses) == 256  # the mint and the first 255 token accounts

    signed = client.build_mints([MintRequest(w, 1) for w in later], memo="beyond")

    assert client.lookup_tables.address == table
    assert not any(isinstance(VersionedTransaction.from_bytes(s.raw).message, MessageV0) for s in signed)
    land(client, signed)
    assert {balance(localnet.url, client.mint, w) for w in later} == {2}
    assert {balance(localnet.url, client.mint, w) for w in first} == {2}
    assert supply(localnet.url, client.mint) == 310 * 2
    client.close()


def test_two_processes_sharing_an_authority_never_mint_through_each_others_table_indexes(make_localnet):
    """Two workers (one authority, one mint) that create their table in the same slot build the same create
    transaction, so they share one table, each extending it with its own wallets. Each must compile against
    the table's contents on the chain, or its indexes name the other's token accounts."""
    chain = make_localnet(slot_ms=5000)
    first = new_client(chain.url, lookup_tables=True)
    second = new_client(chain.url, authority=first.authority, mint=first.mint, lookup_tables=True)
    mine, theirs = wallets(30), wallets(30)
    land(first, first.build_mints([MintRequest(w, 1) for w in mine + theirs], memo="setup"))
    first.lookup_tables._create()
    second.lookup_tables._create()
    assert first.lookup_tables.address == second.lookup_tables.address

    signed = first.build_mints([MintRequest(w, 10) for w in mine], memo="first")
    signed += second.build_mints([MintRequest(w, 100) for w in theirs], memo="second")
    assert all(isinstance(VersionedTransaction.from_bytes(s.raw).message, MessageV0) for s in signed)
    land(first, signed)

    assert {balance(chain.url, first.mint, w) for w in mine} == {11}
    assert {balance(chain.url, first.mint, w) for w in theirs} == {101}
    first.close()
    second.close()
