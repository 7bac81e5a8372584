"""The chain core in-process: blockhash ageing, lasting replay protection, landing rules, lookup tables."""

import json

import pytest
from solders.address_lookup_table_account import AddressLookupTable, AddressLookupTableAccount
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from localnet.errors import RpcError, error_to_ui
from localnet.state import FAUCET_PUBKEY, LAMPORTS_PER_SIGNATURE, MAX_PROCESSING_AGE, LocalChain
from tests.localnet.helpers import SOL, ChainKit, lookup_table_instructions, pay, signed


@pytest.fixture
def chain():
    return LocalChain(archive_capacity=50)


@pytest.fixture
def kit(chain):
    return ChainKit(chain)


def preflight_error(excinfo) -> tuple[int, object]:
    error = excinfo.value
    return error.code, None if error.data_json is None else json.loads(error.data_json)["err"]


def test_a_sol_transfer_lands_with_exact_balances_and_a_fee(chain, kit):
    recipient = Keypair().pubkey()
    before = chain.get_balance(kit.payer.pubkey())
    signature = kit.send(pay(kit.payer, recipient, 123_456_789))
    assert chain.get_balance(recipient) == 123_456_789
    assert chain.get_balance(kit.payer.pubkey()) == before - 123_456_789 - LAMPORTS_PER_SIGNATURE
    slot, err = chain.signature_statuses([signature_bytes(signature)], search_history=False)[0]
    assert (slot, err) == (chain.slot, None)


def signature_bytes(signature: str) -> bytes:
    return bytes(Signature.from_string(signature))


def test_minted_tokens_reach_the_token_account_and_the_supply_exactly(chain, kit):
    owner = Keypair().pubkey()
    kit.send(kit.create_ata(owner), kit.mint_to(owner, 2_010_000_000))
    kit.send(kit.mint_to(owner, 1))
    assert kit.token_balance(owner) == 2_010_000_001
    assert kit.supply() == 2_010_000_001


def test_a_blockhash_is_valid_for_150_blocks_and_then_expires(chain, kit):
    blockhash, last_valid, _ = chain.latest_blockhash()
    assert last_valid == chain.block_height + MAX_PROCESSING_AGE
    stale = signed(kit.payer, [pay(kit.payer, Keypair().pubkey(), 1)], blockhash)
    while chain.block_height < last_valid:
        chain.advance_slot()
    assert chain.is_blockhash_valid(blockhash)
    chain.advance_slot()
    assert not chain.is_blockhash_valid(blockhash)
    with pytest.raises(RpcError) as excinfo:
        chain.send_transaction(stale, bytes(stale))
    assert preflight_error(excinfo) == (-32002, "BlockhashNotFound")
    assert "Blockhash not found" in excinfo.value.message


def test_an_unknown_blockhash_is_dropped_silently_without_preflight(chain, kit):
    unknown = signed(kit.payer, [pay(kit.payer, Keypair().pubkey(), 5)], Hash.new_unique())
    before = chain.get_balance(kit.payer.pubkey())
    signature = chain.send_transaction(unknown, bytes(unknown), preflight=False)
    assert signature == str(unknown.signatures[0])
    assert chain.signature_statuses([bytes(unknown.signatures[0])], search_history=True) == [None]
    assert chain.get_balance(kit.payer.pubkey()) == before


def test_a_replay_is_rejected_even_after_thousands_of_other_transactions(chain, kit):
    recipient = Keypair().pubkey()
    first = kit.tx(pay(kit.payer, recipient, 1_000))
    chain.send_transaction(first, bytes(first))
    # LiteSVM's own history is switched off; the chain's record must carry the protection alone.
    for lamports in range(2_000, 3_200):
        kit.send(pay(kit.payer, recipient, lamports))
    balance = chain.get_balance(recipient)
    with pytest.raises(RpcError) as excinfo:
        chain.send_transaction(first, bytes(first))
    assert preflight_error(excinfo) == (-32002, "AlreadyProcessed")
    assert chain.send_transaction(first, bytes(first), preflight=False) == str(first.signatures[0])
    assert chain.get_balance(recipient) == balance


