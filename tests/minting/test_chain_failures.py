"""Failures on the real localnet come back as the right typed errors, and mint nothing."""

import time

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.transaction import VersionedTransaction

from minting.chain import (
    BlockhashExpired,
    ChainClient,
    InvalidAccount,
    InvalidMint,
    InvalidWallet,
    MintRequest,
    PermanentChainError,
    RpcTimeout,
    RpcUnavailable,
    SignedMint,
    TransactionTooLarge,
    WrongAuthority,
)
from minting.chain import instructions as ix
from tests.conftest import free_port
from tests.minting.test_chain_support import balance, funded_keypair, land, new_client, supply, wallets


@pytest.fixture
def client(localnet):
    client = new_client(localnet.url)
    yield client
    client.close()


def test_an_expired_blockhash_is_blockhash_expired_from_send_and_confirm(make_localnet):
    chain = make_localnet(slot_ms=10)
    client = new_client(chain.url)
    (wallet,) = wallets(1)
    (signed,) = client.build_mints([MintRequest(wallet, 5)], memo="late")
    while client.get_block_height() <= signed.last_valid_block_height:
        time.sleep(0.05)

    with pytest.raises(BlockhashExpired) as caught:
        client.send_raw(signed.raw, skip_preflight=False)
    assert not caught.value.permanent and caught.value.code == "blockhash_expired"
    assert client.send_raw(signed.raw) == signed.signature  # without preflight a validator drops it silently
    with pytest.raises(BlockhashExpired):
        client.confirm(signed, timeout=10)
    assert balance(chain.url, client.mint, wallet) == 0
    assert supply(chain.url, client.mint) == 0
    client.close()


def test_an_unreachable_rpc_is_transient_rpc_unavailable():
    client = ChainClient(
        rpc_url=f"http://127.0.0.1:{free_port()}", authority=Keypair(), mint=Keypair().pubkey(), decimals=9
    )
    with pytest.raises(RpcUnavailable) as caught:
        client.get_block_height()
    assert not caught.value.permanent and caught.value.code == "rpc_unavailable"
    with pytest.raises(RpcUnavailable):
        client.build_mints([MintRequest(str(Keypair().pubkey()), 1)], memo="down")
    transaction = VersionedTransaction(
        Message.new_with_blockhash([ix.memo("down")], client.authority.pubkey(), Hash.default()), [client.authority]
    )
    signed = SignedMint(str(transaction.signatures[0]), bytes(transaction), 0, (), "down:0")
    garbage = SignedMint("garbage", b"not a transaction", 0, (), "")
    outcomes = client.send_many([signed, garbage])
    assert isinstance(outcomes[signed.signature], RpcUnavailable)
    assert outcomes["garbage"].permanent and outcomes["garbage"].code == "invalid_transaction"


def test_a_mint_whose_authority_is_another_key_is_permanent_wrong_authority(client, localnet):
    stranger = ChainClient(rpc_url=localnet.url, authority=funded_keypair(localnet.url), mint=client.mint, decimals=9)
    (wallet,) = wallets(1)
    (signed,) = stranger.build_mints([MintRequest(wallet, 5)], memo="stranger")

    with pytest.raises(WrongAuthority) as caught:
        stranger.send_raw(signed.raw, skip_preflight=False)
    assert caught.value.permanent and caught.value.code == "wrong_authority"
    assert stranger.send_raw(signed.raw) == signed.signature  # without preflight it lands, failed
    status = stranger.confirm(signed)
    assert status.err == {"InstructionError": [1, {"Custom": 4}]}
    assert isinstance(signed.failure(status.err), WrongAuthority)
    with pytest.raises(WrongAuthority):
        stranger.verify_mint()
    assert supply(localnet.url, client.mint) == 0
    stranger.close()


def test_a_mint_that_does_not_exist_is_a_permanent_error(client, localnet):
    ghost = ChainClient(rpc_url=localnet.url, authority=client.authority, mint=Keypair().pubkey(), decimals=9)
    with pytest.raises(InvalidMint) as caught:
        ghost.verify_mint()
    assert caught.value.permanent and "does not exist" in str(caught.value)
    (signed,) = ghost.build_mints([MintRequest(str(Keypair().pubkey()), 5)], memo="ghost")
    with pytest.raises(PermanentChainError):
        ghost.send_raw(signed.raw, skip_preflight=False)