def test_a_failing_transaction_is_rejected_by_preflight_and_charges_nothing(chain, kit):
    before = chain.get_balance(kit.payer.pubkey())
    transaction = kit.tx(pay(kit.payer, Keypair().pubkey(), 1_000 * SOL))
    with pytest.raises(RpcError) as excinfo:
        chain.send_transaction(transaction, bytes(transaction))
    code, err = preflight_error(excinfo)
    assert (code, err) == (-32002, {"InstructionError": [0, {"Custom": 1}]})
    assert (
        excinfo.value.message
        == "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    )
    assert "insufficient lamports" in excinfo.value.data_json
    assert chain.get_balance(kit.payer.pubkey()) == before
    assert bytes(transaction.signatures[0]) not in chain.history


def test_a_failing_transaction_sent_without_preflight_lands_with_its_error_and_fee(chain, kit):
    before = chain.get_balance(kit.payer.pubkey())
    transaction = kit.tx(pay(kit.payer, Keypair().pubkey(), 1_000 * SOL))
    chain.send_transaction(transaction, bytes(transaction), preflight=False)
    assert chain.get_balance(kit.payer.pubkey()) == before - LAMPORTS_PER_SIGNATURE
    _, err = chain.history.status(bytes(transaction.signatures[0]))
    assert error_to_ui(err) == {"InstructionError": [0, {"Custom": 1}]}
    assert chain.transaction(bytes(transaction.signatures[0])).fee == LAMPORTS_PER_SIGNATURE


def test_a_payer_without_lamports_never_lands(chain):
    broke = Keypair()
    transaction = signed(broke, [pay(broke, Keypair().pubkey(), 1)], chain.blockhash)
    with pytest.raises(RpcError) as excinfo:
        chain.send_transaction(transaction, bytes(transaction))
    assert preflight_error(excinfo) == (-32002, "AccountNotFound")
    assert chain.send_transaction(transaction, bytes(transaction), preflight=False)
    assert bytes(transaction.signatures[0]) not in chain.history


def test_a_forged_signature_fails_verification(chain, kit):
    genuine = kit.tx(pay(kit.payer, Keypair().pubkey(), 1))
    forged = VersionedTransaction.populate(genuine.message, [Keypair().sign_message(bytes(genuine.message))])
    with pytest.raises(RpcError) as excinfo:
        chain.send_transaction(forged, bytes(forged))
    assert excinfo.value.code == -32003
    chain.send_transaction(forged, bytes(forged), preflight=False)
    assert bytes(forged.signatures[0]) not in chain.history


def test_a_forged_signature_on_a_stale_transaction_reports_the_signature_first(chain, kit):
    stale = signed(kit.payer, [pay(kit.payer, Keypair().pubkey(), 1)], Hash.new_unique())
    forged = VersionedTransaction.populate(stale.message, [Keypair().sign_message(bytes(stale.message))])
    with pytest.raises(RpcError) as excinfo:
        chain.send_transaction(forged, bytes(forged))
    assert excinfo.value.code == -32003


def test_a_v0_transaction_through_a_lookup_table_lands_and_is_tracked(chain, kit):
    recipients = [Keypair().pubkey() for _ in range(25)]
    table, instructions = lookup_table_instructions(kit.payer.pubkey(), chain.slot, recipients)
    kit.send(*instructions)
    chain.advance_slot()  # addresses extended in a slot are usable from the next one
    addresses = AddressLookupTable.deserialize(chain.get_account(table).data).addresses
    lookup = AddressLookupTableAccount(table, addresses)
    transaction = kit.tx(*[pay(kit.payer, r, 10_000 + i) for i, r in enumerate(recipients)], lookup_tables=[lookup])
    chain.send_transaction(transaction, bytes(transaction))
    assert [chain.get_balance(r) for r in recipients] == [10_000 + i for i in range(25)]
    assert set(recipients) <= chain.accounts
    record = chain.transaction(bytes(transaction.signatures[0]))
    assert sorted(record.loaded_writable) == sorted(str(r) for r in recipients)
    static = len(transaction.message.account_keys)
    loaded_balances = record.post_balances[static:]
    assert loaded_balances == [chain.get_balance(Pubkey.from_string(key)) for key in record.loaded_writable]


def test_a_lookup_table_used_in_its_extension_slot_is_an_invalid_transaction(chain, kit):
    recipients = [Keypair().pubkey() for _ in range(3)]
    table, instructions = lookup_table_instructions(kit.payer.pubkey(), chain.slot, recipients)
    kit.send(*instructions)
    lookup = AddressLookupTableAccount(table, recipients)
    transaction = kit.tx(pay(kit.payer, recipients[0], 1), lookup_tables=[lookup])
    with pytest.raises(RpcError) as excinfo:
        chain.send_transaction(transaction, bytes(transaction))
    assert excinfo.value.code == -32602
    assert excinfo.value.message == "invalid transaction: Transaction address table lookup uses an invalid index"


def test_a_missing_lookup_table_is_an_invalid_transaction(chain, kit):
    lookup = AddressLookupTableAccount(Keypair().pubkey(), [Keypair().pubkey()])
    transaction = kit.tx(pay(kit.payer, lookup.addresses[0], 1), lookup_tables=[lookup])
    with pytest.raises(RpcError) as excinfo:
        chain.send_transaction(transaction, bytes(transaction))
    assert excinfo.value.message.startswith("invalid transaction: Transaction loads an address table account")


def test_identical_airdrops_in_one_slot_are_distinct_transactions(chain):
    recipient = Keypair().pubkey()
    first = chain.request_airdrop(recipient, 7)
    second = chain.request_airdrop(recipient, 7)
    assert first != second
    assert chain.get_balance(recipient) == 14


def test_a_failed_airdrop_is_an_internal_error(chain):
    with pytest.raises(RpcError) as excinfo:
        chain.request_airdrop(Keypair().pubkey(), 2 * 10**18)
    assert excinfo.value.code == -32603


def test_statuses_older_than_the_status_cache_need_search_transaction_history(chain, kit):
    transaction = kit.tx(pay(kit.payer, Keypair().pubkey(), 3))
    chain.send_transaction(transaction, bytes(transaction))
    signature = bytes(transaction.signatures[0])
    chain.slot += 301
    assert chain.signature_statuses([signature], search_history=False) == [None]
    assert chain.signature_statuses([signature], search_history=True)[0][0] == chain.slot - 301


def test_the_archive_keeps_only_the_most_recent_transactions_but_every_status(chain, kit):
    signatures = [kit.send(pay(kit.payer, Keypair().pubkey(), 1 + i)) for i in range(60)]
    assert len(chain.archive) == 50
    oldest = signature_bytes(signatures[0])
    assert chain.transaction(oldest) is None
    assert chain.history.status(oldest) is not None


def test_simulation_reports_logs_units_and_requested_accounts_without_changing_state(chain, kit):
    recipient = Keypair().pubkey()
    transaction = kit.tx(pay(kit.payer, recipient, 42))
    result, replacement = chain.simulate_transaction(
        transaction, sig_verify=True, replace_blockhash=False, addresses=[recipient, FAUCET_PUBKEY]
    )
    assert result.err is None and result.units_consumed > 0 and result.logs
    assert result.accounts[0].lamports == 42
    assert result.accounts[1].lamports == chain.get_balance(FAUCET_PUBKEY)
    assert replacement is None
    assert chain.get_balance(recipient) == 0


def test_simulation_with_a_replaced_blockhash_accepts_a_stale_transaction(chain, kit):
    stale = signed(kit.payer, [pay(kit.payer, Keypair().pubkey(), 1)], Hash.new_unique())
    result, _ = chain.simulate_transaction(stale, sig_verify=False, replace_blockhash=False, addresses=[])
    assert error_to_ui(result.err) == "BlockhashNotFound"
    result, replacement = chain.simulate_transaction(stale, sig_verify=False, replace_blockhash=True, addresses=[])
    assert result.err is None
    assert replacement == {"blockhash": str(chain.blockhash), "lastValidBlockHeight": chain.block_height + 150}


def test_simulation_of_a_failing_transaction_reports_the_error(chain, kit):
    transaction = kit.tx(pay(kit.payer, Keypair().pubkey(), 1_000 * SOL))
    result, _ = chain.simulate_transaction(transaction, sig_verify=False, replace_blockhash=False, addresses=[])
    assert error_to_ui(result.err) == {"InstructionError": [0, {"Custom": 1}]}
    forged = VersionedTransaction.populate(transaction.message, [Keypair().sign_message(b"x")])
    with pytest.raises(RpcError):
        chain.simulate_transaction(forged, sig_verify=True, replace_blockhash=False, addresses=[])
    result, _ = chain.simulate_transaction(forged, sig_verify=False, replace_blockhash=False, addresses=[])
    assert error_to_ui(result.err) == {"InstructionError": [0, {"Custom": 1}]}


def test_saved_accounts_leave_out_programs_sysvars_and_emptied_accounts(chain, kit):
    recipient = Keypair()
    kit.send(pay(kit.payer, recipient.pubkey(), 2 * SOL))
    everything = Keypair().pubkey()
    emptying = signed(recipient, [pay(recipient, everything, 2 * SOL - 5000)], chain.blockhash)
    chain.send_transaction(emptying, bytes(emptying))
    saved = {pubkey for pubkey, _ in chain.persistent_accounts()}
    assert {kit.payer.pubkey(), kit.mint.pubkey(), everything, FAUCET_PUBKEY} <= saved
    assert recipient.pubkey() not in saved
    assert Pubkey.from_string("11111111111111111111111111111111") not in saved
    assert Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA") not in saved


def test_a_lookup_index_beyond_the_table_is_an_invalid_transaction(chain, kit):
    recipients = [Keypair().pubkey() for _ in range(2)]
    table, instructions = lookup_table_instructions(kit.payer.pubkey(), chain.slot, recipients)
    kit.send(*instructions)
    chain.advance_slot()
    pretended = AddressLookupTableAccount(table, [*recipients, Keypair().pubkey()])
    transaction = kit.tx(pay(kit.payer, pretended.addresses[2], 1), lookup_tables=[pretended])
    with pytest.raises(RpcError) as excinfo:
        chain.send_transaction(transaction, bytes(transaction))
    assert excinfo.value.message == "invalid transaction: Transaction address table lookup uses an invalid index"


def test_only_blockhashes_young_enough_to_matter_are_kept(chain):
    first = chain.blockhash
    for _ in range(400):
        chain.advance_slot()
    assert len(chain.blockhash_heights) <= 2 * MAX_PROCESSING_AGE + 1
    assert first not in chain.blockhash_heights
    assert chain.is_blockhash_valid(chain.blockhash)
    assert chain.svm.get_clock().slot == 400
    assert chain.svm.get_slot_hashes()[0] == (400, chain.blockhash)