def test_a_mint_with_other_decimals_is_invalid_mint(client, localnet):
    six = ChainClient(rpc_url=localnet.url, authority=client.authority, mint=client.mint, decimals=6)
    with pytest.raises(InvalidMint, match="9 decimals, not 6"):
        six.verify_mint()
    assert client.verify_mint().decimals == 9


def test_an_invalid_wallet_fails_the_build_before_anything_is_signed(client):
    with pytest.raises(InvalidWallet):
        client.build_mints([MintRequest("not-a-wallet", 1)], memo="bad")


def test_confirm_gives_up_with_transient_rpc_timeout_when_nothing_lands(client):
    (signed,) = client.build_mints([MintRequest(str(Keypair().pubkey()), 1)], memo="never-sent")
    with pytest.raises(RpcTimeout) as caught:
        client.confirm(signed, timeout=0.2)
    assert not caught.value.permanent


def test_signature_statuses_come_back_for_every_signature_in_chunks(client, localnet):
    (wallet,) = wallets(1)
    signed = client.build_mints([MintRequest(wallet, 1)], memo="status")
    land(client, signed)
    unknown = [str(Keypair().sign_message(i.to_bytes(2, "little"))) for i in range(300)]
    statuses = client.get_signature_statuses([*unknown, signed[0].signature])
    assert len(statuses) == 301
    assert all(statuses[s] is None for s in unknown)
    landed = statuses[signed[0].signature]
    assert landed.err is None and landed.succeeded and landed.confirmation_status == "finalized"
    assert landed.slot >= 0 and landed.reached("confirmed")


def test_a_priority_fee_adds_a_compute_budget_and_still_mints(localnet):
    client = new_client(localnet.url, priority_fee_microlamports=1000)
    (wallet,) = wallets(1)
    signed = client.build_mints([MintRequest(wallet, 9)], memo="fee")
    land(client, signed)
    assert balance(localnet.url, client.mint, wallet) == 9
    client.close()


def test_token_balance_is_zero_without_a_token_account(client):
    assert client.token_balance(str(Keypair().pubkey())) == 0


def test_an_account_that_is_not_a_mint_is_invalid_mint(client):
    not_a_mint = ChainClient(
        rpc_url=client.rpc_url, authority=client.authority, mint=client.authority.pubkey(), decimals=9
    )
    with pytest.raises(InvalidMint, match="is not a token mint"):
        not_a_mint.verify_mint()


def test_a_cluster_refusing_lookup_tables_falls_back_to_legacy_packing(localnet, monkeypatch):
    client = new_client(localnet.url, lookup_tables=True)
    targets = wallets(30)
    land(client, client.build_mints([MintRequest(w, 1) for w in targets], memo="setup"))

    # Fake: the localnet has the lookup table program, so its refusal is simulated at the one call that uses it.
    def refuse(*args, **kwargs):
        raise InvalidAccount("the lookup table program is not deployed")

    monkeypatch.setattr(client, "execute", refuse)
    signed = client.build_mints([MintRequest(w, 2) for w in targets], memo="legacy")

    assert [len(s.requests) for s in signed] == [20, 10]
    assert client.lookup_tables.disabled_because == "the lookup table program is not deployed"
    land(client, signed)
    assert {balance(localnet.url, client.mint, w) for w in targets} == {3}
    assert supply(localnet.url, client.mint) == 90
    client.close()


def test_waiting_for_a_slot_the_chain_does_not_reach_is_rpc_timeout(localnet):
    client = new_client(localnet.url, lookup_tables=True)
    with pytest.raises(RpcTimeout):
        client.lookup_tables._wait_for_slot(10**9, timeout=0.1)
    client.close()


def test_a_transaction_over_1232_bytes_is_refused_as_permanent_transaction_too_large(client, localnet):
    blockhash, last_valid, _ = client.latest_blockhash()
    message = Message.new_with_blockhash([ix.memo("x" * 1200)], client.authority.pubkey(), blockhash)
    raw = bytes(VersionedTransaction(message, [client.authority]))
    assert len(raw) > 1232
    for skip_preflight in (True, False):
        with pytest.raises(TransactionTooLarge) as caught:
            client.send_raw(raw, skip_preflight=skip_preflight)
        assert caught.value.permanent and caught.value.code == "transaction_too_large"
    signed = SignedMint(str(VersionedTransaction.from_bytes(raw).signatures[0]), raw, last_valid, (), "")
    assert isinstance(client.send_many([signed])[signed.signature], TransactionTooLarge)
